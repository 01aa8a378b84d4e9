"""Every alert rule on a clock the test moves: for, clear level, keep-firing-for, no_data,
severity within an episode, stale feeds and inhibition, one notice per transition,
reminders, routing through the roster, escalation, silences, mute windows, grouping,
durability across a restart, the audit trail."""

from __future__ import annotations

from pathlib import Path

from alerts.store import AlertStore
from engine.config_alerts import FeedRule
from engine.events import LabEvent
from tests.alerting import ICU, W4, Clock, make_rig

TAT = "lab_tat_stat"  # warning 60, critical 75, clear 55, for 30s, min 3 samples
CALLS = "nurse_call_response_p90"  # warning 6, critical 10, clear 5, for 5m


def lab(unit: str, when: float) -> LabEvent:
    from datetime import UTC, datetime

    t = datetime.fromtimestamp(when, UTC)
    return LabEvent(
        type="lab.order",
        event_time=t,
        received_time=t,
        source="hl7v2",
        source_id=f"o{when}",
        facility="DEMO",
        department="critical_care",
        unit=unit,
        order_id=f"o{when}",
    )


async def test_for_then_fire_once_and_resolve_past_the_clear_level(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    await rig.step(0, rig.sample(TAT, 80))  # breaching: pending
    assert rig.service.store.active() == []
    await rig.step(40, rig.sample(TAT, 82))  # past `for` (30 s): fires
    (alert,) = rig.service.store.active()
    assert (alert["severity"], alert["value"], alert["threshold"]) == ("critical", 82, 75)
    await rig.hold(5, (TAT, 58, ICU))  # below warning, above the clear level: still firing
    assert rig.service.store.get(alert["id"])["state"] == "firing"
    await rig.step(60, rig.sample(TAT, 50))  # past clear: resolved
    assert rig.service.store.get(alert["id"])["state"] == "resolved"
    fired = [p for p in rig.email.to("cn-icu") if p["event"] == "fired"]
    resolved = [p for p in rig.email.to("cn-icu") if p["event"] == "resolved"]
    assert len(fired) == 1 and len(resolved) == 1
    assert [p["event"] for _, p in rig.hook.sent] == ["fired", "resolved"]  # integrations: every change


async def test_a_breach_shorter_than_for_never_fires(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    for value in (7, 8, 4, 9, 7, 3, 8, 4):  # crossing 6 every minute, never 5 minutes on end
        await rig.step(60, rig.sample(CALLS, value, W4))
    assert rig.service.store.query() == [] and rig.email.sent == [] and rig.hook.sent == []


async def test_no_data_neither_starts_nor_ends_a_breach(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    await rig.step(0, rig.sample(TAT, 90, n=2))  # below min_samples: no_data
    await rig.step(60, rig.sample(TAT, 90, n=2))
    assert rig.service.store.query() == []
    await rig.step(0, rig.sample(TAT, 90))
    await rig.step(40, rig.sample(TAT, 90))
    await rig.hold(10, (TAT, None, ICU))  # the unit goes quiet: no data, not "recovered"
    assert len(rig.service.store.active()) == 1


async def test_keep_firing_for_holds_one_episode_through_flapping(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    kpi = rig.catalogue.kpis[TAT]
    rig.catalogue.kpis[TAT] = kpi.model_copy(update={"keep_firing_for": 600.0})
    await rig.step(0, rig.sample(TAT, 80))
    await rig.step(40, rig.sample(TAT, 80))
    for value in (50, 80, 50, 80, 50):  # clears and breaches again within 10 minutes
        await rig.step(120, rig.sample(TAT, value))
    assert len(rig.service.store.query()) == 1  # one alert, one episode
    await rig.hold(11, (TAT, 50, ICU))
    (alert,) = rig.service.store.query()
    assert alert["state"] == "resolved"
    assert [p["event"] for p in rig.email.to("cn-icu")] == ["fired", "resolved"]


async def test_severity_rises_and_falls_within_one_episode(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    await rig.step(0, rig.sample(TAT, 65))
    await rig.step(40, rig.sample(TAT, 65))
    await rig.step(60, rig.sample(TAT, 90))
    await rig.step(60, rig.sample(TAT, 65))
    (alert,) = rig.service.store.query()
    assert alert["severity"] == "warning"
    actions = [a["action"] for a in rig.service.store.audit(alert["id"])]
    assert "severity warning -> critical" in actions and "severity critical -> warning" in actions
    assert len(rig.email.to("cn-icu")) == 1  # told once


async def test_unacknowledged_alerts_escalate_by_tier_and_an_ack_stops_them(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    await rig.step(0, rig.sample(TAT, 90))
    await rig.hold(17, (TAT, 90, ICU))  # told at minute 2 (for, then group_wait); 15 minutes later
    assert [p["event"] for p in rig.email.to("nm-cc")] == ["escalated"]
    assert rig.email.to("hs") == []
    await rig.hold(15, (TAT, 90, ICU))
    assert [p["event"] for p in rig.email.to("hs")] == ["escalated"]
    (alert,) = rig.service.store.active()
    assert alert["tier"] == 2
    rig.service.acknowledge(alert["id"], "RN Diaz", "calling the lab")
    await rig.hold(180, (TAT, 90, ICU))  # hours more: no reminders once acknowledged
    assert len(rig.email.to("cn-icu")) == 1 and len(rig.email.to("nm-cc")) == 1
    audit = rig.service.store.audit(alert["id"])
    acked = next(a for a in audit if a["action"] == "acknowledged")
    assert (acked["actor"], acked["detail"]) == ("RN Diaz", "calling the lab")
    assert [a["action"] for a in audit].count("escalated to nurse_manager") == 1
    assert any(p["event"] == "acknowledged" for _, p in rig.hook.sent)


async def test_reminders_repeat_at_most_every_repeat_interval(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, routes=_routes(escalate=False))
    await rig.step(0, rig.sample(TAT, 90))
    await rig.hold(5 * 60 + 5, (TAT, 90, ICU), every=300)  # five hours unacknowledged
    events = [p["event"] for p in rig.email.to("cn-icu")]
    assert events == ["fired", "reminder", "reminder"]  # repeat_interval 2h


async def test_roles_resolve_to_whoever_is_on_shift_else_the_fallback(tmp_path: Path) -> None:
    roster = {"rn7": ("charge_nurse", ICU)}
    rig = make_rig(tmp_path, roster=roster)
    await rig.step(0, rig.sample(TAT, 90))
    await rig.step(40, rig.sample(TAT, 90), rig.sample(CALLS, 12, W4))
    await rig.hold(6, (TAT, 90, ICU), (CALLS, 12, W4))
    assert len(rig.email.to("rn7")) == 1 and rig.email.to("cn-icu") == []  # on shift wins
    assert len(rig.email.to("cn-4w")) == 1  # nobody on shift on 4W: the fallback


async def test_several_breaches_on_one_unit_arrive_as_one_notice(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    await rig.step(0, rig.sample(TAT, 90), rig.sample("lab_tat_stat_median", 70))
    await rig.step(40, rig.sample(TAT, 90), rig.sample("lab_tat_stat_median", 70), rig.sample(CALLS, 12))
    await rig.hold(6, (TAT, 90, ICU), ("lab_tat_stat_median", 70, ICU), (CALLS, 12, ICU))
    notices = [p for p in rig.email.to("cn-icu") if p["event"] == "fired"]
    assert len(rig.service.store.active()) == 3
    assert len(notices) == 2  # the two lab KPIs together (within group_wait), the call KPI after `for`
    assert sorted(len(n["alerts"]) for n in notices) == [1, 2]


async def test_silences_hold_notices_but_record_alerts(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    now = rig.clock.now
    silence = rig.service.silence(
        {"unit": "ICU", "kpi": TAT}, now, now + 3600, "charge RN", "lab analyser swap"
    )
    await rig.step(0, rig.sample(TAT, 90))
    await rig.hold(30, (TAT, 90, ICU))
    (alert,) = rig.service.store.active()  # recorded
    assert rig.email.to("cn-icu") == [] and rig.email.to("nm-cc") == []  # nobody paged, no escalation
    assert any(
        a["action"] == "notice held" and "silenced" in (a["detail"] or "")
        for a in rig.service.store.audit(alert["id"])
    )
    rig.service.store.expire_silence(silence["id"], "charge RN")
    await rig.hold(1, (TAT, 90, ICU))
    assert [p["event"] for p in rig.email.to("cn-icu")] == ["fired"]  # still firing: now they hear


async def test_a_silenced_alert_that_resolves_is_never_sent(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.service.silence({"kpi": TAT}, rig.clock.now, rig.clock.now + 7200, "ops", None)
    await rig.step(0, rig.sample(TAT, 90))
    await rig.hold(10, (TAT, 90, ICU))
    await rig.hold(5, (TAT, 40, ICU))
    assert rig.email.sent == []
    (alert,) = rig.service.store.query()
    assert any(a["action"] == "notice cancelled" for a in rig.service.store.audit(alert["id"]))


async def test_mute_windows_hold_notices_until_they_end(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    start = datetime(2026, 3, 2, 6, 40, tzinfo=UTC).timestamp()  # mute 06:45-07:15 (UTC site)
    rig = make_rig(tmp_path, clock=Clock(start))
    await rig.step(0, rig.sample(TAT, 90))
    await rig.hold(12, (TAT, 90, ICU))  # fires 06:41, gathered until 06:41:30... muted from 06:45
    # the first notice went before the window; a second breach on 4W inside it waits
    await rig.step(0, rig.sample(CALLS, 12, W4))
    await rig.hold(10, (CALLS, 12, W4))
    assert rig.email.to("cn-4w") == []
    await rig.hold(25, (CALLS, 12, W4))  # past 07:15
    (notice,) = rig.email.to("cn-4w")
    assert notice["event"] == "fired"


async def test_a_stopped_feed_alerts_ops_and_its_kpis_are_not_evaluated(tmp_path: Path) -> None:
    rule = FeedRule(name="EMR HL7", source="hl7v2", stale_after=900)
    rig = make_rig(tmp_path, feeds=[rule])
    rig.service.feeds.observe([lab("ICU", rig.clock.now)], rig.clock.now)
    await rig.hold(20, (TAT, 40, ICU))  # 20 quiet minutes: the feed alert fires
    (feed,) = rig.service.store.active()
    assert (feed["kind"], feed["kpi"], feed["unit"]) == ("feed", "feed_stale", None)
    assert [p["event"] for p in rig.email.to("ops")] == ["fired"]
    # results stop arriving, so STAT turnaround looks overdue: stale data, not a breach
    await rig.hold(30, (TAT, 95, ICU))
    assert [a["kind"] for a in rig.service.store.active()] == ["feed"]
    rig.service.feeds.observe([lab("ICU", rig.clock.now)], rig.clock.now)
    await rig.hold(3, (TAT, 40, ICU))  # back, and the backlog shows turnaround was fine
    assert rig.service.store.active() == [] and rig.email.to("cn-icu") == []
    assert [p["event"] for p in rig.email.to("ops")] == ["fired", "resolved"]


async def test_notices_of_an_alert_whose_feed_stops_are_held_then_cancelled(tmp_path: Path) -> None:
    rule = FeedRule(name="EMR HL7", source="hl7v2", stale_after=900)
    rig = make_rig(tmp_path, feeds=[rule])
    rig.service.feeds.observe([lab("ICU", rig.clock.now - 860)], rig.clock.now - 860)
    await rig.step(0, rig.sample(TAT, 90))
    await rig.step(40, rig.sample(TAT, 90))  # fires; its notice waits out group_wait (30 s)
    await rig.step(60, rig.sample(TAT, 90))  # the feed is stale now: the notice is held
    alert = next(a for a in rig.service.store.active() if a["kind"] == "kpi")
    assert rig.email.to("cn-icu") == []
    assert any("inhibited" in (a["detail"] or "") for a in rig.service.store.audit(alert["id"]))
    rig.service.feeds.observe([lab("ICU", rig.clock.now)], rig.clock.now)
    await rig.hold(2, (TAT, 40, ICU))
    assert rig.service.store.get(alert["id"])["state"] == "resolved"
    assert rig.email.to("cn-icu") == []  # cancelled: it was stale data all along
    assert any(a["action"] == "notice cancelled" for a in rig.service.store.audit(alert["id"]))


async def test_a_restart_keeps_alerts_and_does_not_notify_again(tmp_path: Path) -> None:
    clock = Clock()
    rig = make_rig(tmp_path, clock=clock)
    await rig.step(0, rig.sample(TAT, 90))
    await rig.hold(2, (TAT, 90, ICU))
    assert len(rig.email.to("cn-icu")) == 1
    rig.service.store.close()
    again = make_rig(tmp_path, clock=clock, store=AlertStore(tmp_path / "alerts.sqlite"))
    await again.hold(5, (TAT, 90, ICU))
    assert again.email.sent == [] and len(again.service.store.active()) == 1
    await again.hold(12, (TAT, 90, ICU))  # the escalation clock kept running across the restart
    assert [p["event"] for p in again.email.to("nm-cc")] == ["escalated"]


async def test_a_crash_between_deciding_and_delivering_delivers_once_with_the_same_key(
    tmp_path: Path,
) -> None:
    clock = Clock()
    rig = make_rig(tmp_path, clock=clock)
    await rig.step(0, rig.sample(TAT, 90))
    clock.advance(40)
    rig.service.observe([rig.sample(TAT, 90)], clock.now)
    clock.advance(31)
    rig.service.tick(clock.now)  # decided: the notice is in the outbox, never sent
    queued = [o for o in rig.service.store.outbox() if o["recipient"] == "cn-icu"]
    assert len(queued) == 1 and queued[0]["delivered_at"] is None
    rig.service.store.close()  # "crash"
    again = make_rig(tmp_path, clock=clock, store=AlertStore(tmp_path / "alerts.sqlite"))
    await again.hold(3, (TAT, 90, ICU))
    ((key, _payload),) = [(k, p) for k, p in again.email.sent if p["recipient"]["staff_id"] == "cn-icu"]
    assert key == queued[0]["idempotency_key"]


def _routes(escalate: bool) -> str:
    from tests.alerting import ROUTES

    if escalate:
        return ROUTES
    tiers = "      - {after: 15m, to: [nurse_manager]}\n      - {after: 30m, to: [house_supervisor]}\n"
    return ROUTES.replace("    escalate:\n" + tiers, "")


def test_routes_errors_name_the_file_line_and_field(tmp_path: Path) -> None:
    import pytest

    from alerts.routes import load_routes
    from engine.yamlconf import ConfigError

    bad = tmp_path / "routes.yaml"
    bad.write_text(
        "routes:\n  - name: unit\n    receivers: [charge_nurse]\n    group_wait: soon\n"
        "roles:\n  charge_nurse: {scope: ward}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_routes(bad)
    text = "\n".join(caught.value.problems)
    assert f"{bad}:4" in text and "group_wait" in text and "soon" in text
    assert f"{bad}:6" in text and "scope" in text
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("routes:\n  - {name: unit, receivers: [matron]}\nroles: {}\n")
    with pytest.raises(ConfigError) as caught:
        load_routes(unknown)
    assert "unknown role 'matron'" in "\n".join(caught.value.problems)
