"""The event log as a polars frame: one flat schema for every event type.

Sealed log segments are stored as Parquet next to their NDJSON (written when a segment
rolls over, on a thread of the event log); the open segment is read from NDJSON. Either way
the frame has the same columns: every field of every canonical event model.
"""

from __future__ import annotations

import io
import types
import typing
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import polars as pl
from pydantic import AwareDatetime

from engine.events import EVENT_MODELS

UTC_US = pl.Datetime("us", "UTC")


def _dtype(annotation: Any) -> pl.DataType:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and args:
        return _dtype(args[0])
    if origin is typing.Annotated:
        return _dtype(args[0])
    if annotation is bool:
        return pl.Boolean()
    if annotation in (float, int):
        return pl.Float64()
    if annotation is datetime or annotation is AwareDatetime:
        return UTC_US
    return pl.Utf8()


def _schema() -> dict[str, pl.DataType]:
    schema: dict[str, pl.DataType] = {}
    for model in EVENT_MODELS:
        for name, info in model.model_fields.items():
            if name not in schema:
                schema[name] = _dtype(info.annotation)
    return schema


SCHEMA = _schema()
DATETIME_COLUMNS = [name for name, dtype in SCHEMA.items() if dtype == UTC_US]
# as stored in NDJSON: times are ISO strings, parsed after reading
_RAW_SCHEMA = {n: (pl.Utf8() if n in DATETIME_COLUMNS else t) for n, t in SCHEMA.items()}


def frame_from_records(records: list[dict[str, Any]]) -> pl.DataFrame:
    """Records as serialised by the event log (JSON types) -> a typed frame."""
    columns: dict[str, list[Any]] = {name: [] for name in SCHEMA}
    for record in records:
        for name in SCHEMA:
            columns[name].append(record.get(name))
    frame = pl.DataFrame(columns, schema=_RAW_SCHEMA)
    return frame.with_columns(
        [pl.col(n).str.to_datetime(time_unit="us", time_zone="UTC") for n in DATETIME_COLUMNS]
    )


def read_ndjson(path: Path) -> pl.DataFrame:
    """A log segment as a frame, read by polars' own reader: it runs in Rust without the GIL,
    so sealing a segment in a thread does not take the event loop's interpreter time. A torn
    last line (no newline yet) is not read."""
    data = path.read_bytes()
    data = data[: data.rfind(b"\n") + 1]
    if not data:
        return frame_from_records([])
    try:
        frame = pl.read_ndjson(io.BytesIO(data), schema=_RAW_SCHEMA)
    except pl.exceptions.PolarsError:  # an unreadable line (quarantined by replay): skip it
        return frame_from_records(_readable(data))
    return frame.with_columns(
        [pl.col(n).str.to_datetime(time_unit="us", time_zone="UTC") for n in DATETIME_COLUMNS]
    )


def _readable(data: bytes) -> list[dict[str, Any]]:
    records = []
    for line in data.splitlines():
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def seal(ndjson: Path) -> Path:
    """Write the Parquet copy of a finished segment (atomically)."""
    target = ndjson.with_suffix(".parquet")
    tmp = target.with_suffix(".parquet.tmp")
    read_ndjson(ndjson).write_parquet(tmp)
    tmp.replace(target)
    return target


def log_frame(segments: list[Path]) -> pl.DataFrame:
    """All events in log order: Parquet where a segment is sealed, NDJSON otherwise."""
    parts = []
    for path in segments:
        sealed = path.with_suffix(".parquet")
        parts.append(_conform(pl.read_parquet(sealed)) if sealed.exists() else read_ndjson(path))
    if not parts:
        return frame_from_records([])
    return pl.concat(parts, how="vertical")


def _conform(frame: pl.DataFrame) -> pl.DataFrame:
    """A segment sealed before an event model gained a field lacks its column: add it empty,
    in the current column order, so old and new segments stack."""
    if list(frame.columns) == list(SCHEMA):
        return frame
    return frame.select(conformed(frame.columns))


def conformed(columns: list[str]) -> list[pl.Expr]:
    """The log's columns in order from a frame that has these (others left out, missing ones
    empty): a frame written before an event model gained a field stacks with newer ones."""
    return [pl.col(n) if n in columns else pl.lit(None, dtype=t).alias(n) for n, t in SCHEMA.items()]
