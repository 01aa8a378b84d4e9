"""Charges and procedures: DFT^P03 / P11 financial transactions (FT1) and the procedures
(PR1) they bill."""

from __future__ import annotations

import math
from datetime import UTC
from typing import Any

from connectors.hl7v2.base import MapperBase, MappingError, required
from connectors.hl7v2.parser import Segment
from connectors.pipeline import digest
from engine.codes import clean_code
from engine.events import FinanceEvent, ProcedureEvent


class Charges(MapperBase):
    def procedures(self) -> None:
        """PR1 segments of a DFT: one procedure.performed each, at PR1-5 (see charges())."""
        for pr1, ft1 in self.procedure_rows():
            self.procedure(pr1, ft1)

    def procedure_rows(self) -> list[tuple[Segment, Segment | None]]:
        """(PR1, the FT1 it follows) in message order: a DFT's FINANCIAL group is an FT1 and
        the PR1s of that transaction (v2.3-2.8); a PR1 before any FT1 has none."""
        rows: list[tuple[Segment, Segment | None]] = []
        ft1: Segment | None = None
        for seg in self.msg.segments:
            if seg.name == "FT1":
                ft1 = seg
            elif seg.name == "PR1":
                rows.append((seg, ft1))
        return rows

    def procedure(self, pr1: Segment, ft1: Segment | None) -> None:
        """One procedure performed: at the performing place (PR1-23 treating organizational unit,
        else its transaction's FT1-16/FT1-13, else PV1-3), with a stable identity: PR1-19
        (procedure identifier), else a hash of patient, visit, code (PR1-3) and time (PR1-5).
        Billing resends the PR1 with every charge message: the identity lets the count take it
        once (`distinct: procedure_id`)."""
        pid = self.msg.first("PID")
        pv1 = self.msg.first("PV1")
        when = self.event_time((pr1, 5))
        patient = self.patient_id(pid)
        visit = (pv1.first(19) or None) if pv1 is not None else None
        code = pr1.first(3) or None
        place = self.performed_at(pr1, ft1)
        identifier = pr1.first(19)
        if identifier:
            namespace = pr1.get(19, 2) or pr1.get(19, 3)
            procedure_id = f"{place['facility']}|PR1-19|{namespace}|{identifier}"
        else:
            content = f"{patient}|{visit}|{code}|{when.astimezone(UTC).isoformat()}"
            procedure_id = f"{place['facility']}|{digest(content)}"
        self.add(
            ProcedureEvent,
            type="procedure.performed",
            event_time=when,
            procedure_id=procedure_id,
            procedure_code=code,
            patient_id=patient,
            encounter_id=visit,
            **place,
        )

    def performed_at(self, pr1: Segment | None, ft1: Segment | None) -> dict[str, Any]:
        """The performing cost centre: PR1-23 (v2.7+), FT1-16, FT1-13 department code when it
        is a configured unit, else the patient's location PV1-3."""
        if pr1 is not None and pr1.first(23):
            return self.place(pr1, 23)
        if ft1 is not None and ft1.first(16):
            return self.place(ft1, 16)
        pv1 = self.msg.first("PV1")
        place = self.place(pv1)
        department_code = clean_code(ft1.first(13)) if ft1 is not None else ""
        if department_code:
            department, unit = self.ctx.lookup.unit(
                place["facility"], department_code, admit=False
            )  # a probe
            if unit is not None and department is not None:
                return {"facility": place["facility"], "department": department, "unit": unit, "bed": None}
        return place

    def charges(self) -> None:
        """DFT^P03/P11: one finance.charge per FT1 and one procedure.performed per PR1.

        Charge amount FT1-11 (extended) or FT1-12 x FT1-10; credits, payments and adjustments
        (FT1-6 CD/PY/AJ) are negative; placed at the performing cost centre (performed_at);
        FT1-25 procedure code. A PR1 counts as a procedure only in a charge (FT1-6 CG or empty)
        transaction: the PR1 repeated in a credit or reversal DFT, or one with PR1-20 action
        code D (delete), adds no procedure."""
        ft1s = self.msg.all("FT1")
        if not ft1s:
            raise MappingError("DFT^P03 needs at least one FT1 segment", code=100, segment="FT1")
        any_charge = any(not _is_credit(ft1) for ft1 in ft1s)
        for pr1, owner in self.procedure_rows():
            if pr1.first(20).upper() == "D":
                continue
            if (owner is not None and _is_credit(owner)) or (owner is None and not any_charge):
                continue
            self.procedure(pr1, owner)
        pid = self.msg.first("PID")
        for ft1 in ft1s:
            when = self.event_time((ft1, 4))
            quantity = _number(ft1, 10, "quantity", default=1.0)
            extended = _number(ft1, 11, "extended amount")
            unit_amount = _number(ft1, 12, "unit amount")
            if extended is None and unit_amount is None:
                raise required("FT1", 11, "extended amount (or FT1-12 unit amount)")
            # FT1-10 empty is one unit (_number's default); a quantity of 0 is nothing charged
            amount = (
                extended
                if extended is not None
                else (unit_amount or 0.0) * (quantity if quantity is not None else 1.0)
            )
            if not math.isfinite(amount):  # 1e300 x 1e10: each finite, the product is not
                raise MappingError(
                    f"FT1-12 (unit amount) x FT1-10 (quantity) is not a finite amount ({amount})",
                    code=102,
                    segment="FT1",
                    field=12,
                )
            if _is_credit(ft1) and amount > 0:
                amount = -amount  # credits, payments and adjustments reduce the charges
            procedure = ft1.first(25) or None
            self.add(
                FinanceEvent,
                type="finance.charge",
                event_time=when,
                category="procedure" if procedure else "charge",
                amount=amount,
                currency=ft1.get(11, 2) or "USD",
                procedure_code=procedure,
                patient_id=self.patient_id(pid),
                **self.performed_at(None, ft1),
            )


def _is_credit(ft1: Segment) -> bool:
    """FT1-6 transaction type (HL7 table 0017): CD credit, PY payment, AJ adjustment."""
    return ft1.first(6).upper() in ("CD", "PY", "AJ")


def _number(seg: Segment, fld: int, what: str, default: float | None = None) -> float | None:
    raw = seg.first(fld)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise MappingError(
            f"{seg.name}-{fld} ({what}) {raw!r} is not a number", code=102, segment=seg.name, field=fld
        ) from exc
    if not math.isfinite(value):  # 'nan', 'inf', '1e999': no amount, and JSON cannot carry it
        raise MappingError(
            f"{seg.name}-{fld} ({what}) {raw!r} is not a finite number", code=102, segment=seg.name, field=fld
        )
    return value
