"""Patient experience scored as CMS scores HCAHPS, through the real connectors.

Written from the standard (CMS HCAHPS On-Line, "A Note About HCAHPS 'Boxes'" and the HCAHPS
Star Ratings Technical Notes), not from the code:
- the top box is the most positive answer on each item's own scale: "Always" (Never /
  Sometimes / Usually / Always), "9" or "10" (0-10 rating), "Definitely yes" (recommend),
  "Yes" (discharge information), "Strongly agree" (care transition);
- a composite measure's score is the mean of its items' top-box proportions;
- screener (Q10, Q12, Q15) and About You (Q23-Q29) items are in no measure; "I never pressed
  the call button" (Q4 = 9) is not an answer;
- n is the number of returned surveys (one per discharge), not of answers.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from connectors.feeds.mapping import FeedMapper, RowError
from connectors.feeds.schemas import ExperienceRow
from connectors.fhir.mapping import FHIRMapper
from connectors.fhir.outcome import FHIRInputError
from engine import hcahps
from engine.config import REPO_ROOT, FHIRSettings
from engine.core import Engine
from engine.definitions import Catalogue, load_catalogue
from engine.eventframe import frame_from_records
from engine.events import EventBase, dump_event
from engine.places import Places
from engine.reports import Reporter

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
PLACES = Places.model_validate(
    {
        "facilities": [
            {
                "id": "HX",
                "departments": [
                    {
                        "id": "medicine",
                        "units": [
                            {"id": "4W", "type": "med_surg", "beds": 30},
                            {"id": "3E", "type": "med_surg", "beds": 30},
                        ],
                    }
                ],
            }
        ]
    }
)
UNIT_4W = ("HX", "medicine", "4W")
UNIT_3E = ("HX", "medicine", "3E")
DEPARTMENT = ("HX", "medicine", None)
FACILITY = ("HX", None, None)


# -- each item on its own scale --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("item", "answer", "top"),
    [
        ("nurse_courtesy", "Always", True),
        ("nurse_courtesy", "Usually", False),
        ("nurse_courtesy", "4", True),  # CMS response code 4 = Always
        ("nurse_courtesy", 3, False),
        ("overall_rating", "10", True),
        ("overall_rating", 9, True),
        ("overall_rating", "8", False),  # 8 of 10 is good, but not the top box
        ("overall_rating", 0, False),
        ("overall_rating", "10 Best hospital possible", True),  # as printed on the paper form
        ("nurse_courtesy", "3 Usually", False),
        ("recommend", "Definitely yes", True),
        ("recommend", "Yes, definitely", True),
        ("recommend", "Probably yes", False),
        ("recommend", "4", True),
        ("discharge_help", "Yes", True),
        ("discharge_help", "No", False),
        ("discharge_symptoms", "1", True),  # 1 = Yes, 2 = No
        ("discharge_symptoms", "2", False),
        ("discharge_help", True, True),
        ("ct_preferences", "Strongly agree", True),
        ("ct_preferences", "Agree", False),
        ("room_clean", "always", True),
        ("quiet_at_night", "Sometimes", False),
    ],
)
def test_top_box_is_the_most_positive_answer_of_each_scale(item: str, answer: Any, top: bool) -> None:
    assert hcahps.score(item, answer)[1] is top


def test_screeners_and_does_not_apply_answers_are_never_counted() -> None:
    assert hcahps.score("needed_toilet_help", "Yes") == ("yes", None)  # Q10: a screener
    assert hcahps.score("discharge_destination", "Own home") == ("own_home", None)  # Q15
    assert hcahps.score("call_button", "9")[1] is None  # Q4: I never pressed the call button
    assert hcahps.score("ct_understood_medications", 5)[1] is None  # Q22: no medicine given
    for item in ("needed_toilet_help", "new_medicine", "discharge_destination", "about_race"):
        assert hcahps.ITEMS[item].domain is None
    with pytest.raises(ValueError, match="not an answer"):
        hcahps.score("nurse_courtesy", "Definitely yes")  # another scale's words
    with pytest.raises(ValueError, match="0 to 10"):
        hcahps.score("overall_rating", 11)


def test_the_measures_are_cms_s_ten_with_their_questions() -> None:
    questions = {d: [hcahps.ITEMS[i].number for i in dom.items] for d, dom in hcahps.DOMAINS.items()}
    assert questions == {
        "nurse_communication": [1, 2, 3],
        "doctor_communication": [5, 6, 7],
        "responsiveness": [4, 11],
        "communication_about_medicines": [13, 14],
        "discharge_information": [16, 17],
        "care_transition": [20, 21, 22],
        "cleanliness": [8],
        "quietness": [9],
        "overall_rating": [18],
        "recommend": [19],
    }


# -- a hand-computed scenario through the feed and FHIR mappings -------------------------------------
# Four surveys from unit 4W (S1-S3 from the vendor's feed file, S4 as a FHIR QuestionnaireResponse)
# and one from 3E (S5, feed):
#
#            Q1 courtesy Q2 listen Q3 explain | Q4 call button Q10 screener Q11 toilet | Q18 Q19
#   S1 (4W)  Always      Always    Usually    | 9: never used  Yes          Always     | 10  Definitely yes
#   S2 (4W)  Usually     Always    Always     | Sometimes      No           -          | 8   Probably yes
#   S3 (4W)  Always      Never     Always     | Always         -            -          | 9   Definitely yes
#   S4 (4W)  Always      Usually   Always     | Usually        Yes          Never      | 9   Definitely yes
#   S5 (3E)  Never       Always    Never      | -              -            -          | -   -
#   (S3 also answers About You Q26 and a hospital's own item; neither is in any measure.)
#
# Communication with nurses, 4W: Q1 3/4 = 0.75, Q2 2/4 = 0.5, Q3 3/4 = 0.75
#   -> (0.75 + 0.5 + 0.75) / 3 = 0.666667 -> 66.6667 %, n = 4 surveys
# Responsiveness, 4W: Q4 1/3 (S1's "never pressed" is not an answer), Q11 1/2 (S1, S4 only;
#   the screener's own "Yes"/"No" counts nowhere) -> (1/3 + 1/2) / 2 = 0.416667 -> 41.6667 %,
#   n = 4 (S1 counts through Q11)
# Overall rating 9-10, 4W: 10, 8, 9, 9 -> 3/4 = 75 % (the 8 is not top box), n = 4
# Recommend "Definitely yes", 4W: 3/4 = 75 %, n = 4
# Headline (mean of the measures that have answers), 4W:
#   (66.6667 + 41.6667 + 75 + 75) / 4 = 64.5833 %, n = 4
# Communication with nurses, 3E: Q1 0/1, Q2 1/1, Q3 0/1 -> 1/3 -> 33.3333 %, n = 1
# Communication with nurses, department and facility: answers pooled, not unit means:
#   Q1 3/5 = 0.6, Q2 3/5 = 0.6, Q3 3/5 = 0.6 -> 60 % (the mean of the units would be 50 %), n = 5
EXPECTED: dict[tuple[str, tuple[str, str | None, str | None]], tuple[float, int]] = {
    ("hcahps_nurse_communication", UNIT_4W): (200 / 3, 4),
    ("hcahps_responsiveness", UNIT_4W): (500 / 12, 4),
    ("hcahps_overall_rating", UNIT_4W): (75.0, 4),
    ("hcahps_recommend", UNIT_4W): (75.0, 4),
    ("patient_satisfaction_top_box", UNIT_4W): ((200 / 3 + 500 / 12 + 75 + 75) / 4, 4),
    ("hcahps_nurse_communication", UNIT_3E): (100 / 3, 1),
    ("hcahps_nurse_communication", DEPARTMENT): (60.0, 5),
    ("hcahps_nurse_communication", FACILITY): (60.0, 5),
}


def _rows() -> list[dict[str, Any]]:
    def survey(sid: str, unit: str, discharge: str, answers: dict[str, str]) -> list[dict[str, Any]]:
        return [
            {
                "kind": "survey",
                "time": "2026-11-25T09:00:00",
                "discharge": discharge,
                "unit": unit,
                "survey_id": sid,
                "question": q,
                "answer": a,
            }
            for q, a in answers.items()
        ]

    rows = survey(
        "S1",
        "4W",
        "2026-11-02",
        {"Q1": "Always", "Q2": "Always", "Q3": "Usually", "Q4": "9", "Q10": "Yes", "Q11": "Always"},
    )
    rows += [
        {"kind": "survey", "time": "2026-11-25T09:00:00", "discharge": "2026-11-02", "unit": "4W"}
        | {"survey_id": "S1", "question": "overall_rating", "score": 10},  # the rating as a score
        {"kind": "survey", "time": "2026-11-25T09:00:00", "discharge": "2026-11-02", "unit": "4W"}
        | {"survey_id": "S1", "question": "Q19", "answer": "Definitely yes"},
    ]
    rows += survey(
        "S2",
        "4W",
        "2026-11-05",
        {"Q1": "Usually", "Q2": "4", "Q3": "Always", "Q4": "Sometimes", "Q10": "No"}
        | {"Q18": "8", "Q19": "Probably yes"},
    )
    rows += survey(
        "S3",
        "4W",
        "2026-11-08",
        {"nurse_courtesy": "Always", "nurse-listen": "Never", "Q3": "Always", "Q4": "Always"}
        | {"Q18": "9", "Q19": "4", "Q26": "4", "ward-food": "Good"},
    )
    rows += survey("S5", "3E", "2026-11-10", {"Q1": "Never", "Q2": "Always", "Q3": "1"})
    return rows


def _questionnaire_response() -> dict[str, Any]:
    def item(link: str, **answer: Any) -> dict[str, Any]:
        return {"linkId": link, "answer": [answer]}

    return {
        "resourceType": "QuestionnaireResponse",
        "id": "S4",
        "questionnaire": "http://example.org/Questionnaire/hcahps-2018",
        "status": "completed",
        "authored": "2026-11-26T08:00:00Z",
        "item": [
            item("discharge-date", valueDate="2026-11-12"),
            item("unit", valueString="4W"),
            {
                "linkId": "nurses",
                "item": [
                    item("1", valueCoding={"code": "4", "display": "Always"}),
                    item("2", valueString="Usually"),
                    item("3", valueInteger=4),
                    item("4", valueCoding={"display": "Usually"}),
                ],
            },
            item("10", valueBoolean=True),
            item("11", valueString="Never"),
            item("18", valueInteger=9),
            item("19", valueCoding={"code": "definitely-yes"}),
        ],
    }


def _events() -> list[EventBase]:
    mapper = FeedMapper(PLACES.index(), UTC, NOW)
    events = [e for row in _rows() for e in mapper.events(ExperienceRow.model_validate(row))]
    fhir = FHIRMapper(PLACES.index(), UTC, FHIRSettings())
    fhir.received = NOW
    qr_events, _ = fhir.map(_questionnaire_response())
    assert {e.survey_id for e in qr_events} == {"QuestionnaireResponse/S4"}  # type: ignore[attr-defined]
    return events + qr_events


def _catalogue() -> Catalogue:
    shipped = load_catalogue(REPO_ROOT / "kpi_defs")
    ids = {kpi for kpi, _ in EXPECTED}
    return Catalogue(kpis={k: v for k, v in shipped.kpis.items() if k in ids}, files={})


def test_feed_rows_and_a_questionnaire_response_give_the_hand_computed_scores() -> None:
    events = _events()
    screeners = [e for e in events if getattr(e, "item", None) == "needed_toilet_help"]
    assert len(screeners) == 3 and all(e.top_box is None for e in screeners)  # type: ignore[attr-defined]
    q4 = {e.survey_id: e.top_box for e in events if getattr(e, "item", None) == "call_button"}  # type: ignore[attr-defined]
    assert q4 == {"S1": None, "S2": False, "S3": True, "QuestionnaireResponse/S4": False}
    catalogue = _catalogue()
    engine = Engine(catalogue, PLACES)
    for event in sorted(events, key=lambda e: e.ts):
        engine.process(event)
    # both sources quiet since NOW: their watermarks have moved past the last discharge
    live = {(s.kpi, s.group.key): s for s in engine.live((NOW + timedelta(days=20)).timestamp())}
    for (kpi, key), (value, n) in EXPECTED.items():
        sample = live[(kpi, key)]
        assert sample.value == pytest.approx(value), (kpi, key)
        assert sample.n == n, (kpi, key)
        assert sample.status == "no_data"  # fewer than the 50 surveys the KPIs need
    # the period report from the event log says the same
    reporter = Reporter(frame_from_records([orjson.loads(dump_event(e)) for e in events]), PLACES)
    start, end = NOW - timedelta(days=90), NOW
    for (kpi, key), (value, n) in EXPECTED.items():
        level = "unit" if key[2] else "department" if key[1] else "facility"
        rows = {r.group.key: r for r in reporter.report(catalogue[kpi], start, end, level)}  # type: ignore[arg-type]
        assert rows[key].value == pytest.approx(value) and rows[key].n == n, (kpi, key)


def test_answers_are_dated_by_discharge_and_stored_once_per_survey_and_item() -> None:
    mapper = FeedMapper(PLACES.index(), UTC, NOW)
    row = {"kind": "survey", "time": "2026-11-25T09:00:00", "discharge": "2026-11-02", "unit": "4W"}
    (first,) = mapper.events(
        ExperienceRow.model_validate(row | {"survey_id": "S9", "question": "Q1", "answer": "Always"})
    )
    (again,) = mapper.events(
        ExperienceRow.model_validate(row | {"survey_id": "S9", "question": "Q1", "answer": "Never"})
    )
    assert first.event_time == datetime(2026, 11, 2, tzinfo=UTC)
    assert first.source_id == again.source_id  # a changed answer is not a second answer
    (undated,) = mapper.events(
        ExperienceRow.model_validate(
            {**row, "discharge": None, "survey_id": "S9", "question": "Q2", "answer": "4"}
        )
    )
    assert undated.event_time == datetime(2026, 11, 25, 9, tzinfo=UTC)  # no discharge date: when received


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"answer": "Definitely yes"}, "answer"),  # not on Q1's scale
        ({"answer": "Always", "top_box": False}, "top_box"),  # the vendor's flag contradicts the answer
        ({"answer": "Always", "survey_id": None}, "survey_id"),  # surveys are what is counted
        ({"question": "Q19", "answer": None, "score": 9}, "score"),  # 0-10 is the rating's scale only
    ],
)
def test_feed_rows_that_cannot_be_scored_are_rejected(change: dict[str, Any], field: str) -> None:
    mapper = FeedMapper(PLACES.index(), UTC, NOW)
    row = {"kind": "survey", "time": "2026-11-25T09:00:00", "unit": "4W", "survey_id": "S1", "question": "Q1"}
    with pytest.raises(RowError) as caught:
        mapper.events(ExperienceRow.model_validate(row | change))
    assert caught.value.field == field


def test_fhir_answers_off_scale_are_refused_and_other_questionnaires_are_not_hcahps() -> None:
    fhir = FHIRMapper(PLACES.index(), UTC, FHIRSettings())
    bad = _questionnaire_response()
    bad["item"].append({"linkId": "9", "answer": [{"valueString": "Definitely yes"}]})
    with pytest.raises(FHIRInputError):
        fhir.map(bad)
    other = _questionnaire_response()
    other["questionnaire"] = "http://example.org/Questionnaire/patient-experience-local"
    events, _ = fhir.map(other)
    # numbered items of another experience questionnaire are not HCAHPS questions
    assert not [e for e in events if getattr(e, "item", None) is not None]
