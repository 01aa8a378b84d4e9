"""The monthly review of one place: what a review meeting reads (issue 16 item 6).

Every KPI's value for the month from the period report over the event log (backend.report), the
previous month's beside it and the target it is held to; grouped by perspective and by the
objectives that each KPI measures; every KPI that fell short of its target with its trend over
the last months; the alerts whose breach began in the month; the actions opened and closed in
the month at the place or within it, and the analyses written for the month at the place (what
happened, why, what next: the commentary the meeting reads beside the numbers). Rendered by
api/review_render.py.

A KPI fell short when its month's value is on the wrong side of its target (the place's unit
type's target, else the KPI's); a KPI with no target falls short when its month's status is a
warning or critical.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

from api.backend import Backend
from api.problems import Problem
from api.views import default_facility, parse_period, site_zone
from engine.definitions import PERSPECTIVE_TITLES, Direction, KpiDefinition, Perspective
from engine.reports import Level, ReportRow
from engine.samples import GroupKey
from engine.scorecard import objective_status, perspective_status

TREND_MONTHS = 6
"""Months in a shortfall's trend chart, the reviewed month last."""

_MONTH = re.compile(r"^(19[7-9]\d|[2-9]\d{3})-(0[1-9]|1[0-2])$")
"""yyyy-mm from 1970 on: the trend's months before it are instants a report can be computed over."""


@dataclass(frozen=True)
class Place:
    key: GroupKey  # (facility, department, unit); the department filled in for a unit
    level: Level

    def matches(self, row: ReportRow) -> bool:
        facility, department, unit = self.key
        g = row.group
        if g.facility != facility:
            return False
        if self.level == "facility":
            return True
        return g.department == department and (self.level == "department" or g.unit == unit)


def place_of(backend: Backend, facility: str | None, department: str | None, unit: str | None) -> Place:
    """The place asked for (default: the first facility); a unit's department is looked up."""
    facility = facility or default_facility(backend) or ""
    if unit is not None:
        for f, d, u in backend.places.units():
            if f == facility and u.id == unit and department in (None, d):
                return Place((f, d, unit), "unit")
        return Place((facility, department, unit), "unit")
    if department is not None:
        return Place((facility, department, None), "department")
    return Place((facility, None, None), "facility")


def shift(month: str, by: int) -> str:
    """The month `by` months after (before, if negative) a yyyy-mm month."""
    year, mon = int(month[:4]), int(month[5:])
    index = year * 12 + mon - 1 + by
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def _short(kpi: KpiDefinition, value: float | None, status: str, target: float | None) -> bool:
    if value is None:
        return False
    if target is None:
        return status in ("warning", "critical")
    return value > target if kpi.direction is Direction.lower_is_better else value < target


