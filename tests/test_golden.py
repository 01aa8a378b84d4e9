"""Golden cases: every KPI computed by a running carescore equals a value computed by hand
from the published definition (tests/golden/README.md).

One embedded carescore serves every scenario (each scenario has its own facility, so the
roll-ups do not mix). Each scenario's HL7 v2 files go through the real MLLP socket with
python-hl7's `mllp_send`, its feed files through `POST /api/v1/feeds/{feed}`; then every
check in its expected.yaml is compared with the live value (`GET /api/v1/kpis/{id}`) and
with the period report (`GET /api/v1/reports/{id}`). Expected values come from the
comments in expected.yaml, never from engine code.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import yaml

from carescore.serve import Service
from engine.config import Settings
from engine.places import Places

GOLDEN = Path(__file__).parent / "golden"
MLLP_SEND = Path(sys.executable).parent / "mllp_send"
FEEDS = ("staffing", "hr", "finance", "experience", "quality")
SENTINEL = "ZZSENT"  # a facility of its own: its admission is sent last, so once it shows, all is in

pytestmark = pytest.mark.asyncio(loop_scope="module")


# -- the templating rule (tests/golden/README.md) -----------------------------------------------
PLACEHOLDER = re.compile(r"\{(T(?:[+-]\d+[dhm])*|D-\d+@\d\d:\d\d)\}")
TERM = re.compile(r"([+-])(\d+)([dhm])")
UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def resolve(token: str, anchor: datetime) -> datetime:
    """{T-3d+4h}: the anchor moved by each term; {D-3@08:00}: 08:00 UTC, 3 days before the anchor's day."""
    if token.startswith("D-"):
        days, clock = token[2:].split("@")
        hour, minute = (int(x) for x in clock.split(":"))
        day = anchor.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=int(days))
        return day.replace(hour=hour, minute=minute)
    moment = anchor
    for sign, amount, unit in TERM.findall(token[1:]):
        step = timedelta(**{UNITS[unit]: int(amount)})
        moment = moment + step if sign == "+" else moment - step
    return moment


def hl7_time(moment: datetime) -> str:
    return moment.strftime("%Y%m%d%H%M%S") + "+0000"


def iso_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S+00:00")


def render(text: str, anchor: datetime, fmt: str) -> str:
    to_text = hl7_time if fmt == "hl7" else iso_time
    return PLACEHOLDER.sub(lambda m: to_text(resolve(m.group(1), anchor)), text)


# -- scenarios ---------------------------------------------------------------------------------
@dataclass
class Check:
    scenario: str
    id: str
    kpi: str
    group: dict[str, str | None]
    spec: dict[str, Any]


@dataclass
class Scenario:
    name: str
    folder: Path
    facility: dict[str, Any]
    expected: dict[str, Any]
    checks: list[Check] = field(default_factory=list)

    def unit_department(self, unit: str) -> str:
        for dep in self.facility["departments"]:
            if any(u["id"] == unit for u in dep["units"]):
                return str(dep["id"])
        raise KeyError(f"{self.name}: unit {unit} is not in places.yaml")


def load_scenarios() -> list[Scenario]:
    out = []
    for folder in sorted(p for p in GOLDEN.iterdir() if (p / "places.yaml").exists()):
        facility = yaml.safe_load((folder / "places.yaml").read_text())
        expected = yaml.safe_load((folder / "expected.yaml").read_text())
        scenario = Scenario(folder.name, folder, facility, expected)
        for spec in expected["checks"]:
            at = spec["at"]
            fac = at.get("facility", facility["id"])
            if "unit" in at:
                group = {
                    "facility": fac,
                    "department": scenario.unit_department(at["unit"]),
                    "unit": at["unit"],
                }
            elif "department" in at:
                group = {"facility": fac, "department": at["department"], "unit": None}
            else:
                group = {"facility": fac, "department": None, "unit": None}
            scenario.checks.append(Check(folder.name, spec["id"], spec["kpi"], group, spec))
        out.append(scenario)
    return out


SCENARIOS = load_scenarios()


def cases() -> list[Any]:
    params = []
    for scenario in SCENARIOS:
        for check in scenario.checks:
            for mode in ("live", "report"):
                if not check.spec.get(mode, True):
                    continue
                xfail = check.spec.get("xfail")
                if isinstance(xfail, dict):
                    xfail = xfail.get(mode)
                marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
                params.append(
                    pytest.param(check, mode, id=f"{check.scenario}:{check.id}:{mode}", marks=marks)
                )
    return params


