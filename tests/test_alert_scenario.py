"""A 12-hour day shift on three units, on the embedded runtime with a clock the test moves
and a real SMTP server for every inbox.

Noisy but in-range STAT labs and nurse calls all day; one real sustained breach (ICU STAT
labs slow from 11:30 to 13:00); one flapping KPI (3E occupancy crossing 95% every few
minutes, never for the 15 minutes its alert needs); one feed outage (no HL7 from 16:00 to
16:40, then the interface sends its backlog). The ICU charge nurse acknowledges five
minutes after being told. Expected, and nothing else: the ICU charge nurse hears that the
STAT turnaround fired and that it resolved; operations hear that the feed stopped and came
back; nobody else is told anything. During the outage the unanswered-looking nurse calls and
the census stuck at 95% are stale data, not breaches: the KPIs fed by the stopped feed are
not evaluated until it is back (their `for` starts over).
"""

from __future__ import annotations

import random
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from carescore.transports.embedded import EmbeddedRuntime
from engine.config import REPO_ROOT
from engine.events import EncounterEvent, EventBase, LabEvent, NurseCallEvent
from tests.alerting import Clock

START = datetime(2026, 3, 2, 7, 30, tzinfo=UTC)
END = START + timedelta(hours=12)
OUTAGE = (datetime(2026, 3, 2, 16, 0, tzinfo=UTC), datetime(2026, 3, 2, 16, 40, tzinfo=UTC))
SLOW = (datetime(2026, 3, 2, 11, 30, tzinfo=UTC), datetime(2026, 3, 2, 13, 0, tzinfo=UTC))
UNITS = {"ICU": "critical_care", "4W": "medicine", "3E": "medicine"}
CENSUS = {"ICU": 9, "4W": 24, "3E": 18}

ROUTES = """
routes:
  - {name: feeds, match: {kind: feed}, receivers: [ops], group_wait: 0s}
  - name: unit
    match: {kind: kpi}
    receivers: [charge_nurse]
    escalate: [{after: 15m, to: [nurse_manager]}, {after: 30m, to: [house_supervisor]}]
    group_wait: 30s
    repeat_interval: 4h
    mute: [shift-change]
roles:
  charge_nurse: {scope: unit, fallback: {ICU: [cn-icu], 4W: [cn-4w], 3E: [cn-3e]}}
  nurse_manager: {scope: department, fallback: {critical_care: [nm-cc], medicine: [nm-med]}}
  house_supervisor: {scope: facility, fallback: {DEMO: [hs]}}
  ops: {scope: facility, fallback: {DEMO: [ops]}}
people:
  cn-icu: {name: ICU charge nurse, email: cn-icu@ward.example}
  cn-4w: {name: 4W charge nurse, email: cn-4w@ward.example}
  cn-3e: {name: 3E charge nurse, email: cn-3e@ward.example}
  nm-cc: {name: Critical care manager, email: nm-cc@ward.example}
  nm-med: {name: Medicine manager, email: nm-med@ward.example}
  hs: {name: House supervisor, email: hs@ward.example}
  ops: {name: Clinical systems, email: ops@ward.example}
mute_windows:
  shift-change: [{from: "06:45", to: "07:15"}, {from: "18:45", to: "19:15"}]
"""


class Day:
    """The day's canonical events, as the EMR and nurse-call system would send them."""

    def __init__(self, seed: int = 11):
        self.rng = random.Random(seed)
        self.events: list[EventBase] = []
        self.n = 0

    def base(self, when: datetime, unit: str) -> dict[str, Any]:
        self.n += 1
        return {
            "event_time": when,
            "received_time": when,
            "source": "hl7v2",
            "source_id": f"s{self.n}",
            "facility": "DEMO",
            "department": UNITS[unit],
            "unit": unit,
        }

    def census(self) -> None:
        for unit, count in CENSUS.items():
            for i in range(count):
                self.admit(START - timedelta(days=1), unit, f"{unit}-P{i}")

    def admit(self, when: datetime, unit: str, visit: str) -> None:
        self.events.append(
            EncounterEvent(
                type="encounter.admit", encounter_id=visit, patient_class="inpatient", **self.base(when, unit)
            )
        )

    def discharge(self, when: datetime, unit: str, visit: str) -> None:
        self.events.append(
            EncounterEvent(type="encounter.discharge", encounter_id=visit, **self.base(when, unit))
        )

    def stat_lab(self, when: datetime, unit: str, minutes: float) -> None:
        order = f"L{self.n}"
        done = when + timedelta(minutes=minutes)
        self.events.append(
            LabEvent(type="lab.order", order_id=order, priority="stat", **self.base(when, unit))
        )
        self.events.append(
            LabEvent(
                type="lab.result",
                order_id=order,
                priority="stat",
                result_status="final",
                **self.base(done, unit),
            )
        )

    def call(self, when: datetime, unit: str, minutes: float) -> None:
        call = f"C{self.n}"
        self.events.append(NurseCallEvent(type="nursecall.placed", call_id=call, **self.base(when, unit)))
        answered = when + timedelta(minutes=minutes)
        self.events.append(
            NurseCallEvent(type="nursecall.acknowledged", call_id=call, **self.base(answered, unit))
        )

    def build(self) -> list[EventBase]:
        self.census()
        for unit in UNITS:
            t = START - timedelta(hours=1)
            while t < END:
                slow = unit == "ICU" and SLOW[0] <= t < SLOW[1]
                self.stat_lab(
                    t, unit, self.rng.uniform(95, 110) if slow else max(12.0, self.rng.gauss(30, 6))
                )
                t += timedelta(minutes=self.rng.uniform(1.5, 3))  # ~27 an hour: a p90 needs 20
            t = START - timedelta(hours=1)
            while t < END:
                self.call(t, unit, max(0.3, self.rng.lognormvariate(0.6, 0.35)))  # median ~1.8 min
                t += timedelta(minutes=self.rng.uniform(2, 6))
        t, extra = START, False  # 3E: one more patient, then not, every 5-8 minutes (95% <-> 90%)
        while t < END:
            if extra:
                self.discharge(t, "3E", "3E-X")
            else:
                self.admit(t, "3E", "3E-X")
            extra = not extra
            t += timedelta(minutes=self.rng.uniform(5, 8))
        return sorted(self.events, key=lambda e: e.event_time)


