"""The Kafka runtime's event archive (engine/event_archive.py) without a broker: how fast the
gateway's archiver turns records of the events topic into fsync'd Parquet files, and how long a
period report's read of the whole archive takes.

Six hours of the demo hospital at three facilities (tests/kafka.py), copied COPIES times with
distinct source_ids, as records of RECORD events (the sink's JSON arrays); written in flushes of
FLUSH records (write_part: decode, the event log's conversion, one file per hour of event time,
fsync, rename), then merged per hour (compact) and read back (archive_frame: every file, copies
dropped, Kafka's order). One thread; the archiver does the same work on a thread of the gateway.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.report import write_section
from engine.event_archive import archive_files, archive_frame, compact, write_part
from engine.events import dump_events
from tests.kafka import hospital_events

COPIES = 40
RECORD = 100
FLUSH = 50


def main() -> None:
    base = hospital_events(hours=6, facilities=("DEMO", "EAST", "WEST"))
    events = [e.model_copy(update={"source_id": f"{e.source_id}#{k}"}) for k in range(COPIES) for e in base]
    records = [
        (0, i, dump_events(events[j : j + RECORD])) for i, j in enumerate(range(0, len(events), RECORD))
    ]
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as folder:
        root = Path(folder)
        began = time.perf_counter()
        rows = 0
        for k in range(0, len(records), FLUSH):
            rows += write_part(root, 0, records[k : k + FLUSH])[0]
        written = time.perf_counter() - began
        parts = len(archive_files(root))
        began = time.perf_counter()
        read = len(archive_frame(root))
        read_parts = time.perf_counter() - began
        began = time.perf_counter()
        for hour in {f.parent for f in archive_files(root)}:
            compact(hour, 2)
        merging = time.perf_counter() - began
        merged = len(archive_files(root))
        began = time.perf_counter()
        read_merged = len(archive_frame(root))
        read_after = time.perf_counter() - began
    assert read == read_merged == rows == len(events)
    body = f"""## Kafka runtime: the event archive (issue 17)

`python bench/kafka_archive.py` - {rows:,} events (six hours of the demo hospital at three
facilities, {COPIES} copies with distinct ids) as records of {RECORD} events, written in flushes
of {FLUSH} records ({FLUSH * RECORD:,} events) by the archiver's own code, on the disk of the
working folder, one thread.

| step | result |
|---|---:|
| write (decode, convert, Parquet per hour, fsync, rename) | {rows / written:,.0f} events/s ({parts} files) |
| read the whole archive as a report does, {parts} files | {read_parts:.2f} s for {read:,} events |
| merge each hour's files into one | {merging:.2f} s ({merged} files) |
| read the whole archive, merged | {read_after:.2f} s |

A worker processes about 32,000 events/s (issue 17, bench/kafka_worker.py): the archiver's
rate is about three times that, but its decoding holds the gateway's interpreter lock, shared
with MLLP; the two together under load are not measured. A report reads the whole archive
(as the embedded runtime reads its whole log) and keeps the frame until the files change."""
    write_section("kafka-archive", body)


if __name__ == "__main__":
    main()
