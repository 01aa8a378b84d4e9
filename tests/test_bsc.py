"""Issue 16, the Balanced Scorecard's strategy, benchmarking and compliance, through real HTTP.

A real carescore (embedded runtime) is fed ADT over its MLLP listener and the staffing roster
over the feed API; the objectives, the league table and the compliance view are read over REST.
Expected values are worked by hand in the comments from the definitions:
- patient_to_nurse_ratio: patients present / direct-care licensed nurses on shift, never
  averaged; a closed period's value is its worst ratio; each unit held to its type's legal
  limit, 22 CCR §70217(a) (ICU 1:2, med-surg 1:5, telemetry 1:4).
- nurse_ratio_minutes_out: minutes with the ratio above the limit (unit-minutes when rolled up).
- engine/scorecard.py: a weighted roll-up is the weighted mean severity (ok 0, warning 1,
  critical 2) of the KPIs with data, rounded (>= 1.5 critical, >= 0.5 warning).
- Kaplan & Norton strategy maps: objectives linked bottom-up, learning & growth -> internal
  process -> customer (patient) -> financial.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from carescore.serve import Service
from connectors.hl7v2.client import MLLPClient, ack_code
from engine.benchmarks import league_table, load_peer_benchmarks
from engine.config import REPO_ROOT, Settings, load_settings
from engine.definitions import load_catalogue
from engine.report_rows import ReportRow
from engine.samples import Group
from engine.yamlconf import ConfigError
from tests.test_e2e_embedded import wait_for

CATALOGUE = load_catalogue(REPO_ROOT / "kpi_defs")
# the scenario's first admission: 50 minutes ago, on the minute (event times must not be ahead)
T = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=50)


def at(minutes: float) -> datetime:
    return T + timedelta(minutes=minutes)


def adt_a01(minutes: float, visit: str, unit: str) -> str:
    """An admission as an interface engine sends it: EVN-2 recorded time, PV1-2 class I,
    PV1-3 point of care, PV1-19 visit number."""
    when = at(minutes).strftime("%Y%m%d%H%M%S")
    return "\r".join(
        [
            f"MSH|^~\\&|EMR|DEMO|CARESCORE|DEMO|{when}||ADT^A01^ADT_A01|{visit}-A01|P|2.5.1",
            f"EVN|A01|{when}",
            f"PID|1||MRN-{visit}^^^DEMO^MR||Doe^Jane",
            f"PV1|1|I|{unit}^1^{visit[-2:]}^DEMO||||||||||||||||{visit}^^^DEMO^VN",
        ]
    )


ROSTER = [  # on shift from an hour before the first admission, no end yet
    ("N1", "rn", "ICU"),
    ("N2", "rn", "4W"),
    ("N3", "rn", "4W"),
    ("N4", "rn", "3E"),
]
ADMISSIONS = [  # (minutes after T, visit, unit)
    (0, "V01", "ICU"),  # ICU 1 patient / 1 nurse = 1
    (10, "V02", "ICU"),  # 2 / 1 = 2: at the limit (1:2), not over it
    (20, "V03", "ICU"),  # 3 / 1 = 3 > 2 from T+20: out of ratio
    (0, "V11", "4W"),
    (0, "V12", "4W"),
    (0, "V13", "4W"),
    (0, "V14", "4W"),  # 4W 4 patients / 2 nurses = 2, med-surg limit 5
    (0, "V21", "3E"),  # 3E 1 / 1 = 1, telemetry limit 4
]
# a period from 30 minutes before the first admission to 30 after it (the nurses' shifts began
# before it: the report must carry who is on shift into the period)
PERIOD = f"{at(-30).isoformat()}/{at(30).isoformat()}"


async def feed(svc: Service, api: httpx.AsyncClient) -> None:
    """The roster over the feed API, the admissions over MLLP."""
    start = at(-60).isoformat()
    csv = "\n".join(
        ["staff_id,role,unit,shift_start", *(f"{s},{role},{unit},{start}" for s, role, unit in ROSTER)]
    )
    answer = await api.post(
        "/api/v1/feeds/staffing?filename=roster.csv", content=csv, headers={"Content-Type": "text/csv"}
    )
    assert answer.status_code == 200, answer.text
    async with MLLPClient("127.0.0.1", svc.mllp.port) as client:
        for minutes, visit, unit in ADMISSIONS:
            assert ack_code(await client.send(adt_a01(minutes, visit, unit))) == "AA"


TEST_STRATEGY = """\
objectives:
  - id: occupancy_heavy
    name: ratio 1, occupancy 4
    perspective: internal_process
    kpis: [{kpi: patient_to_nurse_ratio, weight: 1}, {kpi: bed_occupancy, weight: 4}]
    drives: [harm_free]
  - id: ratio_heavy
    name: ratio 3, occupancy 1
    perspective: internal_process
    kpis: [{kpi: patient_to_nurse_ratio, weight: 3}, {kpi: bed_occupancy, weight: 1}]
    drives: [harm_free]
  - id: worst_of_two
    name: worst, occupancy weighted 10
    perspective: internal_process
    status: worst
    kpis: [{kpi: patient_to_nurse_ratio}, {kpi: bed_occupancy, weight: 10}]
  - id: harm_free
    name: no falls data in this scenario
    perspective: patient
    kpis: [{kpi: falls_per_1000_patient_days}]
  # a cascade: the hospital's workforce objective, supported by the ICU's (every unit of type icu)
  # and medicine's own staffing objectives, medicine's supported by 4W's
  - id: workforce
    name: hospital objective, its own KPI without data here
    perspective: learning_growth
    kpis: [{kpi: training_hours_per_nurse}]
  - id: icu_staffing
    name: Safe ICU staffing
    perspective: internal_process
    level: unit
    places: [icu]
    kpis: [{kpi: patient_to_nurse_ratio}]
    supports: {objective: workforce, weight: 2}
  - id: medicine_staffing
    name: Medicine staffed to ratio
    perspective: internal_process
    level: department
    places: [medicine]
    kpis: [{kpi: patient_to_nurse_ratio}]
    supports: {objective: workforce}
  - id: ward_beds
    name: 4W's beds
    perspective: internal_process
    level: unit
    places: [4W]
    kpis: [{kpi: bed_occupancy}]
    supports: {objective: medicine_staffing, weight: 3}
