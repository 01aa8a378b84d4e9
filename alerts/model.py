"""What the alert service works with: a change in an alert's state, with its labels, and
the alert itself as the store keeps it.

KPI breaches (alerts/evaluator.py) and stopped data feeds (alerts/feeds.py) both produce
Changes; everything downstream (recording, routing, silences, delivery) sees only these and
the Alerts they become.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
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


AlertState = Literal["firing", "resolved"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    """One alert as the store keeps it: one firing episode of a KPI breach or a stopped feed
    at one place, and what was done about it. Fields in the store's column order, which is
    also the order of the API's JSON (as_json)."""

    id: str
    kpi: str  # KPI id, or feed_stale / unknown_places
    facility: str
    department: str | None = None
    unit: str | None = None
    state: str = "firing"  # firing | resolved
    severity: str
    value: float | None = None
    threshold: float | None = None
    window_start: str | None = None
    window_end: str | None = None
    n: int | None = None
    started_at: str  # ISO 8601: when the breach began
    fired_at: str
    resolved_at: str | None = None
    acked_at: str | None = None
    acked_by: str | None = None
    ack_note: str | None = None
    summary: str
    kind: str = "kpi"  # kpi | feed | action (an overdue action or missed milestone)
    name: str | None = None  # the KPI id, or feed_stale:<source>
    perspective: str | None = None
    source: str | None = None
    tier: int = 0  # escalation tiers reached
    routed_at: str | None = None  # people's first notice queued (group_wait over)
    notified_at: str | None = None  # people's first notice delivered
    last_notified_at: float | None = None
    reminders: int = 0
    owner: str | None = None  # an action plan alert's owner (staff id), routed by scope: owner

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Alert:
        """From a store row (or a dict with at least the required fields)."""
        return cls(**{k: row[k] for k in ALERT_FIELDS if k in row})

    def as_json(self) -> dict[str, Any]:
        """Every field, by name, in column order: the store's row and the API's JSON."""
        return {k: getattr(self, k) for k in ALERT_FIELDS}

    def but(self, **changes: Any) -> Alert:
        """This alert with these fields changed."""
        return replace(self, **changes)

    @property
    def place(self) -> GroupKey:
        return (self.facility, self.department, self.unit)

    @property
    def alert_name(self) -> str:
        """What the alert is about: the KPI id, or feed_stale:<source>."""
        return self.name or self.kpi

    @property
    def labels(self) -> dict[str, Any]:
        """What routes and silences match on."""
        return {
            "kind": self.kind,
            "kpi": self.kpi,
            "perspective": self.perspective,
            "facility": self.facility,
            "department": self.department,
            "unit": self.unit,
            "severity": self.severity,
        }

    # Read by column name, like the row it is stored as (tests and scripts read alerts so).
    def __getitem__(self, key: str) -> Any:
        if key not in ALERT_FIELDS:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in ALERT_FIELDS else default


ALERT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Alert))
