"""One alert evaluator among processes sharing a real PostgreSQL alert store: the advisory
lock that elects it, its loss when the lock's session ends, and a takeover that neither loses
a notice nor sends one twice. (The same with real gateway processes, Kafka and SMTP, killed
for real: tests/test_alert_failover.py.)"""

from __future__ import annotations

from pathlib import Path

import psycopg

from alerts.leader import LOCK_KEY, AdvisoryLock, SoleLeader, leadership_for
from alerts.store import AlertStore
from tests.alerting import ICU, Clock, make_rig, two_routes

TAT = "lab_tat_stat"

TWO_ROUTES = two_routes("10m")  # the charge nurse at once, the nurse manager after 10 minutes


def test_one_holder_and_the_lock_passes_when_its_session_ends(pg: str) -> None:
    first, second = AdvisoryLock(pg), AdvisoryLock(pg)
    assert first.acquire() and first.held()
    assert not second.acquire() and not second.held()  # PostgreSQL says no: one holder
    assert first.acquire()  # asking again while holding it: still held
    with psycopg.connect(pg, autocommit=True) as admin:
        (holder,) = admin.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND (classid::bigint << 32) + objid::bigint = %s",
            (LOCK_KEY,),
        ).fetchall()
        # the leader's session ends under it (as when its process dies or its network drops)
        admin.execute("SELECT pg_terminate_backend(%s)", holder)
    assert not first.held()  # the fence: the lock's connection is gone, so is the lead
    assert second.acquire() and second.held()
    assert not first.acquire()  # the old leader, reconnected, is a follower now
    second.release()
    assert first.acquire()  # released on a clean stop: taken at the next try
    first.release()


def test_sqlite_store_leads_alone(tmp_path: Path, pg: str) -> None:
    assert isinstance(leadership_for(tmp_path / "alerts.sqlite"), SoleLeader)
    assert isinstance(leadership_for(pg), AdvisoryLock)


async def test_takeover_sends_what_the_dead_leader_had_not_and_nothing_twice(tmp_path: Path, pg: str) -> None:
    """Leader A fires the alert and its charge-nurse notice goes out (group_wait 0); the
    manager's notice is still gathering (group_wait 10 min) when A stops for good. B, on the
    same store, takes over: it must send the manager's notice once (10 min after taking
    over: gathering starts again), never the charge nurse's again, and when the breach ends
    tell both it resolved, once each."""
    clock = Clock()
    a = make_rig(tmp_path / "a", routes=TWO_ROUTES, store=AlertStore(pg), clock=clock)
    b = make_rig(tmp_path / "b", routes=TWO_ROUTES, store=AlertStore(pg), clock=clock)
    await a.step(0, a.sample(TAT, 90))
    await a.hold(1, (TAT, 90, ICU))  # for 30 s: fired within the minute, cn told at once
    assert [p["event"] for p in a.email.to("cn-icu")] == ["fired"] and a.email.to("nm-cc") == []
    a.service.store.close()  # A is gone: no more ticks, no more deliveries

    b.service.resume(clock.now)
    await b.hold(9, (TAT, 90, ICU))
    assert b.email.sent == []  # still gathering for the manager; the charge nurse was told by A
    await b.hold(2, (TAT, 90, ICU))
    assert [p["event"] for p in b.email.to("nm-cc")] == ["fired"]
    await b.step(60, b.sample(TAT, 30))  # below clear (55): resolved
    assert [p["event"] for p in b.email.to("cn-icu")] == ["resolved"]
    assert [p["event"] for p in b.email.to("nm-cc")] == ["fired", "resolved"]
    keys = [k for k, _ in a.email.sent + b.email.sent]
    assert len(keys) == len(set(keys)) == 4  # fired to cn, fired to nm, resolved to both
    (alert,) = b.service.store.query()  # one alert for the episode, not one per leader
    assert alert.state == "resolved"