"""


@pytest.fixture
async def hospital(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> AsyncIterator[tuple[Service, httpx.AsyncClient]]:
    """carescore with the packaged KPIs, a strategy of test objectives and a peer benchmark set."""
    defs = tmp_path / "kpi_defs"
    shutil.copytree(REPO_ROOT / "kpi_defs", defs)
    (defs / "objectives" / "strategy.yaml").write_text(TEST_STRATEGY)
    peers = tmp_path / "peers.csv"
    peers.write_text(
        "kpi,value,source,year,peer_group\n"
        "patient_to_nurse_ratio,2.5,Test peer file (not a published figure),2025,test peers\n"
    )
    svc = Service(settings_for(kpi_defs=defs, scorecard={"benchmarks": [peers]}))
    await svc.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{svc.api_port}") as api:
            await feed(svc, api)
            yield svc, api
    finally:
        await svc.stop()


async def _objectives(api: httpx.AsyncClient, **place: str) -> dict[str, Any]:
    """The objectives once the tick has published the ICU's ratio of 3 (all three admitted)."""

    async def ready() -> dict[str, Any] | None:
        body = (await api.get("/api/v1/objectives", params=place)).json()
        kpis = {k["id"]: k for o in body["objectives"] for k in o["kpis"]}
        ratio = kpis["patient_to_nurse_ratio"]
        settled = ratio["value"] is not None and kpis["bed_occupancy"]["status"] != "no_data"
        return body if settled and (place.get("unit") != "ICU" or ratio["value"] == 3) else None

    result: dict[str, Any] = await wait_for(ready)
    return result