# -- the running hospital -------------------------------------------------------------------------
@dataclass
class Hospital:
    service: Service
    anchor: datetime
    client: httpx.AsyncClient
    kpis: dict[str, Any] = field(default_factory=dict)
    reports: dict[tuple[str, str, str, str], Any] = field(default_factory=dict)

    async def live(self, kpi: str) -> Any:
        if kpi not in self.kpis:
            response = await self.client.get(f"/api/v1/kpis/{kpi}")
            response.raise_for_status()
            self.kpis[kpi] = response.json()
        return self.kpis[kpi]

    async def report(self, kpi: str, start: str, end: str, by: str) -> Any:
        key = (kpi, start, end, by)
        if key not in self.reports:
            response = await self.client.get(
                f"/api/v1/reports/{kpi}", params={"from": start, "to": end, "by": by}
            )
            response.raise_for_status()
            self.reports[key] = response.json()
        return self.reports[key]


def fhir_facility() -> str:
    """FHIR resources name no facility: the mapper puts them in the default facility
    (connectors/fhir/base.py ResourceMapper.place). Every scenario with FHIR files shares one."""
    found = {s.facility["id"] for s in SCENARIOS if any(s.folder.glob("*.json"))}
    assert len(found) <= 1, f"FHIR scenarios must share one facility, not {sorted(found)}"
    return found.pop() if found else SENTINEL


def joined_facilities() -> list[dict[str, Any]]:
    """Each scenario's places.yaml; scenarios that share a facility id add their departments."""
    joined: dict[str, dict[str, Any]] = {}
    for scenario in SCENARIOS:
        fac = scenario.facility
        if fac["id"] in joined:
            joined[fac["id"]]["departments"].extend(fac["departments"])
        else:
            joined[fac["id"]] = {**fac, "departments": list(fac["departments"])}
    return list(joined.values())


def settings_for(tmp: Path) -> Settings:
    facilities = joined_facilities()
    facilities.append(
        {
            "id": SENTINEL,
            "departments": [{"id": "sentinel", "units": [{"id": "SENT", "type": "med_surg", "beds": 1}]}],
        }
    )
    return Settings.model_validate(
        {
            "data_dir": tmp / "data",
            "timezone": "UTC",
            "places": Places.model_validate({"default_facility": fhir_facility(), "facilities": facilities}),
            "mllp": {"port": 0},
            "api": {"port": 0},
            "demo": {"enabled": False},
            "engine": {"tick": 0.2, "snapshot_every": 3600},
        }
    )


def hl7_messages(text: str) -> list[str]:
    """The file's messages: segments end with CR, a newline separates messages."""
    return [m.strip("\r\n") for m in text.split("\n") if m.strip("\r\n")]


async def mllp_send(port: int, path: Path, count: int) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(MLLP_SEND),
        "--loose",
        "--port",
        str(port),
        "--file",
        str(path),
        "127.0.0.1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, f"mllp_send {path.name}: {err.decode()}"
    acks = [s for s in out.decode().replace("\n", "\r").split("\r") if s.startswith("MSA|")]
    refused = [a for a in acks if not a.startswith("MSA|AA|")]
    assert len(acks) == count and not refused, f"{path.name}: {count} sent, acks {acks}"


async def send_scenario(hospital: Hospital, scenario: Scenario, work: Path) -> None:
    for source in sorted(scenario.folder.glob("*.hl7")):
        text = render(source.read_bytes().decode(), hospital.anchor, "hl7")  # keep the CRs
        messages = hl7_messages(text)
        assert messages and all(m.startswith("MSH|^~\\&|") for m in messages), source
        target = work / f"{scenario.name}-{source.name}"
        target.write_bytes(text.encode())
        await mllp_send(hospital.service.mllp.port, target, len(messages))
    # FHIR Bundles (*.json), in name order, to POST /fhir
    for source in sorted(scenario.folder.glob("*.json")):
        body = render(source.read_text(), hospital.anchor, "iso")
        response = await hospital.client.post(
            "/fhir", content=body.encode(), headers={"Content-Type": "application/fhir+json"}
        )
        assert response.status_code == 200, f"{source.name}: {response.status_code} {response.text}"
        assert_fhir_taken(source.name, response.json())
    # <feed>.csv first, then <feed>-<suffix>.csv files (resends, corrections) in name order
    for source in sorted(scenario.folder.glob("*.csv"), key=lambda p: ("-" in p.stem, p.name)):
        feed = source.stem.split("-")[0]
        assert feed in FEEDS, f"{source}: a feed file is named <feed>[-suffix].csv"
        body = render(source.read_text(), hospital.anchor, "csv")
        response = await hospital.client.post(
            f"/api/v1/feeds/{feed}", content=body.encode(), headers={"Content-Type": "text/csv"}
        )
        answer = response.json()
        assert response.status_code == 200 and answer["rejected"] == 0, f"{source}: {answer}"
        duplicates = scenario.expected.get("duplicates", {}).get(source.name, 0)
        assert answer["duplicates"] == duplicates, f"{source}: {answer}"