class Review:
    """One place's review of one month; `month_of` memoises the period reports it reads."""

    def __init__(self, backend: Backend, month: str, place: Place):
        if not _MONTH.match(month):
            raise Problem(422, "Invalid month", f"{month!r} is not a month: use yyyy-mm (e.g. 2026-11)")
        self.backend = backend
        self.month = month
        self.place = place
        self.zone: tzinfo = site_zone(backend)
        self.unit_type = backend.places.unit_types().get(place.key)
        self._rows: dict[tuple[str, str], ReportRow | None] = {}

    def month_of(self, kpi: KpiDefinition, month: str) -> ReportRow | None:
        """The KPI's row for this place in a month (None: no data there)."""
        if (kpi.id, month) not in self._rows:
            start, end = parse_period(month, self.zone)
            rows = self.backend.report(kpi.id, start, end, self.place.level)
            self._rows[kpi.id, month] = next((r for r in rows if self.place.matches(r)), None)
        return self._rows[kpi.id, month]

    def kpi(self, kpi: KpiDefinition) -> dict[str, Any]:
        row, before = self.month_of(kpi, self.month), self.month_of(kpi, shift(self.month, -1))
        target = kpi.levels_for(self.unit_type).target
        value = row.value if row else None
        status = row.status if row else "no_data"
        previous = before.value if before else None
        return {
            "id": kpi.id,
            "name": kpi.name,
            "unit": kpi.unit,
            "direction": kpi.direction.value,
            "target": target,
            "value": value,
            "n": row.n if row else 0,
            "status": status,
            "previous": {"value": previous, "status": before.status if before else "no_data"},
            "change": value - previous if value is not None and previous is not None else None,
            "short": _short(kpi, value, status, target),
        }

    def trend(self, kpi: KpiDefinition) -> list[dict[str, Any]]:
        points = []
        for back in range(TREND_MONTHS - 1, -1, -1):
            month = shift(self.month, -back)
            row = self.month_of(kpi, month)
            points.append(
                {
                    "month": month,
                    "value": row.value if row else None,
                    "status": row.status if row else "no_data",
                }
            )
        return points

    def build(self) -> dict[str, Any]:
        backend = self.backend
        start, end = parse_period(self.month, self.zone)
        items = {kpi.id: self.kpi(kpi) for kpi in backend.catalogue}
        statuses = {k: i["status"] for k, i in items.items()}
        settings = backend.scorecard
        _, department, unit = self.place.key
        held = [
            o for o in backend.catalogue.objectives.values() if o.held_at(department, unit, self.unit_type)
        ]
        perspectives = []
        for persp in Perspective:
            kpis = [items[k.id] for k in backend.catalogue if k.perspective is persp]
            objectives = [o for o in held if o.perspective is persp]
            perspectives.append(
                {
                    "id": persp.value,
                    "title": PERSPECTIVE_TITLES[persp],
                    "status": perspective_status(kpis, settings.status, settings.weights),
                    "objectives": [
                        {
                            "id": o.id,
                            "name": o.name,
                            "status": objective_status(o, statuses),
                            "kpis": [k.kpi for k in o.kpis],
                        }
                        for o in objectives
                    ],
                    "kpis": kpis,
                }
            )
        shortfalls = [
            {**items[kpi.id], "trend": self.trend(kpi)} for kpi in backend.catalogue if items[kpi.id]["short"]
        ]
        facility, department, unit = self.place.key
        return {
            "month": self.month,
            "previous_month": shift(self.month, -1),
            "period": {"from": start.isoformat(), "to": end.isoformat()},
            "group": {"facility": facility, "department": department, "unit": unit},
            "level": self.place.level,
            "computed_from": "event log (period reports)",
            "generated_at": datetime.now(UTC).isoformat(),
            "perspectives": perspectives,
            "shortfalls": shortfalls,
            "alerts": self.alerts(start, end),
            "actions": self.actions(start, end),
            "analyses": self.analyses(),
        }

    def _within(self) -> dict[str, str | None]:
        """The place as column filters: a facility holds its departments' and units' items."""
        facility, department, unit = self.place.key
        level = self.place.level
        return {
            "facility": facility,
            "department": department if level != "facility" else None,
            "unit": unit if level == "unit" else None,
        }

    def actions(self, start: datetime, end: datetime) -> dict[str, list[dict[str, Any]]]:
        """Actions at this place (or within it) opened, and closed (done or cancelled), in the month."""
        marks = self.backend.alerts.plans.markers(None, self._within(), start.timestamp(), end.timestamp())
        return {
            "opened": [m for m in marks if m["event"] == "opened"],
            "closed": [m for m in marks if m["event"].startswith("closed")],
        }

    def analyses(self) -> list[dict[str, Any]]:
        """The month's analyses of this place itself (not its units'), the current version of each."""
        where = self._within()
        key = (where["facility"] or "", where["department"] or "", where["unit"] or "")
        names = {k.id: k.name for k in self.backend.catalogue}
        found = self.backend.alerts.plans.analyses(self.month, key)
        return [{**a, "name": names.get(a["kpi"], a["kpi"])} for a in found]

    def alerts(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Alerts at this place (or within it) whose breach began in the month."""
        found = self.backend.alerts.started_between(
            start.astimezone(UTC).isoformat(), end.astimezone(UTC).isoformat()
        )
        where = {k: v for k, v in self._within().items() if v is not None}
        out = []
        for alert in found:
            a = alert.as_json()
            if all(a[k] == v for k, v in where.items()):
                out.append(a)
        return out