async def test_objectives_roll_their_kpis_up_with_their_weights(hospital: Any) -> None:
    _, api = hospital
    icu = await _objectives(api, facility="DEMO", department="critical_care", unit="ICU")
    by_id = {o["id"]: o for o in icu["objectives"]}
    kpis = {k["id"]: k for k in by_id["ratio_heavy"]["kpis"]}
    # ICU now: 3 patients / 1 nurse = 3 >= critical 2.01 (ICU); occupancy 3 of 12 beds at most
    # (25 %), under warning 95: ok
    assert (kpis["patient_to_nurse_ratio"]["value"], kpis["patient_to_nurse_ratio"]["status"]) == (
        3,
        "critical",
    )
    assert kpis["bed_occupancy"]["status"] == "ok" and kpis["bed_occupancy"]["value"] <= 25
    # weighted: (1 x 2 + 4 x 0) / 5 = 0.4 < 0.5 -> ok (the worst would be critical, the plain mean
    # (2 + 0) / 2 = 1 a warning: the weights decide)
    assert by_id["occupancy_heavy"]["status"] == "ok"
    # (3 x 2 + 1 x 0) / 4 = 1.5 -> critical
    assert by_id["ratio_heavy"]["status"] == "critical"
    # status: worst ignores the weights: critical
    assert by_id["worst_of_two"]["status"] == "critical"
    # no falls data: a KPI without data does not count, an objective with none is no_data
    assert by_id["harm_free"]["status"] == "no_data"
    assert sorted((e["from"], e["to"]) for e in icu["edges"]) == [
        ("occupancy_heavy", "harm_free"),
        ("ratio_heavy", "harm_free"),
    ]
    # 4W: 4 patients / 2 nurses = 2 < med-surg warning 5: ok; occupancy ok -> every objective ok
    ward = await _objectives(api, facility="DEMO", department="medicine", unit="4W")
    ward_by_id = {o["id"]: o for o in ward["objectives"]}
    assert [ward_by_id[i]["status"] for i in ("occupancy_heavy", "ratio_heavy", "worst_of_two")] == ["ok"] * 3
    one = (await api.get("/api/v1/objectives/harm_free", params={"unit": "ICU"})).json()
    assert (one["perspective"], one["driven_by"], one["drives"]) == (
        "patient",
        ["occupancy_heavy", "ratio_heavy"],
        [],
    )
    missing = await api.get("/api/v1/objectives/no_such_objective")
    assert missing.status_code == 404 and "no_such_objective" in missing.json()["detail"]


