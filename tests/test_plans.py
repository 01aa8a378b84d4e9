"""Issue 16 item 2: action plans. Actions (short-term corrective items with an owner, a due date
and a status), initiatives (projects for objectives, with milestones and progress), analyses per
KPI per period, stored beside the alerts (SQLite and a real PostgreSQL), served over real HTTP by
a real carescore. Overdue actions and missed milestones are alerts routed to their owner.

Expected values are worked by hand in the comments from the rules:
- action status: open -> in_progress | done | cancelled; in_progress -> open | done | cancelled;
  done -> in_progress (reopened); cancelled is final (alerts/plans/store.py ACTION_MOVES).
- progress of an initiative = milestones done / milestones.
- a due date (no time) is late from the next local midnight of the site; a date-time at itself.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
import pytest

from alerts.db import open_database
from alerts.plans.store import PlanError, PlanStore
from alerts.store import AlertStore
from carescore.serve import Service
from connectors.hl7v2.client import MLLPClient, ack_code
from engine.config import Settings
from tests.alerting import ICU, ROUTES, T0, Clock, make_rig
from tests.test_e2e_embedded import stat_pair, wait_for
from tests.test_forecast import running

if TYPE_CHECKING:
    from tests.keycloak import Keycloak

pytest_plugins = ("tests.keycloak",)

OWNER_ROUTES = """
routes:
  - {name: action-owner, match: {kind: action}, receivers: [action_owner], group_by: [owner], group_wait: 0s}
  - {name: unit, match: {kind: kpi}, receivers: [charge_nurse], group_wait: 0s}
roles:
  action_owner: {scope: owner, fallback: {DEMO: [hs]}}
  charge_nurse: {scope: unit, fallback: {ICU: [cn-icu], 4W: [cn-4w]}}
people:
  nm-cc: {name: CC manager, email: nm-cc@x.invalid}
  hs: {name: House supervisor, email: hs@x.invalid}
  cn-icu: {name: ICU charge, email: cn-icu@x.invalid}
  cn-4w: {name: 4W charge, email: cn-4w@x.invalid}
"""


# ---- the store, on SQLite and on PostgreSQL ------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The alert store's database: a SQLite file, or a fresh database on the session's PostgreSQL."""
    if request.param == "sqlite":
        yield str(tmp_path / "alerts.sqlite")
        return
    url: str = request.getfixturevalue("postgres_url")
    name = f"t{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield url.rsplit("/", 1)[0] + f"/{name}"


def new_action(due_ts: float, **extra: Any) -> dict[str, Any]:
    return {
        "title": "Second phlebotomist 07:00-09:00",
        "kpi": "lab_tat_stat",
        "facility": "DEMO",
        "department": "critical_care",
        "unit": "ICU",
        "owner": "nm-cc",
        "due": datetime.fromtimestamp(due_ts, UTC).isoformat(),
        "due_ts": due_ts,
        **extra,
    }


def test_action_lifecycle_events_and_markers_in_the_store(target: str) -> None:
    clock = Clock()
    plans = PlanStore(open_database(target), clock)
    action = plans.create_action(new_action(T0 + 86400), "RN Diaz")
    assert (action["status"], action["created_by"], action["closed_at"]) == ("open", "RN Diaz", None)
    clock.advance(60)
    plans.update_action(action["id"], {"status": "in_progress", "notes": "rota asked"}, "NM Lee")
    clock.advance(60)
    done = plans.update_action(action["id"], {"status": "done"}, "NM Lee")
    assert done["closed_at"] is not None and done["changed_by"] == "NM Lee"
    clock.advance(60)
    plans.update_action(action["id"], {"status": "in_progress"}, "NM Lee")  # done -> reopened
    clock.advance(60)
    plans.update_action(action["id"], {"status": "cancelled"}, "NM Lee")
    with pytest.raises(PlanError) as refused:  # cancelled is final
        plans.update_action(action["id"], {"status": "open"}, "NM Lee")
    assert refused.value.field == "status" and "cancelled to open" in str(refused.value)
    with pytest.raises(PlanError) as unknown:
        plans.update_action("nope", {"status": "done"}, "NM Lee")
    assert unknown.value.status == 404

    events = plans.events("action", action["id"])
    assert [(e["what"], e["actor"]) for e in events] == [("created", "RN Diaz")] + [("changed", "NM Lee")] * 4
    assert events[1]["changes"] == {"status": ["open", "in_progress"], "notes": [None, "rota asked"]}
    assert plans.update_action(action["id"], {"status": "cancelled"}, "x")["changed_by"] == "NM Lee"  # no-op
    assert len(plans.events("action", action["id"])) == 5  # a change that changes nothing is no event

    # opened at T0, closed (done) at T0+120, reopened at T0+180, closed (cancelled) at T0+240
    marks = plans.markers("lab_tat_stat", {"unit": "ICU"}, None, None)
    assert [m["event"] for m in marks] == ["opened", "closed (done)", "reopened", "closed (cancelled)"]
    # [T0+100, T0+200): only the closing at +120 and the reopening at +180
    window = plans.markers("lab_tat_stat", {"unit": "ICU"}, T0 + 100, T0 + 200)
    assert [m["event"] for m in window] == ["closed (done)", "reopened"]
    assert plans.markers("lab_tat_stat", {"unit": "4W"}, None, None) == []


