"""Issue 16 item 3, forecasts and forecast alerts, through real MLLP and real HTTP.

A real carescore (embedded runtime) is sent STAT lab orders and results over its MLLP listener,
with past times, so its history holds one closed window per 5 minutes. The KPI is the packaged
lab_tat_stat with a 5-minute tumbling window and min_samples 1 (one order per window is its
p90: the p90 of one value is that value), so each window's value is worked by hand:

    window i (i = 0..36) holds one STAT result, at B + 5i + 2 min, of an order placed 20 + i min
    before it (a duration is counted in the window of its result): its value is 20 + i min. The
    series rises 1 min per 5-minute window, from 20 to 56. Windows close on event time (the
    idle timeout is set long), so windows 0..35 are closed (20..55) and window 36 is live.

ETS on a series rising by a constant step (Hyndman & Athanasopoulos, Forecasting: Principles
and Practice, 3rd ed., ch. 8) forecasts the trend on: Holt's linear trend continues +1 per
window, so 24 windows (2 h) ahead the mean is near 55 + 24 = 79 (a damped trend somewhat
less; both above 55 and rising). Thresholds (kpi_defs/lab_tat_stat.yaml): warning 60,
critical 75; 55 is below both, so no threshold alert can be firing while the forecast one fires.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from alerts.forecasts import ForecastWatch
from alerts.routes import load_routes
from carescore.serve import Service
from connectors.hl7v2.client import MLLPClient, ack_code
from engine.config import REPO_ROOT, Settings, load_settings
from engine.definitions import load_catalogue
from engine.definitions.kpi import KpiForecast
from engine.forecast import ForecastSettings
from engine.yamlconf import ConfigError
from tests.labserver import order, result
from tests.test_e2e_embedded import wait_for

NOW = datetime.now(UTC).replace(second=0, microsecond=0)
B = NOW.replace(minute=NOW.minute - NOW.minute % 5) - timedelta(hours=4)  # on the 5-minute grid
RISING = [(i, 20 + i) for i in range(37)]  # (window, minutes to result); window 36 stays open
WINDOW_KPI = {
    "lab_tat_stat": {
        "window": {"kind": "tumbling", "size": "5m", "grace": "1m"},
        "min_samples": 1,
        "forecast": None,  # the settings' forecasts: block alone (the packaged KPI has its own)
    }
}


async def send_labs(svc: Service, labs: list[tuple[int, float]], tag: str) -> None:
    """One STAT result per 5-minute window i, two minutes into it, `tat` min after its order."""
    async with MLLPClient("127.0.0.1", svc.mllp.port) as client:
        for i, tat in labs:
            resulted = B + timedelta(minutes=5 * i + 2)
            placed = resulted - timedelta(minutes=tat)
            n = f"{tag}{i:03d}"
            assert ack_code(await client.send(order(n, placed, "DEMO", "ICU"))) == "AA"
            assert ack_code(await client.send(result(n, placed, resulted, "DEMO", "ICU"))) == "AA"


@pytest.fixture
def forecasting(settings_for: Callable[..., Settings], kpi_dir: Callable[..., Path]) -> Settings:
    """Forecast alerts on for lab_tat_stat, a pass every second, firing at once (for 0s)."""
    return settings_for(
        kpi_defs=kpi_dir(WINDOW_KPI),
        engine={"idle_timeout": "1h"},  # windows close on event time only
        forecasts={"enabled": True, "every": "1s", "for": "0s", "kpis": ["lab_tat_stat"]},
    )


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[Service, httpx.AsyncClient]]:
    svc = Service(settings)
    await svc.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{svc.api_port}", timeout=30) as api:
            yield svc, api
    finally:
        await svc.stop()


@pytest.fixture
async def carescore(forecasting: Settings) -> AsyncIterator[tuple[Service, httpx.AsyncClient]]:
    async with running(forecasting) as both:
        yield both


ICU = {"facility": "DEMO", "department": "critical_care", "unit": "ICU"}


async def history_has(api: httpx.AsyncClient, windows: int) -> list[dict[str, Any]]:
    async def ready() -> list[dict[str, Any]] | None:
        body = (await api.get("/api/v1/kpis/lab_tat_stat/history", params={**ICU, "level": "unit"})).json()
        return body["windows"] if len(body["windows"]) >= windows else None

    found: list[dict[str, Any]] = await wait_for(ready, timeout=60)
    return found


async def forecast_alert(api: httpx.AsyncClient, state: str | None) -> dict[str, Any] | None:
    alerts = (await api.get("/api/v1/alerts", params={"state": state} if state else {})).json()["alerts"]
    return next((a for a in alerts if a["kind"] == "forecast" and a["unit"] == "ICU"), None)


async def test_forecast_follows_the_trend_with_nested_intervals_and_fires_before_the_breach(
    carescore: tuple[Service, httpx.AsyncClient],
) -> None:
    svc, api = carescore
    # too little history: nothing yet, then 422 saying how much is needed
    short = await api.get("/api/v1/kpis/lab_tat_stat/forecast", params=ICU)
    assert short.status_code == 422
    assert short.json()["needed"] == 24 and short.json()["have"] == 0
    assert "24 consecutive closed windows" in short.json()["detail"]

    await send_labs(svc, RISING, "A")
    windows = await history_has(api, 36)
    assert [w["value"] for w in windows[-36:]] == [20 + i for i in range(36)]  # by hand, above

    answer = await api.get("/api/v1/kpis/lab_tat_stat/forecast", params={**ICU, "horizon": "2h"})
    assert answer.status_code == 200, answer.text
    fc = answer.json()
    assert fc["model"].startswith("ETS(") and fc["history"]["windows"] == 36
    assert fc["history"]["last_value"] == 55 and fc["step_seconds"] == 300
    points = fc["points"]
    assert len(points) == 24  # 2 h of 5-minute windows
    for p in points:
        assert p["lower95"] <= p["lower80"] <= p["mean"] <= p["upper80"] <= p["upper95"]
    means = [p["mean"] for p in points]
    assert means == sorted(means) and means[0] > 55  # the rise goes on
    assert means[-1] > 55 + 12  # at least half of Holt's +24 over 2 h, whatever the damping
    # window 35, the last closed, ends at B + 36 x 5 min; the first forecast window one step later
    assert datetime.fromisoformat(fc["history"]["last_window_end"]) == B + timedelta(minutes=5 * 36)
    assert datetime.fromisoformat(points[0]["at"]) == B + timedelta(minutes=5 * 37)
    critical = next(b for b in fc["breaches"] if b["severity"] == "critical")
    assert critical["threshold"] == 75 and critical["interval80_at"] is not None
    # the 80 % upper bound reaches 75 no later than the mean does (or the mean never does)
    if critical["mean_at"] is not None:
        assert critical["interval80_at"] <= critical["mean_at"]
    bad = await api.get("/api/v1/kpis/lab_tat_stat/forecast", params={**ICU, "horizon": "soon"})
    assert bad.status_code == 422

    # the forecast alert: fired before any breach (55 closed, 56 live < warning 60: no KPI alert)
    fired = await wait_for(lambda: forecast_alert(api, "firing"), timeout=60)
    assert fired["kpi"] == "lab_tat_stat" and fired["severity"] == "warning" and fired["threshold"] == 75
    assert "forecast to breach 75.0 min within 2h, 80 % interval" in fired["summary"]
    alerts = (await api.get("/api/v1/alerts")).json()["alerts"]
    assert not [a for a in alerts if a["kind"] == "kpi" and a["kpi"] == "lab_tat_stat"]

    # then turnaround comes back down and stays there: 10 windows of 10 min (i = 37..46; the
    # last resulted at B + 5 x 46 + 2 = B + 232 min, before NOW, which is B + 240..244)
    await send_labs(svc, [(i, 10) for i in range(37, 47)], "B")
    await history_has(api, 46)
    resolved = await wait_for(lambda: forecast_alert(api, "resolved"), timeout=60)
    assert resolved["id"] == fired["id"]


async def test_a_firing_forecast_alert_survives_a_restart_and_resolves_later(forecasting: Settings) -> None:
    """The same rising series (20..55 closed): fired, carescore stopped and started on the same
    data folder; passes after the restart still forecast the breach, and no second alert fires
    (the restored one is known as firing); when turnaround comes down it is that alert that
    resolves, which only a watch that knew it was firing can do."""
    async with running(forecasting) as (svc, api):
        await send_labs(svc, RISING, "A")
        fired = await wait_for(lambda: forecast_alert(api, "firing"), timeout=60)
    async with running(forecasting) as (svc, api):
        watch = svc.runtime.forecasts
        await wait_for(lambda: _async(watch.passes >= 2), timeout=60)
        alerts = (await api.get("/api/v1/alerts")).json()["alerts"]
        assert [(a["id"], a["state"]) for a in alerts if a["kind"] == "forecast"] == [(fired["id"], "firing")]
        await send_labs(svc, [(i, 10) for i in range(37, 47)], "B")
        resolved = await wait_for(lambda: forecast_alert(api, "resolved"), timeout=60)
        assert resolved["id"] == fired["id"]


async def _async(value: bool) -> bool:
    return value


def test_default_routes_send_a_forecast_alert_to_the_unit_charge_nurse_only() -> None:
    """alerts/routes.yaml: kind forecast matches its own route (charge nurse, no escalation),
    not the KPI route that escalates to the nurse manager and the house supervisor."""
    labels = {"kind": "forecast", "kpi": "lab_tat_stat", "perspective": "internal_process"}
    labels |= {"facility": "DEMO", "department": "critical_care", "unit": "ICU", "severity": "warning"}
    routes = load_routes(None).route_for(labels)
    assert [(r.name, list(r.receivers), r.escalate) for r in routes] == [("forecast", ["charge_nurse"], [])]


def test_a_bad_forecasts_block_is_refused_naming_file_line_and_field(tmp_path: Path) -> None:
    config = tmp_path / "carescore.yaml"
    config.write_text("demo: {enabled: false}\nforecasts:\n  enabled: true\n  interval: 90\n")
    with pytest.raises(ConfigError) as refused:
        load_settings(config)
    assert f"{config}:4: forecasts.interval" in str(refused.value)
    config.write_text("forecasts:\n  horizon: soon\n")
    with pytest.raises(ConfigError) as refused:
        load_settings(config)
    assert f"{config}:2: forecasts.horizon" in str(refused.value)
    config.write_text("forecasts:\n  enabled: true\n  for: 15m\n")
    assert load_settings(config).forecasts.for_ == 900  # 15 x 60 s
    assert Settings().forecasts.enabled is False  # off unless the settings say so (BENCHMARKS.md)


async def test_a_kpis_own_forecast_block_overrides_the_settings(
    settings_for: Callable[..., Settings], kpi_dir: Callable[..., Path]
) -> None:
    """The settings watch no KPI (kpis: []) and wait an hour (for: 1h); lab_tat_stat's own
    `forecast:` enables it and fires at once, looking 1 h ahead at the warning threshold with the
    95 % interval. By hand: the closed windows rise 20..55 by 1 per 5-minute window, so Holt's
    mean reaches warning 60 five windows (25 min) ahead (a damped trend later, and the upper 95 %
    bound, above the mean, sooner): forecast to breach 60 within 1 h, while 55 and the live 56
    are below it (no KPI alert)."""
    own = {"enabled": True, "horizon": "1h", "interval": 95, "level": "warning", "for": "0s"}
    settings = settings_for(
        kpi_defs=kpi_dir({"lab_tat_stat": {**WINDOW_KPI["lab_tat_stat"], "forecast": own}}),
        engine={"idle_timeout": "1h"},
        forecasts={"enabled": True, "every": "1s", "for": "1h", "kpis": []},
    )
    async with running(settings) as (svc, api):
        await send_labs(svc, RISING, "A")
        fired = await wait_for(lambda: forecast_alert(api, "firing"), timeout=60)
        assert fired["threshold"] == 60 and fired["severity"] == "warning"  # severity: the settings'
        assert "forecast to breach 60.0 min within 1h, 95 % interval" in fired["summary"]
        alerts = (await api.get("/api/v1/alerts")).json()["alerts"]
        assert not [a for a in alerts if a["kind"] == "kpi" and a["kpi"] == "lab_tat_stat"]


def test_which_kpis_are_watched_and_with_what() -> None:
    """forecast.enabled decides when given; else forecasts.kpis (None: every KPI); the rest of
    the KPI's block is taken over the settings' one, field by field."""
    catalogue = load_catalogue(REPO_ROOT / "kpi_defs")
    packaged = catalogue.kpis["lab_tat_stat"]  # its own block: watched at warning, 1 h ahead
    assert ForecastWatch(ForecastSettings(kpis=[]), catalogue, lambda k, p: []).watched(packaged)
    kpi = packaged.model_copy(update={"forecast": None})
    on, off = (kpi.model_copy(update={"forecast": KpiForecast(enabled=e)}) for e in (True, False))
    partial = kpi.model_copy(update={"forecast": KpiForecast.model_validate({"horizon": "30m"})})
    listed = ForecastWatch(ForecastSettings(kpis=["lab_tat_stat"]), catalogue, lambda k, p: [])
    nobody = ForecastWatch(ForecastSettings(kpis=[]), catalogue, lambda k, p: [])
    every = ForecastWatch(ForecastSettings(), catalogue, lambda k, p: [])
    assert [w.watched(kpi) for w in (listed, nobody, every)] == [True, False, True]
    assert [w.watched(on) for w in (listed, nobody, every)] == [True, True, True]
    assert [w.watched(off) for w in (listed, nobody, every)] == [False, False, False]
    mixed = every.settings_for(partial)
    assert (mixed.horizon, mixed.for_, mixed.interval, mixed.level) == (1800, 600, 80, "critical")


def test_a_bad_forecast_block_in_a_kpi_names_file_line_and_field(kpi_dir: Callable[..., Path]) -> None:
    defs = kpi_dir({"lab_tat_stat": {"forecast": {"interval": 90, "horizon": "soon", "when": 1}}})
    path = next(p for p in defs.rglob("lab_tat_stat.yaml"))
    lines = path.read_text().splitlines()
    with pytest.raises(ConfigError) as refused:
        load_catalogue(defs)
    problems = "\n".join(refused.value.problems)
    for field in ("interval", "horizon", "when"):
        line = next(n for n, text in enumerate(lines, 1) if text.strip().startswith(f"{field}:"))
        assert f"{path}:{line}: forecast.{field}" in problems, (field, problems)