async def test_department_and_unit_objectives_roll_up_into_the_hospitals(hospital: Any) -> None:
    """Statuses by hand (ok 0, warning 1, critical 2; weighted mean, >= 1.5 critical, >= 0.5
    warning; items without data do not count), with the ICU at 3 patients per nurse (critical
    over 2.01), 4W at 2 and 3E at 1 (ok), occupancy ok everywhere."""
    _, api = hospital
    await _objectives(api, facility="DEMO", department="critical_care", unit="ICU")  # settled
    hospital_wide = await _objectives(api, facility="DEMO")
    by_id = {o["id"]: o for o in hospital_wide["objectives"]}
    # the hospital's scorecard lists its own objectives, not the departments' or units'
    assert set(by_id) == {"occupancy_heavy", "ratio_heavy", "worst_of_two", "harm_free", "workforce"}
    workforce = by_id["workforce"]
    # supported by icu_staffing at the ICU (its ratio 3: critical) with weight 2 and by
    # medicine_staffing at medicine (ratio ok; 4W's beds ok: ok) with weight 1; its own KPI has
    # no data: (2 x 2 + 1 x 0) / 3 = 1.33 -> warning (the worst would be critical)
    supported = {
        (s["objective"], s["group"]["department"], s["group"]["unit"]): s for s in workforce["supported_by"]
    }
    assert {k: (s["status"], s["weight"]) for k, s in supported.items()} == {
        ("icu_staffing", "critical_care", "ICU"): ("critical", 2),
        ("medicine_staffing", "medicine", None): ("ok", 1),
    }
    assert workforce["kpis"][0]["status"] == "no_data" and workforce["status"] == "warning"

    # the department's scorecard: the hospital's objectives at medicine, and its own
    medicine = await _objectives(api, facility="DEMO", department="medicine")
    own = {o["id"]: o for o in medicine["objectives"]}
    assert set(own) == {
        "occupancy_heavy",
        "ratio_heavy",
        "worst_of_two",
        "harm_free",
        "workforce",
        "medicine_staffing",
    }
    staffing = own["medicine_staffing"]
    assert (staffing["level"], staffing["places"]) == ("department", ["medicine"])
    # its ratio at medicine ok (0) and 4W's beds ok (0), weight 3: ok
    assert staffing["kpis"][0]["status"] == "ok" and staffing["status"] == "ok"
    assert [
        (s["objective"], s["group"]["unit"], s["status"], s["weight"]) for s in staffing["supported_by"]
    ] == [("ward_beds", "4W", "ok", 3)]
    # its contribution: to the hospital's workforce objective, warning at the hospital
    assert staffing["supports"] == {
        "objective": "workforce",
        "name": "hospital objective, its own KPI without data here",
        "weight": 1,
        "status": "warning",
        "group": {"facility": "DEMO", "department": None, "unit": None},
    }
    # within medicine only medicine's own staffing supports workforce: ok
    assert own["workforce"]["status"] == "ok" and len(own["workforce"]["supported_by"]) == 1

    # critical care: the ICU's objective supports workforce there alone: critical
    care = await _objectives(api, facility="DEMO", department="critical_care")
    care_by_id = {o["id"]: o for o in care["objectives"]}
    assert "icu_staffing" not in care_by_id and care_by_id["workforce"]["status"] == "critical"
    # the ICU's scorecard holds its own objective (by its unit type, icu), critical
    icu = await _objectives(api, facility="DEMO", department="critical_care", unit="ICU")
    icu_by_id = {o["id"]: o for o in icu["objectives"]}
    assert icu_by_id["icu_staffing"]["status"] == "critical"
    assert icu_by_id["icu_staffing"]["supports"]["status"] == "warning"  # the hospital's workforce
    assert "medicine_staffing" not in icu_by_id and "ward_beds" not in icu_by_id
    # a unit asked for without its department: the department is looked up
    alone = (await api.get("/api/v1/objectives", params={"unit": "4W"})).json()
    assert {"medicine_staffing", "ward_beds"} <= {o["id"] for o in alone["objectives"]}


async def test_league_table_ranks_places_best_first_against_target_benchmark_and_peers(
    hospital: Any,
) -> None:
    _, api = hospital
    await _objectives(api, facility="DEMO", department="critical_care", unit="ICU")  # all logged
    body = (
        await api.get("/api/v1/compare/patient_to_nurse_ratio", params={"period": PERIOD, "by": "unit"})
    ).json()
    rows = [(r["group"]["unit"], r["value"], r["rank"], r["percentile"]) for r in body["rows"]]
    # worst ratio in the period (lower is better): 3E 1, 4W 2, ICU 3 (from T+20); the ED had no
    # patients. Percentile rank = (places worse + half of the places equal, itself included) / 3:
    # 3E (2 + 0.5) / 3 = 83.33, 4W (1 + 0.5) / 3 = 50, ICU (0 + 0.5) / 3 = 16.67
    assert [(u, v, rank) for u, v, rank, _ in rows if v is not None] == [
        ("3E", 1, 1),
        ("4W", 2, 2),
        ("ICU", 3, 3),
    ]
    assert [p for *_, p in rows if p is not None] == pytest.approx([250 / 3, 50, 50 / 3])
    by_unit = {r["group"]["unit"]: r for r in body["rows"]}
    # distance to the unit type's target: ICU 3 - 1.5 = 1.5 (misses), 4W 2 - 4.5 = -2.5 (meets),
    # 3E telemetry 1 - 3.5 = -2.5 (meets)
    assert [
        (by_unit[u]["target"]["difference"], by_unit[u]["target"]["meets"]) for u in ("ICU", "4W", "3E")
    ] == [
        (1.5, False),
        (-2.5, True),
        (-2.5, True),
    ]
    # the KPI's external benchmark is Title 22 itself, with no single value: nothing to subtract
    assert body["benchmark"]["value"] is None and "70217" in body["benchmark"]["source"]
    assert by_unit["ICU"]["benchmark"] is None
    # the peer set from the CSV, beside: 3 - 2.5 = 0.5 (worse), 1 - 2.5 = -1.5 (better)
    assert body["peers"] == [
        {
            "value": 2.5,
            "source": "Test peer file (not a published figure)",
            "year": 2025,
            "peer_group": "test peers",
        }
    ]
    assert [(p["difference"], p["meets"]) for p in by_unit["ICU"]["peers"]] == [(0.5, False)]
    assert [(p["difference"], p["meets"]) for p in by_unit["3E"]["peers"]] == [(-1.5, True)]
    # by department: critical care's worst unit 3, medicine's 2 (4W's 2, 3E's 1): medicine first
    deps = (
        await api.get("/api/v1/compare/patient_to_nurse_ratio", params={"period": PERIOD, "by": "department"})
    ).json()
    assert [(r["group"]["department"], r["value"], r["rank"]) for r in deps["rows"]] == [
        ("medicine", 2, 1),
        ("critical_care", 3, 2),
    ]
    bad = await api.get("/api/v1/compare/patient_to_nurse_ratio", params={"period": "2026-13"})
    assert bad.status_code == 422 and "period" in bad.json()["detail"]


