"""ADT: admissions, transfers, discharges, registrations, leaves, swaps and merges."""

from __future__ import annotations

from connectors.hl7v2.base import MapperBase, MappingError, required
from connectors.hl7v2.parser import Segment
from engine.codes import clean_code
from engine.events import EncounterEvent
from engine.vocabulary import hl7_disposition, hl7_patient_class

OCCURRED_AT = {"encounter.admit": 44, "encounter.register": 44, "encounter.discharge": 45}
"""The PV1 field that holds when an ADT event happened: admit (PV1-44) or discharge (PV1-45)
date/time. Later messages repeat PV1-44, so it is read only for the admission itself."""


class ADT(MapperBase):
    def adt(self, kind: str, pid: Segment | None = None, pv1: Segment | None = None) -> None:
        msg = self.msg
        evn = msg.first("EVN")
        pid = pid or msg.first("PID")
        pv1 = pv1 or msg.first("PV1")
        if pv1 is None:
            raise MappingError("PV1 segment is required for ADT events", code=100, segment="PV1")
        place = self.place(pv1)
        prior = self.place(pv1, 6) if pv1.first(6) else {}
        # when it happened, before when it was recorded: EVN-6 (event occurred), the
        # admission's PV1-44 or the discharge's PV1-45, then EVN-2 (recorded), then MSH-7
        occurred = OCCURRED_AT.get(kind)
        self.add(
            EncounterEvent,
            type=kind,
            event_time=self.event_time((evn, 6), (pv1, occurred) if occurred else (None, 0), (evn, 2)),
            encounter_id=self.encounter_id(pid, pv1),
            patient_id=self.patient_id(pid),
            patient_class=hl7_patient_class(pv1.first(2), pv1.first(18)),
            admit_time=self.time(pv1, 44, "admit date/time", required_=False),
            discharge_time=self.time(pv1, 45, "discharge date/time", required_=False),
            prior_unit=prior.get("unit"),
            prior_bed=prior.get("bed"),
            disposition=hl7_disposition(pv1.first(36)),
            **place,
        )

    def swap(self) -> None:
        """A17: two PID/PV1 pairs, each PV1-3 the patient's new bed."""
        pids = self.msg.all("PID")
        pv1s = self.msg.all("PV1")
        if len(pids) < 2 or len(pv1s) < 2:
            raise MappingError("A17 needs two PID/PV1 pairs", code=100, segment="PV1")
        ids = [self.encounter_id(pid, pv1) for pid, pv1 in zip(pids, pv1s, strict=False)]
        for i, (pid, pv1) in enumerate(zip(pids[:2], pv1s[:2], strict=False)):
            self.adt("encounter.swap_beds", pid, pv1)
            last = self.events[-1]
            self.events[-1] = last.model_copy(update={"other_encounter_id": ids[1 - i]})

    def merge(self) -> None:
        mrg = self.msg.first("MRG")
        pid = self.msg.first("PID")
        if mrg is None:
            raise MappingError("A40 needs an MRG segment", code=100, segment="MRG")
        prior = clean_code(mrg.first(1))
        if not prior:
            raise required("MRG", 1, "prior patient identifier")
        place = self.place(self.msg.first("PV1"))
        self.add(
            EncounterEvent,
            type="encounter.merge",
            event_time=self.event_time((self.msg.first("EVN"), 2)),
            encounter_id=clean_code(mrg.first(5)) or prior,
            patient_id=self.patient_id(pid),
            other_encounter_id=prior,
            **place,
        )
