"""Procedures performed (Procedure) and charges (ChargeItem, Claim)."""

from __future__ import annotations

import math
from typing import Any

from connectors.fhir.base import ResourceMapper, codes, ref_id
from connectors.fhir.outcome import FHIRInputError, issue
from engine.events import (
    EventBase,
    FinanceEvent,
    ProcedureEvent,
)


class Billing(ResourceMapper):
    def _Procedure(self, r: dict[str, Any]) -> tuple[list[EventBase], list[str]]:
        if r.get("status") != "completed":
            return [], [f"Procedure/{r.get('id')}: status {r.get('status')!r}: not performed"]
        period = r.get("performedPeriod") or {}
        performed = self.when(
            r.get("performedDateTime") or period.get("end") or period.get("start"), "Procedure.performed[x]"
        )
        if performed is None:
            return [], [f"Procedure/{r.get('id')}: no performed time"]
        return [
            ProcedureEvent.model_validate(
                {
                    **self.base(r, "performed", performed),
                    "type": "procedure.performed",
                    "procedure_id": f"fhir:Procedure/{r['id']}" if r.get("id") else None,
                    "procedure_code": next(iter(codes(r.get("code"))), None),
                    "patient_id": ref_id(r.get("subject")),
                    "encounter_id": ref_id(r.get("encounter")),
                    **self.place(r.get("location")),
                }
            )
        ], []

    # -- money -------------------------------------------------------------------------------
    def _ChargeItem(self, r: dict[str, Any]) -> tuple[list[EventBase], list[str]]:
        price = r.get("priceOverride") or {}
        if price.get("value") is None:
            return [], [f"ChargeItem/{r.get('id')}: no priceOverride: the amount is not in the resource"]
        if r.get("status") in ("not-billable", "aborted", "entered-in-error"):
            return [], [f"ChargeItem/{r.get('id')}: status {r.get('status')}: not a charge"]
        when = (
            self.when(r.get("occurrenceDateTime") or r.get("enteredDate"), "ChargeItem.occurrenceDateTime")
            or self.received
        )
        services = [str(s.get("reference", "")) for s in r.get("service") or []]
        category = "procedure" if any("Procedure/" in s for s in services) else "charge"
        # R4: priceOverride is the "total price of the charge overriding the list price
        # associated with the code", already for the whole quantity (R5 moved it to
        # totalPriceComponent): not multiplied by ChargeItem.quantity
        amount = _finite(float(price["value"]), "ChargeItem.priceOverride.value")
        return [
            FinanceEvent.model_validate(
                {
                    **self.base(r, "charge", when),
                    "type": "finance.charge",
                    "category": category,
                    "amount": amount,
                    "currency": price.get("currency") or "USD",
                    "patient_id": ref_id(r.get("subject")),
                    **self.place(),
                }
            )
        ], []

    def _Claim(self, r: dict[str, Any]) -> tuple[list[EventBase], list[str]]:
        total = r.get("total") or {}
        if total.get("value") is None:
            return [], [f"Claim/{r.get('id')}: no total"]
        when = self.when(r.get("created"), "Claim.created") or self.received
        return [
            FinanceEvent.model_validate(
                {
                    **self.base(r, "claim", when),
                    "type": "finance.charge",
                    "category": "claim",
                    "amount": _finite(float(total["value"]), "Claim.total.value"),
                    "currency": total.get("currency") or "USD",
                    "patient_id": ref_id(r.get("patient")),
                    **self.place(),
                }
            )
        ], []


def _finite(amount: float, path: str) -> float:
    """The amount an element gives, if finite: fhir.resources takes a decimal of "1e400", which
    is inf as a float, no amount a cost sum could take, and the event log (JSON) could not keep it."""
    if not math.isfinite(amount):
        text = f"{path}: {amount} is not a finite amount"
        raise FHIRInputError(422, [issue("error", "business-rule", text, path)])
    return amount
