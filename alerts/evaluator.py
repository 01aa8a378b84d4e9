"""Threshold evaluation: KPI samples in, alert changes out.

Per (KPI, place) a small state machine: ok -> pending (breaching, waiting out `for`) ->
firing -> resolved (back past the separate clear level, and staying there for
`keep_firing_for`, so a value hovering at the line does not flap). Below the minimum sample
size a sample is no_data, which never starts, raises or ends a breach. Severity may rise and
fall within one firing episode without a new alert.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from alerts.model import Change, ChangeKind, place_label
from engine.definitions import Catalogue, Direction, KpiDefinition
from engine.samples import GroupKey, Sample
from engine.scorecard import worse

State = Literal["ok", "pending", "firing", "clearing"]


@dataclass
class Track:
    state: State = "ok"
    since: float = 0.0  # when the breach began (pending/firing) or the clearing began
    severity: str = "ok"
    episode: int = 0
    started: float = 0.0  # when the current episode's breach began
    last: Sample | None = None


def threshold_for(kpi: KpiDefinition, severity: str, unit_type: str | None = None) -> float | None:
    thresholds = kpi.levels_for(unit_type).thresholds
    if severity == "critical":
        return thresholds.critical
    if severity == "warning":
        return thresholds.warning
    return None


def cleared(kpi: KpiDefinition, value: float, unit_type: str | None = None) -> bool:
    """Back on the good side of the clear level (or of warning when no clear is set)."""
    levels = kpi.levels_for(unit_type)
    level = levels.clear
    if level is None:
        level = (
            levels.thresholds.warning if levels.thresholds.warning is not None else levels.thresholds.critical
        )
    if level is None:
        return True
    if kpi.direction is Direction.lower_is_better:
        return value < level
    return value > level


def fmt(value: float | None) -> str:
    if value is None:
        return "no data"
    return f"{value:.1f}" if abs(value) < 1000 else f"{value:,.0f}"


def summary(kpi: KpiDefinition, sample: Sample, severity: str, threshold: float | None) -> str:
    """One line a charge nurse can act on. Names the place, never a patient."""
    place = place_label(sample.group.key)
    level = f" ({severity} at {fmt(threshold)} {kpi.unit})" if threshold is not None else ""
    if sample.value is None and sample.numerator is not None and sample.denominator == 0:
        shown = f"{sample.numerator:g}:0 (nothing to divide by)"  # e.g. patients and no nurse
    else:
        shown = fmt(sample.value)
    return f"{kpi.name} is {shown} {kpi.unit} on {place}{level}"


class Evaluator:
    def __init__(self, catalogue: Catalogue, unit_types: dict[GroupKey, str] | None = None):
        self.catalogue = catalogue
        self.unit_types = unit_types or {}
        self.tracks: dict[tuple[str, GroupKey], Track] = {}

    def evaluate(self, samples: list[Sample], now: float) -> list[Change]:
        out: list[Change] = []
        for sample in samples:
            if sample.final:
                continue  # alerts follow the live value; closed windows are history
            kpi = self.catalogue.kpis.get(sample.kpi)
            if kpi is None or sample.group.level not in kpi.alert_on:
                continue
            key = (sample.kpi, sample.group.key)
            track = self.tracks.get(key)
            if track is None:
                track = self.tracks[key] = Track(since=now)
            change = self._step(kpi, track, sample, now)
            track.last = sample
            if change is not None:
                out.append(change)
        return out

    def suspend(self, key: tuple[str, GroupKey]) -> None:
        """The KPI's data is stale (its feed stopped): a breach that has not fired yet starts
        over when fresh data comes; a firing alert stays as it is."""
        track = self.tracks.get(key)
        if track is not None and track.state == "pending":
            track.state, track.severity = "ok", "ok"

    def _step(self, kpi: KpiDefinition, track: Track, sample: Sample, now: float) -> Change | None:
        status = sample.status
        if status == "no_data" or (sample.value is None and status == "ok"):
            return None  # no data is never a breach, nor the end of one
        # a value of None with a breach status is an unbounded ratio (patients and no nurse)
        breaching = status in ("warning", "critical")
        unit_type = self.unit_types.get(sample.group.key)
        if track.state == "ok":
            if breaching:
                track.state, track.since, track.severity = "pending", now, status
                return self._maybe_fire(kpi, track, sample, now)
            return None
        if track.state == "pending":
            if not breaching:
                track.state, track.since, track.severity = "ok", now, "ok"
                return None
            track.severity = worse(track.severity, status)
            return self._maybe_fire(kpi, track, sample, now)
        if sample.value is not None and cleared(kpi, sample.value, unit_type):
            if track.state == "firing":
                track.state, track.since = "clearing", now
            if now - track.since >= kpi.keep_firing_for:
                track.state, track.since, track.severity = "ok", now, "ok"
                return self._change("resolved", kpi, track, sample, "ok", None)
            return None
        track.state = "firing"  # breaching again (or still between clear and threshold)
        new_severity = status if breaching else "warning"
        if new_severity != track.severity:
            previous = track.severity
            track.severity = new_severity
            threshold = threshold_for(kpi, new_severity, unit_type)
            return self._change("severity_changed", kpi, track, sample, new_severity, threshold, previous)
        return None

    def _maybe_fire(self, kpi: KpiDefinition, track: Track, sample: Sample, now: float) -> Change | None:
        if now - track.since < kpi.for_:
            return None
        track.state = "firing"
        track.episode += 1
        track.started = track.since
        severity = sample.status if sample.status in ("warning", "critical") else track.severity
        track.severity = severity
        threshold = threshold_for(kpi, severity, self.unit_types.get(sample.group.key))
        return self._change("fired", kpi, track, sample, severity, threshold)

    def _change(
        self,
        kind: ChangeKind,
        kpi: KpiDefinition,
        track: Track,
        sample: Sample,
        severity: str,
        threshold: float | None,
        previous: str | None = None,
    ) -> Change:
        g = sample.group
        return Change(
            kind=kind,
            name=kpi.id,
            place=g.key,
            labels={
                "kind": "kpi",
                "kpi": kpi.id,
                "perspective": kpi.perspective.value,
                "facility": g.facility,
                "department": g.department,
                "unit": g.unit,
                "severity": severity,
            },
            title=kpi.name,
            severity=severity,
            value=sample.value,
            threshold=threshold,
            unit_of_measure=kpi.unit,
            started=track.started,
            summary=summary(kpi, sample, severity, threshold),
            details={
                "target": kpi.target,
                "direction": kpi.direction.value,
                "window": {"start": sample.window.start.isoformat(), "end": sample.window.end.isoformat()},
                "n": sample.n,
                "as_of": datetime.fromtimestamp(sample.as_of.timestamp(), UTC).isoformat(),
            },
            previous_severity=previous,
        )