def test_initiative_progress_and_analysis_versions_in_the_store(target: str) -> None:
    clock = Clock()
    plans = PlanStore(open_database(target), clock)
    fields = {
        "title": "Nurse residency programme",
        "objectives": ["retain_nurses"],
        "facility": "DEMO",
        "owner": "nm-cc",
        "starts": "2026-01-01",
        "ends": "2026-12-31",
        "status": "planned",
        "description": None,
    }
    milestones = [
        {"title": "Curriculum", "due": "2026-02-01", "due_ts": T0 - 86400},
        {"title": "First cohort", "due": "2026-03-10", "due_ts": T0 + 86400},
        {"title": "Evaluation", "due": "2026-06-30", "due_ts": T0 + 90 * 86400},
    ]
    made = plans.create_initiative(fields, milestones, "admin")
    assert made["progress"] == 0 and [m["title"] for m in made["milestones"]] == [
        "Curriculum",
        "First cohort",
        "Evaluation",
    ]
    # the curriculum was due yesterday and is not done: missed; the others are not due yet
    assert [m["title"] for m in plans.missed_milestones(clock.now)] == ["Curriculum"]
    first = made["milestones"][0]["id"]
    after = plans.update_milestone(made["id"], first, {"done": True}, "admin")
    assert after["progress"] == round(1 / 3, 4)  # 1 of 3 done = 0.3333
    assert plans.missed_milestones(clock.now) == []
    with pytest.raises(PlanError):  # planned -> done skips the work: not allowed
        plans.update_initiative(made["id"], {"status": "done"}, "admin")
    plans.update_initiative(made["id"], {"status": "active"}, "admin")
    whats = [e["what"] for e in plans.events("initiative", made["id"])]
    added = ["milestone added"] * 3
    assert whats == ["created", *added, "milestone changed", "changed"]
    assert [i["id"] for i in plans.list_initiatives({"objective": "retain_nurses"})] == [made["id"]]
    assert plans.list_initiatives({"objective": "safe_staffing"}) == []

    place = ("DEMO", "critical_care", "ICU")
    text = {"happened": "p90 rose to 84 min", "why": "one phlebotomist", "next": "second one 07-09"}
    plans.put_analysis("lab_tat_stat", "2026-11", place, text, "NM Lee")
    plans.put_analysis("lab_tat_stat", "2026-11", place, {**text, "next": "and a tube station"}, "Dr Ray")
    found = plans.analysis("lab_tat_stat", "2026-11", place)
    assert [(v["version"], v["author"]) for v in found["versions"]] == [(2, "Dr Ray"), (1, "NM Lee")]
    assert found["current"]["next"] == "and a tube station"
    assert plans.analysis("lab_tat_stat", "2026-11", ("DEMO", "", ""))["current"] is None  # facility: none
    # the monthly review's analyses: the current version of each KPI's, at exactly that place
    plans.put_analysis("bed_occupancy", "2026-11", place, text, "NM Lee")
    plans.put_analysis("bed_occupancy", "2026-10", place, text, "NM Lee")  # another month
    month = plans.analyses("2026-11", place)
    assert [(a["kpi"], a["version"], a["next"]) for a in month] == [
        ("bed_occupancy", 1, "second one 07-09"),
        ("lab_tat_stat", 2, "and a tube station"),
    ]
    assert plans.analyses("2026-11", ("DEMO", "", "")) == []


