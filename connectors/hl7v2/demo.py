"""The demo hospital: a simulated EMR that sends realistic HL7 v2 over MLLP.

It is a peer outside carescore, talking to the MLLP listener like a real interface engine:
ED arrivals (A04) and dispositions, admissions (A01), transfers (A02) and discharges (A03),
STAT and routine lab orders (ORM^O01) and results (ORU^R01). On first start it backfills
history (past stays for length of stay, the current census, the last hours of labs), then
runs in real time. Now and then a unit's lab goes slow, so STAT turnaround breaches and
alerts fire and later resolve; the first slowdown lands within a minute of start.
Its state is saved in the data folder, so a restart continues the same hospital.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import random
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from connectors.hl7v2 import messages as m
from connectors.hl7v2.client import MLLPClient, ack_code
from engine.places import Places

log = logging.getLogger(__name__)

FAMILY = [
    "Garcia",
    "Smith",
    "Nguyen",
    "Okafor",
    "Kowalski",
    "Haddad",
    "Johansson",
    "Patel",
    "Rossi",
    "Kim",
    "Moreau",
    "Silva",
    "Novak",
    "Cohen",
    "Murphy",
    "Tanaka",
    "Ahmed",
    "Schmidt",
    "Lopez",
    "Brown",
]
GIVEN = [
    "Ana",
    "James",
    "Linh",
    "Chidi",
    "Marta",
    "Omar",
    "Sofia",
    "Raj",
    "Giulia",
    "Min",
    "Claire",
    "Pedro",
    "Eva",
    "Noah",
    "Aoife",
    "Yuki",
    "Sara",
    "Jonas",
    "Lucia",
    "Ben",
]
STAT_TESTS = [
    ("6598-7", "Troponin T", "ng/L", 5, 60),
    ("2524-7", "Lactate", "mmol/L", 0.5, 6.0),
    ("2823-3", "Potassium", "mmol/L", 3.0, 6.2),
]
ROUTINE_TESTS = [
    ("58410-2", "CBC panel", "10*3/uL", 4, 15),
    ("51990-0", "Basic metabolic panel", "mmol/L", 130, 148),
]


@dataclass
class Stay:
    visit: str
    mrn: str
    family: str
    given: str
    birth: str
    sex: str
    unit: str
    bed: str
    patient_class: str
    admitted: float

    def patient(self) -> m.Patient:
        return m.Patient(self.mrn, self.family, self.given, self.birth, self.sex)


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC).replace(microsecond=0)


class DemoHospital:
    """The simulation itself: a queue of future happenings, each turned into HL7 when due."""

    def __init__(self, places: Places, *, seed: int = 7, rate: float = 1.0):
        if not places.facilities:
            raise ValueError("the demo needs places (facility, units, beds) in the configuration")
        fac = places.facilities[0]
        self.facility = fac.id
        self.units = {u.id: u for d in fac.departments for u in d.units}
        self.ed = next((u for u in self.units.values() if u.type == "ed"), None)
        self.icu = [u.id for u in self.units.values() if u.type == "icu"]
        self.wards = [u.id for u in self.units.values() if u.type not in ("ed", "icu")]
        self.rng = random.Random(seed)
        self.rate = rate
        self.queue: list[tuple[float, int, str, dict[str, Any]]] = []
        self.seq = itertools.count()
        self.stays: dict[str, Stay] = {}
        self.counter = 0
        self.sent = 0
        self.slow: dict[str, int] = {}  # unit -> STAT orders still to come back slow
        self.clock = 0.0

    # -- scheduling ----------------------------------------------------------------------
    def at(self, ts: float, action: str, **data: Any) -> None:
        heapq.heappush(self.queue, (ts, next(self.seq), action, data))

    def next_time(self) -> float | None:
        return self.queue[0][0] if self.queue else None

    def due(self, now: float) -> list[tuple[float, str]]:
        """HL7 messages for everything due by now, in time order, with their times."""
        out: list[tuple[float, str]] = []
        while self.queue and self.queue[0][0] <= now:
            ts, _, action, data = heapq.heappop(self.queue)
            self.clock = ts
            out.extend((ts, msg) for msg in getattr(self, f"_{action}")(ts, **data))
        return out

    def _exp(self, mean_minutes: float) -> float:
        return self.rng.expovariate(1.0 / (mean_minutes * 60.0 / self.rate))

    def _lognormal_minutes(self, median: float, sigma: float) -> float:
        return median * math.exp(self.rng.gauss(0, sigma)) * 60.0

    # -- people and beds -----------------------------------------------------------------
    def _new_person(self) -> dict[str, str]:
        self.counter += 1
        year = self.rng.randint(1935, 2005)
        return {
            "visit": f"V{self.counter:07d}",
            "mrn": f"MRN{100000 + self.counter}",
            "family": self.rng.choice(FAMILY),
            "given": self.rng.choice(GIVEN),
            "birth": f"{year}{self.rng.randint(1, 12):02d}{self.rng.randint(1, 28):02d}",
            "sex": self.rng.choice("FM"),
        }

    def _control_id(self) -> str:
        self.sent += 1
        return f"DEMO{self.sent:010d}"

    def _free_bed(self, unit: str) -> str | None:
        taken = {s.bed for s in self.stays.values() if s.unit == unit}
        beds = [f"{i + 1:02d}" for i in range(self.units[unit].beds)]
        free = [b for b in beds if b not in taken]
        return self.rng.choice(free) if free else None

    def _loc(self, stay: Stay) -> m.Location:
        return m.Location(stay.unit, stay.unit, stay.bed, self.facility)

    def _visit(self, stay: Stay) -> m.Visit:
        return m.Visit(stay.patient(), stay.patient_class, self._loc(stay), stay.visit, self.facility)

    def _adt(self, trigger: str, ts: float, stay: Stay, **extra: Any) -> str:
        return m.adt(trigger, _dt(ts), self._visit(stay), control_id=self._control_id(), **extra)

    # -- setup ---------------------------------------------------------------------------
    def seed_history(self, now: float, backfill: float) -> None:
        """Past stays (for length of stay), today's census, then live traffic from now - backfill."""
        start = now - backfill
        for _ in range(24):
            ward = self.rng.choice(self.wards or list(self.units))
            admit = start - self.rng.uniform(2, 12) * 86400
            los = min(self._lognormal_minutes(4 * 1440, 0.5), start - admit - 3600)
            self.at(admit, "past_stay", unit=ward, los=los)
        for unit_id, unit in self.units.items():
            if unit.type == "ed":
                continue
            for _ in range(int(unit.beds * self.rng.uniform(0.7, 0.85))):
                admitted = start - self.rng.uniform(0.2, 6) * 86400
                self.at(admitted, "admit", unit=unit_id, planned_from=start)
        if self.ed is not None:
            self.at(start, "ed_arrival")
        self.at(start + 60, "elective_admit")
        self.at(start + 120, "lab_rounds")
        if self.icu:
            # The first slowdown: ICU STAT results that come back just after start, 85-100 min late.
            for i in range(4):
                self.at(
                    now - 100 * 60 + i * 240,
                    "stat_order",
                    unit=self.icu[0],
                    slow_until=now + 8 + 4 * i,
                )
        self.at(now + self.rng.uniform(25, 40) * 60, "slowdown")

    # -- happenings ----------------------------------------------------------------------
    def _past_stay(self, ts: float, unit: str, los: float) -> list[str]:
        bed = self._free_bed(unit) or "99"
        stay = Stay(**self._new_person(), unit=unit, bed=bed, patient_class="I", admitted=ts)
        out = [self._adt("A01", ts, stay, admit=_dt(ts))]
        out.append(self._adt("A03", ts + los, stay, admit=_dt(ts), discharge=_dt(ts + los), disposition="01"))
        return out

    def _admit(
        self, ts: float, unit: str, planned_from: float | None = None, visit: str | None = None
    ) -> list[str]:
        """Admit to unit; the initial census (planned_from) leaves only after the live start."""
        bed = self._free_bed(unit)
        if bed is None:
            return []
        if visit is not None and visit in self.stays:
            stay = self.stays[visit]
            prior = self._loc(stay)
            stay.unit, stay.bed, stay.patient_class, stay.admitted = unit, bed, "I", ts
            msg = self._adt("A01", ts, stay, prior=prior, admit=_dt(ts))
        else:
            stay = Stay(**self._new_person(), unit=unit, bed=bed, patient_class="I", admitted=ts)
            self.stays[stay.visit] = stay
            msg = self._adt("A01", ts, stay, admit=_dt(ts))
        if planned_from is None:
            leave = ts + self._lognormal_minutes(4.2 * 1440, 0.55)
            step_down = ts + self._lognormal_minutes(2 * 1440, 0.5)
        else:
            leave = planned_from + self.rng.uniform(0.5, 72) * 3600
            step_down = planned_from + self.rng.uniform(0.5, 36) * 3600
        if unit in self.icu and self.wards:
            self.at(min(step_down, leave - 600), "step_down", visit=stay.visit)
        self.at(leave, "discharge", visit=stay.visit)
        return [msg]

    def _ed_arrival(self, ts: float) -> list[str]:
        self.at(ts + self._exp(9), "ed_arrival")
        assert self.ed is not None
        bed = self._free_bed(self.ed.id)
        if bed is None:
            return []
        stay = Stay(**self._new_person(), unit=self.ed.id, bed=bed, patient_class="E", admitted=ts)
        self.stays[stay.visit] = stay
        for _ in range(self.rng.choice((1, 1, 2))):
            self.at(ts + self.rng.uniform(5, 25) * 60, "stat_order", unit=self.ed.id, visit=stay.visit)
        self.at(ts + self._lognormal_minutes(200, 0.4), "ed_disposition", visit=stay.visit)
        return [self._adt("A04", ts, stay, admit=_dt(ts))]

    def _ed_disposition(self, ts: float, visit: str) -> list[str]:
        stay = self.stays.get(visit)
        if stay is None:
            return []
        if self.rng.random() < 0.4:
            targets = self.icu * 1 + self.wards * 3
            for unit in self.rng.sample(targets, len(targets)):
                admitted = self._admit(ts, unit, visit=visit)
                if admitted:
                    return admitted
        del self.stays[visit]
        return [self._adt("A03", ts, stay, discharge=_dt(ts), disposition="01")]

    def _elective_admit(self, ts: float) -> list[str]:
        self.at(ts + self._exp(75), "elective_admit")
        if not self.wards:
            return []
        return self._admit(ts, self.rng.choice(self.wards))

    def _step_down(self, ts: float, visit: str) -> list[str]:
        stay = self.stays.get(visit)
        if stay is None or stay.unit not in self.icu:
            return []
        target = self.rng.choice(self.wards)
        bed = self._free_bed(target)
        if bed is None:
            self.at(ts + 3600, "step_down", visit=visit)
            return []
        prior = self._loc(stay)
        stay.unit, stay.bed = target, bed
        return [self._adt("A02", ts, stay, prior=prior, admit=_dt(stay.admitted))]

    def _discharge(self, ts: float, visit: str) -> list[str]:
        stay = self.stays.pop(visit, None)
        if stay is None:
            return []
        return [self._adt("A03", ts, stay, admit=_dt(stay.admitted), discharge=_dt(ts), disposition="01")]

    def _lab_rounds(self, ts: float) -> list[str]:
        """Every 20 minutes: some inpatients get routine labs, ICU patients STAT ones."""
        self.at(ts + 1200, "lab_rounds")
        for stay in list(self.stays.values()):
            if stay.patient_class != "I":
                continue
            if stay.unit in self.icu and self.rng.random() < 0.11 * self.rate:
                self.at(ts + self.rng.uniform(0, 1200), "stat_order", unit=stay.unit, visit=stay.visit)
            elif self.rng.random() < 0.04 * self.rate:
                self.at(ts + self.rng.uniform(0, 1200), "routine_order", visit=stay.visit)
            elif self.rng.random() < 0.008 * self.rate:
                self.at(ts + self.rng.uniform(0, 1200), "stat_order", unit=stay.unit, visit=stay.visit)
        return []

    def _slowdown(self, ts: float) -> list[str]:
        candidates = [u for u in self.units if u in self.icu or (self.ed and u == self.ed.id)] or list(
            self.units
        )
        unit = self.rng.choice(candidates)
        self.slow[unit] = self.rng.randint(3, 5)
        log.info("demo: lab slowdown begins", extra={"unit": unit})
        self.at(ts + self.rng.uniform(35, 70) * 60, "slowdown")
        return []

    def _order(self, ts: float, stay: Stay, priority: str, tat: float, test: tuple[Any, ...]) -> list[str]:
        self.counter += 1
        order_id = f"ORD{self.counter:08d}"
        self.at(
            ts + tat,
            "result",
            stay=asdict(stay),
            order_id=order_id,
            priority=priority,
            ordered=ts,
            test=list(test),
        )
        return [
            m.lab_order(
                _dt(ts),
                self._visit(stay),
                order_id,
                (test[0], test[1]),
                priority,
                control_id=self._control_id(),
            )
        ]

    def _stat_order(
        self, ts: float, unit: str, visit: str | None = None, slow_until: float | None = None
    ) -> list[str]:
        stay = self.stays.get(visit) if visit else None
        if stay is None:
            pool = [s for s in self.stays.values() if s.unit == unit]
            if not pool:
                return []
            stay = self.rng.choice(pool)
        if slow_until is not None:
            tat = slow_until - ts
        elif self.slow.get(unit, 0) > 0:
            self.slow[unit] -= 1
            tat = self.rng.uniform(82, 115) * 60
        else:
            tat = self._lognormal_minutes(31, 0.33)
        return self._order(ts, stay, "S", tat, self.rng.choice(STAT_TESTS))

    def _routine_order(self, ts: float, visit: str) -> list[str]:
        stay = self.stays.get(visit)
        if stay is None:
            return []
        return self._order(ts, stay, "R", self._lognormal_minutes(150, 0.4), self.rng.choice(ROUTINE_TESTS))

    def _result(
        self,
        ts: float,
        stay: dict[str, Any],
        order_id: str,
        priority: str,
        ordered: float,
        test: list[Any],
    ) -> list[str]:
        s = Stay(**stay)
        span = ts - ordered
        collected = ordered + span * self.rng.uniform(0.1, 0.3)
        received = collected + span * self.rng.uniform(0.05, 0.2)
        value = f"{self.rng.uniform(test[3], test[4]):.1f}"
        return [
            m.lab_result(
                _dt(ts),
                self._visit(s),
                order_id,
                (test[0], test[1]),
                priority,
                ordered=_dt(ordered),
                collected=_dt(collected),
                received=_dt(received),
                value=value,
                units=test[2],
                control_id=self._control_id(),
            )
        ]

    # -- persistence ---------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "stays": {k: asdict(v) for k, v in self.stays.items()},
            "counter": self.counter,
            "sent": self.sent,
            "slow": self.slow,
            "clock": self.clock,
            "rng": [*list(self.rng.getstate()[1]), self.rng.getstate()[0], self.rng.getstate()[2]],
        }

    def load(self, state: dict[str, Any]) -> None:
        self.queue = [tuple(item) for item in state["queue"]]  # type: ignore[misc]
        heapq.heapify(self.queue)
        self.seq = itertools.count(max((item[1] for item in self.queue), default=0) + 1)
        self.stays = {k: Stay(**v) for k, v in state["stays"].items()}
        self.counter = state["counter"]
        self.sent = state["sent"]
        self.slow = state["slow"]
        self.clock = state["clock"]
        rng = state["rng"]
        self.rng.setstate((rng[-2], tuple(rng[:-2]), rng[-1]))


