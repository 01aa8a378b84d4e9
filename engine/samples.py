"""KPI samples: what the engine says about one KPI, one place, one window."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter

from engine.unvalidated import unvalidated

Status = Literal["ok", "warning", "critical", "no_data"]

GroupKey = tuple[str, str | None, str | None]
"""(facility, department, unit); None where the sample is a roll-up above that level."""


class Group(BaseModel):
    model_config = ConfigDict(frozen=True)

    facility: str
    department: str | None = None
    unit: str | None = None

    @property
    def key(self) -> GroupKey:
        return (self.facility, self.department, self.unit)

    @property
    def level(self) -> Literal["facility", "department", "unit"]:
        if self.unit is not None:
            return "unit"
        return "department" if self.department is not None else "facility"

    def label(self) -> str:
        return "/".join(p for p in (self.facility, self.department, self.unit) if p)


class Window(BaseModel):
    model_config = ConfigDict(frozen=True)

    start: datetime
    end: datetime


class Sample(BaseModel):
    model_config = ConfigDict(frozen=True)

    kpi: str
    group: Group
    window: Window
    value: float | None
    numerator: float | None = None
    denominator: float | None = None
    n: int
    status: Status
    as_of: datetime
    final: bool = False
    """True for a closed window (history); False for the live value of the open window."""
    overdue: int = 0
    """Open intervals past their timeout that are counted in the live value."""
    until: datetime | None = None
    """A run of closed windows: this window and every one after it, step by step, up to the
    window that ends at `until`, had the same result (one history row, not one per step)."""


_ALL_SET = set(Sample.model_fields)  # shared by every sample built here, never changed


def computed(
    kpi: str,
    group: Group,
    window: Window,
    value: float | None,
    numerator: float | None,
    denominator: float | None,
    n: int,
    status: Status,
    as_of: datetime,
    final: bool,
    overdue: int = 0,
    until: datetime | None = None,
) -> Sample:
    """A sample of values the engine computed itself, built without validation (as
    EventBase.checked builds events): closing a backfill's windows made half a million
    samples, and validating them was a fifth of the time. Numbers become floats, as
    validation makes them; a count that is not an int goes through validation (a whole
    float becomes an int, anything else is refused). Every field counts as set (nothing
    reads a sample's fields_set)."""
    if type(n) is not int:
        return Sample(
            kpi=kpi, group=group, window=window, value=value, numerator=numerator,
            denominator=denominator, n=n, status=status, as_of=as_of, final=final,
            overdue=overdue, until=until,
        )  # fmt: skip
    return unvalidated(
        Sample,
        {
            "kpi": kpi,
            "group": group,
            "window": window,
            "value": value if value is None or type(value) is float else float(value),
            "numerator": numerator if numerator is None or type(numerator) is float else float(numerator),
            "denominator": (
                denominator if denominator is None or type(denominator) is float else float(denominator)
            ),
            "n": n,
            "status": status,
            "as_of": as_of,
            "final": final,
            "overdue": overdue,
            "until": until,
        },
        _ALL_SET,
    )


def lasting(sample: Sample, until: datetime) -> Sample:
    """The sample as the first window of a run lasting until `until` (model_copy's result,
    without its deep machinery: one for every run of closed windows)."""
    return unvalidated(Sample, {**sample.__dict__, "until": until}, _ALL_SET)


_SAMPLE_LIST = TypeAdapter(list[Sample])


def dump_samples(samples: list[Sample]) -> bytes:
    """Many samples as one JSON array: one Kafka message per facility and tick, not one per
    sample (per-message overhead, not bytes, is what limits a Python producer)."""
    return _SAMPLE_LIST.dump_json(samples)


def load_samples(data: bytes | str) -> list[Sample]:
    return _SAMPLE_LIST.validate_json(data)


def ts_to_dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


@lru_cache(maxsize=65_536)
def group_of(key: GroupKey) -> Group:
    """Groups are immutable and few (one per unit, department, facility): built once each."""
    return Group(facility=key[0], department=key[1], unit=key[2])


def rollups(key: GroupKey) -> tuple[GroupKey, ...]:
    """A unit's own key and the keys of the levels above it."""
    facility, department, unit = key
    keys: list[GroupKey] = [key]
    if unit is not None:
        keys.append((facility, department, None))
    if department is not None or unit is not None:
        keys.append((facility, None, None))
    return tuple(dict.fromkeys(keys))
