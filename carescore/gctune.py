"""The garbage collector's settings for a long-running process (`carescore run`, `carescore worker`)."""

from __future__ import annotations

import gc

GC_THRESHOLDS = (5_000, 200, 100)
"""The collector's thresholds while serving (the benchmarks measure with them too).

A young collection's pause grows with the young generation, and the event loop stops for it.
At 50,000 young objects (the setting before) the MIMIC replay's young pauses reached 14-40 ms,
the loop's longest stalls after start-up; at 5,000 none logged over 10.4 ms. Over the engine
benchmark's workload the young pauses are 0.5 ms (median) and 2.6-3.8 ms (max) at 5,000,
against 5.6-8.6 and 13-17 ms at 50,000, for the same total collector time (BENCHMARKS.md).
Middle collections still come once per million allocations (5,000 x 200, as 50,000 x 20 did):
what the engine's throughput depends on, against Python's default 700/10/10."""


def tune_gc() -> None:
    """Freeze what start-up built (recovered state, catalogue) out of the collector's scans
    and scan the older generations less often: each message makes many short-lived objects,
    and full collections over a large engine state otherwise cost more than the work itself."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
