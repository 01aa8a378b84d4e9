"""Canonical events already in memory through the full KPI catalogue to KPI samples.

Workload (bench/workload.py): a 24-unit hospital, 300,000 events 0.05 s apart in event
time (~4 h): ADT, lab orders/collections/results, nurse calls, staffing, finance,
experience, HR and quality events. The engine runs every KPI in kpi_defs/, closes windows
every 4,000 events (as the runtime's tick would) and computes the live values at the end.
Reference: a bare loop doing one dict update per event over the same events, same run.
The prepared events are moved out of the garbage collector's way (gc.freeze) before
timing: they are input, not engine state. The engine runs twice per round: with Python's
default collector thresholds (the figure the target and the history refer to), and with the
thresholds `carescore run` and `carescore worker` set (carescore/gctune.py GC_THRESHOLDS).
Each round runs in a fresh child process; when the engine is compiled (engine/native.py), the
same round then runs again with the engine as pure Python (CARESCORE_PURE_PYTHON=1), each
against its own process's bare loop.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import engine.native
from bench.report import write_section
from bench.workload import hospital, stream
from carescore.gctune import GC_THRESHOLDS
from engine.config import REPO_ROOT
from engine.core import Engine
from engine.definitions import load_catalogue
from engine.definitions.catalogue import Catalogue
from engine.events import EventBase
from engine.places import Places

EVENTS = 300_000
ROUNDS = 3
TICK_EVERY = 4000


def run_engine(catalogue: Catalogue, places: Places, events: list[EventBase]) -> tuple[float, int]:
    engine = Engine(catalogue, places)
    samples = 0
    started = time.perf_counter()
    for i, event in enumerate(events):
        engine.process(event)
        if i % TICK_EVERY == TICK_EVERY - 1:
            samples += len(engine.advance(event.received_time.timestamp()))
    samples += len(engine.live(events[-1].received_time.timestamp()))
    return EVENTS / (time.perf_counter() - started), samples


def one_round(seed: int) -> tuple[float, float, int, float]:
    places = hospital()
    catalogue = load_catalogue(REPO_ROOT / "kpi_defs")
    events = stream(EVENTS, places, seed=seed)
    gc.collect()
    gc.freeze()
    default = gc.get_threshold()
    try:
        counts: dict[str, int] = {}
        started = time.perf_counter()
        for event in events:
            counts[event.type] = counts.get(event.type, 0) + 1
        bare = EVENTS / (time.perf_counter() - started)

        full, samples = run_engine(catalogue, places, events)
        gc.collect()
        gc.set_threshold(*GC_THRESHOLDS)
        served, _ = run_engine(catalogue, places, events)
        return full, bare, samples, served
    finally:
        gc.set_threshold(*default)
        gc.unfreeze()


def child_round(seed: int, pure: bool) -> tuple[float, float, int, float, bool]:
    """One round in a fresh process, compiled or as pure Python (CARESCORE_PURE_PYTHON=1): each
    mode's engine against its own process's bare loop, neither inheriting the other's heap."""
    env = dict(os.environ)  # CARESCORE_PURE_PYTHON set here: every round pure, none compiled
    if pure:
        env[engine.native.OFF_VARIABLE] = "1"
    out = subprocess.run(
        [sys.executable, __file__, "--round", str(seed)], env=env, check=True, capture_output=True, text=True
    ).stdout
    a = json.loads(out.splitlines()[-1])
    return a["engine"], a["bare"], a["samples"], a["served"], a["compiled"]


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} | {min(values):,.0f} | {max(values):,.0f}"


def main() -> None:
    catalogue = load_catalogue(REPO_ROOT / "kpi_defs")
    compiled = engine.native.active
    rounds, pure = [], []
    for seed in range(1, ROUNDS + 1):
        rounds.append(child_round(seed, pure=False))
        if compiled:
            pure.append(child_round(seed, pure=True))
    assert all(r[4] == compiled for r in rounds) and not any(p[4] for p in pure)
    full = [r[0] for r in rounds]
    bare = [r[1] for r in rounds]
    served = [r[3] for r in rounds]
    ratio = statistics.median(f / b for f, b in zip(full, bare, strict=True))
    served_ratio = statistics.median(f / b for f, b in zip(served, bare, strict=True))
    thresholds = "/".join(f"{t:,}" for t in GC_THRESHOLDS)
    if compiled:
        how = f"The engine ran compiled (engine/native.py: {engine.native.reason})."
        pure_rows = f"""
| same engine as pure Python (`CARESCORE_PURE_PYTHON=1`), events/s | {spread([p[0] for p in pure])} |
| its bare loop, events/s | {spread([p[1] for p in pure])} |
| pure-Python engine / bare loop | {statistics.median(p[0] / p[1] for p in pure):.3f} | | |"""
    else:
        how = f"The engine ran as pure Python: not compiled ({engine.native.reason})."
        pure_rows = ""
    body = f"""## Engine throughput (issue 3)

`python bench/engine_throughput.py` - {EVENTS:,} canonical events in memory through all
{len(catalogue)} KPIs (shared operators: {len(Engine(catalogue, hospital()).operators)}), windows
closed every {TICK_EVERY:,} events, live values at the end; {ROUNDS} rounds, fresh events each.
Each round runs the engine twice: with Python's default collector thresholds (the engine row,
the ratio the issues set and track), then with the thresholds `carescore run` and `carescore
worker` set at start (carescore/gctune.py GC_THRESHOLDS: the older generations scanned less often).
{how}

| measure | median | min | max |
|---|---|---|---|
| engine, events/s | {statistics.median(full):,.0f} | {min(full):,.0f} | {max(full):,.0f} |
| bare loop, events/s | {statistics.median(bare):,.0f} | {min(bare):,.0f} | {max(bare):,.0f} |
| engine / bare loop | {ratio:.3f} | | |
| engine, collector thresholds of `carescore run` {thresholds}, events/s | {spread(served)} |
| that engine / bare loop | {served_ratio:.3f} | | |{pure_rows}
| KPI samples produced per round | {rounds[0][2]:,} | | |

Target: >= 200,000 events/s on one core."""
    write_section("engine-throughput", body)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--round"]:
        full, bare, samples, served = one_round(int(sys.argv[2]))
        out = {"engine": full, "bare": bare, "samples": samples, "served": served}
        print(json.dumps({**out, "compiled": engine.native.active}))
    else:
        main()
