"""Laboratory orders (ServiceRequest), specimens (Specimen) and results (DiagnosticReport,
Observation); specimens and results take their order's priority and place
(connectors/orders.py)."""

from __future__ import annotations

from typing import Any

from connectors.fhir.base import ResourceMapper, codes, ref_id
from engine.events import (
    EventBase,
    LabEvent,
)
from engine.vocabulary import FHIR_PRIORITY

PRIORITIES = FHIR_PRIORITY
ORDER_INTENTS = {"order", "original-order", "reflex-order", "filler-order", "instance-order"}
RESULT_STATUSES = {
    "final": "final",
    "amended": "corrected",
    "corrected": "corrected",
    "appended": "corrected",
}
LAB_CATEGORIES = {"lab", "laboratory", "108252007", "laboratory procedure"}


def _is_lab(r: dict[str, Any]) -> bool:
    """Laboratory by category (v2-0074 LAB, observation-category laboratory, SNOMED
    108252007) or by a LOINC-coded test."""
    category = r.get("category")
    concepts = category if isinstance(category, list) else [category]
    if any(c in LAB_CATEGORIES for concept in concepts for c in codes(concept)):
        return True
    code = r.get("code") or {}
    return any(
        "loinc.org" in str(c.get("system", "")) for c in code.get("coding") or [] if isinstance(c, dict)
    )


class Labs(ResourceMapper):
    def _order_facts(self, r: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
        """A laboratory ServiceRequest's order id, priority (FHIR's default is routine) and
        place (its locationReference)."""
        order = f"ServiceRequest/{r.get('id')}"
        priority = PRIORITIES.get(r.get("priority") or "routine", "routine")
        return order, priority, self.place((r.get("locationReference") or [None])[0])

    def note_order(self, r: dict[str, Any]) -> None:
        """Remember a ServiceRequest's priority and place before the resources around it in a
        Bundle are mapped (a Specimen may come first); never raises."""
        try:
            if r.get("intent") in ORDER_INTENTS and _is_lab(r) and r.get("id"):
                self.orders.remember(*self._order_facts(r))
        except Exception:  # a hint only: the resource is validated when it is mapped
            return

    def _ServiceRequest(self, r: dict[str, Any]) -> tuple[list[EventBase], list[str]]:
        rid = r.get("id")
        if r.get("intent") not in ORDER_INTENTS:
            return [], [f"ServiceRequest/{rid}: intent {r.get('intent')!r} is not an order"]
        if not _is_lab(r):
            return [], [f"ServiceRequest/{rid}: not a laboratory order (category laboratory or a LOINC code)"]
        order, priority, place = self._order_facts(r)
        self.orders.remember(order, priority, place)
        common = {
            "order_id": order,
            "patient_id": ref_id(r.get("subject")),
            "priority": priority,
            "test_code": next(iter(codes(r.get("code"))), None),
            **place,
        }
        if r.get("status") in ("revoked", "entered-in-error"):
            when = self.when(r.get("authoredOn"), "ServiceRequest.authoredOn") or self.received
            return [
                LabEvent.model_validate({**self.base(r, "cancel", when), "type": "lab.cancel", **common})
            ], []
        authored = self.when(r.get("authoredOn"), "ServiceRequest.authoredOn")
        if authored is None:
            return [], [f"{order}: no authoredOn, so no order time to measure from"]
        return [
            LabEvent.model_validate({**self.base(r, "order", authored), "type": "lab.order", **common})
        ], []

    def _of_order(self, order: str, name: str, notes: list[str]) -> dict[str, Any]:
        """Priority and place for a Specimen or result of `order`: neither resource says them,
        so they come from the ServiceRequest, when carescore has seen it (see
        connectors/orders.py); otherwise priority None and the facility only, with a note."""
        known = self.orders.recall(order)
        if known is None:
            notes.append(
                f"{name}: {order} has not been received, so its priority and unit are unknown: "
                "counted in no STAT or routine in-lab KPI, and at facility level only"
            )
            return {"priority": None, **self.place()}
        return {"priority": known[0], **self.place(), **known[1]}

    def _Specimen(self, r: dict[str, Any]) -> tuple[list[EventBase], list[str]]:
        """Specimen.collection.collected[x] -> lab.collect, Specimen.receivedTime ("time when
        specimen was received for processing": receipt in the laboratory) -> lab.receive."""
        name = f"Specimen/{r.get('id')}"
        requests = [ref_id(x) for x in r.get("request") or []]
        if not requests or not requests[0]:
            return [], [f"{name}: no request (ServiceRequest) to pair with"]
        order = f"ServiceRequest/{requests[0]}"
        notes: list[str] = []
        common = {
            "order_id": order,
            "patient_id": ref_id(r.get("subject")),
            **self._of_order(order, name, notes),
        }
        collection = r.get("collection") or {}
        collected = self.when(
            collection.get("collectedDateTime") or (collection.get("collectedPeriod") or {}).get("start"),
            "Specimen.collection.collectedDateTime",
        )
        received = self.when(r.get("receivedTime"), "Specimen.receivedTime")
        events: list[EventBase] = []
        if collected is not None:
            events.append(
                LabEvent.model_validate(
                    {**self.base(r, "collect", collected), "type": "lab.collect", **common}
                )
            )
        if received is not None:
            events.append(
                LabEvent.model_validate(
                    {**self.base(r, "receive", received), "type": "lab.receive", **common}
                )
            )
        if not events:
            return [], [f"{name}: no collection or received time"]
        return events, notes

    def _result(self, r: dict[str, Any]) -> tuple[list[EventBase], list[str]]:
        name = f"{r['resourceType']}/{r.get('id')}"
        if not _is_lab(r):
            return [], [f"{name}: not a laboratory result (category LAB/laboratory or a LOINC code)"]
        based = [ref_id(x) for x in r.get("basedOn") or [] if "ServiceRequest" in str(x.get("reference", ""))]
        if not based:
            return [], [f"{name}: not basedOn a ServiceRequest: no order to measure turnaround against"]
        status = RESULT_STATUSES.get(r.get("status") or "")
        if status is None:
            return [], [f"{name}: status {r.get('status')!r} is not a final result"]
        issued = self.when(r.get("issued"), f"{r['resourceType']}.issued")
        if issued is None:
            return [], [f"{name}: no issued time"]
        order = f"ServiceRequest/{based[0]}"
        notes: list[str] = []
        event = LabEvent.model_validate(
            {
                **self.base(r, "result", issued),
                "type": "lab.result",
                "order_id": order,
                "patient_id": ref_id(r.get("subject")),
                "result_status": status,
                **self._of_order(order, name, notes),
            }
        )
        return [event], notes

    _DiagnosticReport = _result
    _Observation = _result
