"""Patient experience: QuestionnaireResponse -> experience.survey (HCAHPS items scored on
their own scale, engine/hcahps.py)."""

from __future__ import annotations

import json
import re
from typing import Any

from connectors.fhir.base import ResourceMapper, codes
from connectors.fhir.outcome import FHIRInputError, issue
from connectors.pipeline import digest
from engine import hcahps
from engine.events import (
    EventBase,
    ExperienceEvent,
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


class Experience(ResourceMapper):
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
            key = "#" + digest(json.dumps(r, sort_keys=True, default=str))
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
