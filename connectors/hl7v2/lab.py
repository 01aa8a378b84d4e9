"""Lab orders and results: ORM^O01 / OML^O21 orders, cancels and specimen steps; ORU^R01
results. A receipt or result that does not state its order's priority or place takes the
ones its order stated (connectors/orders.py)."""

from __future__ import annotations

from typing import Any

from connectors.hl7v2.base import MapperBase, MappingError
from connectors.hl7v2.parser import Segment
from engine.codes import clean_code
from engine.events import LabEvent
from engine.vocabulary import HL7_PRIORITY

PRIORITIES = HL7_PRIORITY

RESULT_STATUS = {
    "F": "final",
    "C": "corrected",
    "P": "preliminary",
    "R": "unverified",
    "I": "pending",
    "S": "partial",
    "A": "partial",
    "X": "cancelled",
    "O": "ordered",
    "D": "deleted",
    "Y": "no_order",
    "Z": "no_record",
}


class Lab(MapperBase):
    def order_groups(self) -> list[tuple[Segment | None, Segment | None]]:
        """(ORC, OBR) pairs in message order; either may be missing in real feeds."""
        groups: list[tuple[Segment | None, Segment | None]] = []
        orc: Segment | None = None
        for seg in self.msg.segments:
            if seg.name == "ORC":
                if orc is not None:
                    groups.append((orc, None))
                orc = seg
            elif seg.name == "OBR":
                groups.append((orc, seg))
                orc = None
        if orc is not None:
            groups.append((orc, None))
        return groups

    def order_id(self, orc: Segment | None, obr: Segment | None) -> str:
        for seg, fld in ((orc, 2), (obr, 2), (orc, 3), (obr, 3)):
            if seg is not None:
                value = clean_code(seg.first(fld)) if self.unsafe else seg.first(fld)
                if value:
                    return value
        where = "ORC" if orc is not None else "OBR"
        raise MappingError(
            f"{where}-2 (placer order number) or {where}-3 (filler order number) is required",
            code=101,
            segment=where,
            field=2,
        )

    def priority(self, orc: Segment | None, obr: Segment | None, default: str | None = None) -> str | None:
        """TQ1-9, ORC-7.6, OBR-27.6 or OBR-5; orders default to routine (HL7's default),
        results say nothing rather than guess."""
        anchor = orc or obr
        tq1 = None
        if anchor is not None and "TQ1" in self.msg.raw:  # a C-speed look before the walk
            tq1 = self.msg.after(anchor, "TQ1", stop=("ORC", "OBR"))
        for seg, fld, comp in ((tq1, 9, 1), (orc, 7, 6), (obr, 27, 6), (obr, 5, 1)):
            if seg is None:
                continue
            code = seg.get(fld, comp)
            if code:
                return PRIORITIES.get(code.upper(), code.lower())
        return default

    _visit: tuple[dict[str, Any], str | None, str | None] | None = None

    def visit(self) -> tuple[dict[str, Any], str | None, str | None]:
        """Place, patient and visit number from the message's PV1 and PID, which all its
        order groups share: read once (a MIMIC result message carries about eight groups)."""
        visit = self._visit
        if visit is None:
            pv1 = self.msg.first("PV1")
            place = self.place(pv1) if pv1 is not None else self.place(None)
            encounter_id = (pv1.first(19) or None) if pv1 is not None else None
            visit = self._visit = (place, self.patient_id(self.msg.first("PID")), encounter_id)
        return visit

    def lab_common(self, orc: Segment | None, obr: Segment | None, order: bool = False) -> dict[str, Any]:
        """order: a new order (its priority defaults to routine, HL7's default). A status
        change, receipt or result that does not state a priority takes the one its order
        stated, when carescore saw the order (MapContext.orders), else None."""
        place, patient_id, encounter_id = self.visit()
        order_id = self.order_id(orc, obr)
        memory = self.ctx.orders
        priority = self.priority(orc, obr)
        if priority is None and not order:
            priority, place = memory.fill(order_id, None, place)
        elif priority is None:
            priority = "routine"
        if priority is not None:
            memory.remember(order_id, priority, place)
        return {
            "order_id": order_id,
            "patient_id": patient_id,
            "encounter_id": encounter_id,
            "priority": priority,
            "test_code": (obr.first(4) or None) if obr is not None else None,
            **place,
        }

    def orders(self) -> None:
        """ORM^O01 / OML^O21: new orders, cancels, specimen status changes."""
        groups = self.order_groups()
        if not groups:
            raise MappingError("an order message needs an ORC or OBR segment", code=100, segment="ORC")
        for orc, obr in groups:
            control = orc.first(1).upper() if orc is not None else "NW"
            new = control in ("NW", "SN", "XO", "RO") or not control
            common = self.lab_common(orc, obr, order=new)
            if new:
                when = self.event_time((orc, 9), (obr, 6))
                self.add(LabEvent, type="lab.order", event_time=when, **common)
            elif control in ("CA", "OC", "CR", "DC", "OD", "DR"):
                when = self.event_time((orc, 9))
                self.add(LabEvent, type="lab.cancel", event_time=when, **common)
            elif control not in ("SC", "SS", "RE", "OK", "CM", "IP"):
                raise MappingError(
                    f"ORC-1 order control {control!r} is not supported",
                    code=103,
                    segment="ORC",
                    field=1,
                )
            self.specimen_steps(obr, common)

    def specimen_steps(self, obr: Segment | None, common: dict[str, Any]) -> None:
        if obr is None:
            return
        collected = self.time(obr, 7, "observation date/time", required_=False)
        if collected is not None:
            self.add(LabEvent, type="lab.collect", event_time=collected, **common)
        received = self.time(obr, 14, "specimen received date/time", required_=False)
        if received is not None:
            self.add(LabEvent, type="lab.receive", event_time=received, **common)

    def results(self) -> None:
        """ORU^R01: one result per OBR, at OBR-22 with status OBR-25."""
        groups = [(orc, obr) for orc, obr in self.order_groups() if obr is not None]
        if not groups:
            raise MappingError("ORU^R01 needs an OBR segment", code=100, segment="OBR")
        for orc, obr in groups:
            assert obr is not None
            common = self.lab_common(orc, obr)
            self.specimen_steps(obr, common)
            status_code = obr.first(25).upper()
            status = RESULT_STATUS.get(status_code, status_code.lower() or "final")
            when = self.event_time((obr, 22))
            self.add(LabEvent, type="lab.result", event_time=when, result_status=status, **common)
