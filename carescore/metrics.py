"""The application's own metrics: the event loop and the Kafka worker. Each package keeps its
metrics in one module like this one; engine figures are read from state at scrape time by
api/metrics.py, so the engine itself defines none."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LOOP_LAG = Histogram(
    "carescore_event_loop_lag_seconds",
    "How late a 50 ms timer on the event loop fired: time the loop was blocked by other work.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
LOOP_STALL_MAX = Gauge(
    "carescore_event_loop_stall_max_seconds", "The longest event-loop stall since the process started."
)

WORKER_EVENTS = Counter(
    "carescore_worker_events",
    "Events read from the events topic, by outcome (processed, duplicate, in_checkpoint).",
    ["outcome"],
)
WORKER_CHECKPOINTS = Counter("carescore_worker_checkpoints", "Engine checkpoints made durable.")
WORKER_SAMPLES = Counter("carescore_worker_samples", "KPI samples published to the samples topic.")
WORKER_GAPS = Counter("carescore_worker_offset_gaps", "Gaps in an events partition accepted as records gone.")
WORKER_PARTITIONS = Gauge("carescore_worker_partitions", "Events partitions this worker holds an engine for.")
WORKER_UNSAVED = Gauge(
    "carescore_worker_unsaved_events",
    "Events read since the partitions' last durable checkpoint (handed out again if this worker dies).",
)
