"""30-day readmission as the CMS hospital-wide measure defines its cohort, from HL7 ADT.

CMS HWR (NQF #1789) / HCUP: index admissions exclude in-hospital deaths, discharges against
medical advice and transfers to another acute care hospital; a readmission is an admission
within 30 days of an index discharge, one per index; planned readmissions are not outcomes.
The rate for a period is for the index stays discharged in it. Messages are HL7 v2 text built
field by field in tests/test_census_and_ratio.py and go through the real parser and mapping.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from connectors.hl7v2.mapping import MapContext, map_message
from connectors.hl7v2.parser import parse
from engine.core import Engine
from engine.places import Places
from tests.test_census_and_ratio import CATALOGUE, adt, at, dtm

DAY = 1440  # minutes


def merge(minutes: float, survivor: str, gone: str) -> str:
    """ADT^A40: PID-3 the surviving MRN, MRG-1 the merged-away one."""
    when = dtm(at(minutes))
    return "\r".join(
        [
            f"MSH|^~\\&|EMR|DEMO|CARESCORE|DEMO|{when}||ADT^A40^ADT_A39|MRG-{gone}|P|2.5.1",
            f"EVN|A40|{when}",
            f"PID|1||{survivor}^^^DEMO^MR||Doe^John",
            f"MRG|{gone}^^^DEMO^MR",
        ]
    )


def march_on_4w(places: Places, messages: list[tuple[str, float]]) -> Any:
    """The readmission rate's closed March window on 4W after these ADT messages, each sent
    through the real parser and mapping at its time (minutes), once March's follow-up is over."""
    engine = Engine(CATALOGUE, places)
    for text, minutes in messages:
        for event in map_message(parse(text), MapContext(places, received=at(minutes))):
            engine.process(event)
    out = engine.windows(engine.advance(at(70 * DAY).timestamp()))
    march = datetime(2026, 3, 1, tzinfo=UTC)
    [sample] = [
        s for s in out if s.kpi == "readmission_30d_rate" and s.group.unit == "4W" and s.window.start == march
    ]
    return sample


def test_readmission_cohort_follows_the_cms_definition(places: Places) -> None:
    engine = Engine(CATALOGUE, places)

    def send(text: str, minutes: float) -> None:
        ctx = MapContext(places, received=at(minutes))
        for event in map_message(parse(text), ctx):
            engine.process(event)

    def stay(mrn: str, visit: str, admit: float, discharge: float | None, disposition: str = "01") -> None:
        send(adt("A01", admit, visit, "4W", mrn=mrn), admit)
        if discharge is not None:
            send(adt("A03", discharge, visit, "4W", mrn=mrn, disposition=disposition), discharge)

    stay("P1", "V101", 0, 2 * DAY)  # index d2, readmitted by V102
    stay("P1", "V102", 10 * DAY, 12 * DAY)  # readmission of V101; index d12, readmitted by V103
    stay("P1", "V103", 20 * DAY, 25 * DAY)  # readmission of V102; index d25
    stay("P2", "V201", 1 * DAY, 3 * DAY, "07")  # against medical advice: no index
    stay("P2", "V202", 5 * DAY, 6 * DAY, "20")  # no index before it; died: no index
    stay("P3", "V301", 0, 1 * DAY, "02")  # transferred to an acute hospital: no index
    stay("P4", "V401", 0, 2 * DAY)  # index d2; V402 comes 31 calendar days later: not a readmission
    stay("P5", "V501", 0, 4 * DAY)  # index d4 ...
    stay("P5", "V502", 5 * DAY, None)  # ... readmitted, but the admission was entered in error:
    send(adt("A11", 5 * DAY + 60, "V502", "4W", mrn="P5"), 5 * DAY + 60)
    stay("P6", "V601", 0, 3 * DAY)  # discharged in error ...
    send(adt("A13", 3 * DAY + 120, "V601", "4W", mrn="P6"), 3 * DAY + 120)
    send(adt("A03", 8 * DAY, "V601", "4W", mrn="P6", disposition="01"), 8 * DAY)  # ... index d8
    # NUBC 81: home, with a planned acute care readmission (82 would be a transfer: no index)
    stay("P7", "V701", 0, 2 * DAY, "81")
    stay("P7", "V702", 9 * DAY, None)  # the planned readmission: not counted
    stay("A8", "V801", 0, 2 * DAY)  # index d2 under MRN A8 ...
    send(merge(3 * DAY, "B8", "A8"), 3 * DAY)  # ... A8 merged into B8
    stay("B8", "V802", 6 * DAY, None)  # readmission of V801 (same patient after the merge)
    stay("P9", "V901", 0, 2 * DAY)  # discharged 03-03 08:00, index d2 ...
    stay("P9", "V902", 32 * DAY + 600, None)  # ... readmitted 04-02 18:00: 30 calendar days later
    stay("P4", "V402", 33 * DAY, None)  # 04-03: 31 calendar days after V401

    # P10: discharged home d2, then an A08 corrects the status to expired (20): no index stay
    stay("P10", "V1001", 0, 2 * DAY)
    send(adt("A08", 2 * DAY + 60, "V1001", "4W", mrn="P10", disposition="20"), 2 * DAY + 60)
    # P11: discharged "against advice" d3, corrected by A08 to home (01): an index stay after
    # all, readmitted by V1102 on d10
    stay("P11", "V1101", 0, 3 * DAY, "07")
    send(adt("A08", 3 * DAY + 60, "V1101", "4W", mrn="P11", disposition="01"), 3 * DAY + 60)
    stay("P11", "V1102", 10 * DAY, None)

    out = engine.windows(engine.advance(at(70 * DAY).timestamp()))  # follow-up of March is over
    march = datetime(2026, 3, 1, tzinfo=UTC)
    window = [
        s for s in out if s.kpi == "readmission_30d_rate" and s.group.unit == "4W" and s.window.start == march
    ]
    assert window and window[0].window.end == march + timedelta(days=30)
    # index discharges in 03-01 .. 03-31: V101 d2, V102 d12, V103 d25, V401 d2, V501 d4,
    # V601 d8 (after the A13), V701 d2, V801 d2, V901 d2, V1101 d3 (after its A08) = 10
    # readmitted: V101 (V102), V102 (V103), V801 (V802 after the merge), V901 (V902, 30 days),
    # V1101 (V1102) = 5
    # not: V501 (its readmission was cancelled), V701 (planned), V401 (31 days), V103, V601;
    # V1001 is no index stay (died, by its A08)
    sample = window[0]
    assert (sample.numerator, sample.denominator) == (5, 10)
    assert sample.value == pytest.approx(5 / 10 * 100)