async def test_compliance_lists_the_rule_the_status_now_and_the_minutes_out(hospital: Any) -> None:
    _, api = hospital
    await _objectives(api, facility="DEMO", department="critical_care", unit="ICU")
    body = (await api.get("/api/v1/compliance", params={"period": PERIOD})).json()
    kpis = {k["id"]: k for k in body["kpis"]}
    # the KPIs tagged compliance: in kpi_defs, and only those
    assert sorted(kpis) == sorted(k.id for k in CATALOGUE if k.compliance is not None)
    ratio = kpis["patient_to_nurse_ratio"]
    assert "70217" in ratio["compliance"]["rule"] and "Public Health" in ratio["compliance"]["authority"]
    places = {p["group"]["unit"]: p for p in ratio["places"]}
    # limits by unit type: ICU 2, 4W med-surg 5, 3E telemetry 4, ED 4
    assert [places[u]["limit"] for u in ("ICU", "4W", "3E", "ED")] == [2, 5, 4, 4]
    # now: ICU 3 > 2 out; 4W 2 <= 5 and 3E 1 <= 4 within; the ED has no patients: unknown
    assert [places[u]["in_compliance_now"] for u in ("ICU", "4W", "3E", "ED")] == [False, True, True, None]
    # minutes out in [T-30, T+30): the ICU from T+20 (3 patients, 1 nurse) to T+30 = 10 minutes;
    # the wards were never above their limits: 0
    assert places["ICU"]["minutes_out"] == pytest.approx(10.0)
    assert places["4W"]["minutes_out"] == 0 and places["3E"]["minutes_out"] == 0
    # per department: critical care's 10 unit-minutes, medicine 0; out now where a unit is out
    deps = (await api.get("/api/v1/compliance", params={"period": PERIOD, "by": "department"})).json()
    dep_places = {
        p["group"]["department"]: p
        for k in deps["kpis"]
        if k["id"] == "patient_to_nurse_ratio"
        for p in k["places"]
    }
    assert (dep_places["critical_care"]["minutes_out"], dep_places["critical_care"]["in_compliance_now"]) == (
        pytest.approx(10.0),
        False,
    )
    assert (dep_places["medicine"]["minutes_out"], dep_places["medicine"]["in_compliance_now"]) == (0, True)
    # an accreditation ceiling without a minutes counter: its rule and limit, no minutes
    boarding = {p["group"]["unit"]: p for p in kpis["ed_boarding"]["places"]}
    assert kpis["ed_boarding"]["compliance"]["limit"] == 240 and boarding["ED"]["minutes_out"] is None


