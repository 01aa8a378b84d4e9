"""The garbage collector's settings for a long-running process (`carescore run`, `carescore worker`)."""

from __future__ import annotations

import gc

GC_THRESHOLDS = (5_000, 200, 100)
"""The collector's thresholds while serving (the benchmarks measure with them too).

A young collection's pause grows with the young generation, and the event loop stops for it.
At 50,000 young objects (the setting before) the MIMIC replay's young pauses reached 14-40 ms,
the loop's longest stalls after start-up. At 5,000 the engine workload's young pauses are
0.5 ms (median) and 3 ms (max), against 5.6 and 17 ms, for the same total collector time.
Middle collections still come once per million allocations (5,000 x 200, as 50,000 x 20 did):
what the engine's throughput depends on, against Python's default 700/10/10."""


def tune_gc() -> None:
    """Freeze what start-up built (recovered state, catalogue) out of the collector's scans
    and scan the older generations less often: each message makes many short-lived objects,
    and full collections over a large engine state otherwise cost more than the work itself."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
