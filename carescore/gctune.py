"""The garbage collector's settings for a long-running process (`carescore run`, `carescore worker`)."""

from __future__ import annotations

import gc

GC_THRESHOLDS = (5_000, 50, 400)
"""The collector's thresholds while serving (the benchmarks measure with them too).

A young collection's pause grows with the young generation, and the event loop stops for it.
At 50,000 young objects (the setting before) the MIMIC replay's young pauses reached 14-40 ms,
the loop's longest stalls after start-up; at 5,000 none logged over 10.4 ms. Over the engine
benchmark's workload the young pauses are 0.5 ms (median) and 2.6-3.8 ms (max) at 5,000,
against 5.6-8.6 and 13-17 ms at 50,000, for the same total collector time (BENCHMARKS.md).

The middle generation is collected every 50 young collections (250,000 allocations), not 200:
a middle collection scans every object that survived since the last one, and after a burst of
old data, when the windows it left close (closed windows' samples waiting for the history's
thread, open orders), 320,000 of them made one pause of 140-145 ms; at 50, 25-34 ms (the MIMIC
replay, gc.callbacks in the server, 2026-12-04). The engine benchmark did not slow down (313,149
and 313,202 events/s at 50 against 301,036 at 200, the same hour). Full collections come, as
before, after 100 million allocations at most (5,000 x 50 x 400), and Python also waits for a
quarter of the long-lived objects to be new. Against Python's default 700/10/10."""


def tune_gc() -> None:
    """Freeze what start-up built (recovered state, catalogue) out of the collector's scans
    and scan the older generations less often: each message makes many short-lived objects,
    and full collections over a large engine state otherwise cost more than the work itself."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
