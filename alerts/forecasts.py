"""Forecast alerts: a KPI forecast to breach its threshold within the horizon is an alert of its
own kind ("forecast"), before the breach, through the same routes, silences and store.

A KPI's YAML may carry `forecast:` (enabled, horizon, interval, level, for) over the settings'
block for that KPI alone (settings_for); `forecasts.enabled` stays the switch for all of them.

Per (KPI, place) with a threshold at `forecasts.level`: the KPI's closed windows are forecast
(engine/forecast.py) and the bound of the chosen prediction interval on the bad side (the upper
bound when lower is better) is compared with the threshold over the horizon. Breaching for
`forecasts.for` fires the alert (with `forecasts.severity`); it resolves when the forecast no
longer reaches the threshold, or when the KPI has reached it (its own alert has it then).

check() fits a model per series (tens to hundreds of ms each, BENCHMARKS.md): the runtime
calls it in a thread every `forecasts.every`, for at most `forecasts.max_series` series, never
on the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from alerts.evaluator import fmt
from alerts.lifecycle import ts
from alerts.model import Alert, Change, place_label
from engine.definitions import Catalogue, Direction, KpiDefinition
from engine.durations import format_duration
from engine.forecast import Forecast, ForecastSettings, Point, TooShort, first_breach, forecast
from engine.samples import GroupKey, Sample

FORECAST_KIND = "forecast"
log = logging.getLogger(__name__)

History = Callable[[str, GroupKey], Sequence[Sample]]  # (KPI id, place) -> closed windows


def alert_name(kpi_id: str) -> str:
    return f"{FORECAST_KIND}:{kpi_id}"


@dataclass
class Watch:
    state: Literal["ok", "pending", "firing"] = "ok"
    since: float = 0.0  # when the forecast began to breach


class ForecastWatch:
    def __init__(
        self,
        settings: ForecastSettings,
        catalogue: Catalogue,
        history: History,
        unit_types: dict[GroupKey, str] | None = None,
    ):
        self.settings = settings
        self.catalogue = catalogue
        self.history = history
        self.unit_types = unit_types or {}
        self.watches: dict[tuple[str, GroupKey], Watch] = {}
        self.passes = 0  # passes completed since start
        self._own: dict[str, ForecastSettings] = {}

    def settings_for(self, kpi: KpiDefinition) -> ForecastSettings:
        """The settings' forecasts: block with what the KPI's own `forecast:` gives over it."""
        if kpi.id not in self._own:
            given = kpi.forecast
            fields = ("horizon", "interval", "level", "for_")
            own = {f: getattr(given, f) for f in fields if given and getattr(given, f) is not None}
            self._own[kpi.id] = self.settings.model_copy(update=own)
        return self._own[kpi.id]

    def watched(self, kpi: KpiDefinition) -> bool:
        """The KPI's own `forecast.enabled` if it says, else whether forecasts.kpis lists it (or
        lists nothing: every KPI)."""
        if kpi.forecast is not None and kpi.forecast.enabled is not None:
            return kpi.forecast.enabled
        return self.settings.kpis is None or kpi.id in self.settings.kpis

    def restore(self, firing: Iterable[Alert]) -> None:
        """Forecast alerts firing before a restart stay firing (no second notice)."""
        for alert in firing:
            if alert.kind == FORECAST_KIND:
                started = ts(alert.started_at)
                self.watches[(alert.kpi, alert.place)] = Watch("firing", started)

    def series(self, live: Iterable[tuple[str, GroupKey]]) -> list[tuple[KpiDefinition, GroupKey]]:
        """The series forecast in one pass, from the (KPI, place) pairs with live values: KPIs
        with the watched threshold at the levels they alert on, at most max_series of them
        (firing ones first, so they can resolve)."""
        out: list[tuple[KpiDefinition, GroupKey]] = []
        seen: set[tuple[str, GroupKey]] = set()
        pairs = [k for k, w in self.watches.items() if w.state != "ok"] + sorted(
            set(live), key=lambda k: (k[0], tuple(p or "" for p in k[1]))
        )
        for kpi_id, place in pairs:
            kpi = self.catalogue.kpis.get(kpi_id)
            if kpi is None or (kpi_id, place) in seen or not self.watched(kpi):
                continue
            level = "unit" if place[2] else "department" if place[1] else "facility"
            if level not in kpi.alert_on or self._threshold(kpi, place) is None:
                continue
            seen.add((kpi_id, place))
            out.append((kpi, place))
            if len(out) >= self.settings.max_series:
                break
        return out

    def _threshold(self, kpi: KpiDefinition, place: GroupKey) -> float | None:
        thresholds = kpi.levels_for(self.unit_types.get(place)).thresholds
        return thresholds.critical if self.settings_for(kpi).level == "critical" else thresholds.warning

    def check(self, now: float, live: Iterable[tuple[str, GroupKey]]) -> list[Change]:
        """One pass: the changes (fired, resolved) of every series forecast. `live`: the
        (KPI, place) pairs on the board, copied on the event loop that changes them."""
        out: list[Change] = []
        for kpi, place in self.series(live):
            try:
                change = self._step(kpi, place, now)
            except Exception:  # one series the model cannot fit does not stop the others
                log.warning("forecast failed", extra={"kpi": kpi.id}, exc_info=True)
                continue
            if change is not None:
                out.append(change)
        self.passes += 1
        return out

    def _step(self, kpi: KpiDefinition, place: GroupKey, now: float) -> Change | None:
        threshold = self._threshold(kpi, place)
        assert threshold is not None  # series() keeps only places with one
        own = self.settings_for(kpi)
        try:
            fc = forecast(self.history(kpi.id, place), own.horizon)
        except TooShort:
            return None  # no forecast is neither a breach nor the end of one
        lower = kpi.direction is Direction.lower_is_better
        reached = fc.last_value >= threshold if lower else fc.last_value <= threshold
        hit = None if reached else first_breach(fc, threshold, lower, own.interval)
        watch = self.watches.setdefault((kpi.id, place), Watch())
        if hit is None:
            if watch.state == "firing":
                watch.state = "ok"
                why = "the KPI has reached it" if reached else "no longer forecast to breach"
                return self._change("resolved", kpi, place, watch, fc, threshold, None, why)
            watch.state = "ok"
            return None
        if watch.state == "ok":
            watch.state, watch.since = "pending", now
        if watch.state == "pending" and now - watch.since >= own.for_:
            watch.state = "firing"
            return self._change("fired", kpi, place, watch, fc, threshold, hit, None)
        return None

    def _change(
        self,
        kind: Literal["fired", "resolved"],
        kpi: KpiDefinition,
        place: GroupKey,
        watch: Watch,
        fc: Forecast,
        threshold: float,
        point: Point | None,
        why: str | None,
    ) -> Change:
        s = self.settings_for(kpi)
        severity = s.severity if kind == "fired" else "ok"
        where = place_label(place)
        within = format_duration(s.horizon)
        if kind == "fired" and point is not None:
            bound = point.upper80 if s.interval == 80 else point.upper95
            if kpi.direction is not Direction.lower_is_better:
                bound = point.lower80 if s.interval == 80 else point.lower95
            summary = (
                f"{kpi.name} on {where} is forecast to breach {fmt(threshold)} {kpi.unit} within {within}, "
                f"{s.interval} % interval (from {point.at:%H:%M} UTC; now {fmt(fc.last_value)})"
            )
            value: float | None = bound
            details = {
                "forecast": {
                    "model": fc.model,
                    "history_windows": fc.history,
                    "last_window_end": fc.last.isoformat(),
                    "breach_at": point.at.isoformat(),
                    "mean": point.mean,
                    "bound": bound,
                    "interval": s.interval,
                    "level": s.level,
                }
            }
        else:
            summary = f"{kpi.name} on {where}: {why} ({fmt(threshold)} {kpi.unit} within {within})"
            value, details = fc.last_value, {}
        return Change(
            kind=kind,
            name=alert_name(kpi.id),
            place=place,
            labels={
                "kind": FORECAST_KIND,
                "kpi": kpi.id,
                "perspective": kpi.perspective.value,
                "facility": place[0],
                "department": place[1],
                "unit": place[2],
                "severity": severity,
            },
            title=f"Forecast: {kpi.name}",
            severity=severity,
            value=value,
            threshold=threshold,
            unit_of_measure=kpi.unit,
            started=watch.since,
            summary=summary,
            details=details,
        )