async def run_demo(
    places: Places,
    host: str,
    port: int,
    state_file: Path,
    *,
    seed: int = 7,
    rate: float = 1.0,
    backfill: float = 7200.0,
    clock: Any = None,
) -> None:
    """Feed the MLLP listener until cancelled; save the simulation now and then."""
    import time

    now_fn = clock or time.time
    hospital = DemoHospital(places, seed=seed, rate=rate)
    if state_file.exists():
        hospital.load(orjson.loads(state_file.read_bytes()))
        log.info("demo hospital resumed", extra={"patients": len(hospital.stays)})
    else:
        hospital.seed_history(now_fn(), backfill)
        log.info(
            "demo hospital starting: backfilling history",
            extra={"hours": round(backfill / 3600, 1)},
        )
    client = MLLPClient(host, port)
    sent = 0
    last_save = 0.0
    try:
        while True:
            now = now_fn()
            for _, message in hospital.due(now):
                for attempt in range(30):
                    try:
                        ack = await client.send(message)
                        break
                    except (ConnectionError, OSError, TimeoutError):
                        await asyncio.sleep(min(2.0, 0.1 * (attempt + 1)))
                else:
                    raise ConnectionError(f"demo: MLLP listener at {host}:{port} does not answer")
                if ack_code(ack) != "AA":
                    log.warning("demo message not accepted", extra={"ack": ack_code(ack)})
                sent += 1
            if now - last_save > 10:
                _save(state_file, hospital)
                last_save = now
            upcoming = hospital.next_time()
            await asyncio.sleep(0.5 if upcoming is None else min(1.0, max(0.05, upcoming - now_fn())))
    finally:
        _save(state_file, hospital)
        await client.close()
        log.info("demo hospital stopped", extra={"messages_sent": sent})


def _save(path: Path, hospital: DemoHospital) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(hospital.state()))
    tmp.replace(path)