def test_a_discharge_cancelled_after_a_merge_leaves_the_surviving_patients_cohort(places: Places) -> None:
    """CMS HWR cohort, with the identifiers an MPI cleans up: an index stay recorded under a
    merged-away MRN belongs to the survivor (A40), and an A13 naming the survivor withdraws it.
      C1: V1 admitted d0, discharged home d2: index d2 (under C1)
      d3  A40: C1 merged into D1;  d3 + 1 h  A13 for V1 (PID D1): no index stay any more
      D1: V2 admitted d6: within 30 days of V1's discharge, but V1 is no index stay: no
          readmission
      E1: V3 admitted d0, discharged home d2: index d2, not readmitted
    March on 4W: 0 readmitted / 1 index stay = 0 %. (Had the A13 missed V1: 1 / 2 = 50 %.)
    It guards the cohort's encounter map across the A40, which an A13 looks the stay up in."""
    sample = march_on_4w(
        places,
        [
            (adt("A01", 0, "V1", "4W", mrn="C1"), 0),
            (adt("A03", 2 * DAY, "V1", "4W", mrn="C1", disposition="01"), 2 * DAY),
            (merge(3 * DAY, "D1", "C1"), 3 * DAY),
            (adt("A13", 3 * DAY + 60, "V1", "4W", mrn="D1"), 3 * DAY + 60),
            (adt("A01", 6 * DAY, "V2", "4W", mrn="D1"), 6 * DAY),
            (adt("A01", 0, "V3", "4W", mrn="E1"), 0),
            (adt("A03", 2 * DAY, "V3", "4W", mrn="E1", disposition="01"), 2 * DAY),
        ],
    )
    assert (sample.numerator, sample.denominator) == (0, 1)


def test_a_status_corrected_after_a_merge_makes_an_index_stay_of_the_surviving_patient(
    places: Places,
) -> None:
    """CMS HWR: a discharge against medical advice is no index stay; an A08 correcting the
    status to home makes it one. If the MRN was merged in between (A40), the index stay is the
    surviving patient's, and that patient's next admission within 30 days readmits it.
      C2: V4 admitted d0, discharged d2 against advice (07): no index stay
      d3  A40: C2 merged into D2;  d3 + 1 h  A08 for V4 (PID D2) corrects the status to 01:
          index d2
      D2: V5 admitted d6: within 30 days of V4's discharge: a readmission
    March on 4W: 1 readmitted / 1 index stay = 100 %. (Kept under C2, the index stay would
    never meet D2's admission: 0 / 1.)"""
    sample = march_on_4w(
        places,
        [
            (adt("A01", 0, "V4", "4W", mrn="C2"), 0),
            (adt("A03", 2 * DAY, "V4", "4W", mrn="C2", disposition="07"), 2 * DAY),
            (merge(3 * DAY, "D2", "C2"), 3 * DAY),
            (adt("A08", 3 * DAY + 60, "V4", "4W", mrn="D2", disposition="01"), 3 * DAY + 60),
            (adt("A01", 6 * DAY, "V5", "4W", mrn="D2"), 6 * DAY),
        ],
    )
    assert (sample.numerator, sample.denominator) == (1, 1)
