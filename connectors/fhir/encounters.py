"""Encounter -> admissions, registrations, transfers, discharges and cancellations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from connectors.fhir.base import ResourceMapper, codes, ref_id
from connectors.fhir.outcome import FHIRInputError, issue
from engine.events import (
    EncounterEvent,
    EventBase,
)
from engine.vocabulary import FHIR_ENCOUNTER_CLASS, fhir_disposition

ENCOUNTER_CLASSES = FHIR_ENCOUNTER_CLASS


class Encounters(ResourceMapper):
    def _Encounter(self, r: dict[str, Any]) -> tuple[list[EventBase], list[str]]:
        rid = r.get("id") or (r.get("identifier") or [{}])[0].get("value")
        if not rid:
            raise FHIRInputError(
                400, [issue("error", "required", "Encounter.id or identifier is needed", "Encounter.id")]
            )
        cls_codes = codes(r.get("class"))
        patient_class = next(
            (ENCOUNTER_CLASSES[c.upper()] for c in cls_codes if c.upper() in ENCOUNTER_CLASSES), None
        )
        period = r.get("period") or {}
        start = self.when(period.get("start"), "Encounter.period.start")
        end = self.when(period.get("end"), "Encounter.period.end")
        stays = []
        for i, loc in enumerate(r.get("location") or []):
            loc_start = self.when(
                (loc.get("period") or {}).get("start"), f"Encounter.location[{i}].period.start"
            )
            stays.append((loc_start, loc.get("location")))
        stays.sort(key=lambda s: s[0] or datetime.min.replace(tzinfo=UTC))
        first_place = stays[0][1] if stays else None
        start = start or (stays[0][0] if stays else None)
        status = r.get("status")
        common = {
            "encounter_id": str(rid),
            "patient_id": ref_id(r.get("subject")),
            "patient_class": patient_class,
        }
        events: list[EventBase] = []
        if status in ("cancelled", "entered-in-error"):
            when = start or self.received
            events.append(
                EncounterEvent.model_validate(
                    {
                        **self.base(r, "cancel", when),
                        "type": "encounter.cancel_admit",
                        **common,
                        **self.place(first_place),
                    }
                )
            )
            return events, []
        if start is None:
            return [], [f"Encounter/{rid}: no period.start or location period: nothing to place in time"]
        if status == "planned":
            return [], [f"Encounter/{rid} is planned: counted when it starts"]
        kind = (
            "encounter.admit" if patient_class in (None, "inpatient", "observation") else "encounter.register"
        )
        # The kind and class are part of the idempotency key: an ED Encounter re-sent as IMP
        # is an admission (at its classHistory start when the server keeps one), not a repeat.
        since: datetime | None = self._class_since(r, cls_codes) or start
        admit_place = first_place
        if patient_class == "inpatient" and self._unit_type(first_place) == "ed":
            # An inpatient who came through the ED: the ED part is an emergency registration at
            # arrival; the admission is when the class changed (classHistory) or, when the server
            # keeps no history, when the patient left the ED (the decision is then not known).
            events.append(
                EncounterEvent.model_validate(
                    {
                        **self.base(r, "encounter.register:emergency", start),
                        "type": "encounter.register",
                        "admit_time": start,
                        **common,
                        "patient_class": "emergency",
                        **self.place(first_place),
                    }
                )
            )
            since = self._class_since(r, cls_codes) or next(
                (t for t, loc in stays if t is not None and self._unit_type(loc) != "ed"), None
            )
            admit_place = next(
                (loc for t, loc in reversed(stays) if t is not None and since and t <= since), None
            )
        if since is not None:
            events.append(
                EncounterEvent.model_validate(
                    {
                        **self.base(r, f"{kind}:{patient_class}", since),
                        "type": kind,
                        "admit_time": start,
                        **common,
                        **self.place(admit_place),
                    }
                )
            )
        for loc_start, loc in stays[1:]:
            if loc_start is not None and loc_start > start:
                events.append(
                    EncounterEvent.model_validate(
                        {
                            **self.base(r, f"transfer-{ref_id(loc) or loc.get('display')}", loc_start),
                            "type": "encounter.transfer",
                            **common,
                            **self.place(loc),
                        }
                    )
                )
        if status == "finished":
            if end is None:
                return events, [f"Encounter/{rid} is finished without period.end: no discharge time"]
            disposition = codes((r.get("hospitalization") or {}).get("dischargeDisposition"))
            last_place = stays[-1][1] if stays else None
            events.append(
                EncounterEvent.model_validate(
                    {
                        **self.base(r, "discharge", end),
                        "type": "encounter.discharge",
                        "discharge_time": end,
                        "disposition": fhir_disposition(disposition[0]) if disposition else None,
                        **common,
                        **self.place(last_place),
                    }
                )
            )
        return events, []

    def _unit_type(self, location: Any) -> str | None:
        """The configured type of a Location's unit (places), if it is one of ours."""
        place = self.place(location)
        return self.places.unit_type(place["facility"], place["unit"])

    def _class_since(self, r: dict[str, Any], current: list[str]) -> datetime | None:
        """When the Encounter took its current class (classHistory), if the server says."""
        for i, entry in enumerate(r.get("classHistory") or []):
            if set(codes(entry.get("class"))) & set(current):
                period = entry.get("period") or {}
                return self.when(period.get("start"), f"Encounter.classHistory[{i}].period.start")
        return None
