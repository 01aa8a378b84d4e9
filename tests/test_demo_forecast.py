"""Issue 16, Done means: "a forecast alert fires before a breach in the demo".

The demo hospital (demo/) runs against a real carescore over MLLP and the feed API, with its
seeded scenario `stat_backlog` (demo/labs.py): a busy ICU orders a STAT test every 2 minutes,
for 3 hours with turnarounds of about 30 minutes, then for 90 minutes the turnaround grows from
30 to 90 minutes. The demo's own `clock` is accelerated (SPEED x the wall clock, starting far
enough back that it never runs ahead of the wall clock: carescore refuses no event as from the
future), so the 90 minutes take about 90 / SPEED minutes.

By hand: lab_tat_stat is the p90 of the last hour's STAT turnarounds at the ICU (min_samples
20: the scenario's 30 an hour are enough), warning 60, critical 75. Before the start it sits at
about 30 x 1.05 = 31.5; the turnaround of an order placed m minutes into the ramp is
30 + 60 m / 90 min, so it passes 60 from m = 45, and the KPI's warning follows once a tenth of
the hour's results (or open orders past 60 min) are that slow. The closed 5-minute windows climb
from the start; the forecast (lab_tat_stat's own `forecast:` block: warning, 1 h ahead, 80 %
interval) sees them reach 60 within the hour before the KPI does. Both alerts are set to fire
as soon as their condition holds (`for: 0s`), so the forecast gets no head start from its
settings; it is checked every second, the KPI every tick (0.2 s).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from carescore.serve import Service
from demo.run import run_demo
from engine.config import REPO_ROOT, Settings
from tests.test_e2e_embedded import wait_for

SPEED = 60.0
LONGEST = 240.0  # wall seconds the demo may run ahead of its start at SPEED before it is capped


def accelerated(speed: float, longest: float) -> Callable[[], float]:
    """A clock SPEED x as fast as the wall clock, starting (speed - 1) x longest seconds back:
    for `longest` wall seconds it stays behind the wall clock, then it is the wall clock."""
    wall0 = time.time()
    start = wall0 - (speed - 1) * longest
    return lambda: min(time.time(), start + (time.time() - wall0) * speed)


async def lab_alerts(api: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    """The ICU's lab_tat_stat alerts by kind (kpi, forecast), any state."""
    alerts = (await api.get("/api/v1/alerts", params={"limit": 1000})).json()["alerts"]
    return {a["kind"]: a for a in alerts if a["kpi"] == "lab_tat_stat" and a["unit"] == "ICU"}


async def test_the_forecast_alert_fires_before_the_stat_backlog_breaches(
    settings_for: Callable[..., Settings], kpi_dir: Callable[..., Path], tmp_path: Path
) -> None:
    packaged = yaml.safe_load((REPO_ROOT / "kpi_defs" / "lab_tat_stat.yaml").read_text())["forecast"]
    assert packaged == {"enabled": True, "horizon": "1h", "level": "warning"}
    settings = settings_for(
        kpi_defs=kpi_dir({"lab_tat_stat": {"for": "0s", "forecast": {**packaged, "for": "0s"}}}),
        engine={"idle_timeout": "1h"},  # windows close on the demo's event time
        forecasts={"enabled": True, "every": "1s", "kpis": []},  # only the KPIs whose YAML enables
    )
    svc = Service(settings)
    await svc.start()
    demo = asyncio.create_task(
        run_demo(
            settings.places,
            "127.0.0.1",
            svc.mllp.port,
            f"http://127.0.0.1:{svc.api_port}",
            tmp_path / "demo-state.json",
            seed=7,
            backfill=0.0,
            scenarios=["stat_backlog"],
            clock=accelerated(SPEED, LONGEST),
        )
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{svc.api_port}", timeout=30) as api:

            async def forecast_fired() -> dict[str, dict[str, Any]] | None:
                found = await lab_alerts(api)
                return found if "forecast" in found else None

            first = await wait_for(forecast_fired, timeout=LONGEST)
            # the forecast alert fired while the KPI had not breached: no KPI alert yet
            assert "kpi" not in first, first
            forecast = first["forecast"]
            assert forecast["state"] == "firing" and forecast["threshold"] == 60
            assert "forecast to breach 60.0 min within 1h, 80 % interval" in forecast["summary"]

            async def breached() -> dict[str, dict[str, Any]] | None:
                found = await lab_alerts(api)
                return found if "kpi" in found else None

            both = await wait_for(breached, timeout=LONGEST)
            kpi = both["kpi"]
            assert kpi["severity"] in ("warning", "critical") and kpi["threshold"] >= 60
            # when it fired, the last closed window was above the baseline (about 31.5) and
            # below 60: the trend, not a breach, set it off
            now = float(re.search(r"now (\d+(?:\.\d+)?)\)", forecast["summary"]).group(1))  # type: ignore[union-attr]
            assert 31.5 < now < 60, forecast["summary"]
            # its lead: wall seconds x SPEED, in the demo's minutes (the passes run every second,
            # a demo minute: the lead is known to about a minute)
            lead = (time_of(kpi["started_at"]) - time_of(forecast["started_at"])) * SPEED / 60
            assert lead >= 10, lead
            print(
                f"\nforecast alert ahead of the KPI alert by {lead:.0f} demo minutes: {forecast['summary']}"
            )
    finally:
        demo.cancel()
        await asyncio.gather(demo, return_exceptions=True)
        await svc.stop()


def time_of(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()