async def test_the_packaged_strategy_map_over_http(service: Any) -> None:
    """The shipped objectives as the API serves them: every node and edge of the YAML, and their
    statuses on a carescore that has had no events."""
    data = yaml.safe_load((REPO_ROOT / "kpi_defs" / "objectives" / "strategy.yaml").read_text())
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.api_port}") as api:
        body = (await api.get("/api/v1/objectives")).json()
        icu = (await api.get("/api/v1/objectives", params={"unit": "ICU"})).json()
    hospitals = [o for o in data["objectives"] if "level" not in o]  # the ICU's is a unit's
    assert [o["id"] for o in body["objectives"]] == [o["id"] for o in hospitals]
    assert {(e["from"], e["to"]) for e in body["edges"]} == {
        (o["id"], d) for o in hospitals for d in o.get("drives", [])
    }
    # no events: every KPI is no_data but bed occupancy, 0 patients in 78 staffed beds = 0 % (ok),
    # so patient flow is ok (KPIs without data do not count) and every other objective no_data
    statuses = {o["id"]: o["status"] for o in body["objectives"]}
    assert statuses == {o["id"]: "ok" if o["id"] == "patient_flow" else "no_data" for o in hospitals}
    # the cascade: the ICU's own "Safe ICU staffing" supports the nursing workforce objective
    workforce = next(o for o in body["objectives"] if o["id"] == "skilled_nursing_workforce")
    assert [(s["objective"], s["group"]["unit"]) for s in workforce["supported_by"]] == [
        ("safe_icu_staffing", "ICU")
    ]
    safe_icu = next(o for o in icu["objectives"] if o["id"] == "safe_icu_staffing")
    assert (safe_icu["level"], safe_icu["places"], safe_icu["supports"]["objective"]) == (
        "unit",
        ["icu"],
        "skilled_nursing_workforce",
    )
    assert [p["id"] for p in body["perspectives"]] == [
        "learning_growth",
        "internal_process",
        "patient",
        "financial",
    ]


def test_the_packaged_strategy_covers_every_kpi_and_chains_training_to_cost() -> None:
    objectives = CATALOGUE.objectives
    assert {k.kpi for o in objectives.values() for k in o.kpis} == set(CATALOGUE.kpis)
    assert {o.perspective.value for o in objectives.values()} == {
        "learning_growth",
        "internal_process",
        "patient",
        "financial",
    }

    def reaches(start: str, goal: str) -> bool:
        return start == goal or any(reaches(n, goal) for n in objectives[start].drives)

    # the chain: training (learning) -> turnover -> overtime -> cost (financial)
    by_kpi = {k.kpi: o.id for o in objectives.values() for k in o.kpis}
    chain = [by_kpi[k] for k in ("training_hours_per_nurse", "staff_turnover_rate", "nurse_overtime_pct")]
    chain.append(by_kpi["cost_per_adjusted_patient_day"])
    assert all(reaches(a, b) for a, b in itertools.pairwise(chain))


BROKEN = """\
objectives:
  - id: grow
    name: Grow
    perspective: learning_growth
    kpis:
      - {kpi: training_hours_per_nurse}
      - {kpi: no_such_kpi}
    drives: [flow, nowhere]
  - id: flow
    name: Flow
    perspective: internal_process
    kpis:
      - {kpi: operating_margin, weight: 2}
    drives: [grow, loop]
  - id: loop
    name: Loop
    perspective: internal_process
    kpis: [{kpi: ed_boarding, weight: -1}]
  - id: circle_a
    name: A
    perspective: financial
    kpis: [{kpi: operating_margin}]
    drives: [circle_b]
  - id: circle_b
    name: B
    perspective: financial
    kpis: [{kpi: cost_per_patient_day}]
    drives: [circle_a]
"""


def strategy_problems(tmp_path: Path, text: str) -> tuple[Path, list[str]]:
    """The packaged KPIs with this strategy file: where it is, and the problems loading finds."""
    defs = tmp_path / "kpi_defs"
    shutil.copytree(REPO_ROOT / "kpi_defs", defs)
    path = defs / "objectives" / "strategy.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_catalogue(defs)
    return path, err.value.problems