def assert_fhir_taken(name: str, answer: dict[str, Any]) -> None:
    """Every entry stored: a batch/transaction response with 2xx statuses, or an
    OperationOutcome (collection, message, history) without errors or warnings."""
    if answer["resourceType"] == "Bundle":
        statuses = [e["response"]["status"] for e in answer["entry"]]
        assert all(s.startswith("2") for s in statuses), f"{name}: {answer}"
        return
    bad = [i for i in answer["issue"] if i["severity"] in ("error", "fatal", "warning")]
    assert not bad, f"{name}: {bad}"


async def advance_watermarks(hospital: Hospital) -> None:
    """Bring the FHIR and feed sources' watermarks to T, as a minute of quiet does in
    production (engine/watermarks.py: a source quiet for idle_timeout advances with the
    wall clock). A KPI fed by several sources is live up to the slowest one's watermark: without
    this, a FHIR feed whose last event is at T-5m would hold back the HL7 lab results of the
    last five minutes. Both events are inert: a charge line (no KPI reads finance.charge) and a
    clerk's shift in the sentinel facility."""
    when = iso_time(hospital.anchor)
    charge = {
        "resourceType": "ChargeItem",
        "id": "golden-watermark",
        "status": "billed",
        "code": {"text": "watermark"},
        "subject": {"reference": "Patient/golden-watermark"},
        "occurrenceDateTime": when,
        "priceOverride": {"value": 0, "currency": "USD"},
    }
    response = await hospital.client.post("/fhir/ChargeItem", json=charge)
    assert response.status_code in (200, 201), response.text
    row = f"facility,unit,staff_id,role,shift_start\n{SENTINEL},SENT,GOLDEN-WM,clerk,{when}\n"
    response = await hospital.client.post(
        "/api/v1/feeds/staffing", content=row.encode(), headers={"Content-Type": "text/csv"}
    )
    assert response.status_code == 200 and response.json()["rejected"] == 0, response.text


async def wait_for_sentinel(hospital: Hospital, timeout: float = 60.0) -> None:
    """The sentinel admission went in last: once the live board shows it, every event sent
    before it has been processed and every KPI on the board reflects it."""
    when = hl7_time(hospital.anchor)
    message = (
        f"MSH|^~\\&|GOLDEN|{SENTINEL}|CARESCORE|{SENTINEL}|{when}||ADT^A01^ADT_A01|SENT0001|P|2.5.1\r"
        f"EVN|A01|{when}\r"
        f"PID|1||SENT1^^^{SENTINEL}^MR||Sentinel^Sam||19800101|U\r"
        f"PV1|1|I|SENT^1^1^{SENTINEL}||||||||||||||||SENTV1^^^{SENTINEL}^VN\r"
    )
    from connectors.hl7v2.client import MLLPClient, ack_code

    async with MLLPClient("127.0.0.1", hospital.service.mllp.port) as client:
        assert ack_code(await client.send(message)) == "AA"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        response = await hospital.client.get("/api/v1/kpis/bed_occupancy", params={"facility": SENTINEL})
        if any(v["group"]["unit"] == "SENT" and v["numerator"] == 1 for v in response.json()["values"]):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the sentinel admission never reached the live board")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hospital(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Hospital]:
    tmp = tmp_path_factory.mktemp("golden")
    anchor = datetime.now(UTC).replace(second=0, microsecond=0)
    if os.environ.get("GOLDEN_ANCHOR"):  # replay a run at another time of day (not in the future)
        anchor = min(anchor, datetime.fromisoformat(os.environ["GOLDEN_ANCHOR"]).astimezone(UTC))
    service = Service(settings_for(tmp))
    await service.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.api_port}", timeout=60) as client:
            hospital = Hospital(service, anchor, client)
            for scenario in SCENARIOS:
                await send_scenario(hospital, scenario, tmp)
            await advance_watermarks(hospital)
            await wait_for_sentinel(hospital)
            yield hospital
    finally:
        await service.stop()


