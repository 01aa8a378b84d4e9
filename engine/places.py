"""The place hierarchy: facility > department > unit, with staffed beds and unit types.

Feeds name units by their own codes (PV1-3 point of care, Location ids); this maps those
codes to our units, gives each unit its department (for roll-ups) and its staffed beds (for
occupancy), and its type (for the legal nurse ratio).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from engine.codes import clean_code
from engine.durations import Duration
from engine.samples import GroupKey
from engine.vocabulary import CENSUS_CLASSES, PatientClassList

log = logging.getLogger(__name__)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CensusRules(_Strict):
    """Who counts where. `patients` is the census behind patient-days and occupancy: NDNQI
    patient days count inpatients and short-stay/observation patients on inpatient units, so
    ED, outpatient, recurring and virtual registrations stay out of it, and so do units of the
    excluded types (the ED's trolleys are not inpatient beds). `patients_present` is everyone
    physically on the unit, any class (the nurse-to-patient ratio counts every patient in the
    nurses' care, the ED's included). A patient on leave of absence (A21 until A22) is in
    neither. A registration that is not in the census and never gets a discharge (a lost A03,
    a recurring outpatient) leaves the unit `register_expiry` after its last message."""

    patient_classes: PatientClassList = Field(default_factory=lambda: list(CENSUS_CLASSES))
    exclude_unit_types: list[str] = Field(
        default_factory=lambda: ["ed", "outpatient", "pacu", "or"],
        description="unit types whose patients are not in the inpatient census",
    )
    register_expiry: Duration = Field(default=24 * 3600.0, description="see above")


class Unit(_Strict):
    id: str
    name: str | None = None
    type: str = Field(default="med_surg", description="icu, step_down, telemetry, ed, med_surg, ...")
    beds: int = Field(default=0, ge=0, description="staffed beds")
    codes: list[str] = Field(default_factory=list, description="other names feeds use for it")


class Department(_Strict):
    id: str
    name: str | None = None
    units: list[Unit] = Field(default_factory=list)


class Facility(_Strict):
    id: str
    name: str | None = None
    codes: list[str] = Field(default_factory=list)
    departments: list[Department] = Field(default_factory=list)


class Places(_Strict):
    facilities: list[Facility] = Field(default_factory=list)
    default_facility: str | None = Field(default=None, description="facility for messages that name none")
    census: CensusRules = Field(default_factory=CensusRules, description="who counts in the census")
    unknown: Literal["accept", "reject"] = Field(
        default="accept",
        description="facilities/units not configured here: accept (a new ward loses no data; bounded by "
        "max_unknown) or reject (dead letters, replayable once the place is added); only when places "
        "are configured",
    )
    max_unknown: int = Field(
        default=50, ge=0, description="distinct unknown unit codes accepted per facility; more are rejected"
    )
    _units: dict[tuple[str, str], tuple[str, str, Unit]] = PrivateAttr(default_factory=dict)
    _facilities: dict[str, str] = PrivateAttr(default_factory=dict)
    _unknown: dict[str, set[str]] = PrivateAttr(default_factory=dict)  # shared by every index()

    @model_validator(mode="after")
    def _unique(self) -> Places:
        seen: set[tuple[str, str]] = set()
        for fac in self.facilities:
            for dep in fac.departments:
                for unit in dep.units:
                    for code in (unit.id, *unit.codes):
                        if (fac.id, code) in seen:
                            raise ValueError(f"unit code {code!r} is used twice in facility {fac.id!r}")
                        seen.add((fac.id, code))
        return self

    def model_post_init(self, _context: object) -> None:
        units: dict[tuple[str, str], tuple[str, str, Unit]] = {}
        facilities: dict[str, str] = {}
        for fac in self.facilities:
            for code in (fac.id, *fac.codes):
                facilities[code] = fac.id
            for dep in fac.departments:
                for unit in dep.units:
                    for code in (unit.id, *unit.codes):
                        units[(fac.id, code)] = (dep.id, unit.id, unit)
        self._units = units
        self._facilities = facilities

    def index(self) -> PlaceIndex:
        """Plain-dict lookups for connectors' hot paths (pydantic private attrs are slow)."""
        return PlaceIndex(
            self._facilities,
            self._units,
            self.default_facility or (self.facilities[0].id if self.facilities else None),
            Unknown(self._unknown, self.unknown, self.max_unknown) if self.facilities else None,
        )

    def unknown_seen(self) -> dict[str, set[str]]:
        """Unknown codes accepted so far: facility ('' for facility codes) -> codes."""
        return self._unknown

    def facility_id(self, code: str | None) -> str | None:
        return self.index().facility_id(code)

    def resolve(self, facility: str, unit_code: str | None) -> tuple[str | None, str | None]:
        """(department, unit id) for a feed's unit code; unknown units keep their code."""
        return self.index().resolve(facility, unit_code)

    def unit(self, facility: str, unit_id: str) -> Unit | None:
        found = self._units.get((facility, unit_id))
        return found[2] if found else None

    def unit_types(self) -> dict[GroupKey, str]:
        return {(f, d, u.id): u.type for f, d, u in self.units()}

    def capacity(self) -> dict[GroupKey, float]:
        return {
            (fac.id, dep.id, unit.id): float(unit.beds)
            for fac in self.facilities
            for dep in fac.departments
            for unit in dep.units
            if unit.beds > 0
        }

    def units(self) -> list[tuple[str, str, Unit]]:
        return [
            (fac.id, dep.id, unit) for fac in self.facilities for dep in fac.departments for unit in dep.units
        ]


class UnknownPlace(ValueError):
    """A facility or unit code that is not configured, refused (places.unknown: reject, or
    beyond places.max_unknown). Connectors answer it as a content error naming the field."""

    def __init__(self, kind: str, code: str, facility: str, why: str):
        self.kind, self.code, self.facility = kind, code, facility
        super().__init__(f"{kind} {code!r} {why}")


class Unknown:
    """Codes not in the configuration, accepted but bounded: a new ward loses no data, a
    sender making up codes cannot grow engine state and metric labels without end."""

    __slots__ = ("max", "mode", "seen")

    def __init__(self, seen: dict[str, set[str]], mode: str, most: int):
        self.seen, self.mode, self.max = seen, mode, most

    def admit(self, facility: str, code: str, kind: str) -> None:
        codes = self.seen.setdefault(facility, set())
        if code in codes:
            return
        if self.mode == "reject":
            raise UnknownPlace(kind, code, facility, "is not configured (places.unknown: reject)")
        if len(codes) >= self.max:
            where = f"in facility {facility!r}" if facility else "facilities"
            raise UnknownPlace(
                kind, code, facility, f"is one more unknown code than places.max_unknown ({self.max}) {where}"
            )
        codes.add(code)
        log.warning("unknown %s code accepted", kind, extra={"facility": facility, "code": code})


class PlaceIndex:
    """Where a feed's facility and unit codes lead: our facility, department and unit."""

    __slots__ = ("default", "facilities", "memo", "units", "unknown")

    def __init__(
        self,
        facilities: dict[str, str],
        units: dict[tuple[str, str], tuple[str, str, Unit]],
        default: str | None,
        unknown: Unknown | None = None,
    ):
        self.facilities = facilities
        self.units = units
        self.default = default
        self.unknown = unknown  # None: no places configured, every code is taken as it is
        self.memo: dict[Any, Any] = {}  # connectors' answers derived from this index

    def facility_id(self, code: str | None, admit: bool = True) -> str | None:
        """Our facility id for a sender's code. An unknown code is admitted (bounded, or
        refused with UnknownPlace) unless admit is False (feeds refuse unknown places anyway)."""
        if code:
            found = self.facilities.get(code)
            if found is not None:
                return found
            code = clean_code(code).strip()
            if not code:
                return self.default
            found = self.facilities.get(code)
            if found is not None:
                return found
            if self.unknown is not None and admit:
                self.unknown.admit("", code, "facility")
            return code
        return self.default

    def resolve(
        self, facility: str, unit_code: str | None, admit: bool = True
    ) -> tuple[str | None, str | None]:
        if not unit_code:
            return None, None
        found = self.units.get((facility, unit_code))
        if found is None:
            unit_code = clean_code(unit_code).strip()
            if not unit_code:
                return None, None
            found = self.units.get((facility, unit_code))
        if found is None:
            if self.unknown is not None and admit:
                self.unknown.admit(facility, unit_code, "unit")
            return None, unit_code
        return found[0], found[1]
