"""The alert store on a real PostgreSQL (for several carescore processes sharing alerts):
the same rules hold as on SQLite, a crash still delivers once with the same key, and two
processes claiming due notices never both send one."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from alerts.store import AlertStore, Notice
from tests.alerting import ICU, Clock, make_rig

TAT = "lab_tat_stat"


async def test_escalation_ack_and_audit_on_postgres(tmp_path: Path, pg: str) -> None:
    rig = make_rig(tmp_path, store=AlertStore(pg))
    await rig.step(0, rig.sample(TAT, 90))
    await rig.hold(17, (TAT, 90, ICU))
    assert [p["event"] for p in rig.email.to("nm-cc")] == ["escalated"]
    (alert,) = rig.service.store.active()
    rig.service.acknowledge(alert["id"], "RN Diaz", "on it")
    await rig.hold(40, (TAT, 90, ICU))
    assert rig.email.to("hs") == []
    actions = [a["action"] for a in rig.service.store.audit(alert["id"])]
    assert actions[:2] == ["fired", "routed (unit)"] and "acknowledged" in actions


async def test_silence_and_restart_on_postgres(tmp_path: Path, pg: str) -> None:
    clock = Clock()
    rig = make_rig(tmp_path, store=AlertStore(pg), clock=clock)
    rig.service.silence({"unit": "ICU"}, clock.now, clock.now + 600, "ops", "drill")
    await rig.step(0, rig.sample(TAT, 90))
    await rig.hold(5, (TAT, 90, ICU))
    assert rig.email.sent == []
    rig.service.store.close()
    again = make_rig(tmp_path, store=AlertStore(pg), clock=clock)  # another process, same database
    await again.hold(7, (TAT, 90, ICU))  # the silence ended at minute 10: the held notice goes
    assert [p["event"] for p in again.email.to("cn-icu")] == ["fired"]


def test_two_processes_never_claim_the_same_notice(pg: str) -> None:
    first, second = AlertStore(pg), AlertStore(pg)
    alert = {
        "id": "a1",
        "kpi": TAT,
        "facility": "DEMO",
        "state": "firing",
        "severity": "critical",
        "started_at": "2026-01-01T00:00:00+00:00",
        "fired_at": "2026-01-01T00:00:00+00:00",
        "summary": "x",
    }
    notices = [Notice("email", f"k{i}", {"i": i}, ("a1",), "fired", f"p{i}") for i in range(200)]
    first.fire(alert, notices)
    claimed: dict[str, list[int]] = {"first": [], "second": []}

    def claim(name: str, store: AlertStore) -> None:
        while batch := store.due(now=10.0, limit=7):
            claimed[name] += [item.id for item in batch]

    threads = [threading.Thread(target=claim, args=(n, s)) for n, s in (("first", first), ("second", second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    both: list[Any] = claimed["first"] + claimed["second"]
    assert len(both) == 200 and len(set(both)) == 200  # every notice claimed, none twice
    assert claimed["first"] and claimed["second"]  # and both processes took part
    assert first.due(now=10.0) == []  # leased: not due again until the lease runs out
    assert len(first.due(now=10.0 + 61)) == 100  # a process that died leaves them to the next
