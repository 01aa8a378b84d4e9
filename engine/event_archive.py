"""The event archive of the Kafka runtime: the events topic as Parquet files, one folder per
partition and hour of event time, read by period reports there (the events live in Kafka,
not in a local log).

Files are immutable and named by the range of offsets they came from; each is written to a
temporary name, fsync'd and renamed (and its folder fsync'd), so a crash leaves the whole file
or none. The archiver commits its offsets only after that: a crash reads the same records
again and may write them again (under the same name, replacing the file, or in another range).
So reading keeps the first copy of each source_id, as the workers drop a resent event, and
orders the rows as Kafka holds them (partition, offset, place in the record): each facility's
events in the order they were accepted, which is what the embedded log's order means to a
report (levels and pairing are per place; facilities interleave differently, nothing else).
The rows have exactly the event log's columns and types: the same conversion (eventframe).
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import orjson
import polars as pl

from engine.eventframe import SCHEMA, conformed, frame_from_records

ORDER = ["_partition", "_offset", "_index"]
"""Where each row came from: kept in the files, used to order and de-duplicate on reading."""


def records_frame(records: list[tuple[int, int, bytes]]) -> pl.DataFrame:
    """Records of the events topic (partition, offset, value: one event or a JSON array of
    them, as sink.py writes) as the log's typed frame plus the ORDER columns."""
    rows, partitions, offsets, indexes = [], [], [], []
    for partition, offset, value in records:
        decoded = orjson.loads(value)
        for i, item in enumerate(decoded if isinstance(decoded, list) else [decoded]):
            rows.append(item)
            partitions.append(partition)
            offsets.append(offset)
            indexes.append(i)
    return frame_from_records(rows).with_columns(
        pl.Series("_partition", partitions, pl.Int32),
        pl.Series("_offset", offsets, pl.Int64),
        pl.Series("_index", indexes, pl.Int32),
    )


def hour_folder(root: Path, partition: int, hour: datetime) -> Path:
    return root / f"p{partition:03d}" / hour.strftime("%Y-%m-%dT%H")


def write_part(root: Path, partition: int, records: list[tuple[int, int, bytes]]) -> tuple[int, list[Path]]:
    """A partition's consecutive records written, one file per hour of event time they touch,
    each named by the records' offset range. Returns (rows, files written); durable on return."""
    frame = records_frame(records)
    name = f"{records[0][1]:012d}-{records[-1][1]:012d}.parquet"
    written = []
    hours = frame.with_columns(_hour=pl.col("event_time").dt.truncate("1h"))
    for part in hours.partition_by("_hour", maintain_order=True):
        hour = part["_hour"][0]
        target = hour_folder(root, partition, hour) / name
        write_atomic(part.drop("_hour"), target)
        written.append(target)
    return len(frame), written


def write_atomic(frame: pl.DataFrame, target: Path) -> None:
    """Temporary name, fsync, rename, fsync of the folder: the file is whole and durable, or absent."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    frame.write_parquet(tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, target)
    folder = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def compact(folder: Path, at: int) -> Path | None:
    """Once a partition-hour holds `at` files or more, merge them into one (copies dropped)
    named by the whole range, then delete the parts. A crash in between leaves copies that
    reading drops; late events add parts to a merged hour, merged again in turn."""
    parts = sorted(folder.glob("*.parquet"))
    if len(parts) < at:
        return None
    ranges = [tuple(int(x) for x in p.stem.split("-")) for p in parts]
    target = folder / f"{min(r[0] for r in ranges):012d}-{max(r[1] for r in ranges):012d}.parquet"
    lazy = _scan(parts)
    columns = conformed(lazy.collect_schema().names())
    write_atomic(_deduplicated(lazy).select(*columns, *ORDER).collect(), target)
    for p in parts:
        if p != target:
            p.unlink(missing_ok=True)
    return target


def _scan(files: list[Path]) -> pl.LazyFrame:
    return pl.concat([pl.scan_parquet(f) for f in files], how="diagonal_relaxed")


def _deduplicated(lazy: pl.LazyFrame) -> pl.LazyFrame:
    return lazy.sort(ORDER).unique(subset="source_id", keep="first", maintain_order=True)


def archive_files(root: Path) -> list[Path]:
    return sorted(root.glob("p*/*/*.parquet"))


def archive_frame(root: Path) -> pl.DataFrame:
    """Every archived event once, in Kafka's order, with the event log's columns (log_frame's).

    Not cut to a report's period: a report replays what came before it (census levels from
    every admission still open, an order placed before the period and resulted in it, 30 days
    before a readmission) and expires stays at the last event, as the embedded runtime does
    over its whole log. A file merged away while it is read: read the folder again."""
    for attempt in range(3):
        files = archive_files(root)
        if not files:
            return frame_from_records([])
        try:
            lazy = _scan(files)
            return _deduplicated(lazy).select(conformed(lazy.collect_schema().names())).collect()
        except (OSError, pl.exceptions.PolarsError):
            if attempt == 2 or all(f.exists() for f in files):
                raise
    raise AssertionError("unreachable")


def fingerprint(root: Path) -> tuple[tuple[str, int, int], ...]:
    """What the archive holds now, cheaply: a report frame is reused until it changes."""
    out = []
    for f in archive_files(root):
        try:
            st = f.stat()
        except FileNotFoundError:
            continue
        out.append((str(f), st.st_size, st.st_mtime_ns))
    return tuple(out)


__all__ = ["ORDER", "SCHEMA", "archive_frame", "compact", "fingerprint", "records_frame", "write_part"]
