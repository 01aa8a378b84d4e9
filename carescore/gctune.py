"""The garbage collector's settings for a long-running process (`carescore run`, `carescore worker`)."""

from __future__ import annotations

import gc

GC_THRESHOLDS = (50_000, 20, 100)
"""The collector's thresholds while serving (the benchmarks measure with them too)."""


def tune_gc() -> None:
    """Freeze what start-up built (recovered state, catalogue) out of the collector's scans
    and collect young objects less often: each message makes many short-lived objects, and
    full collections over a large engine state otherwise cost more than the work itself."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
