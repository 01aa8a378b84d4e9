"""Realistic canonical event streams for benchmarks (built in memory before timing)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from engine.events import EVENT_TYPES, EventBase, derive
from engine.places import Places

UNIT_TYPES = ["icu", "med_surg", "med_surg", "telemetry", "step_down", "ed", "med_surg", "pediatrics"]


def hospital(units: int = 24, facilities: tuple[str, ...] = ("BENCH",)) -> Places:
    """Hospitals of `units` units each in up to 6 departments."""
    departments: dict[str, list[dict[str, object]]] = {}
    for i in range(units):
        departments.setdefault(f"dept{i % 6}", []).append(
            {"id": f"U{i:02d}", "type": UNIT_TYPES[i % len(UNIT_TYPES)], "beds": 20 + (i % 4) * 5}
        )
    return Places.model_validate(
        {
            "facilities": [
                {"id": f, "departments": [{"id": d, "units": u} for d, u in departments.items()]}
                for f in facilities
            ]
        }
    )


def stream(n: int, places: Places, seed: int = 1, spacing: float = 0.05) -> list[EventBase]:
    """n events in time order: ADT, lab orders/collections/results, nurse calls, staffing,
    finance, experience, HR and quality events in roughly a live hospital's proportions.
    Built as the engine receives events in every runtime: validated, with ts and place
    derived (connectors build them with EventBase.trusted, the log and Kafka readers with
    engine/event_decoder.py; both derive them), so the engine is timed without that work."""
    rng = random.Random(seed)
    units = [(f, d, u.id) for f, d, u in places.units()]
    t0 = datetime(2026, 1, 5, tzinfo=UTC)
    events: list[EventBase] = []
    open_orders: list[tuple[str, tuple[str, str, str], str]] = []
    open_calls: list[tuple[str, tuple[str, str, str]]] = []
    in_beds: list[tuple[str, str, tuple[str, str, str]]] = []
    for counter in range(1, n + 1):
        when = t0 + timedelta(seconds=(counter - 1) * spacing)
        place = rng.choice(units)
        r = rng.random()
        fields: dict[str, object]
        if r < 0.06:
            if in_beds and rng.random() < 0.45:
                visit, patient, place = in_beds.pop(rng.randrange(len(in_beds)))
                kind, fields = (
                    "encounter.discharge",
                    {
                        "encounter_id": visit,
                        "patient_id": patient,
                        "patient_class": "inpatient",
                        "disposition": "01",
                    },
                )
            elif in_beds and rng.random() < 0.2:
                visit, patient, _ = in_beds[rng.randrange(len(in_beds))]
                kind, fields = "encounter.transfer", {"encounter_id": visit, "patient_id": patient}
            else:
                visit, patient = f"V{counter}", f"P{rng.randrange(n // 20 + 1)}"
                in_beds.append((visit, patient, place))
                kind, fields = (
                    "encounter.admit",
                    {"encounter_id": visit, "patient_id": patient, "patient_class": "inpatient"},
                )
        elif r < 0.26:
            order, prio = f"O{counter}", rng.choice(["stat", "routine", "routine"])
            open_orders.append((order, place, prio))
            kind, fields = "lab.order", {"order_id": order, "priority": prio}
        elif r < 0.40 and open_orders:
            order, place, prio = open_orders[rng.randrange(len(open_orders))]
            kind, fields = "lab.collect", {"order_id": order, "priority": prio}
        elif r < 0.60 and open_orders:
            order, place, prio = open_orders.pop(rng.randrange(len(open_orders)))
            kind, fields = "lab.result", {"order_id": order, "priority": prio, "result_status": "final"}
        elif r < 0.73:
            call = f"C{counter}"
            open_calls.append((call, place))
            kind, fields = "nursecall.placed", {"call_id": call}
        elif r < 0.86 and open_calls:
            call, place = open_calls.pop(rng.randrange(len(open_calls)))
            kind, fields = "nursecall.acknowledged", {"call_id": call}
        elif r < 0.90:
            kind = rng.choice(["staffing.shift_start", "staffing.shift_end", "staffing.hours"])
            fields = {
                "staff_id": f"N{rng.randrange(400)}",
                "role": "rn",
                "licensed": True,
                "worked_hours": 8.0,
                "overtime_hours": rng.choice([0.0, 0.0, 1.5]),
            }
        elif r < 0.93:
            fields = {
                "category": rng.choice(["labour", "supplies", "procedure"]),
                "amount": rng.uniform(10, 5000),
            }
            kind = "finance.cost"
        elif r < 0.96:
            kind = rng.choice(["experience.survey", "experience.complaint"])
            fields = {
                "question": "nurse_communication",
                "score": rng.uniform(0, 10),
                "top_box": rng.random() < 0.8,
            }
            if kind == "experience.complaint":
                fields = {}
        elif r < 0.98:
            kind = rng.choice(
                ["quality.device_days", "quality.fall_injury", "quality.clabsi", "quality.pressure_injury"]
            )
            fields = {"device": "central_line", "days": 1.0} if kind == "quality.device_days" else {}
        else:
            kind = rng.choice(
                ["hr.hire", "hr.separation", "hr.training", "hr.engagement", "hr.certification_granted"]
            )
            fields = {
                "staff_id": f"N{rng.randrange(400)}",
                "role": "rn",
                "hours": 2.0,
                "score": rng.uniform(1, 5),
            }
        family = kind.split(".")[0]
        event = EVENT_TYPES[kind].model_validate(
            {
                "type": kind,
                "event_time": when,
                "received_time": when,
                "source": "hl7v2" if family in ("encounter", "lab", "nursecall") else "feed",
                "source_id": f"b{counter}",
                "facility": place[0],
                "department": place[1],
                "unit": place[2],
                **fields,
            }
        )
        derive(event.__dict__)
        events.append(event)
    return events
