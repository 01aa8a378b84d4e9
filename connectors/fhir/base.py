"""FHIR R4 resources -> canonical events: what every resource type's mapping shares."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, tzinfo
from typing import Any

from connectors.fhir.outcome import FHIRInputError, Issue, issue
from connectors.orders import OrderMemory
from connectors.places import PlaceLookup
from engine.config import FHIRSettings
from engine.events import (
    EventBase,
)
from engine.places import PlaceIndex, UnknownPlace
from engine.timebounds import DEFAULT_BOUNDS, TimeBounds


def ref_id(reference: Any) -> str | None:
    """'Patient/123' -> '123' (also from absolute URLs)."""
    if not isinstance(reference, dict):
        return None
    value = reference.get("reference")
    if isinstance(value, str) and value:
        return value.rstrip("/").split("/")[-1]
    ident = reference.get("identifier")
    if isinstance(ident, dict) and ident.get("value"):
        return str(ident["value"])
    return None


def codes(concept: Any) -> list[str]:
    """All codes (and the text) of a CodeableConcept or Coding, lower-cased."""
    out: list[str] = []
    if isinstance(concept, dict):
        for coding in concept.get("coding", []) or []:
            if isinstance(coding, dict) and coding.get("code"):
                out.append(str(coding["code"]).lower())
        if concept.get("code"):
            out.append(str(concept["code"]).lower())
        if concept.get("text"):
            out.append(str(concept["text"]).lower())
    return out


class ResourceMapper:
    """What every resource type's mapping shares: times, places, event identity, dispatch;
    the resource families (encounters, labs, billing, experience, nursing) add their types
    as `_<resourceType>` methods."""

    def __init__(
        self,
        index: PlaceIndex,
        zone: tzinfo,
        settings: FHIRSettings,
        orders: OrderMemory | None = None,
        bounds: TimeBounds = DEFAULT_BOUNDS,
    ):
        self.index = index
        self.places = PlaceLookup(index)
        self.zone = zone
        self.settings = settings
        self.received = datetime.now(UTC)
        self.orders = orders if orders is not None else OrderMemory()
        self.bounds = bounds

    # -- values ------------------------------------------------------------------------
    def when(self, value: Any, path: str) -> datetime | None:
        """FHIR date / dateTime / instant -> aware datetime (dates at local midnight)."""
        if value is None:
            return None
        if not isinstance(value, str):
            raise FHIRInputError(400, [issue("error", "value", f"{path}: not a date", path)])
        text = value.replace("Z", "+00:00")
        try:
            if len(text) <= 10:
                parts = [int(p) for p in text.split("-")] + [1, 1]
                day = datetime.combine(date(parts[0], parts[1], parts[2]), time(0), self.zone)
                return self._bounded(day, value, path)
            parsed = datetime.fromisoformat(text)
        except ValueError as exc:
            raise FHIRInputError(
                400, [issue("error", "value", f"{path}: {value!r} is not a FHIR dateTime", path)]
            ) from exc
        moment = parsed if parsed.tzinfo else parsed.replace(tzinfo=self.zone)
        return self._bounded(moment, value, path)

    def _bounded(self, moment: datetime, value: str, path: str) -> datetime:
        problem = self.bounds.problem(moment, self.received)
        if problem is not None:
            raise FHIRInputError(
                422, [issue("error", "business-rule", f"{path}: {value!r}: {problem}", path)]
            )
        return moment

    def place(self, location: Any = None) -> dict[str, Any]:
        """The default facility (a resource names none) and the unit a Location reference or
        display names (connectors/places.py)."""
        unit_code = None
        if isinstance(location, dict):
            unit_code = ref_id(location) or location.get("display")
        try:
            return self.places.locate(None, unit_code)
        except UnknownPlace as exc:  # places.unknown: reject, or one unknown code too many
            raise FHIRInputError(
                422, [issue("error", "business-rule", f"location: {exc}", "location")]
            ) from None

    def base(self, resource: dict[str, Any], kind: str, when: datetime) -> dict[str, Any]:
        rid = resource.get("id") or resource.get("_fullUrl") or "anonymous"
        return {
            "event_time": when,
            "received_time": self.received,
            "source": "fhir",
            "source_id": f"fhir:{resource['resourceType']}/{rid}:{kind}:{when.isoformat()}",
        }

    # -- dispatch ----------------------------------------------------------------------
    def map(self, resource: dict[str, Any]) -> tuple[list[EventBase], list[Issue]]:
        handler = getattr(self, f"_{resource['resourceType']}", None)
        if handler is None:
            note = f"{resource['resourceType']} carries no KPI data: nothing stored"
            return [], [issue("information", "not-supported", note)]
        events, notes = handler(resource)
        return events, [issue("information", "informational", n) for n in notes]
