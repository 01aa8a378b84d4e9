"""The census's level steps: what it emits as an encounter's facts arrive, in order, at the
same instant, and late (inserted between facts already counted).

A fact added after every other one only adds its own steps (engine/census.py keeps where the
last derivation ended); anything else is a full difference. Both must emit exactly what the
facts imply, in the same order, so that patient-days do not depend on which path ran.
"""

from __future__ import annotations

from engine.census import CensusTracker
from engine.places import CensusRules
from engine.stays import ARRIVE, DISCHARGE, LEAVE, MOVE, RETURN

U1 = ("H", "D", "U1")
U2 = ("H", "D", "U2")
ED = ("H", "D", "ED")


def tracker() -> tuple[CensusTracker, list[tuple[str, tuple[str, str, str], float, float]]]:
    emitted: list[tuple[str, tuple[str, str, str], float, float]] = []
    census = CensusTracker(
        lambda level, key, ts, delta: emitted.append((level, key, ts, delta)),
        CensusRules(),
        {U1: "med_surg", U2: "icu", ED: "ed"},
    )
    return census, emitted


def test_facts_in_time_order_emit_each_change_once() -> None:
    census, emitted = tracker()
    book = census.book
    book.add("V1", (100.0, ARRIVE, ED, "emergency"), "P1")
    book.add("V1", (200.0, MOVE, U1, "inpatient"), "P1")
    book.add("V1", (300.0, LEAVE, None, None), "P1")
    book.add("V1", (400.0, RETURN, None, None), "P1")
    book.add("V1", (500.0, DISCHARGE, U1, None), "P1")
    # worked by hand: ED patients are present but not in the census (ED excluded, class E);
    # the move makes the patient present and in the census on U1; leave takes both away,
    # the return brings both back, the discharge ends both
    assert emitted == [
        ("patients_present", ED, 100.0, 1),
        ("patients_present", ED, 200.0, -1),
        ("patients_present", U1, 200.0, 1),
        ("patients", U1, 200.0, 1),
        ("patients_present", U1, 300.0, -1),
        ("patients", U1, 300.0, -1),
        ("patients_present", U1, 400.0, 1),
        ("patients", U1, 400.0, 1),
        ("patients_present", U1, 500.0, -1),
        ("patients", U1, 500.0, -1),
    ]


def test_a_move_at_the_admission_instant_nets_out_the_first_unit() -> None:
    census, emitted = tracker()
    census.book.add("V1", (100.0, ARRIVE, U1, "inpatient"), "P1")
    census.book.add("V1", (100.0, MOVE, U2, None), "P1")
    # by hand: after both facts the steps are +U1, -U1, +U2 at 100; U1 was already counted
    # +1 at 100, so the difference is -1 on U1 and +1 on U2 (in that order), nothing else
    assert emitted[2:] == [
        ("patients_present", U1, 100.0, -1),
        ("patients", U1, 100.0, -1),
        ("patients_present", U2, 100.0, 1),
        ("patients", U2, 100.0, 1),
    ]
    assert emitted[:2] == [("patients_present", U1, 100.0, 1), ("patients", U1, 100.0, 1)]


def test_a_late_transfer_between_counted_facts_moves_the_time_on_each_unit() -> None:
    census, emitted = tracker()
    book = census.book
    book.add("V1", (100.0, ARRIVE, U1, "inpatient"), "P1")
    book.add("V1", (300.0, DISCHARGE, U1, None), "P1")
    emitted.clear()
    book.add("V1", (200.0, MOVE, U2, None), "P1")  # arrives last, happened in between
    # by hand: before, U1 from 100 to 300; now U1 from 100 to 200 and U2 from 200 to 300:
    # U1 no longer leaves at 300 (+1 back), leaves at 200 (-1); U2 +1 at 200, -1 at 300
    # (in the full difference's order: the old steps' keys first, then the new ones)
    assert emitted == [
        ("patients_present", U1, 300.0, 1),
        ("patients", U1, 300.0, 1),
        ("patients_present", U1, 200.0, -1),
        ("patients", U1, 200.0, -1),
        ("patients_present", U2, 200.0, 1),
        ("patients", U2, 200.0, 1),
        ("patients_present", U2, 300.0, -1),
        ("patients", U2, 300.0, -1),
    ]
    emitted.clear()
    book.add("V1", (400.0, ARRIVE, U1, "inpatient"), "P1")  # in order again, after the insert
    assert emitted == [("patients_present", U1, 400.0, 1), ("patients", U1, 400.0, 1)]
    # every unit's level is back to its count of patients now: U1 1, U2 0
    totals: dict[tuple[str, tuple[str, str, str]], float] = {}
    for level, key, _, delta in census_total(census):
        totals[(level, key)] = totals.get((level, key), 0) + delta
    assert totals == {
        ("patients_present", U1): 1,
        ("patients", U1): 1,
        ("patients_present", U2): 0,
        ("patients", U2): 0,
    }


def census_total(census: CensusTracker) -> list[tuple[str, tuple[str, str, str], float, int]]:
    return [(lvl, p, ts, d) for stay in census.book.stays.values() for ts, lvl, p, d in stay.steps]


def test_a_restored_stay_derives_from_all_its_facts() -> None:
    census, _ = tracker()
    census.book.add("V1", (100.0, ARRIVE, U1, "inpatient"), "P1")
    again, emitted_again = tracker()
    again.restore(census.snapshot())  # no note of where the derivation ended
    again.book.add("V1", (200.0, DISCHARGE, U1, None), "P1")
    assert emitted_again == [("patients_present", U1, 200.0, -1), ("patients", U1, 200.0, -1)]
