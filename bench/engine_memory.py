"""Memory held by one million open STAT lab orders (orders without results yet).

Each order is a real LabEvent processed by the engine with the full catalogue; events are
dropped after processing, so what remains is the engine's state: the open intervals of
the STAT and routine turnaround operators. Measured with tracemalloc (Python allocations)
and the process's peak RSS.
"""

from __future__ import annotations

import gc
import resource
import sys
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import write_section
from bench.workload import hospital
from engine.config import REPO_ROOT
from engine.core import Engine
from engine.definitions import load_catalogue
from engine.events import LabEvent

ORDERS = 1_000_000


def main() -> None:
    places = hospital()
    units = [(f, d, u.id) for f, d, u in places.units()]
    engine = Engine(load_catalogue(REPO_ROOT / "kpi_defs"), places)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    t0 = datetime(2026, 1, 5, tzinfo=UTC)
    for i in range(ORDERS):
        facility, department, unit = units[i % len(units)]
        when = t0 + timedelta(milliseconds=i * 40)
        engine.process(
            LabEvent(
                type="lab.order",
                event_time=when,
                received_time=when,
                source="hl7v2",
                source_id=f"s{i}",
                facility=facility,
                department=department,
                unit=unit,
                order_id=f"ORD{i:09d}",
                priority="stat",
            )
        )
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    open_orders = len(engine.by_kpi["lab_tat_stat"].open)  # type: ignore[attr-defined]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    body = f"""## Memory for one million open lab orders (issue 3)

`python bench/engine_memory.py` - {ORDERS:,} STAT lab orders processed by the engine with
the full catalogue, none resulted (orders spread over 24 units, 40 ms apart).

| measure | value |
|---|---|
| open intervals held | {open_orders:,} |
| engine state (tracemalloc, Python allocations) | {held / 1e6:,.0f} MB |
| bytes per open order | {held / open_orders:,.0f} |
| process peak RSS (includes tracemalloc's own bookkeeping) | {rss:,.0f} MB |

Target: under 1 GB."""
    write_section("engine-memory", body)


if __name__ == "__main__":
    main()
