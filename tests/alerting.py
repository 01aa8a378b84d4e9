"""A harness for alert rules: the real AlertService and SQLite store on a clock the test
moves, with routes from YAML text. Channels here record what they are asked to send; the
delivery channels themselves are tested against real peers in tests/test_alert_channels.py."""

from __future__ import annotations

import email
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path
from typing import Any

import yaml

from alerts.feeds import FeedWatch
from alerts.people import Directory
from alerts.routes import RoutesConfig
from alerts.service import AlertService
from alerts.store import AlertStore
from engine.config import REPO_ROOT
from engine.config_alerts import FeedRule
from engine.definitions import Catalogue, load_catalogue
from engine.samples import Group, GroupKey, Sample, Window

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC).timestamp()
ICU: GroupKey = ("DEMO", "critical_care", "ICU")
W4: GroupKey = ("DEMO", "medicine", "4W")

ROUTES = """
routes:
  - name: feeds
    match: {kind: feed}
    receivers: [ops]
    group_wait: 0s
  - name: unit
    match: {kind: kpi}
    receivers: [charge_nurse]
    escalate:
      - {after: 15m, to: [nurse_manager]}
      - {after: 30m, to: [house_supervisor]}
    group_wait: 30s
    repeat_interval: 2h
    mute: [shift-change]
roles:
  charge_nurse: {scope: unit, fallback: {ICU: [cn-icu], 4W: [cn-4w]}}
  nurse_manager: {scope: department, fallback: {critical_care: [nm-cc], medicine: [nm-med]}}
  house_supervisor: {scope: facility, fallback: {DEMO: [hs]}}
  ops: {scope: facility, fallback: {DEMO: [ops]}}
people:
  cn-icu: {name: ICU charge, email: cn-icu@x.invalid}
  cn-4w: {name: 4W charge, email: cn-4w@x.invalid}
  nm-cc: {name: CC manager, email: nm-cc@x.invalid}
  nm-med: {name: Med manager, email: nm-med@x.invalid}
  hs: {name: House supervisor, email: hs@x.invalid}
  ops: {name: Ops, email: ops@x.invalid}
  rn7: {name: Night charge RN7, email: rn7@x.invalid}
mute_windows:
  shift-change: [{from: "06:45", to: "07:15"}]
"""


class Clock:
    def __init__(self, start: float = T0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@dataclass
class Recorder:
    """A channel that keeps what it is given (name 'email': reaches people by address)."""

    name: str = "email"
    routed: bool = True
    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def address(self, recipient: dict[str, Any]) -> str | None:
        return recipient.get("email") if self.routed else None

    async def send(self, payload: dict[str, Any], idempotency_key: str) -> None:
        self.sent.append((idempotency_key, payload))

    def to(self, staff: str) -> list[dict[str, Any]]:
        return [p for _, p in self.sent if p.get("recipient", {}).get("staff_id") == staff]


@dataclass
class Rig:
    service: AlertService
    clock: Clock
    email: Recorder
    hook: Recorder
    catalogue: Catalogue
    roster: dict[str, tuple[str, GroupKey]]

    def sample(self, kpi: str, value: float | None, place: GroupKey = ICU, n: int = 30) -> Sample:
        definition = self.catalogue.kpis[kpi]
        status = definition.status_of(value, n)
        now = datetime.fromtimestamp(self.clock.now, UTC)
        return Sample(
            kpi=kpi,
            group=Group(facility=place[0], department=place[1], unit=place[2]),
            window=Window(start=now - timedelta(hours=1), end=now),
            value=value,
            n=n,
            status=status,  # type: ignore[arg-type]
            as_of=now,
        )

    async def step(self, seconds: float, *samples: Sample) -> None:
        """Move the clock, evaluate these samples, deliver what is due."""
        self.clock.advance(seconds)
        self.service.observe(list(samples), self.clock.now)
        await self.service.deliver_due()

    async def hold(
        self, minutes: float, *values: tuple[str, float | None, GroupKey], every: float = 60
    ) -> None:
        """The same values, evaluated once a minute (as the tick would) for a while."""
        for _ in range(int(minutes * 60 / every)):
            await self.step(every, *(self.sample(k, v, p) for k, v, p in values))


def make_rig(
    tmp_path: Path,
    routes: str = ROUTES,
    feeds: list[FeedRule] | None = None,
    depends: tuple[set[str], set[str]] = ({"hl7v2"}, {"lab.order", "lab.result"}),
    store: AlertStore | None = None,
    clock: Clock | None = None,
    roster: dict[str, tuple[str, GroupKey]] | None = None,
) -> Rig:
    catalogue = load_catalogue(REPO_ROOT / "kpi_defs")
    config = RoutesConfig.model_validate(yaml.safe_load(routes))
    clock = clock or Clock()
    email, hook = Recorder(), Recorder("integration", routed=False)
    roster = roster if roster is not None else {}

    def holders(role: str) -> list[tuple[str, GroupKey]]:
        return [(s, p) for s, (r, p) in roster.items() if r == role]

    service = AlertService(
        catalogue,
        store or AlertStore(tmp_path / "alerts.sqlite"),
        [email, hook],  # type: ignore[list-item]
        routes=config,
        directory=Directory(config, holders),
        feeds=FeedWatch(feeds or [], {("DEMO", "ICU"): "critical_care", ("DEMO", "4W"): "medicine"}),
        depends_on=lambda _kpi: depends,
        clock=clock,
        retry_backoff=1.0,
        unit_types={ICU: "icu", W4: "med_surg"},
    )
    return Rig(service, clock, email, hook, catalogue, roster)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), email.message_from_bytes(envelope.content)))
        return "250 OK"


def two_routes(manager_wait: str) -> str:
    """routes.yaml for KPI alerts: the ICU charge nurse hears at once, the nurse manager after
    `manager_wait` of gathering (a notice still due while the first is sent)."""
    return f"""
routes:
  - {{name: unit, match: {{kind: kpi}}, receivers: [charge_nurse], group_wait: 0s, continue: true}}
  - {{name: manager, match: {{kind: kpi}}, receivers: [nurse_manager], group_wait: {manager_wait}}}
roles:
  charge_nurse: {{scope: unit, fallback: {{ICU: [cn-icu]}}}}
  nurse_manager: {{scope: department, fallback: {{critical_care: [nm-cc]}}}}
people:
  cn-icu: {{name: ICU charge, email: cn-icu@ward.example}}
  nm-cc: {{name: CC manager, email: nm-cc@ward.example}}
"""
