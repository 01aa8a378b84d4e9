"""What the plan routers (actions, initiatives, analyses) share: the plan store, places checked
against the configuration, due dates, and refusals as problem JSON naming the field."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from api.backend import Backend, Plans
from api.problems import Problem
from api.views import default_facility, site_zone
from engine.samples import GroupKey

_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class PlanBody(BaseModel):
    """A request body of the plan routes: no field it does not define (created_by, changed_by
    are the principal's), and text either database can store (no NUL, no lone surrogate)."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str):
                if "\x00" in text:
                    raise ValueError("NUL characters are not allowed")
                text.encode("utf-8")  # a lone surrogate: UnicodeEncodeError, a ValueError
        return value


def plans_of(backend: Backend) -> Plans:
    return backend.alerts.plans


def invalid(field: str, message: str) -> Problem:
    """422 like a request that fails validation: detail and errors name the field."""
    return Problem(
        422, "Invalid request", f"{field}: {message}", errors=[{"field": field, "message": message}]
    )


@contextmanager
def refusals() -> Iterator[None]:
    """The store's refusals (an unknown id, a transition not allowed) as problem JSON."""
    try:
        yield
    except ValueError as exc:
        field = getattr(exc, "field", None)
        status = getattr(exc, "status", 422)
        if field is None:
            raise
        if status == 404:
            raise Problem(404, "Not found", str(exc)) from None
        raise invalid(field, str(exc).split(": ", 1)[-1]) from None


def known_place(backend: Backend, facility: str | None, department: str | None, unit: str | None) -> GroupKey:
    """(facility, department, unit) as configured: the first facility by default, a unit's
    department from the configuration; a place not configured is refused (422 naming it)."""
    facility = facility or default_facility(backend)
    if not facility:
        raise invalid("facility", "required: no facility is configured")
    places = backend.places
    if not places.facilities:  # nothing configured: any place the feeds use
        return (facility, department, unit)
    if facility not in {f.id for f in places.facilities}:
        raise invalid("facility", f"unknown facility {facility!r}")
    if unit is not None:
        found = {u.id: d for f, d, u in places.units() if f == facility}
        if unit not in found:
            raise invalid("unit", f"unknown unit {unit!r} in facility {facility!r}")
        if department is not None and department != found[unit]:
            raise invalid("department", f"unit {unit!r} is in department {found[unit]!r}")
        return (facility, found[unit], unit)
    if department is not None and department not in {d for f, d, _ in places.units() if f == facility}:
        raise invalid("department", f"unknown department {department!r} in facility {facility!r}")
    return (facility, department, None)


def due_time(backend: Backend, value: str, field: str = "due") -> float:
    """When something given as due becomes late: a date is due by the end of that day (the
    site's time zone); a date-time at that instant (UTC without an offset)."""
    try:
        if _DAY.match(value):
            after = date.fromisoformat(value) + timedelta(days=1)
            return datetime(after.year, after.month, after.day, tzinfo=site_zone(backend)).timestamp()
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        raise invalid(field, f"{value!r} is not an ISO 8601 date or date-time") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
