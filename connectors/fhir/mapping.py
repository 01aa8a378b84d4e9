"""FHIR R4 resources -> canonical events.

A FHIR resource is a snapshot, sent again whenever it changes, so each event's source_id
is derived from the resource, the kind of event and its time: the same admission in ten
versions of an Encounter is stored once. What maps to what:

- Encounter: period.start -> admit (inpatient) or register (emergency/outpatient); each
  later location[].period.start -> transfer; status finished + period.end -> discharge
  (hospitalization.dischargeDisposition); cancelled / entered-in-error -> cancel_admit.
- ServiceRequest (a laboratory order): authoredOn -> lab.order (priority), revoked -> lab.cancel.
- Specimen: collection -> lab.collect, receivedTime -> lab.receive (request -> the order).
- DiagnosticReport / Observation (basedOn ServiceRequest, final|corrected|amended, issued)
  -> lab.result. Orders are keyed "ServiceRequest/<id>". Specimens and results take the
  priority and place of the ServiceRequest they name (connectors/orders.py), when it was
  received before them (or in the same Bundle).
- Procedure (completed) -> procedure.performed; ChargeItem (priceOverride) and Claim
  (total) -> finance.charge.
- QuestionnaireResponse of an experience questionnaire -> experience.survey per answer;
  HCAHPS items (by linkId) scored on their own scale (engine/hcahps.py), one survey per response.
- Task / Communication with a nurse-call code -> nursecall placed / acknowledged / ended /
  cancelled (see _Task: a completed call is a response, not a withdrawal).
- Location of physical type bed -> bed.status (operationalStatus: closed beds leave the
  staffed-bed count).
Other resource types carry no KPI data: inside a Bundle they are skipped and reported.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, date, datetime, time, tzinfo
from typing import Any

from connectors.fhir.outcome import FHIRInputError, Issue, issue
from connectors.orders import OrderMemory
from engine import hcahps
from engine.config import FHIRSettings
from engine.events import (
    BedEvent,
    EncounterEvent,
    EventBase,
    ExperienceEvent,
    FinanceEvent,
    LabEvent,
    NurseCallEvent,
    ProcedureEvent,
)
from engine.places import PlaceIndex, UnknownPlace
from engine.timebounds import DEFAULT_BOUNDS, TimeBounds
from engine.vocabulary import FHIR_ENCOUNTER_CLASS, FHIR_PRIORITY, fhir_disposition

ENCOUNTER_CLASSES = FHIR_ENCOUNTER_CLASS
PRIORITIES = FHIR_PRIORITY
ORDER_INTENTS = {"order", "original-order", "reflex-order", "filler-order", "instance-order"}
RESULT_STATUSES = {
    "final": "final",
    "amended": "corrected",
    "corrected": "corrected",
    "appended": "corrected",
}
UNAVAILABLE_BEDS = {"C", "K"}  # v2-0116 bed status: closed, contaminated


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


class FHIRMapper:
    def __init__(
        self,
        index: PlaceIndex,
        zone: tzinfo,
        settings: FHIRSettings,
        orders: OrderMemory | None = None,
        bounds: TimeBounds = DEFAULT_BOUNDS,
    ):
        self.index = index
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
        facility = self.index.facility_id(None) or "UNKNOWN"
        unit_code = None
        if isinstance(location, dict):
            unit_code = ref_id(location) or location.get("display")
        try:
            department, unit = self.index.resolve(facility, unit_code)
        except UnknownPlace as exc:  # places.unknown: reject, or one unknown code too many
            raise FHIRInputError(
                422, [issue("error", "business-rule", f"location: {exc}", "location")]
            ) from None
        return {"facility": facility, "department": department, "unit": unit}

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

    # -- encounters --------------------------------------------------------------------
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
        if place["unit"] is None:
            return None
        found = self.index.units.get((place["facility"], place["unit"]))
        return found[2].type if found is not None else None

    def _class_since(self, r: dict[str, Any], current: list[str]) -> datetime | None:
        """When the Encounter took its current class (classHistory), if the server says."""
        for i, entry in enumerate(r.get("classHistory") or []):
            if set(codes(entry.get("class"))) & set(current):
                period = entry.get("period") or {}
                return self.when(period.get("start"), f"Encounter.classHistory[{i}].period.start")
        return None

    # -- labs -----------------------------------------------------------------------------
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
        quantity = float((r.get("quantity") or {}).get("value") or 1)
        when = (
            self.when(r.get("occurrenceDateTime") or r.get("enteredDate"), "ChargeItem.occurrenceDateTime")
            or self.received
        )
        services = [str(s.get("reference", "")) for s in r.get("service") or []]
        category = "procedure" if any("Procedure/" in s for s in services) else "charge"
        return [
            FinanceEvent.model_validate(
                {
                    **self.base(r, "charge", when),
                    "type": "finance.charge",
                    "category": category,
                    "amount": float(price["value"]) * quantity,
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
                    "amount": float(total["value"]),
                    "currency": total.get("currency") or "USD",
                    "patient_id": ref_id(r.get("patient")),
                    **self.place(),
                }
            )
        ], []

    # -- experience -------------------------------------------------------------------------
    def _QuestionnaireResponse(self, r: dict[str, Any]) -> tuple[list[EventBase], list[str]]:
        """A returned patient survey: one experience.survey per answer. HCAHPS items (linkId
        the canonical item id, or, in an HCAHPS questionnaire, the CMS question number: 1, Q1,
        hcahps-q1) are scored on the item's own scale (engine/hcahps.py); About You items are
        not stored. The survey is dated by its discharge date item (linkId discharge-date)
        where present, else by `authored`, and placed by its unit item (linkId unit)."""
        rid = r.get("id")
        questionnaire = str(r.get("questionnaire") or "").lower()
        if not any(marker in questionnaire for marker in self.settings.experience_questionnaires):
            return [], [f"QuestionnaireResponse/{rid}: not a patient-experience questionnaire"]
        if r.get("status") not in ("completed", "amended"):
            return [], [f"QuestionnaireResponse/{rid}: status {r.get('status')}: not final"]
        leaves = _leaves(r.get("item") or [])
        when = self.when(r.get("authored"), "QuestionnaireResponse.authored") or self.received
        location: Any = None
        for item in leaves:
            link = _link(item)
            value = (item.get("answer") or [{}])[0]
            if link in DISCHARGE_LINKS:
                moment = value.get("valueDateTime") or value.get("valueDate")
                when = self.when(moment, f"QuestionnaireResponse.item[{link}].answer") or when
            elif link in UNIT_LINKS:
                location = value.get("valueReference") or {
                    "display": value.get("valueString") or (value.get("valueCoding") or {}).get("code")
                }
        ident = r.get("identifier")
        key = rid or (ident.get("value") if isinstance(ident, dict) else None) or r.get("_fullUrl")
        if not key:  # one survey per response even when it names itself nowhere
            key = "#" + hashlib.sha1(json.dumps(r, sort_keys=True, default=str).encode()).hexdigest()[:20]
        survey = f"QuestionnaireResponse/{key}"
        common = {"type": "experience.survey", "survey_id": survey, **self.place(location)}
        events: list[EventBase] = []
        hcahps_form = "hcahps" in questionnaire
        for item in leaves:
            link = _link(item)
            if link in DISCHARGE_LINKS or link in UNIT_LINKS:
                continue
            hcahps_item = _hcahps_item(item, hcahps_form)
            for answer in (item.get("answer") or [])[:1]:
                if hcahps_item is None:
                    score, top = self._answer(answer)
                    if score is None and top is None:
                        continue
                    fields = {"question": item.get("linkId"), "score": score, "top_box": top}
                    events.append(
                        ExperienceEvent.model_validate(
                            {**self.base(r, f"answer-{item.get('linkId')}", when), **common, **fields}
                        )
                    )
                    continue
                if hcahps_item.role == "about_you":
                    continue  # patient-mix adjustment data: not stored
                label, top = self._hcahps_answer(hcahps_item.id, answer, str(item.get("linkId")))
                events.append(
                    ExperienceEvent.model_validate(
                        {
                            **self.base(r, f"answer-{item.get('linkId')}", when),
                            # one answer per survey and item, whatever later versions say
                            "source_id": f"fhir:{survey}:hcahps:{hcahps_item.id}",
                            **common,
                            "question": item.get("linkId"),
                            "item": hcahps_item.id,
                            "domain": hcahps_item.domain,
                            "answer": label,
                            "top_box": top,
                            "score": float(label) if hcahps_item.scale == "rating" else None,
                        }
                    )
                )
        return events, [] if events else [f"QuestionnaireResponse/{rid}: no scored answers"]

    def _hcahps_answer(self, item: str, answer: dict[str, Any], link: str) -> tuple[str, bool | None]:
        """valueCoding (code, then display), valueString, valueInteger/valueDecimal (the CMS
        response code, or 0-10 for the rating) or valueBoolean (yes/no items), on the item's scale."""
        coding = answer.get("valueCoding") or {}
        candidates = [coding.get("code"), coding.get("display")] if coding else []
        for key in ("valueString", "valueInteger", "valueDecimal", "valueBoolean"):
            if key in answer:
                candidates.append(answer[key])
        problem = f"no answer value for HCAHPS item {item}"
        for raw in candidates:
            if raw is None or raw == "":
                continue
            try:
                return hcahps.score(item, raw)
            except ValueError as exc:
                problem = str(exc)
        path = f"QuestionnaireResponse.item[linkId={link}].answer"
        raise FHIRInputError(400, [issue("error", "value", f"{path}: {problem}", path)])

    def _answer(self, answer: dict[str, Any]) -> tuple[float | None, bool | None]:
        for key in ("valueInteger", "valueDecimal"):
            if isinstance(answer.get(key), int | float):
                value = float(answer[key])
                return value, value >= self.settings.top_box_min
        text = " ".join(codes(answer.get("valueCoding"))) or str(answer.get("valueString") or "").lower()
        if not text:
            return None, None
        return None, any(t == text or t in text.split() for t in self.settings.top_box_answers)

    # -- nurse calls -----------------------------------------------------------------------
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
        FHIR has no staff-presence element: nursecall.arrived does not come from FHIR."""
        if not self._is_call([r.get("code")]):
            return [], [f"Task/{r.get('id')}: not a nurse call (code not in fhir.nurse_call_codes)"]
        common = {
            "call_id": f"Task/{r.get('id')}",
            "patient_id": ref_id(r.get("for")),
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
        entered-in-error -> cancelled."""
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


DISCHARGE_LINKS = frozenset({"discharge-date", "discharge_date", "dischargedate", "discharge"})
UNIT_LINKS = frozenset({"unit", "discharge-unit", "discharge_unit", "dischargeunit"})


def _link(item: dict[str, Any]) -> str:
    return str(item.get("linkId") or "").strip().lower()


def _hcahps_item(item: dict[str, Any], hcahps_form: bool) -> hcahps.Item | None:
    """The HCAHPS item of a QuestionnaireResponse item: its linkId (or definition's tail) is a
    canonical item id, or, in an HCAHPS questionnaire, a CMS question number (1, Q1, hcahps-q1)."""
    for code in (str(item.get("linkId") or ""), str(item.get("definition") or "")):
        tail = re.split(r"[#/:.\-]", code.strip())[-1] if code else ""
        for candidate in dict.fromkeys((code, tail)):
            if not candidate:
                continue
            found = hcahps.lookup(candidate)
            if found is not None and (hcahps_form or not re.fullmatch(r"[qQ]?\d+", candidate.strip())):
                return found
    return None


def _leaves(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for item in items:
        if item.get("answer"):
            out.append(item)
        out.extend(_leaves(item.get("item") or []))
    return out