# -- the comparison ---------------------------------------------------------------------------------
def close(got: float | None, want: float | None) -> bool:
    if want is None or got is None:
        return got is want
    return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-6)


def find(rows: list[dict[str, Any]], group: dict[str, str | None]) -> dict[str, Any] | None:
    for row in rows:
        if row["group"] == group:
            return row
    return None


def compare(spec: dict[str, Any], got: dict[str, Any] | None, value: float | None, where: str) -> None:
    assert got is not None, f"{where}: no value for this group"
    problems = []
    if not close(got["value"], value):
        problems.append(f"value {got['value']!r} != {value!r}")
    for name in ("numerator", "denominator", "n"):
        if name in spec and not close(got[name], spec[name]):
            problems.append(f"{name} {got[name]!r} != {spec[name]!r}")
    if "status" in spec and got["status"] != spec["status"]:
        problems.append(f"status {got['status']!r} != {spec['status']!r}")
    assert not problems, f"{where}: " + "; ".join(problems) + f" (got {got})"


async def month_so_far(
    hospital: Hospital, scenario: Scenario, check: Check, got: dict[str, Any] | None
) -> bool:
    """A calendar-month KPI's live value is the month so far (UTC here). When the month began
    after the scenario's period did (the test runs early in a month), part of the scenario is
    in last month and the hand value is not the live one: the live value must then be the
    report for the month so far. True when checked so; False: the hand value applies."""
    period = {**scenario.expected.get("report", {}), **check.spec.get("report_period", {})}
    if got is not None:  # the month of the KPI's watermark (a feed may be behind the anchor)
        month = datetime.fromisoformat(got["window"]["start"])
    else:
        month = hospital.anchor.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if month <= datetime.fromisoformat(render(period["from"], hospital.anchor, "iso")):
        return False
    by = "unit" if check.group["unit"] else "department" if check.group["department"] else "facility"
    end = got["window"]["end"] if got is not None else iso_time(hospital.anchor)
    report = await hospital.report(check.kpi, iso_time(month), end, by)
    row = find(report["rows"], check.group)
    where = f"{check.kpi} at {check.group} (live, the month so far)"
    if row is None:  # nothing this month: the board shows a unit it knows as no data
        assert got is None or (got["value"] is None and got["n"] == 0), f"{where}: live {got}, no report row"
        return True
    assert got is not None, f"{where}: no live value, report {row}"
    compare({k: row[k] for k in ("numerator", "denominator", "n", "status")}, got, row["value"], where)
    return True


@pytest.mark.parametrize(("check", "mode"), cases())
async def test_golden(hospital: Hospital, check: Check, mode: str) -> None:
    spec = check.spec
    scenario = next(s for s in SCENARIOS if s.name == check.scenario)
    where = f"{check.kpi} at {check.group} ({mode})"
    if mode == "live":
        kpi = await hospital.live(check.kpi)
        got = find(kpi["values"], check.group)
        value = spec["value"]
        if str(kpi["window"]["size"]).endswith("mo") and await month_so_far(hospital, scenario, check, got):
            return
        if spec.get("live_value") == "window_minutes" and got is not None:
            # out of ratio through the whole live window: its length, in minutes
            start = datetime.fromisoformat(got["window"]["start"])
            end = datetime.fromisoformat(got["window"]["end"])
            value = (end - start).total_seconds() / 60
        if spec.get("annualised") and got is not None and got["value"] is not None:
            # The live window runs from its first pane to now: annualise over its own length.
            start = datetime.fromisoformat(got["window"]["start"])
            end = datetime.fromisoformat(got["window"]["end"])
            days = (end - start).total_seconds() / 86400
            value = spec["numerator"] / spec["denominator"] * spec["annualised"] * 365 / days
        compare(spec, got, value, where)
        return
    period = {**scenario.expected.get("report", {}), **spec.get("report_period", {})}
    start = render(period["from"], hospital.anchor, "iso")
    end = render(period["to"], hospital.anchor, "iso")
    by = "unit" if check.group["unit"] else "department" if check.group["department"] else "facility"
    report = await hospital.report(check.kpi, start, end, by)
    compare(spec, find(report["rows"], check.group), spec.get("report_value", spec["value"]), where)