# ---- overdue actions as alerts to their owner (the alert service, on a clock the test moves) ------


async def test_overdue_action_alerts_its_owner_once_across_a_restart_and_resolves_when_done(
    target: str, tmp_path: Path
) -> None:
    clock = Clock()
    rig = make_rig(tmp_path, routes=OWNER_ROUTES, store=AlertStore(target), clock=clock)
    plans = rig.service.plans
    action = plans.create_action(new_action(T0 + 600), "RN Diaz")  # due in 10 minutes
    await rig.step(540)  # 9 minutes: not late yet
    assert rig.service.firing() == []
    await rig.step(120)  # 11 minutes: 1 minute late
    (alert,) = rig.service.firing()
    assert (alert.kind, alert.kpi, alert.name, alert.owner) == (
        "action",
        "action_overdue",
        f"action_overdue:{action['id']}",
        "nm-cc",
    )
    assert alert.place == ICU and alert.started_at == datetime.fromtimestamp(T0 + 600, UTC).isoformat()
    await rig.step(0)  # group_wait 0s: the owner's notice goes out on the next pass
    told = rig.email.to("nm-cc")
    assert [p["event"] for p in told] == ["fired"]
    assert "Second phlebotomist" in told[0]["alerts"][0]["kpi_name"]  # the owner knows which action
    assert rig.email.to("cn-icu") == []  # the ward's KPI route is not the action's

    rig.service.store.close()  # a restart: the same database, a new service
    again = make_rig(tmp_path, routes=OWNER_ROUTES, store=AlertStore(target), clock=clock)
    await again.step(60)
    assert [a.id for a in again.service.firing()] == [alert.id] and again.email.to("nm-cc") == []

    again.service.plans.update_action(action["id"], {"status": "done"}, "NM Lee")
    await again.step(60)
    assert again.service.firing() == []
    resolved = again.service.get(alert.id)
    assert resolved is not None and resolved.state == "resolved"
    assert [a["action"] for a in again.service.audit(alert.id)][-1] == "resolved"


async def test_missed_milestone_goes_to_the_fallback_when_the_owner_has_no_contact(tmp_path: Path) -> None:
    clock = Clock()
    rig = make_rig(tmp_path, routes=OWNER_ROUTES, clock=clock)
    plans = rig.service.plans
    fields = {"title": "Tube station", "objectives": [], "facility": "DEMO", "owner": "Dr Ray"}
    fields |= {"starts": "2026-01-01", "ends": "2026-12-31", "status": "active", "description": None}
    made = plans.create_initiative(fields, [{"title": "Order", "due": "x", "due_ts": T0 + 30}], "admin")
    await rig.step(60)
    await rig.step(0)
    (alert,) = rig.service.firing()
    assert (alert.kpi, alert.owner, alert.place) == ("milestone_missed", "Dr Ray", ("DEMO", None, None))
    # "Dr Ray" is not under people: the role's fallback for the facility (hs) hears it
    assert [p["event"] for p in rig.email.to("hs")] == ["fired"]
    # due a day later: not missed any more (resolved), though not done
    later = {"due": "tomorrow", "due_ts": clock.now + 86400}
    assert plans.update_milestone(made["id"], made["milestones"][0]["id"], later, "admin")["progress"] == 0
    await rig.step(60)
    assert rig.service.firing() == []
    resolved = rig.service.get(alert.id)
    assert resolved is not None and resolved.state == "resolved"


async def test_the_default_routes_still_route_kpi_alerts_and_send_actions_to_owners(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, routes=ROUTES)  # routes without an action route: nobody is told
    rig.service.plans.create_action(new_action(T0 - 60), "RN Diaz")
    await rig.step(1)
    await rig.step(0)
    assert len(rig.service.firing()) == 1 and rig.email.sent == []


