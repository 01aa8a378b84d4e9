"""What the alert service works with: a change in an alert's state, with its labels.

KPI breaches (alerts/evaluator.py) and stopped data feeds (alerts/feeds.py) both produce
Changes; everything downstream (recording, routing, silences, delivery) sees only these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from engine.samples import GroupKey

ChangeKind = Literal["fired", "severity_changed", "resolved"]


@dataclass(frozen=True)
class Change:
    kind: ChangeKind
    name: str  # KPI id, or feed_stale
    place: GroupKey
    labels: dict[str, Any]  # kpi, kind, perspective, facility, department, unit, severity, source
    title: str  # what people read: the KPI's name
    severity: str
    value: float | None
    threshold: float | None
    unit_of_measure: str
    started: float
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    previous_severity: str | None = None

    @property
    def key(self) -> tuple[str, GroupKey]:
        return (self.name, self.place)


def place_label(place: GroupKey) -> str:
    return place[2] or place[1] or place[0]
