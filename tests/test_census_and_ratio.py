"""The census behind patient-days and the nurse-to-patient ratio, held to their standards.

Messages are HL7 v2 text written here field by field (not by the project's message builder)
and go through the real parser and mapping; roster rows go through the staffing feed's schema
and mapping. Expected values are worked out by hand in the comments.

Standards:
- NDNQI: patient days count inpatients and short-stay/observation patients on inpatient
  units; ED and outpatient registrations are not patient days; a patient on leave of absence
  is not in the unit. AHA / NHS KH03 inpatient occupancy leaves the ED out.
- California Title 22 §70217(a): licensed nurse-to-patient ratios "at all times", no
  averaging over a shift; only licensed nurses with a patient assignment count (charge nurses
  not while they have none). Patients with no such nurse on shift is the worst breach.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from connectors.feeds.mapping import FeedMapper
from connectors.feeds.schemas import StaffingRow
from connectors.hl7v2.mapping import MapContext, map_message
from connectors.hl7v2.parser import parse
from engine.config import REPO_ROOT
from engine.core import Engine
from engine.definitions import load_catalogue
from engine.eventframe import frame_from_records
from engine.events import EventBase, dump_event
from engine.places import Places
from engine.reports import Reporter
from engine.samples import Sample
from engine.yamlconf import ConfigError

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
CATALOGUE = load_catalogue(REPO_ROOT / "kpi_defs")


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def dtm(when: datetime) -> str:
    return when.strftime("%Y%m%d%H%M%S")


def adt(
    trigger: str,
    minutes: float,
    visit: str,
    unit: str,
    pclass: str = "I",
    ptype: str = "",
    mrn: str | None = None,
    disposition: str = "",
    pv1: dict[int, str] | None = None,
) -> str:
    """An ADT message as an interface engine sends it: EVN-2 recorded time, PID-3 MRN, PV1-2
    class, PV1-3 location, PV1-18 patient type, PV1-19 visit number, PV1-36 discharge
    disposition, and any other PV1 field by number (e.g. 44: admit date/time)."""
    when = dtm(at(minutes))
    fields = {1: "1", 2: pclass, 3: f"{unit}^1^{visit[-2:]}^DEMO", 18: ptype, 19: f"{visit}^^^DEMO^VN"}
    if disposition:
        fields[36] = disposition
    fields.update(pv1 or {})
    segment = "|".join(["PV1", *(fields.get(i, "") for i in range(1, max(fields) + 1))])
    control = f"{visit}-{trigger}-{minutes}"
    return "\r".join(
        [
            f"MSH|^~\\&|EMR|DEMO|CARESCORE|DEMO|{when}||ADT^{trigger}^ADT_A01|{control}|P|2.5.1",
            f"EVN|{trigger}|{when}",
            f"PID|1||{mrn or 'MRN-' + visit}^^^DEMO^MR||Doe^Jane",
            segment,
        ]
    )


class Hospital:
    """The engine fed through the real connectors."""

    def __init__(self, places: Places):
        self.places = places
        self.engine = Engine(CATALOGUE, places)
        self.log: list[EventBase] = []

    def hl7(self, text: str, received_minutes: float | None = None) -> None:
        msg = parse(text)
        when = at(received_minutes) if received_minutes is not None else datetime.now(UTC)
        for event in map_message(msg, MapContext(self.places, received=when)):
            self.engine.process(event)
            self.log.append(event)

    def roster(self, received: datetime, **row: Any) -> None:
        mapper = FeedMapper(self.places.index(), UTC, received)
        for event in mapper.events(StaffingRow.model_validate({"facility": "DEMO", **row})):
            self.engine.process(event)
            self.log.append(event)

    def live(self, kpi: str, minutes: float, unit: str | None, department: str | None = None) -> Sample:
        return pick(self.engine.live(at(minutes).timestamp()), kpi, unit, department)


def pick(samples: list[Sample], kpi: str, unit: str | None, department: str | None = None) -> Sample:
    found = [
        s
        for s in samples
        if s.kpi == kpi and s.group.unit == unit and (unit is not None or s.group.department == department)
    ]
    assert found, f"no {kpi} sample for {unit or department}"
    return found[-1]


def closed(samples: list[Sample], kpi: str, unit: str | None, start_minutes: float) -> Sample:
    want = at(start_minutes)
    found = [s for s in samples if s.window.start == want]
    return pick(found, kpi, unit)


@pytest.fixture
def hospital(places: Places) -> Hospital:
    return Hospital(places)


def test_census_counts_inpatients_and_observation_not_registrations_or_leave(hospital: Hospital) -> None:
    h = hospital
    h.hl7(adt("A01", 0, "V01", "4W"), 0)  # inpatient
    h.hl7(adt("A04", 0, "V02", "4W", pclass="O"), 0)  # outpatient registration on an inpatient unit
    h.hl7(adt("A01", 0, "V03", "4W", pclass="O", ptype="OBS"), 0)  # observation stay
    h.hl7(adt("A04", 0, "V04", "ED", pclass="E"), 0)  # ED visit
    h.hl7(adt("A21", 60, "V01", "4W"), 60)  # leave of absence 09:00 ...
    # live at 09:30: V03 only (V01 on leave, V02 outpatient) -> 1 / 30 staffed beds
    assert h.live("bed_occupancy", 90, "4W").value == pytest.approx(1 / 30 * 100)
    h.hl7(adt("A22", 120, "V01", "4W"), 120)  # ... back at 10:00
    # live at 10:30: V01 back + V03 -> 2 / 30
    assert h.live("bed_occupancy", 150, "4W").value == pytest.approx(2 / 30 * 100)
    # the facility's inpatient occupancy leaves the ED's 16 trolleys out: 2 / (78 - 16)
    assert h.live("bed_occupancy", 150, None, None).value == pytest.approx(2 / 62 * 100)
    out = h.engine.windows(h.engine.advance(at(240).timestamp()))
    # closed hours of occupied bed-hours / staffed bed-hours:
    # 08-09: V01 + V03 = 2 bed-hours / 30 -> 6.67 %; 09-10: V03 only (V01 on leave) -> 3.33 %
    assert closed(out, "bed_occupancy", "4W", 0).value == pytest.approx(2 / 30 * 100)
    assert closed(out, "bed_occupancy", "4W", 60).value == pytest.approx(1 / 30 * 100)


def test_census_follows_a_class_change_and_cancels(hospital: Hospital) -> None:
    h = hospital
    h.hl7(adt("A04", 0, "V05", "4W", pclass="O"), 0)  # registered as an outpatient ...
    assert h.live("bed_occupancy", 10, "4W").value == pytest.approx(0.0)
    h.hl7(adt("A06", 30, "V05", "4W"), 30)  # ... admitted (A06 outpatient -> inpatient) at 08:30
    assert h.live("bed_occupancy", 40, "4W").value == pytest.approx(1 / 30 * 100)
    h.hl7(adt("A01", 0, "V06", "4W"), 0)
    h.hl7(adt("A11", 50, "V06", "4W"), 50)  # admitted in error: never in the census
    h.hl7(adt("A03", 60, "V05", "4W"), 60)
    h.hl7(adt("A13", 70, "V05", "4W"), 70)  # discharge cancelled: still here
    assert h.live("bed_occupancy", 80, "4W").value == pytest.approx(1 / 30 * 100)
    out = h.engine.windows(h.engine.advance(at(240).timestamp()))
    # 08-09: V05 in the census from 08:30 (0.5 bed-hours); V06 withdrawn -> 0.5 / 30
    assert closed(out, "bed_occupancy", "4W", 0).value == pytest.approx(0.5 / 30 * 100)


def staff(h: Hospital, staff_id: str, role: str, unit: str, start: float, end: float | None = None) -> None:
    row: dict[str, Any] = {
        "staff_id": staff_id,
        "role": role,
        "unit": unit,
        "shift_start": at(start).isoformat(),
    }
    if end is not None:
        row["shift_end"] = at(end).isoformat()
    h.roster(at(start if end is None else end), **row)


def test_nurse_ratio_is_never_averaged_and_no_nurse_is_critical(hospital: Hospital) -> None:
    h = hospital
    staff(h, "N1", "RN", "ICU", -60)  # RN on shift from 07:00
    staff(h, "N2", "charge RN", "ICU", -60)  # charge nurse, no patients: not in the ratio
    for minutes, visit in ((0, "V10"), (10, "V11"), (20, "V12")):
        h.hl7(adt("A01", minutes, visit, "ICU"), minutes)
    # 08:30: 3 patients / 1 direct-care nurse = 3 > ICU limit 2 -> critical
    # (counting the charge nurse would show 3 / 2 = 1.5, "ok": the error Title 22 forbids)
    now = h.live("patient_to_nurse_ratio", 30, "ICU")
    assert (now.value, now.status) == (pytest.approx(3.0), "critical")
    staff(h, "N3", "LVN", "ICU", 40)  # LVN from 08:40 (an LVN is a licensed nurse)
    assert h.live("patient_to_nurse_ratio", 45, "ICU").value == pytest.approx(1.5)
    staff(h, "N1", "RN", "ICU", -60, 90)  # both leave at 09:30 (the row again, with its end)
    staff(h, "N3", "LVN", "ICU", 40, 90)
    # 09:45: 3 patients and no direct-care nurse: critical, not no_data; the ratio is infinite
    empty = h.live("patient_to_nurse_ratio", 105, "ICU")
    assert empty.status == "critical" and empty.value is None
    assert (empty.numerator, empty.denominator) == (3, 0)
    # the department and the facility are as bad as their worst unit
    assert h.live("patient_to_nurse_ratio", 105, None, "critical_care").status == "critical"
    assert h.live("patient_to_nurse_ratio", 105, None, None).status == "critical"
    out = h.engine.windows(h.engine.advance(at(12 * 60).timestamp()))
    # closed 08:00-09:00: ratios 1 (08:00), 2 (08:10), 3 (08:20-08:40), 1.5 -> worst 3, not a mean
    hour = closed(out, "patient_to_nurse_ratio", "ICU", 0)
    assert (hour.value, hour.status) == (pytest.approx(3.0), "critical")
    # minutes out of ratio (> 2) in 00:00-12:00 UTC: 08:20-08:40 (20) + 09:30-12:00 no nurse (150)
    shift = closed(out, "nurse_ratio_minutes_out", "ICU", -8 * 60)
    assert shift.value == pytest.approx(170.0)
    assert shift.status == "critical"
    # the period report walks the same steps: worst hour, minutes out, worst unit above
    reporter = Reporter(frame_from_records([orjson.loads(dump_event(e)) for e in h.log]), h.places)
    for kpi, start, end in (("patient_to_nurse_ratio", 0, 60), ("nurse_ratio_minutes_out", -480, 240)):
        rows = {r.group.key: r for r in reporter.report(CATALOGUE[kpi], at(start), at(end), "unit")}
        streamed = closed(out, kpi, "ICU", start)
        assert (rows[streamed.group.key].value, rows[streamed.group.key].status) == (
            pytest.approx(streamed.value),
            streamed.status,
        )
    facility = reporter.report(CATALOGUE["patient_to_nurse_ratio"], at(60), at(120), "facility")
    assert [(r.value, r.status, r.numerator, r.denominator) for r in facility] == [(None, "critical", 3, 0)]


def test_an_empty_unit_is_no_data_not_a_breach(hospital: Hospital) -> None:
    h = hospital
    staff(h, "N1", "RN", "3E", 0)
    h.hl7(adt("A01", 0, "V20", "3E"), 0)
    h.hl7(adt("A03", 30, "V20", "3E"), 30)
    sample = h.live("patient_to_nurse_ratio", 60, "3E")
    assert sample.status == "no_data"


def test_a_department_whose_patient_days_are_taken_back_shows_no_data(hospital: Hospital) -> None:
    """A level above a unit is the sum of its units that have patient-days. When a late
    discharge takes the only patient-days of the month back, the department must say no data:
    before, it kept the last value it had on the board (a CI run showed medicine at 1.5
    patient-days for a month in which nobody had been in house)."""
    h = hospital
    h.hl7(adt("A01", -2 * 1440, "V40", "4W"), -2 * 1440)  # admitted 27 Feb 08:00, still in house
    # live on 1 Mar (the month so far): V40 in house through the whole live window -> its
    # length in hours / 24 patient-days in medicine (about 10 / 24)
    before = h.live("cost_per_patient_day", 120, None, "medicine")
    hours = (before.window.end - before.window.start).total_seconds() / 3600
    assert hours > 9 and before.denominator == pytest.approx(hours / 24)
    h.hl7(adt("A03", -1440, "V40", "4W"), 130)  # the discharge, 28 Feb 08:00, arrives late
    # live at 1 Mar 11:00: nobody was in house in March -> 4W and medicine have no patient-days
    unit = h.live("cost_per_patient_day", 180, "4W")
    # the live window stays March's: a late event after a quiet spell does not take the
    # source's watermark (advanced with the wall clock) back to February
    assert unit.window.start == datetime(2026, 3, 1, tzinfo=UTC)
    assert (unit.denominator, unit.status) == (0, "no_data")
    department = h.live("cost_per_patient_day", 180, None, "medicine")
    assert (department.denominator, department.n, department.status) == (0, 0, "no_data")


def test_an_ed_registration_without_discharge_leaves_after_a_day(hospital: Hospital) -> None:
    h = hospital
    staff(h, "N1", "RN", "ED", 0)
    h.hl7(adt("A04", 0, "V30", "ED", pclass="E"), 0)
    assert h.live("patient_to_nurse_ratio", 10, "ED").value == pytest.approx(1.0)
    h.engine.advance(at(25 * 60).timestamp())  # the A03 never comes: expired at 08:00 + 24 h
    assert h.live("patient_to_nurse_ratio", 25 * 60, "ED").status == "no_data"


def test_every_unit_type_needs_a_legal_limit(places: Places) -> None:
    data = places.model_dump()
    data["facilities"][0]["departments"][0]["units"][0]["type"] = "hospice"
    with pytest.raises(ConfigError) as err:
        Engine(CATALOGUE, Places.model_validate(data))
    assert "unit type 'hospice'" in str(err.value) and "patient_to_nurse_ratio" in str(err.value)


async def test_the_scorecard_shows_patients_with_no_nurse_as_a_breach(service: Any) -> None:
    """Through the real MLLP listener and REST API: an ICU patient and no direct-care nurse on
    shift is critical on the scorecard, shown as 1 patient to 0 nurses, against the ICU's own
    Title 22 target (1.5 here), not 'no data'."""
    import asyncio

    import httpx

    from connectors.hl7v2.client import MLLPClient, ack_code

    now = datetime.now(UTC).replace(microsecond=0)
    text = adt("A01", 0, "V77", "ICU").replace(dtm(at(0)), now.strftime("%Y%m%d%H%M%S"))
    async with MLLPClient("127.0.0.1", service.mllp.port) as client:
        assert ack_code(await client.send(text)) == "AA"
    query = {"facility": "DEMO", "department": "critical_care", "unit": "ICU", "trend": 0}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.api_port}") as api:
        for _ in range(100):  # the next tick publishes it
            card = (await api.get("/api/v1/scorecard", params=query)).json()
            kpis = {k["id"]: k for p in card["perspectives"] for k in p["kpis"]}
            ratio = kpis["patient_to_nurse_ratio"]
            if ratio["status"] != "no_data":
                break
            await asyncio.sleep(0.1)
        assert (ratio["status"], ratio["value"], ratio["numerator"], ratio["denominator"]) == (
            "critical",
            None,
            1,
            0,
        )
        assert ratio["target"] == 1.5 and ratio["by_unit_type"]["icu"]["limit"] == 2
        detail = (await api.get("/api/v1/kpis/patient_to_nurse_ratio", params={"unit": "ICU"})).json()
        assert [v["levels"]["limit"] for v in detail["values"]] == [2]