# ---- through real HTTP against a real carescore ---------------------------------------------------


@pytest.fixture
async def hospital(
    settings_for: Callable[..., Settings],
    kpi_dir: Callable[..., Path],
    smtp: tuple[int, Any],
    tmp_path: Path,
) -> AsyncIterator[tuple[Service, httpx.AsyncClient]]:
    """carescore (local mode: the caller is the local operator) with STAT alerts after 3 labs, the
    owner routes above and a real SMTP server."""
    routes = tmp_path / "routes.yaml"
    routes.write_text(OWNER_ROUTES)
    port, _ = smtp
    settings = settings_for(
        kpi_defs=kpi_dir({"lab_tat_stat": {"for": "1s", "min_samples": 3}}),
        alerts={"routes": routes, "email": {"host": "127.0.0.1", "port": port, "sender": "cs@x.invalid"}},
    )
    async with running(settings) as (svc, api):
        yield svc, api


async def fire_stat_alert(svc: Service, api: httpx.AsyncClient, unit: str) -> dict[str, Any]:
    """Four STAT troponins of 85-105 min on the unit: p90 far over the 60 min threshold."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=110)
    async with MLLPClient("127.0.0.1", svc.mllp.port) as client:
        for i, tat in enumerate([85, 95, 105, 100]):
            for msg in stat_pair(f"SLOW{unit}{i}", unit, start + timedelta(minutes=i), tat):
                assert ack_code(await client.send(msg)) == "AA"

    async def firing() -> Any:
        alerts = (await api.get("/api/v1/alerts", params={"state": "firing"})).json()["alerts"]
        return next((a for a in alerts if a["kpi"] == "lab_tat_stat" and a["unit"] == unit), None)

    found: dict[str, Any] = await wait_for(firing, 30)
    return found


def problem_field(response: httpx.Response) -> str:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return str(response.json()["errors"][0]["field"])


async def test_an_alert_becomes_an_action_followed_to_closure_with_events_markers_and_audit(
    hospital: tuple[Service, httpx.AsyncClient],
) -> None:
    _, api = hospital
    svc, _ = hospital
    alert = await fire_stat_alert(svc, api, "ICU")
    due = (datetime.now(UTC) + timedelta(days=7)).date().isoformat()
    body = {"title": "Second phlebotomist 07-09", "alert_id": alert["id"], "owner": "nm-cc", "due": due}
    made = await api.post("/api/v1/actions", json=body)
    assert made.status_code == 201, made.text
    action = made.json()
    # the alert's KPI and place are copied; the creator is the principal (local mode: local operator)
    assert (action["kpi"], action["facility"], action["department"], action["unit"]) == (
        "lab_tat_stat",
        "DEMO",
        "critical_care",
        "ICU",
    )
    assert (action["status"], action["created_by"], action["alert_id"]) == (
        "open",
        "local operator",
        alert["id"],
    )

    # refusals name the field
    assert (
        problem_field(await api.post("/api/v1/actions", json={**body, "created_by": "x"}))
        == "body.created_by"
    )
    assert problem_field(await api.post("/api/v1/actions", json={**body, "kpi": "bed_occupancy"})) == "kpi"
    no_alert = {k: v for k, v in body.items() if k != "alert_id"}
    assert problem_field(await api.post("/api/v1/actions", json=no_alert)) == "kpi"
    assert problem_field(await api.post("/api/v1/actions", json={**no_alert, "kpi": "nope"})) == "kpi"
    assert (
        problem_field(
            await api.post("/api/v1/actions", json={**no_alert, "kpi": "bed_occupancy", "unit": "9Z"})
        )
        == "unit"
    )
    assert problem_field(await api.post("/api/v1/actions", json={**body, "due": "next week"})) == "due"
    assert problem_field(await api.post("/api/v1/actions", json={**body, "owner": ""})) == "body.owner"
    for unstorable in ("NUL \x00 in a title", "a lone surrogate \ud800"):  # neither database takes them
        raw = json.dumps({**body, "title": unstorable})  # escaped: \u0000, \ud800
        sent = await api.post("/api/v1/actions", content=raw, headers={"content-type": "application/json"})
        assert problem_field(sent) == "body.title"
    far = await api.post("/api/v1/actions", json={**body, "due": "9999-12-31"})  # past the last date
    assert problem_field(far) == "due"
    missing = await api.post("/api/v1/actions", json={**body, "alert_id": "no-such-alert"})
    assert missing.status_code == 404 and "alert_id" in missing.json()["detail"]

    path = f"/api/v1/actions/{action['id']}"
    for status in ("in_progress", "done", "in_progress", "cancelled"):
        step = await api.patch(path, json={"status": status})
        assert step.status_code == 200 and step.json()["status"] == status, step.text
    assert problem_field(await api.patch(path, json={"status": "open"})) == "status"  # cancelled is final
    assert problem_field(await api.patch(path, json={"status": "closed"})) == "body.status"
    assert problem_field(await api.patch(path, json={"kpi": "bed_occupancy"})) == "body.kpi"  # not changeable
    assert (await api.patch("/api/v1/actions/nope", json={"status": "done"})).status_code == 404

    one = (await api.get(path)).json()
    assert [(e["what"], e["actor"]) for e in one["events"]] == [("created", "local operator")] + [
        ("changed", "local operator")
    ] * 4
    assert [e["changes"]["status"] for e in one["events"][1:]] == [
        ["open", "in_progress"],
        ["in_progress", "done"],
        ["done", "in_progress"],
        ["in_progress", "cancelled"],
    ]
    listed = (await api.get("/api/v1/actions", params={"kpi": "lab_tat_stat", "unit": "ICU"})).json()
    assert [a["id"] for a in listed["actions"]] == [action["id"]]
    assert (await api.get("/api/v1/actions", params={"unit": "4W"})).json()["actions"] == []

    history = (
        await api.get("/api/v1/kpis/lab_tat_stat/history", params={"unit": "ICU", "with": "actions"})
    ).json()
    assert [m["event"] for m in history["actions"]] == [
        "opened",
        "closed (done)",
        "reopened",
        "closed (cancelled)",
    ]
    assert "actions" not in (await api.get("/api/v1/kpis/lab_tat_stat/history")).json()

    entries = (await api.get("/api/v1/audit", params={"limit": 1000})).json()["entries"]
    writes = [(e["method"], e["route"], e["status"]) for e in entries if "/actions" in e["route"]]
    assert writes.count(("POST", "/api/v1/actions", 201)) == 1
    assert writes.count(("PATCH", "/api/v1/actions/{action_id}", 200)) == 4
    assert writes.count(("PATCH", "/api/v1/actions/{action_id}", 422)) == 3


async def test_an_overdue_action_and_a_missed_milestone_email_their_owner_and_resolve(
    hospital: tuple[Service, httpx.AsyncClient], smtp: tuple[int, Any]
) -> None:
    _, api = hospital
    _, mailbox = smtp
    late = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()  # logged after the fact: late already
    body = {"title": "Bed board huddle", "kpi": "bed_occupancy", "unit": "4W", "owner": "nm-cc", "due": late}
    action = (await api.post("/api/v1/actions", json=body)).json()

    async def alert_of(name: str, state: str) -> Any:
        alerts = (await api.get("/api/v1/alerts", params={"state": state})).json()["alerts"]
        return next((a for a in alerts if a["name"] == name), None)

    def mails_to(address: str) -> list[str]:
        return [m["Subject"] for to, m in mailbox.messages if address in to]

    fired = await wait_for(lambda: alert_of(f"action_overdue:{action['id']}", "firing"))
    from_it = {**body, "alert_id": fired["id"]}  # an overdue action's alert is no KPI's: no action from it
    assert problem_field(await api.post("/api/v1/actions", json=from_it)) == "alert_id"
    assert (fired["kind"], fired["owner"], fired["unit"], fired["department"]) == (
        "action",
        "nm-cc",
        "4W",
        "medicine",
    )
    subjects = await wait_for(lambda: _async(mails_to("nm-cc@x.invalid")))
    assert subjects[0].startswith("[WARNING] 4W:") and "Bed board huddle" in subjects[0]
    done = await api.patch(f"/api/v1/actions/{action['id']}", json={"status": "done"})
    assert done.status_code == 200
    await wait_for(lambda: alert_of(f"action_overdue:{action['id']}", "resolved"))
    resolved = await wait_for(lambda: _async([s for s in mails_to("nm-cc@x.invalid") if "RESOLVED" in s]))
    assert "Bed board huddle" in resolved[0]

    initiative = {
        "title": "Tube station",
        "objectives": ["safe_staffing"],
        "owner": "Dr Ray",  # not under people: the facility's fallback (hs) is told
        "starts": "2026-01-01",
        "ends": "2027-12-31",
        "status": "active",
        "milestones": [{"title": "Order placed", "due": late}, {"title": "Installed", "due": "2027-06-30"}],
    }
    made = (await api.post("/api/v1/initiatives", json=initiative)).json()
    missed = made["milestones"][0]
    await wait_for(lambda: alert_of(f"milestone_missed:{missed['id']}", "firing"))
    await wait_for(lambda: _async(mails_to("hs@x.invalid")))
    ticked = await api.patch(
        f"/api/v1/initiatives/{made['id']}/milestones/{missed['id']}", json={"done": True}
    )
    assert ticked.json()["progress"] == 0.5  # 1 of 2 milestones done
    await wait_for(lambda: alert_of(f"milestone_missed:{missed['id']}", "resolved"))


async def _async(value: Any) -> Any:
    return value


async def test_initiatives_and_analyses_over_http(hospital: tuple[Service, httpx.AsyncClient]) -> None:
    _, api = hospital
    body = {
        "title": "Nurse residency",
        "objectives": ["retain_nurses"],
        "owner": "nm-cc",
        "starts": "2026-01-01",
        "ends": "2026-12-31",
        "milestones": [{"title": "Curriculum", "due": "2030-02-01"}],
    }
    made = await api.post("/api/v1/initiatives", json=body)
    assert made.status_code == 201, made.text
    initiative = made.json()
    assert (initiative["facility"], initiative["status"], initiative["progress"]) == ("DEMO", "planned", 0)
    assert initiative["created_by"] == "local operator"
    assert (
        problem_field(await api.post("/api/v1/initiatives", json={**body, "objectives": ["nope"]}))
        == "objectives"
    )
    assert problem_field(await api.post("/api/v1/initiatives", json={**body, "ends": "2025-01-01"})) == "ends"
    path = f"/api/v1/initiatives/{initiative['id']}"
    added = await api.post(f"{path}/milestones", json={"title": "Evaluation", "due": "2030-06-30"})
    assert added.status_code == 201 and len(added.json()["milestones"]) == 2
    assert (await api.patch(path, json={"status": "active"})).json()["status"] == "active"
    assert (
        problem_field(await api.patch(path, json={"status": "planned"})) == "status"
    )  # active -> planned: no
    listed = (await api.get("/api/v1/initiatives", params={"objective": "retain_nurses"})).json()
    assert [i["id"] for i in listed["initiatives"]] == [initiative["id"]]
    one = (await api.get(path)).json()
    assert [e["what"] for e in one["events"]] == ["created", "milestone added", "milestone added", "changed"]

    url = "/api/v1/kpis/lab_tat_stat/analysis/2026-11"
    text = {"happened": "p90 84 min", "why": "one phlebotomist", "next": "a second 07-09"}
    first = await api.put(url, params={"unit": "ICU"}, json=text)
    assert first.status_code == 200, first.text
    second = await api.put(url, params={"unit": "ICU"}, json={**text, "next": "and a tube station"})
    got = (await api.get(url, params={"unit": "ICU"})).json()
    assert got == second.json()
    assert got["group"] == {"facility": "DEMO", "department": "critical_care", "unit": "ICU"}
    assert [(v["version"], v["author"]) for v in got["versions"]] == [
        (2, "local operator"),
        (1, "local operator"),
    ]
    assert got["current"]["next"] == "and a tube station"
    assert (await api.get(url)).json()["current"] is None  # the facility's analysis: not written
    assert problem_field(await api.put(url, json={**text, "why": ""})) == "body.why"
    bad_period = await api.put("/api/v1/kpis/lab_tat_stat/analysis/2026-13", json=text)
    assert bad_period.status_code == 422 and "period" in bad_period.json()["detail"]
    assert (await api.get("/api/v1/kpis/nope/analysis/2026-11")).status_code == 404
    assert problem_field(await api.get(url, params={"unit": "9Z"})) == "unit"


# ---- who may: real Keycloak tokens against a running carescore ------------------------------------


@pytest.mark.keycloak
async def test_viewers_read_clinicians_write_for_their_units_admins_run_initiatives(
    settings_for: Callable[..., Settings], keycloak: Keycloak
) -> None:
    oidc = {"issuer": keycloak.issuer(), "audience": "carescore-api", "leeway": 0}
    svc = Service(settings_for(api={"port": 0, "auth": {"oidc": oidc}}))
    await svc.start()
    viewer, clinician, admin = (
        {"Authorization": f"Bearer {keycloak.password_grant(u)['access_token']}"}
        for u in ("viewer", "clinician-icu", "admin")
    )
    body = {
        "title": "Huddle at 07:30",
        "kpi": "bed_occupancy",
        "unit": "ICU",
        "owner": "nm-cc",
        "due": "2030-01-01",
    }
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{svc.api_port}", timeout=30) as api:
            refused = await api.post("/api/v1/actions", json=body, headers=viewer)
            assert refused.status_code == 403 and "manage_actions" in refused.json()["detail"]
            own = await api.post("/api/v1/actions", json={**body, "created_by": "x"}, headers=clinician)
            assert own.status_code == 422  # created_by is never the body's
            own = await api.post("/api/v1/actions", json=body, headers=clinician)
            assert own.status_code == 201 and own.json()["created_by"] == "clinician-icu", own.text
            other = await api.post("/api/v1/actions", json={**body, "unit": "4W"}, headers=clinician)
            assert other.status_code == 403 and "4W" in other.json()["detail"]
            ward = (await api.post("/api/v1/actions", json={**body, "unit": "4W"}, headers=admin)).json()
            assert ward["created_by"] == "admin"
            assert (
                await api.patch(f"/api/v1/actions/{ward['id']}", json={"status": "done"}, headers=clinician)
            ).status_code == 403
            mine = await api.patch(
                f"/api/v1/actions/{own.json()['id']}", json={"status": "in_progress"}, headers=clinician
            )
            assert mine.status_code == 200 and mine.json()["changed_by"] == "clinician-icu"
            listed = await api.get("/api/v1/actions", headers=viewer)
            assert listed.status_code == 200 and len(listed.json()["actions"]) == 2

            initiative = {"title": "Flow", "objectives": ["patient_flow"], "owner": "nm-cc"}
            initiative |= {"starts": "2026-01-01", "ends": "2026-12-31"}
            assert (
                await api.post("/api/v1/initiatives", json=initiative, headers=clinician)
            ).status_code == 403
            made = await api.post("/api/v1/initiatives", json=initiative, headers=admin)
            assert made.status_code == 201 and made.json()["created_by"] == "admin"

            url = "/api/v1/kpis/bed_occupancy/analysis/2026-11"
            text = {"happened": "95 % for 3 days", "why": "flu", "next": "surge beds"}
            icu = await api.put(url, params={"unit": "ICU"}, json=text, headers=clinician)
            assert icu.status_code == 200 and icu.json()["current"]["author"] == "clinician-icu"
            assert (
                await api.put(url, params={"unit": "4W"}, json=text, headers=clinician)
            ).status_code == 403
            assert (await api.put(url, json=text, headers=clinician)).status_code == 403  # the facility's
            assert (await api.get(url, params={"unit": "ICU"}, headers=viewer)).status_code == 200
            audit = (await api.get("/api/v1/audit", params={"limit": 1000}, headers=admin)).json()["entries"]
    finally:
        await svc.stop()
    writes = sorted((e["name"], e["method"], e["status"]) for e in audit if "/actions" in e["route"])
    assert writes == sorted(
        [
            ("viewer", "POST", 403),
            ("clinician-icu", "POST", 422),
            ("clinician-icu", "POST", 201),
            ("clinician-icu", "POST", 403),
            ("admin", "POST", 201),
            ("clinician-icu", "PATCH", 403),
            ("clinician-icu", "PATCH", 200),
        ]
    )