def test_objective_errors_name_file_line_and_field(tmp_path: Path) -> None:
    path, problems = strategy_problems(tmp_path, BROKEN)
    assert sorted(problems) == sorted(
        [
            f"{path}:7: objectives.0.kpis.1.kpi: unknown KPI 'no_such_kpi'",
            f"{path}:8: objectives.0.drives.1: unknown objective 'nowhere'",
            f"{path}:13: objectives.1.kpis.0.kpi: KPI 'operating_margin' is in the financial perspective, "
            "the objective in internal_process: an objective is measured by KPIs of its own perspective",
            f"{path}:14: objectives.1.drives.0: 'flow' (internal_process) cannot drive 'grow' "
            "(learning_growth): a strategy map's causes sit below their effects "
            "(learning_growth -> internal_process -> patient -> financial)",
            # 'loop' failed its own validation (a weight must be > 0), so a link to it is unknown
            f"{path}:14: objectives.1.drives.1: unknown objective 'loop'",
            f"{path}:18: objectives.2.kpis.0.weight: Input should be greater than 0",
            f"{path}:28: objectives.4.drives.0: drives in a circle: circle_a -> circle_b -> circle_a",
            # grow -> flow -> grow is a circle too (besides pointing down)
            f"{path}:14: objectives.1.drives.0: drives in a circle: grow -> flow -> grow",
        ]
    )


CASCADE_BROKEN = """\
objectives:
  - id: hospital
    name: H
    perspective: learning_growth
    kpis: [{kpi: training_hours_per_nurse}]
    places: [medicine]
  - id: dept
    name: D
    perspective: internal_process
    level: department
    kpis: [{kpi: patient_to_nurse_ratio}]
    supports: {objective: nowhere}
  - id: unit_a
    name: U
    perspective: internal_process
    level: unit
    places: [ICU]
    kpis: [{kpi: patient_to_nurse_ratio}]
    supports: {objective: unit_b, weight: 2}
  - id: unit_b
    name: V
    perspective: internal_process
    level: unit
    places: [icu]
    kpis: [{kpi: patient_to_nurse_ratio}]
  - id: bad_level
    name: W
    perspective: internal_process
    level: ward
    places: [4W]
    kpis: [{kpi: patient_to_nurse_ratio}]
    supports: {objective: hospital, weight: 0}
"""


def test_cascade_errors_name_file_line_and_field(tmp_path: Path) -> None:
    path, problems = strategy_problems(tmp_path, CASCADE_BROKEN)
    assert sorted(problems) == sorted(
        [
            f"{path}:6: objectives.0.places: a facility objective is the hospital's: it names no places "
            "(or give a level)",
            # no places: the line of the objective itself
            f"{path}:7: objectives.1.places: a department objective names the places that hold it",
            f"{path}:12: objectives.1.supports.objective: unknown objective 'nowhere'",
            f"{path}:19: objectives.2.supports.objective: 'unit_a' (unit) cannot support 'unit_b' (unit): "
            "an objective supports one of a wider level (unit -> department -> facility)",
            f"{path}:29: objectives.4.level: Input should be 'facility', 'department' or 'unit'",
            f"{path}:32: objectives.4.supports.weight: Input should be greater than 0",
        ]
    )


def test_a_compliance_counter_must_count_minutes(tmp_path: Path) -> None:
    defs = tmp_path / "kpi_defs"
    shutil.copytree(REPO_ROOT / "kpi_defs", defs)
    path = defs / "ed_boarding.yaml"
    text = path.read_text()
    path.write_text(text.replace("  limit: 240\n", "  limit: 240\n  minutes_out: ed_boarding\n"))
    line = path.read_text().splitlines().index("  minutes_out: ed_boarding") + 1
    with pytest.raises(ConfigError) as err:
        load_catalogue(defs)
    assert err.value.problems == [
        f"{path}:{line}: compliance.minutes_out: 'ed_boarding' is not a KPI with aggregate minutes_over "
        "(the minutes out of compliance are counted by one)"
    ]


