"""Nurse calls: ORU^R40 alerts of IHE PCD Alarm Communication Management."""

from __future__ import annotations

from connectors.hl7v2.base import MapperBase, MappingError, required
from connectors.hl7v2.parser import Segment
from engine.codes import clean_code
from engine.events import NurseCallEvent

NURSE_CALL_START = frozenset({"start", "start only", "start-only", "present"})
NURSE_CALL_ACKNOWLEDGED = frozenset({"acknowledged", "ack", "alert-acknowledged", "alarm-acknowledged"})
NURSE_CALL_END = frozenset({"end", "stop"})
NURSE_CALL_CANCELLED = frozenset({"cancelled", "canceled", "cancel"})
STAFF_PRESENT = frozenset({"present", "start", "arrived", "in", "y", "yes", "true", "1"})


class NurseCalls(MapperBase):
    def nurse_call(self) -> None:
        """ORU^R40 (IHE PCD ACM, PCD-04 Report Alert): one alert per OBR (OBR-3 the alert id);
        its OBX rows carry the event phase (MDC_ATTR_EVENT_PHASE), the alert inactivation
        state (MDC_ATTR_ALARM_INACTIVATION_STATE) and the priority. Mapped:

        - phase start (start only, present) -> nursecall.placed;
        - inactivation state acknowledged (alert-acknowledged) -> nursecall.acknowledged;
        - an OBX reporting staff presence in the room (identifier naming PRESENCE, a value
          such as present / start / Y) -> nursecall.arrived. ACM defines no staff-presence
          observation: this follows nurse-call vendors that send one; others never send it;
        - phase end -> nursecall.ended: the call is over, in the room (ended at the bedside,
          usually by the caregiver who answered it). It is a response, not a withdrawal: the
          response KPIs take whichever of acknowledged, arrived and ended came first;
        - ACM has no value that says the patient withdrew the call: an end looks the same
          whether a nurse answered at the bedside or the patient pressed cancel, so it counts
          as answered then. Only a sender's explicit phase 'cancelled' / 'cancel' (not an ACM
          value) maps to nursecall.cancelled, which drops the call from the response KPIs.

        escalate / de-escalate change the alert's priority (by the device or by the alert
        manager when nobody answered): they answer nothing. Event time: OBR-7, else the first
        OBX-14, else MSH-7, taken as the time of the phase change this message reports."""
        obrs = self.msg.all("OBR")
        if not obrs:
            raise MappingError("ORU^R40 needs an OBR segment per alert", code=100, segment="OBR")
        pid = self.msg.first("PID")
        for obr in obrs:
            call_id = clean_code(obr.first(3)) or clean_code(obr.first(2))
            if not call_id:
                raise required("OBR", 3, "alert identifier (filler order number)")
            phase, state, priority, presence = "", "", "", ""
            seg: Segment | None = obr
            while True:
                seg = self.msg.after(seg, "OBX", stop=("OBR",)) if seg is not None else None
                if seg is None:
                    break
                code = seg.get(3, 2).upper() or seg.first(3).upper()
                value = seg.first(5).lower()
                if "EVENT_PHASE" in code or code == "68481":
                    phase = value
                elif "INACTIVATION_STATE" in code or code == "68483":
                    state = value
                elif "ALARM_PRIORITY" in code or code == "68484":
                    priority = value
                elif "PRESENCE" in code or "PRESENCE" in seg.first(3).upper():
                    presence = value
            place = self.place(self.msg.first("PV1")) if self.msg.first("PV1") else self.place(None)
            when = self.event_time((obr, 7), (self.msg.after(obr, "OBX", stop=("OBR",)), 14))
            common = {
                "call_id": call_id,
                "patient_id": self.patient_id(pid),
                "priority": priority or "normal",
                "event_time": when,
                **place,
            }
            if phase in NURSE_CALL_START:
                self.add(NurseCallEvent, type="nursecall.placed", **common)
            if state in NURSE_CALL_ACKNOWLEDGED or phase == "acknowledged":
                self.add(NurseCallEvent, type="nursecall.acknowledged", **common)
            if presence in STAFF_PRESENT:
                self.add(NurseCallEvent, type="nursecall.arrived", **common)
            if phase in NURSE_CALL_END:
                self.add(NurseCallEvent, type="nursecall.ended", **common)
            elif phase in NURSE_CALL_CANCELLED:
                self.add(NurseCallEvent, type="nursecall.cancelled", **common)
            if not phase and not state and not presence:
                raise MappingError(
                    f"alert {call_id}: no OBX with MDC_ATTR_EVENT_PHASE or MDC_ATTR_ALARM_INACTIVATION_STATE",
                    code=101,
                    segment="OBX",
                    field=3,
                )
