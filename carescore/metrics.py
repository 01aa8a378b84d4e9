"""The application's own metrics: the event loop and the Kafka worker. Each package keeps its
metrics in one module like this one; engine figures are read from state at scrape time by
api/metrics.py, so the engine itself defines none."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import Counter, Gauge, Histogram

LOOP_LAG = Histogram(
    "carescore_event_loop_lag_seconds",
    "How late a 50 ms timer on the event loop fired: time the loop was blocked by other work.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
LOOP_STALL_MAX = Gauge(
    "carescore_event_loop_stall_max_seconds", "The longest event-loop stall since the process started."
)
CLOSING_BEHIND = Gauge(
    "carescore_windows_closing_behind",
    "1 while the embedded runtime's last closing of windows stopped with windows the watermarks "
    "had passed still to close (a burst of old data: closing gives way to incoming work), 0 once "
    "it caught up. The Kafka runtime does not set it.",
)

WORKER_EVENTS = Counter(
    "carescore_worker_events",
    "Events read from the events topic, by outcome (processed, duplicate, in_checkpoint, refused: "
    "an event time outside engine.max_future / max_age of its arrival).",
    ["outcome"],
)
WORKER_REFUSED = WORKER_EVENTS.labels("refused")  # made here: its series exists (0) from the start
WORKER_UNREADABLE = Counter(
    "carescore_worker_unreadable_records", "Records of the events topic that are not JSON events (skipped)."
)
WORKER_ENGINE_ERRORS = Counter(
    "carescore_worker_engine_errors",
    "Events a worker's engine raised on (logged, skipped; the others go on): the embedded "
    "runtime's carescore_engine_event_errors.",
)
WORKER_CHECKPOINTS = Counter("carescore_worker_checkpoints", "Engine checkpoints made durable.")
WORKER_SAMPLES = Counter("carescore_worker_samples", "KPI samples published to the samples topic.")
WORKER_GAPS = Counter("carescore_worker_offset_gaps", "Gaps in an events partition accepted as records gone.")
WORKER_STALLS = Counter(
    "carescore_worker_stalled_partitions",
    "Times the consumer was sent back for a partition whose records stopped reaching the engine.",
)
WORKER_PARTITIONS = Gauge("carescore_worker_partitions", "Events partitions this worker holds an engine for.")
WORKER_UNSAVED = Gauge(
    "carescore_worker_unsaved_events",
    "Events read since the partitions' last durable checkpoint (handed out again if this worker dies).",
)

WATERMARK_LAG = Gauge(
    "carescore_watermark_lag_seconds",
    "Wall clock minus the engine's watermark, by event source (hl7v2, fhir, feed): how long after "
    "the fact windows fed by it close. A Kafka worker shows the worst of its partitions.",
    ["source"],
)
ARCHIVE_ROWS = Counter(
    "carescore_archive_rows",
    "Events written to the Parquet archive (records read again after a crash count again).",
)
ARCHIVE_FILES = Counter(
    "carescore_archive_files", "Parquet files written to the archive, by kind (part, merged).", ["kind"]
)
ARCHIVE_LAG = Gauge(
    "carescore_archive_lag_records",
    "Records of an events partition not yet in a committed archive file (end offset minus committed).",
    ["partition"],
)
KAFKA_CONSUMER_LAG = Gauge(
    "carescore_kafka_consumer_lag_records",
    "Records of an events partition not yet in this worker's engine: the partition's end offset "
    "(high watermark) minus the next offset the engine takes.",
    ["partition"],
)
_shown: dict[str, set[str]] = {}


def show(gauge: Gauge, values: Mapping[str, float]) -> None:
    """Set one-label gauge values and drop the labels no longer there (a partition revoked)."""
    shown = _shown.setdefault(gauge._name, set())
    for gone in shown - values.keys():
        gauge.remove(gone)
    for label, value in values.items():
        gauge.labels(label).set(value)
    shown.clear()
    shown.update(values)


def show_watermark_lags(engines: Iterable[Mapping[str, float]]) -> None:
    """The worst watermark lag per source over this process's engines (Engine.watermark_lags)."""
    worst: dict[str, float] = {}
    for lags in engines:
        for source, lag in lags.items():
            worst[source] = max(lag, worst.get(source, 0.0))
    show(WATERMARK_LAG, worst)