def test_peer_benchmark_rows_are_checked_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / "peers.csv"
    path.write_text(
        "kpi,value,source,year,peer_group\n"
        "bed_occupancy,84.1,State file 2024 table 3,2024,CA acute\n"  # line 2: fine
        "bed_occupancy,lots,State file,2024,CA acute\n"  # line 3: not a number
        "no_such_kpi,1,State file,2024,CA acute\n"  # line 4
        "bed_occupancy,80,,2024,CA acute\n"  # line 5: no source
        "bed_occupancy,80,State file,24,CA acute\n"  # line 6: a two-digit year
    )
    with pytest.raises(ConfigError) as err:
        load_peer_benchmarks([path], CATALOGUE.kpis)
    assert err.value.problems == [
        f"{path}:3: value: Input should be a valid number, unable to parse string as a number",
        f"{path}:4: kpi: unknown KPI 'no_such_kpi'",
        f"{path}:5: source: String should have at least 1 character",
        f"{path}:6: year: Input should be greater than or equal to 1900",
    ]
    path.write_text("kpi,value,year\nbed_occupancy,1,2024\n")
    with pytest.raises(ConfigError) as err:
        load_peer_benchmarks([path], CATALOGUE.kpis)
    assert err.value.problems == [f"{path}:1: header: missing column(s) source, peer_group"]
    path.write_text("kpi,value,source,year,peer_group\nbed_occupancy,84.1,State file 2024,2024,CA acute\n")
    (only,) = load_peer_benchmarks([path], CATALOGUE.kpis)["bed_occupancy"]
    assert (only.value, only.year, only.peer_group) == (84.1, 2024, "CA acute")


def test_a_bad_peer_file_named_in_the_settings_stops_the_start(tmp_path: Path) -> None:
    """scorecard.benchmarks is read relative to the settings file, and checked at start."""
    (tmp_path / "peers.csv").write_text("kpi,value,source,year,peer_group\nbed_occupancy,80,State,2024,\n")
    config = tmp_path / "carescore.yaml"
    config.write_text("demo: {enabled: false}\nscorecard:\n  benchmarks: [peers.csv]\n")
    settings = load_settings(config)
    assert settings.scorecard.benchmarks == [tmp_path / "peers.csv"]
    with pytest.raises(ConfigError) as err:
        Service(settings)
    assert err.value.problems == [
        f"{tmp_path / 'peers.csv'}:2: peer_group: String should have at least 1 character"
    ]


def test_tied_places_share_a_rank_and_a_place_without_department_still_sorts() -> None:
    """Competition ranking (1, 2, 2) and the mid-rank percentile rank, worked by hand: Z is
    better than two places, equal to itself: (2 + 0.5) / 3 = 83.3; X and Y tie: 1 better, none
    worse, 2 equal: (0 + 1) / 3 = 33.3. Higher is better reverses the order."""
    rows = [
        ReportRow(Group(facility="F", department=None, unit="X"), 2.0, None, None, 1, "ok"),
        ReportRow(Group(facility="F", department="d", unit="Y"), 2.0, None, None, 1, "ok"),
        ReportRow(Group(facility="F", department="d", unit="Z"), 1.0, None, None, 1, "ok"),
        ReportRow(Group(facility="F", department="d", unit="W"), None, None, None, 0, "no_data"),
    ]
    lower = league_table(CATALOGUE["patient_to_nurse_ratio"], rows, {})
    assert [(r["group"]["unit"], r["rank"]) for r in lower] == [("Z", 1), ("X", 2), ("Y", 2), ("W", None)]
    assert [r["percentile"] for r in lower[:3]] == pytest.approx([250 / 3, 100 / 3, 100 / 3])
    higher = league_table(CATALOGUE["nurse_call_within_target"], rows, {})
    assert [(r["group"]["unit"], r["rank"]) for r in higher] == [("X", 1), ("Y", 1), ("Z", 3), ("W", None)]
