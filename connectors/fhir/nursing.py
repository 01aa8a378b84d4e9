"""Ward operations: nurse calls (Task, Communication) and bed status (Location)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from connectors.fhir.base import ResourceMapper, codes, ref_id
from engine.events import (
    BedEvent,
    EventBase,
    NurseCallEvent,
)

UNAVAILABLE_BEDS = {"C", "K"}  # v2-0116 bed status: closed, contaminated


class Nursing(ResourceMapper):
    def _is_call(self, concepts: list[Any]) -> bool:
        wanted = set(self.settings.nurse_call_codes)
        return any(c in wanted for concept in concepts for c in codes(concept))

    def _Task(self, r: dict[str, Any]) -> tuple[list[EventBase], list[str]]:
        """A nurse call as a Task, mapped as the HL7 ACM feed is: authoredOn -> placed;
        accepted (at lastModified) or in progress / completed (at executionPeriod.start, when
        action was first taken, else lastModified) -> acknowledged; completed -> ended (at
        executionPeriod.end, else lastModified): the call was dealt with, so it counts as a
        response at that time when nothing acknowledged it earlier. cancelled and
        entered-in-error withdraw the call (nursecall.cancelled). rejected (a caregiver
        declined it) and failed do not answer the call: it stays open, overdue, then expires.
        FHIR has no staff-presence element: nursecall.arrived does not come from FHIR. A Task
        without a location counts at its encounter's unit, as a Communication does."""
        if not self._is_call([r.get("code")]):
            return [], [f"Task/{r.get('id')}: not a nurse call (code not in fhir.nurse_call_codes)"]
        common = {
            "call_id": f"Task/{r.get('id')}",
            "patient_id": ref_id(r.get("for")),
            "encounter_id": ref_id(r.get("encounter")),
            "priority": r.get("priority") or "normal",
            **self.place(r.get("location")),
        }
        authored = self.when(r.get("authoredOn"), "Task.authoredOn") or self.received
        modified = self.when(r.get("lastModified"), "Task.lastModified") or authored
        execution = r.get("executionPeriod") or {}
        acted = self.when(execution.get("start"), "Task.executionPeriod.start")
        finished = self.when(execution.get("end"), "Task.executionPeriod.end")

        def call(kind: str, when: datetime) -> NurseCallEvent:
            return NurseCallEvent.model_validate(
                {**self.base(r, kind, when), "type": f"nursecall.{kind}", **common}
            )

        events: list[EventBase] = [call("placed", authored)]
        status = r.get("status")
        if status == "accepted":
            events.append(call("acknowledged", modified))
        elif status == "in-progress":
            events.append(call("acknowledged", acted or modified))
        elif status == "completed":
            if acted is not None:
                events.append(call("acknowledged", acted))
            events.append(call("ended", finished or modified))
        elif status in ("cancelled", "entered-in-error"):
            events.append(call("cancelled", modified))
        return events, []

    def _Communication(self, r: dict[str, Any]) -> tuple[list[EventBase], list[str]]:
        """A nurse call as a Communication: sent -> placed, received -> acknowledged (the
        only response time a Communication carries: when the call reached its recipient),
        entered-in-error -> cancelled. A Communication has no location: it counts at the unit
        its encounter is on then (the engine knows the stays: engine/stays.py), else at the
        facility."""
        if not self._is_call(list(r.get("category") or [])):
            return [], [
                f"Communication/{r.get('id')}: not a nurse call (category not in fhir.nurse_call_codes)"
            ]
        sent = self.when(r.get("sent"), "Communication.sent")
        if sent is None:
            return [], [f"Communication/{r.get('id')}: no sent time"]
        common = {
            "call_id": f"Communication/{r.get('id')}",
            "patient_id": ref_id(r.get("subject")),
            "encounter_id": ref_id(r.get("encounter")),  # the engine places it at its unit
            **self.place(),
        }
        events: list[EventBase] = [
            NurseCallEvent.model_validate(
                {**self.base(r, "placed", sent), "type": "nursecall.placed", **common}
            )
        ]
        if r.get("status") == "entered-in-error":
            events.append(
                NurseCallEvent.model_validate(
                    {**self.base(r, "cancelled", sent), "type": "nursecall.cancelled", **common}
                )
            )
            return events, []
        received = self.when(r.get("received"), "Communication.received")
        if received is not None:
            events.append(
                NurseCallEvent.model_validate(
                    {**self.base(r, "acknowledged", received), "type": "nursecall.acknowledged", **common}
                )
            )
        return events, []

    # -- beds ---------------------------------------------------------------------------------
    def _Location(self, r: dict[str, Any]) -> tuple[list[EventBase], list[str]]:
        if "bd" not in codes(r.get("physicalType")):
            return [], [f"Location/{r.get('id')}: not a bed (physicalType bd)"]
        unit = r.get("partOf")
        status = (r.get("operationalStatus") or {}).get("code") or ""
        available = r.get("status") == "active" and status.upper() not in UNAVAILABLE_BEDS
        when = (
            self.when((r.get("meta") or {}).get("lastUpdated"), "Location.meta.lastUpdated") or self.received
        )
        return [
            BedEvent.model_validate(
                {
                    **self.base(r, f"bed-{'open' if available else 'closed'}", when),
                    "type": "bed.status",
                    "bed_id": f"Location/{r.get('id')}",
                    "available": available,
                    "status": status or None,
                    **self.place(unit),
                }
            )
        ], []
