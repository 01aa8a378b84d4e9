"""One rule for places and codes, for every connector.

A sender names a place by its own codes: a facility (MSH-4 or PV1-3.4; a feed's facility
column; a FHIR resource names none) and a unit (PV1-3.1, a Location reference or display, a
feed's unit column). Every connector finds ours the same way, through PlaceLookup:

- codes are cleaned (engine/codes.py `clean_code`: control characters out, ends trimmed);
- no facility code: the default facility (places.default_facility, else the first one);
- an unknown code is admitted, bounded, or refused (places.unknown, places.max_unknown:
  engine/places.py) unless the lookup is told not to admit it (`admit=False`: a probe);
- `strict` (the feeds: a file is sent again after a fix) refuses every place that is not
  configured, naming the ones that are, whenever places are configured.

A refusal is engine.places.UnknownPlace (its `kind` is facility or unit); each connector
answers it as its protocol does: HL7 AE 103 at the field, FHIR 422, a feed row error at the
column.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from engine.places import PlaceIndex, UnknownPlace

Place = dict[str, Any]  # facility, department, unit (and, from HL7, bed)
T = TypeVar("T")

MEMO_SIZE = 100_000


class NotConfigured(UnknownPlace):
    """A place a strict lookup refuses: places are configured and it is not one of them."""

    def __init__(self, kind: str, code: str | None, facility: str, why: str):
        ValueError.__init__(self, f"{kind} {code!r} {why}")
        self.kind, self.code, self.facility = kind, code or "", facility


class PlaceLookup:
    """Our facility, department and unit for a sender's codes."""

    __slots__ = ("index",)

    def __init__(self, index: PlaceIndex):
        self.index = index

    def facility(
        self, code: str | None, *, admit: bool = True, strict: bool = False, fallback: str | None = None
    ) -> str | None:
        """Our facility id for a sender's code (the default facility for none), else
        `fallback`. Raises UnknownPlace when an unknown code is refused."""
        found = self.index.facility_id(code, admit=admit and not strict) or fallback
        if strict and code and self.index.units:
            configured = {f for f, _ in self.index.units}
            if found not in configured:
                known = ", ".join(sorted(configured))
                raise NotConfigured("facility", code, "", f"is not configured (known: {known})")
        return found

    def unit(
        self,
        facility: str,
        code: str | None,
        *,
        admit: bool = True,
        strict: bool = False,
        name_known: bool = True,
    ) -> tuple[str | None, str | None]:
        """(department, unit) for a unit code of our facility: an unknown code keeps its
        (cleaned) code with no department; none at all is (None, None)."""
        department, unit = self.index.resolve(facility, code, admit=admit and not strict)
        if strict and department is None and self.index.units:
            known = ", ".join(sorted(u for f, u in self.index.units if f == facility))
            why = f"is not a unit of {facility}" + (f" (known: {known})" if name_known else "")
            raise NotConfigured("unit", code, facility, why)
        return department, unit

    def locate(
        self,
        facility_code: str | None,
        unit_code: str | None,
        *,
        strict: bool = False,
        fallback: str = "UNKNOWN",
    ) -> Place:
        """facility, department and unit for a facility code (None: the default facility,
        else `fallback`) and a unit code."""
        facility = self.facility(facility_code, strict=strict, fallback=fallback)
        assert facility is not None
        department, unit = self.unit(facility, unit_code, strict=strict)
        return {"facility": facility, "department": department, "unit": unit}

    def unit_type(self, facility: str, unit: str | None) -> str | None:
        """The configured type of one of our units (icu, ed, ...), None for any other."""
        if unit is None:
            return None
        found = self.index.units.get((facility, unit))
        return found[2].type if found is not None else None

    def remembered(self, key: Any, compute: Callable[[], T]) -> T:
        """A connector's answer for a place it has looked up before (a feed names the same few
        hundred beds all day), kept with the index; forgotten all at once past MEMO_SIZE."""
        memo = self.index.memo
        found = memo.get(key)
        if found is None:
            found = compute()
            if len(memo) > MEMO_SIZE:
                memo.clear()
            memo[key] = found
        return found  # type: ignore[no-any-return]
