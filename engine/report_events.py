"""Event measures in the period report: the stream's pairing and counting rules restated in
polars over the logged events (durations: engine/operators/duration.py; distinct and
unless counts: engine/operators/ratio.py; counts and values: engine/operators/events.py).

Each function takes the log frame (with `ts`, epoch seconds; `positioned` adds the row
index `_pos`, log order, that breaks ties as arrival order does in the stream) and returns a
frame of (facility, department, unit, value) or the events a part counts.
"""

from __future__ import annotations

import polars as pl

from engine.definitions.match import Match
from engine.definitions.measures import TIME_UNITS, DurationMeasure, EventMeasure, EventPart
from engine.events import EVENT_TYPES

PLACE = ["facility", "department", "unit"]


def ts_seconds(column: str) -> pl.Expr:
    """A datetime column as epoch seconds (float)."""
    return pl.col(column).dt.epoch("us").cast(pl.Float64) / 1e6


def matching(frame: pl.DataFrame, match: Match) -> pl.DataFrame:
    """The logged events a Match selects: its event type, and each `where` field among its values."""
    expr = pl.col("type") == match.event
    for name, expected in match.where.items():
        options = expected if isinstance(expected, list) else [expected]
        if frame.schema.get(name) == pl.Float64:  # where: {scale_max: 5} on a float field
            options = [float(o) for o in options]
        expr = expr & pl.col(name).is_in(options)
    return frame.filter(expr)


def agrees(start: Match, end: Match) -> pl.Expr:
    """End events that do not contradict the start's filter: the start's filter fields that
    the end event also has and the end does not filter itself are empty or allowed."""
    expr = pl.lit(True)
    if start.event == end.event:
        return expr
    end_fields = EVENT_TYPES[end.event].model_fields
    for name, expected in start.where.items():
        if name in end_fields and name not in end.where:
            options = expected if isinstance(expected, list) else [expected]
            expr = expr & (pl.col(name).is_null() | pl.col(name).is_in(options))
    return expr


def first_per_key(
    positioned: pl.DataFrame,
    matches: list[Match],
    key: str,
    time: str,
    prefix: str,
    start: Match | None = None,
) -> pl.DataFrame:
    """The earliest event per key matching any of `matches`, with its time and place (ties:
    the one logged first, as the stream takes the first to arrive). With `start`, end
    events that contradict the start's filter (a routine result for a STAT start) are left
    out, as the stream leaves them out. positioned: the log with its row index `_pos` (log
    order breaks ties)."""
    parts = []
    for match in matches:
        rows = matching(positioned, match)
        if start is not None:
            rows = rows.filter(agrees(start, match))
        parts.append(rows.filter(pl.col(key).is_not_null()).select(key, "ts", "_pos", *PLACE))
    return (
        pl.concat(parts)
        .sort("ts", "_pos")
        .group_by(key, maintain_order=True)
        .first()
        .select(key, pl.col("ts").alias(time), *[pl.col(c).alias(f"{prefix}{c}") for c in PLACE])
    )


def durations(positioned: pl.DataFrame, m: DurationMeasure, start: float, end: float) -> pl.DataFrame:
    """The stream's rules (engine/operators/duration.py) over the log: per key the earliest
    start, end (of any end event) and cancel; an end past the interval's life
    (expire_after) does not end it; a cancel before the end, or with no end within the
    life, drops it. Values: ended intervals whose end is in [start, end); with count_open
    also intervals that expire in the period (at their life) and intervals still open at
    the period's end past the timeout (at their age then)."""
    life = float(m.expire_after)
    per = TIME_UNITS[m.unit]
    starts = first_per_key(positioned, [m.start], m.key, "t0", "s_")
    ends = first_per_key(positioned, m.ends, m.key, "t1", "e_", start=m.start)
    cancels = (
        first_per_key(positioned, [m.cancel], m.key, "tc", "c_").select(m.key, "tc")
        if m.cancel is not None
        else pl.DataFrame(schema={m.key: pl.Utf8, "tc": pl.Float64})
    )
    keyed = starts.join(ends, on=m.key, how="left").join(cancels, on=m.key, how="left")
    t0, t1, tc = pl.col("t0"), pl.col("t1"), pl.col("tc")
    ended = t1.is_not_null() & (t1 <= t0 + life)  # an end within the interval's life
    keyed = keyed.with_columns(
        ended=ended.fill_null(False),
        dropped=pl.when(ended).then(tc < t1).otherwise(tc <= t0 + life).fill_null(False),
    )
    side = "s_" if m.attribute_to == "start" else "e_"
    starts_at = [pl.col(f"s_{c}").alias(c) for c in PLACE]
    values = keyed.filter(
        pl.col("ended") & ~pl.col("dropped") & (t1 >= t0) & (t1 >= start) & (t1 < end)
    ).select(*[pl.col(f"{side}{c}").alias(c) for c in PLACE], ((t1 - t0) / per).alias("value"))
    if not m.count_open:
        return values
    parts = [values]
    unresolved = keyed.filter(~pl.col("ended") & ~pl.col("dropped"))
    parts.append(
        unresolved.filter((t0 + life >= start) & (t0 + life < end)).select(
            *starts_at, pl.lit(life / per).alias("value")
        )
    )
    if m.timeout is not None:
        still_open = (
            (t0 > end - life)
            & (t0 < end - float(m.timeout))
            & (~pl.col("ended") | (t1 >= end))
            & (tc.is_null() | (tc >= end))
        )
        parts.append(keyed.filter(still_open).select(*starts_at, ((end - t0) / per).alias("value")))
    return pl.concat(parts)


def event_values(frame: pl.DataFrame, m: EventMeasure, start: float, end: float) -> pl.DataFrame:
    rows = matching(frame, m).filter((pl.col("ts") >= start) & (pl.col("ts") < end))
    if m.field is None:
        return rows.select("facility", "department", "unit", pl.lit(1.0).alias("value"))
    return rows.filter(pl.col(m.field).is_not_null()).select(
        "facility", "department", "unit", pl.col(m.field).cast(pl.Float64).alias("value")
    )


def counted(positioned: pl.DataFrame, part: EventPart) -> pl.DataFrame:
    """The events a part counts (engine/operators/ratio.py): with `distinct`, each identity's
    earliest event (ties: the one logged first), events without one all count; with
    `unless`, not those with a pairing event of the same key and facility within its time."""
    rows = matching(positioned, part)
    if part.distinct is not None:
        ident = part.distinct
        anonymous = rows.filter(pl.col(ident).is_null())
        first = rows.filter(pl.col(ident).is_not_null()).sort("ts", "_pos").unique(ident, keep="first")
        rows = pl.concat([anonymous, first]).sort("_pos")
    elif part.unless is not None:
        key, within = part.unless.key, float(part.unless.within)
        pairs = matching(positioned, part.unless).filter(pl.col(key).is_not_null())
        paired = (
            rows.filter(pl.col(key).is_not_null())
            .select("_pos", "facility", pl.col(key).cast(pl.Utf8).alias("_key"), "ts")
            .join(
                pairs.select("facility", pl.col(key).cast(pl.Utf8).alias("_key"), pl.col("ts").alias("_t")),
                on=["facility", "_key"],
            )
            .filter((pl.col("ts") - pl.col("_t")).abs() <= within)
            .select("_pos")
            .unique()
        )
        rows = rows.join(paired, on="_pos", how="anti")
    return rows