def kpis(tmp_path: Path) -> Path:
    folder = tmp_path / "kpi_defs"
    folder.mkdir()
    for name in ("lab_tat_stat", "nurse_call_response_p90", "bed_occupancy"):
        shutil.copy(REPO_ROOT / "kpi_defs" / f"{name}.yaml", folder)
    return folder


def arrival(event: EventBase) -> datetime:
    """When the interface delivers it: at once, except what happened during the outage,
    which comes as a backlog when the link is back."""
    t = event.event_time
    return OUTAGE[1] if OUTAGE[0] <= t < OUTAGE[1] else t


async def test_a_day_shift_tells_exactly_who_needs_to_know(
    settings_for: Any, tmp_path: Path, smtp: Any
) -> None:
    port, mailbox = smtp
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES)
    settings = settings_for(
        kpi_defs=kpis(tmp_path),
        engine={"fsync": False},
        alerts={
            "routes": routes,
            "email": {"host": "127.0.0.1", "port": port, "sender": "carescore@hospital.example"},
            "feeds": [{"name": "EMR HL7 interface", "source": "hl7v2", "stale_after": "10m"}],
        },
    )
    runtime = EmbeddedRuntime(settings)
    clock = Clock((START - timedelta(hours=1)).timestamp())
    runtime.clock = runtime.alerts.clock = clock
    events = sorted(Day().build(), key=arrival)
    acked: set[str] = set()
    try:
        i = 0
        minute = START - timedelta(hours=1)
        while minute <= END:
            batch = []
            while i < len(events) and arrival(events[i]) <= minute:
                batch.append(events[i])
                i += 1
            clock.now = minute.timestamp()
            if batch:
                runtime.ingest_now(f"batch-{minute.isoformat()}", batch)
            runtime.tick(clock.now)
            await runtime.alerts.deliver_due()
            for alert in runtime.alerts.store.active():  # the ICU charge nurse answers in 5 minutes
                told = alert["notified_at"]
                due = told is not None and clock.now - datetime.fromisoformat(told).timestamp() >= 300
                if alert["unit"] == "ICU" and due and alert["id"] not in acked:
                    runtime.alerts.acknowledge(alert["id"], "ICU charge nurse", "lab analyser restarted")
                    acked.add(alert["id"])
            minute += timedelta(minutes=1)
        store = runtime.alerts.store
        alerts = store.query(limit=100)
    finally:
        await runtime.close()

    inbox: dict[str, list[str]] = {}
    for rcpts, msg in mailbox.messages:
        for rcpt in rcpts:
            inbox.setdefault(rcpt, []).append(msg["Subject"])
    assert set(inbox) == {"cn-icu@ward.example", "ops@ward.example"}, inbox
    icu = inbox["cn-icu@ward.example"]
    assert (
        len(icu) == 2
        and icu[0].startswith("[CRITICAL] ICU: STAT lab turnaround")
        and icu[1].startswith("[RESOLVED] ICU")
    )
    ops = inbox["ops@ward.example"]
    assert (
        len(ops) == 2
        and ops[0].startswith("[CRITICAL] DEMO: Data feed stopped")
        and ops[1].startswith("[RESOLVED]")
    )
    # what the day recorded: the breach and the outage, both over; no flapping or stale-data alerts
    assert sorted((a["kpi"], a["unit"], a["state"]) for a in alerts) == [
        ("feed_stale", None, "resolved"),
        ("lab_tat_stat", "ICU", "resolved"),
    ]
    (breach,) = [a for a in alerts if a["kpi"] == "lab_tat_stat"]
    assert breach["acked_by"] == "ICU charge nurse" and breach["tier"] == 0  # acknowledged: no escalation
