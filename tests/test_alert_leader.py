"""One alert evaluator among processes sharing a real PostgreSQL alert store: the advisory
lock that elects it, its loss when the lock's session ends, and a takeover that neither loses
a notice nor sends one twice. (The same with real gateway processes, Kafka and SMTP, killed
for real: tests/test_alert_failover.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from alerts.leader import LOCK_KEY, AdvisoryLock, SoleLeader, leadership_for
from alerts.store import AlertStore
from engine.config_alerts import FeedRule
from tests.alerting import ICU, Clock, make_rig, two_routes
from tests.test_alert_rules import lab

TAT = "lab_tat_stat"

TWO_ROUTES = two_routes("10m")  # the charge nurse at once, the nurse manager after 10 minutes


def end_lock_session(pg: str) -> None:
    """PostgreSQL ends the session holding the alert lock (pg_terminate_backend): a real fault."""
    with psycopg.connect(pg, autocommit=True) as admin:
        (holder,) = admin.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND (classid::bigint << 32) + objid::bigint = %s",
            (LOCK_KEY,),
        ).fetchall()
        admin.execute("SELECT pg_terminate_backend(%s)", holder)


def test_one_holder_and_the_lock_passes_when_its_session_ends(pg: str) -> None:
    first, second = AdvisoryLock(pg), AdvisoryLock(pg)
    assert first.acquire() and first.held()
    assert not second.acquire() and not second.held()  # PostgreSQL says no: one holder
    assert first.acquire()  # asking again while holding it: still held
    end_lock_session(pg)  # as when the leader's process dies or its network drops
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


async def test_a_leader_that_loses_its_lock_mid_batch_sends_nothing_more(tmp_path: Path, pg: str) -> None:
    """Leader A claims the alert's two first notices (charge nurse, manager: both routes with
    group_wait 0) in one batch; its lock session ends right after the first is sent. The fence
    before each notice stops A there: the second stays in the outbox, claimed. B, leader now,
    sends it once the 60 s claim lease has run out. Two notices, each sent once."""
    clock = Clock()
    lock_a, lock_b = AdvisoryLock(pg), AdvisoryLock(pg)
    assert lock_a.acquire()
    a = make_rig(tmp_path / "a", routes=two_routes("0s"), store=AlertStore(pg), clock=clock)
    a.service.fence = lock_a.held
    send = a.email.send

    async def send_then_lose_the_lock(payload: dict[str, Any], key: str) -> None:
        await send(payload, key)
        end_lock_session(pg)

    setattr(a.email, "send", send_then_lose_the_lock)  # noqa: B010 - replaces the bound method
    await a.step(0, a.sample(TAT, 90))
    await a.step(60, a.sample(TAT, 90))  # fired (for 30 s): both notices queued and claimed
    assert len(a.email.sent) == 1 and not lock_a.held()
    assert lock_b.acquire()
    b = make_rig(tmp_path / "b", routes=two_routes("0s"), store=AlertStore(pg), clock=clock)
    b.service.fence = lock_b.held
    b.service.resume(clock.now)
    await b.step(30, b.sample(TAT, 90))
    assert b.email.sent == []  # A's claim holds for 60 s: what it might be sending is not sent twice
    await b.step(31, b.sample(TAT, 90))
    keys = [k for k, _ in a.email.sent + b.email.sent]
    assert len(keys) == len(set(keys)) == 2
    staff = {p["recipient"]["staff_id"] for _, p in a.email.sent + b.email.sent}
    assert staff == {"cn-icu", "nm-cc"}
    assert not lock_a.acquire()  # the old leader, back, follows
    lock_b.release()


async def test_the_leader_hears_of_a_feed_only_the_follower_takes(tmp_path: Path, pg: str) -> None:
    """The HL7 interface sends to gateway B (a follower); A leads. While B hears it each minute
    and shares that through the store, A raises no feed alert; once B hears nothing, A fires
    it after stale_after (15 min): its last-seen time came from B. Without the sharing A would
    never arm the rule (a feed never seen is no outage) and never fire."""
    rule = FeedRule(name="EMR HL7", source="hl7v2", stale_after=900)
    clock = Clock()
    a = make_rig(tmp_path / "a", feeds=[rule], store=AlertStore(pg), clock=clock)
    b = make_rig(tmp_path / "b", feeds=[rule], store=AlertStore(pg), clock=clock)
    for _ in range(20):
        b.service.saw([lab("ICU", clock.now)], clock.now)
        b.service.save_feeds()
        a.service.share_feeds()
        await a.step(60)
    assert a.service.store.active() == []
    for _ in range(16):  # B hears nothing more: quiet 16 min > 15 at the end
        b.service.save_feeds()
        a.service.share_feeds()
        await a.step(60)
    (feed,) = a.service.store.active()
    assert (feed.kind, feed.facility) == ("feed", "DEMO")
