"""Who hears about which alert: routes.yaml, validated at start.

    routes:       first match wins (unless continue: true); match on kpi, perspective,
                  facility, department, unit, severity, kind (kpi | feed | action | forecast)
    roles:        who holds a role: the on-shift staff with that role in the alert's unit,
                  department or facility (from the staffing feed), else a static fallback;
                  scope owner: the alert's owner (an overdue action's), else the fallback
    people:       contact details by staff id (email, pager); never patient data
    mute_windows: local times when notifications wait (e.g. shift change), then go out

Errors name the file, line and field, like every other configuration file.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, time, tzinfo
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from engine.durations import Duration
from engine.scorecard import Matchers
from engine.yamlconf import ConfigError, load_yaml, validate_file

DEFAULT_ROUTES = Path(__file__).resolve().parent / "routes.yaml"
MATCH_KEYS = ("kpi", "perspective", "facility", "department", "unit", "severity", "kind")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def matches(matchers: Mapping[Any, Any], labels: Mapping[str, Any]) -> bool:
    """Every matcher holds: the label equals the value, or is one of a list of values."""
    for key, expected in matchers.items():
        value = labels.get(key)
        if isinstance(expected, list):
            if value not in expected:
                return False
        elif value != expected:
            return False
    return True


class Tier(_Strict):
    after: Duration = Field(description="unacknowledged this long after firing")
    to: list[str] = Field(min_length=1, description="roles notified at this tier")


class Route(_Strict):
    name: str
    match: Matchers = Field(default_factory=dict)
    receivers: list[str] = Field(min_length=1, description="roles notified when the alert fires")
    escalate: list[Tier] = Field(default_factory=list, description="tiers, in order of `after`")
    group_by: list[Literal["facility", "department", "unit", "kind", "owner"]] = Field(
        default=["facility", "unit"],
        description="alerts with the same values here, firing within group_wait, go out together",
    )
    group_wait: Duration = Field(default=30.0, description="how long to gather a group before sending")
    repeat_interval: Duration = Field(default=4 * 3600.0, description="reminder while unacknowledged")
    mute: list[str] = Field(default_factory=list, description="mute windows (names) that hold notices")
    send_resolved: bool = True
    continue_: bool = Field(default=False, alias="continue", description="also try the next routes")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _tiers_in_order(self) -> Route:
        afters = [t.after for t in self.escalate]
        if afters != sorted(afters):
            raise ValueError("escalate tiers must be in order of `after`")
        return self


class Role(_Strict):
    scope: Literal["unit", "department", "facility", "owner"] = Field(
        description="held per unit (charge nurse), department (nurse manager) or facility; owner: "
        "the alert's owner (an overdue action's), fallback by facility when not in people"
    )
    roster_role: str | None = Field(
        default=None, description="the role's name in the staffing feed (default: the role's id)"
    )
    fallback: dict[str, list[str]] = Field(
        default_factory=dict,
        description="unit / department / facility id -> staff ids, when nobody on shift holds the role",
    )


class Person(_Strict):
    name: str
    email: str | None = None
    pager: str | None = Field(default=None, description="passed to routed webhooks (paging gateway id)")


class Span(_Strict):
    start: time = Field(alias="from")
    end: time = Field(alias="to")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def holds(self, moment: time) -> bool:
        if self.start <= self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end  # across midnight


class RoutesConfig(_Strict):
    routes: list[Route] = Field(default_factory=list)
    roles: dict[str, Role] = Field(default_factory=dict)
    people: dict[str, Person] = Field(default_factory=dict)
    mute_windows: dict[str, list[Span]] = Field(default_factory=dict)

    @field_validator("routes")
    @classmethod
    def _unique(cls, routes: list[Route]) -> list[Route]:
        names = [r.name for r in routes]
        if len(set(names)) != len(names):
            raise ValueError("route names must be unique")
        return routes

    @model_validator(mode="after")
    def _references(self) -> RoutesConfig:
        problems = []
        for route in self.routes:
            for role in [*route.receivers, *(r for t in route.escalate for r in t.to)]:
                if role not in self.roles:
                    problems.append(
                        f"route {route.name}: unknown role {role!r} (roles: {', '.join(self.roles)})"
                    )
            for window in route.mute:
                if window not in self.mute_windows:
                    problems.append(f"route {route.name}: unknown mute window {window!r}")
        for role_id, holder in self.roles.items():
            for staff in (s for ids in holder.fallback.values() for s in ids):
                if staff not in self.people:
                    problems.append(f"role {role_id}: fallback {staff!r} is not in people")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def route_for(self, labels: dict[str, Any]) -> list[Route]:
        found = []
        for route in self.routes:
            if matches(route.match, labels):
                found.append(route)
                if not route.continue_:
                    break
        return found

    def muted(self, route: Route, moment: datetime, zone: tzinfo) -> bool:
        local = moment.astimezone(zone).time()
        return any(span.holds(local) for name in route.mute for span in self.mute_windows[name])

    def mute_ends(self, route: Route, moment: datetime, zone: tzinfo) -> float:
        """When the mute windows holding this moment end (epoch seconds)."""
        local = moment.astimezone(zone)
        ends = []
        for name in route.mute:
            for span in self.mute_windows[name]:
                if span.holds(local.time()):
                    end = local.replace(hour=span.end.hour, minute=span.end.minute, second=0, microsecond=0)
                    if end <= local:
                        end = end.fromtimestamp(end.timestamp() + 86400, end.tzinfo)
                    ends.append(end.timestamp())
        return max(ends, default=moment.timestamp())


def load_routes(path: Path | None) -> RoutesConfig:
    path = path or DEFAULT_ROUTES
    data, lines = load_yaml(path)
    if data is None:
        return RoutesConfig()
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the top level must be a mapping (routes, roles, people, mute_windows)"])
    return validate_file(RoutesConfig, path, data, lines)
