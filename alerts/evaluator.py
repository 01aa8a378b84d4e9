"""Threshold evaluation: KPI samples in, alert transitions out.

Per (KPI, place) a small state machine: ok -> pending (breaching, waiting out `for`) ->
firing -> resolved (back past the separate clear level). Below the minimum sample size a
sample is no_data, which never starts, raises or ends a breach. Severity may rise and fall
within one firing episode without a new alert.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from engine.definitions import Catalogue, Direction, KpiDefinition
from engine.samples import GroupKey, Sample

State = Literal["ok", "pending", "firing"]
TransitionKind = Literal["fired", "severity_changed", "resolved"]

SEVERITY_RANK = {"ok": 0, "warning": 1, "critical": 2}


@dataclass
class Track:
    state: State = "ok"
    since: float = 0.0  # when the current state began
    severity: str = "ok"
    episode: int = 0
    last: Sample | None = None
    peak: float | None = None


@dataclass(frozen=True)
class Transition:
    kind: TransitionKind
    kpi: KpiDefinition
    sample: Sample
    severity: str
    episode: int
    started: float
    threshold: float | None
    previous_severity: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def group_key(self) -> GroupKey:
        return self.sample.group.key


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


class Evaluator:
    def __init__(self, catalogue: Catalogue, unit_types: dict[GroupKey, str] | None = None):
        self.catalogue = catalogue
        self.unit_types = unit_types or {}
        self.tracks: dict[tuple[str, GroupKey], Track] = {}

    def evaluate(self, samples: list[Sample], now: float) -> list[Transition]:
        out: list[Transition] = []
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
            transition = self._step(kpi, track, sample, now)
            track.last = sample
            if transition is not None:
                out.append(transition)
        return out

    def _step(self, kpi: KpiDefinition, track: Track, sample: Sample, now: float) -> Transition | None:
        status = sample.status
        if status == "no_data" or sample.value is None:
            return None  # no data is never a breach, nor the end of one
        breaching = status in ("warning", "critical")
        if track.state == "ok":
            if breaching:
                track.state, track.since, track.severity = "pending", now, status
                track.peak = sample.value
                return self._maybe_fire(kpi, track, sample, now)
            return None
        if track.state == "pending":
            if not breaching:
                track.state, track.since, track.severity = "ok", now, "ok"
                return None
            track.severity = max(track.severity, status, key=SEVERITY_RANK.__getitem__)
            return self._maybe_fire(kpi, track, sample, now)
        # firing
        unit_type = self.unit_types.get(sample.group.key)
        if cleared(kpi, sample.value, unit_type):
            started = track.since
            track.state, track.since, track.severity = "ok", now, "ok"
            return Transition("resolved", kpi, sample, "ok", track.episode, started, None)
        new_severity = status if breaching else "warning"
        if new_severity != track.severity:
            previous = track.severity
            track.severity = new_severity
            return Transition(
                "severity_changed",
                kpi,
                sample,
                new_severity,
                track.episode,
                track.since,
                threshold_for(kpi, new_severity, unit_type),
                previous,
            )
        return None

    def _maybe_fire(self, kpi: KpiDefinition, track: Track, sample: Sample, now: float) -> Transition | None:
        if now - track.since < kpi.for_:
            return None
        track.state = "firing"
        track.episode += 1
        severity = sample.status if sample.status in ("warning", "critical") else track.severity
        track.severity = severity
        return Transition(
            "fired", kpi, sample, severity, track.episode, track.since, threshold_for(kpi, severity)
        )
