"""Period reports computed with polars from the event log (monthly review, benchmarking).

A report for [from, to) is computed from scratch, in batch, over the stored events, with
polars doing the pairing, filtering, windowing, grouping and aggregation. For a period that
is one of the stream's windows it must equal the stream's closed sample: the property
tests hold the two implementations against each other. What is shared is only the
derivation of levels from ADT/roster/HR moves (the census trackers), which is replayed
here over the logged events, because those rules (cancels undo, transfers move) are
domain rules, not windowing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any, Literal

import polars as pl

from engine.definitions.kpi import KpiDefinition, quantile_of
from engine.definitions.match import Match
from engine.definitions.measures import (
    TIME_UNITS,
    DurationMeasure,
    EventMeasure,
    EventPart,
    LevelMeasure,
    LevelPart,
    RatioMeasure,
    ReadmissionMeasure,
    StaffingRatioMeasure,
    StayMeasure,
    TopBoxMeasure,
)
from engine.events import EVENT_TYPES, EventBase, parse_event
from engine.hcahps import composite_score, items_of
from engine.levels import BedTracker, CensusTracker, RosterTracker, StaffTracker
from engine.operators.readmission import Cohort
from engine.operators.staffratio import Result, profile, rollup_result, unit_result
from engine.operators.stay import replay_observations
from engine.places import Places
from engine.samples import Group, rollups
from engine.windows import zone_of

Level = Literal["unit", "department", "facility"]
LEVEL_COLUMNS: dict[str, list[str]] = {
    "unit": ["facility", "department", "unit"],
    "department": ["facility", "department"],
    "facility": ["facility"],
}
PLACE = ["facility", "department", "unit"]
YEAR = 365.0 * 86400.0
LEVEL_UNITS = {"days": 86400.0, "hours": 3600.0}


@dataclass(frozen=True)
class ReportRow:
    group: Group
    value: float | None
    numerator: float | None
    denominator: float | None
    n: int
    status: str

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group.model_dump(),
            "value": self.value,
            "numerator": self.numerator,
            "denominator": self.denominator,
            "n": self.n,
            "status": self.status,
        }


def _ts(column: str) -> pl.Expr:
    return pl.col(column).dt.epoch("us").cast(pl.Float64) / 1e6


def _matching(frame: pl.DataFrame, match: Match) -> pl.DataFrame:
    expr = pl.col("type") == match.event
    for name, expected in match.where.items():
        options = expected if isinstance(expected, list) else [expected]
        if frame.schema.get(name) == pl.Float64:  # where: {scale_max: 5} on a float field
            options = [float(o) for o in options]
        expr = expr & pl.col(name).is_in(options)
    return frame.filter(expr)


def _agrees(start: Match, end: Match) -> pl.Expr:
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


def _places(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select("facility", "department", "unit")


class Reporter:
    """Computes reports over one snapshot of the log (a polars frame).

    A period is whatever [from, to) is asked for: nothing is aligned to days or months. The
    site's time zone only decides the calendar days inside measures (a stay's midnights, a
    readmission's 30 calendar days), as it does in the stream."""

    def __init__(
        self, frame: pl.DataFrame, places: Places | None = None, timezone: str | tzinfo | None = None
    ):
        self.frame = frame.with_columns(ts=_ts("event_time"))
        self.places = places or Places()
        self.zone = zone_of(timezone)
        self._levels: pl.DataFrame | None = None
        self._positioned: pl.DataFrame | None = None

    # -- levels ------------------------------------------------------------------------------
    def levels(self) -> pl.DataFrame:
        """(level, facility, department, unit, ts, delta) from the census/roster trackers."""
        if self._levels is None:
            rows: list[tuple[str, str, str | None, str | None, float, float]] = []

            def emit(level: str, key: tuple[str, str | None, str | None], ts: float, delta: float) -> None:
                rows.append((level, key[0], key[1], key[2], ts, delta))

            routes: dict[str, Any] = {}
            census = CensusTracker(emit, self.places.census, self.places.unit_types())
            routes.update(census.handlers())
            routes.update(StaffTracker(emit).handlers())
            routes.update(RosterTracker(emit).handlers())
            routes.update(BedTracker(emit).handlers())
            wanted = self.frame.filter(pl.col("type").is_in(list(routes))).drop("ts")
            for record in wanted.iter_rows(named=True):
                event = parse_event({k: v for k, v in record.items() if v is not None})
                routes[event.type](event)
            if len(self.frame):
                # registrations that never got a discharge leave as they do in the stream
                census.expire(float(self.frame["ts"].max()))  # type: ignore[arg-type]
            self._levels = pl.DataFrame(
                rows,
                schema={
                    "level": pl.Utf8,
                    "facility": pl.Utf8,
                    "department": pl.Utf8,
                    "unit": pl.Utf8,
                    "ts": pl.Float64,
                    "delta": pl.Float64,
                },
                orient="row",
            )
        return self._levels

    def _integral(self, level: str, start: float, end: float) -> pl.DataFrame:
        """Per unit: the level's integral over [start, end) in level-seconds."""
        deltas = self.levels().filter((pl.col("level") == level) & (pl.col("ts") < end))
        return (
            deltas.with_columns(
                contribution=pl.when(pl.col("ts") < start)
                .then(pl.col("delta") * (end - start))
                .otherwise(pl.col("delta") * (end - pl.col("ts")))
            )
            .group_by("facility", "department", "unit")
            .agg(pl.col("contribution").sum().alias("integral"))
        )

    # -- per measure: a frame of (facility, department, unit, value) or (.., num, den) -----------
    def _first_per_key(
        self, matches: list[Match], key: str, time: str, prefix: str, start: Match | None = None
    ) -> pl.DataFrame:
        """The earliest event per key matching any of `matches`, with its time and place (ties:
        the one logged first, as the stream takes the first to arrive). With `start`, end
        events that contradict the start's filter (a routine result for a STAT start) are left
        out, as the stream leaves them out."""
        if self._positioned is None:
            self._positioned = self.frame.with_row_index("_pos")  # log order breaks ties
        parts = []
        for match in matches:
            rows = _matching(self._positioned, match)
            if start is not None:
                rows = rows.filter(_agrees(start, match))
            parts.append(rows.filter(pl.col(key).is_not_null()).select(key, "ts", "_pos", *PLACE))
        return (
            pl.concat(parts)
            .sort("ts", "_pos")
            .group_by(key, maintain_order=True)
            .first()
            .select(key, pl.col("ts").alias(time), *[pl.col(c).alias(f"{prefix}{c}") for c in PLACE])
        )

    def _durations(self, m: DurationMeasure, start: float, end: float) -> pl.DataFrame:
        """The stream's rules (engine/operators/duration.py) over the log: per key the earliest
        start, end (of any end event) and cancel; an end past the interval's life
        (expire_after) does not end it; a cancel before the end, or with no end within the
        life, drops it. Values: ended intervals whose end is in [start, end); with count_open
        also intervals that expire in the period (at their life) and intervals still open at
        the period's end past the timeout (at their age then)."""
        life = float(m.expire_after)
        per = TIME_UNITS[m.unit]
        starts = self._first_per_key([m.start], m.key, "t0", "s_")
        ends = self._first_per_key(m.ends, m.key, "t1", "e_", start=m.start)
        cancels = (
            self._first_per_key([m.cancel], m.key, "tc", "c_").select(m.key, "tc")
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

    def _event_values(self, m: EventMeasure, start: float, end: float) -> pl.DataFrame:
        rows = _matching(self.frame, m).filter((pl.col("ts") >= start) & (pl.col("ts") < end))
        if m.field is None:
            return rows.select("facility", "department", "unit", pl.lit(1.0).alias("value"))
        return rows.filter(pl.col(m.field).is_not_null()).select(
            "facility", "department", "unit", pl.col(m.field).cast(pl.Float64).alias("value")
        )

    def _part(self, part: EventPart | LevelPart, start: float, end: float) -> pl.DataFrame:
        if isinstance(part, LevelPart):
            integral = self._integral(part.level, start, end)
            scale = (end - start) if part.as_ == "average" else LEVEL_UNITS[part.as_]
            return integral.filter(pl.col("integral") != 0).select(
                "facility",
                "department",
                "unit",
                (pl.col("integral") / scale).alias("x"),
                pl.lit(0).alias("events"),
            )
        rows = self._counted(part).filter((pl.col("ts") >= start) & (pl.col("ts") < end))
        value = pl.lit(1.0) if part.field is None else pl.col(part.field).cast(pl.Float64).fill_null(0.0)
        return rows.select("facility", "department", "unit", value.alias("x"), pl.lit(1).alias("events"))

    def _counted(self, part: EventPart) -> pl.DataFrame:
        """The events a part counts (engine/operators/ratio.py): with `distinct`, each identity's
        earliest event (ties: the one logged first), events without one all count; with
        `unless`, not those with a pairing event of the same key and facility within its time."""
        if self._positioned is None:
            self._positioned = self.frame.with_row_index("_pos")
        rows = _matching(self._positioned, part)
        if part.distinct is not None:
            ident = part.distinct
            anonymous = rows.filter(pl.col(ident).is_null())
            first = rows.filter(pl.col(ident).is_not_null()).sort("ts", "_pos").unique(ident, keep="first")
            rows = pl.concat([anonymous, first]).sort("_pos")
        elif part.unless is not None:
            key, within = part.unless.key, float(part.unless.within)
            pairs = _matching(self._positioned, part.unless).filter(pl.col(key).is_not_null())
            paired = (
                rows.filter(pl.col(key).is_not_null())
                .select("_pos", "facility", pl.col(key).cast(pl.Utf8).alias("_key"), "ts")
                .join(
                    pairs.select(
                        "facility", pl.col(key).cast(pl.Utf8).alias("_key"), pl.col("ts").alias("_t")
                    ),
                    on=["facility", "_key"],
                )
                .filter((pl.col("ts") - pl.col("_t")).abs() <= within)
                .select("_pos")
                .unique()
            )
            rows = rows.join(paired, on="_pos", how="anti")
        return rows

    def _ratio_parts(self, m: RatioMeasure, start: float, end: float) -> pl.DataFrame:
        zero = pl.lit(0.0)
        parts = [
            self._part(m.numerator, start, end).with_columns(
                num=pl.col("x"), den=zero, adj_num=zero, adj_den=zero
            ),
            self._part(m.denominator, start, end).with_columns(
                num=zero, den=pl.col("x"), adj_num=zero, adj_den=zero
            ),
        ]
        if m.minus is not None:
            minus = self._part(m.minus, start, end)
            parts.append(minus.with_columns(num=-pl.col("x"), den=zero, adj_num=zero, adj_den=zero))
        if m.adjust is not None:
            a = self._part(m.adjust.numerator, start, end)
            parts.append(a.with_columns(num=zero, den=zero, adj_num=pl.col("x"), adj_den=zero))
            b = self._part(m.adjust.denominator, start, end)
            parts.append(b.with_columns(num=zero, den=zero, adj_num=zero, adj_den=pl.col("x")))
        columns = ["facility", "department", "unit", "num", "den", "adj_num", "adj_den", "events"]
        return pl.concat([p.select(columns) for p in parts])

    def _gauge_parts(self, m: LevelMeasure, start: float, end: float) -> pl.DataFrame:
        num = self._integral(m.level, start, end).rename({"integral": "num"}).with_columns(den=pl.lit(0.0))
        if m.per is None:
            den = num.select(
                "facility", "department", "unit", pl.lit(0.0).alias("num"), pl.lit(end - start).alias("den")
            )
        elif m.per == "beds":
            staffed = self.places.capacity()
            capacity = [(f, d, u, beds * (end - start)) for (f, d, u), beds in staffed.items()]
            den = pl.DataFrame(
                capacity,
                schema={"facility": pl.Utf8, "department": pl.Utf8, "unit": pl.Utf8, "den": pl.Float64},
                orient="row",
            ).with_columns(num=pl.lit(0.0))
            closed = self._integral("beds", start, end).filter(  # beds closed for a while
                pl.struct("facility", "department", "unit").map_elements(
                    lambda k: (k["facility"], k["department"], k["unit"]) in staffed, return_dtype=pl.Boolean
                )
            )
            den = pl.concat(
                [den, closed.rename({"integral": "den"}).with_columns(num=pl.lit(0.0)).select(den.columns)]
            )
        else:
            den = self._integral(m.per, start, end).rename({"integral": "den"}).with_columns(num=pl.lit(0.0))
        cols = ["facility", "department", "unit", "num", "den"]
        return pl.concat([num.select(cols), den.select(cols)]).with_columns(events=pl.lit(0))

    def _readmission_parts(self, m: ReadmissionMeasure, start: float, end: float) -> pl.DataFrame:
        """The stream's cohort rule (engine/operators/readmission.py), replayed over the log."""
        rows: list[tuple[str, str | None, str | None, float, float, float, int]] = []

        def emit(
            place: tuple[str, str | None, str | None], ts: float, num: float, den: float, n: int
        ) -> None:
            rows.append((*place, ts, num, den, n))

        cohort = Cohort(m, emit, self.zone)
        routes = cohort.handlers()
        wanted = self.frame.filter(pl.col("type").is_in(list(routes))).drop("ts")
        for record in wanted.iter_rows(named=True):
            event = parse_event({k: v for k, v in record.items() if v is not None})
            routes[event.type](event)
        schema = {
            "facility": pl.Utf8,
            "department": pl.Utf8,
            "unit": pl.Utf8,
            "ts": pl.Float64,
            "num": pl.Float64,
            "den": pl.Float64,
            "events": pl.Int64,
        }
        frame = pl.DataFrame(rows, schema=schema, orient="row")
        return frame.filter((pl.col("ts") >= start) & (pl.col("ts") < end)).drop("ts")

    def _events(self, types: set[str]) -> Iterator[EventBase]:
        """The logged events of these types, in log order, as the stream saw them."""
        wanted = self.frame.filter(pl.col("type").is_in(list(types))).drop("ts")
        for record in wanted.iter_rows(named=True):
            yield parse_event({k: v for k, v in record.items() if v is not None})

    def _stays(self, m: StayMeasure, start: float, end: float) -> pl.DataFrame:
        """The stream's rule (engine/operators/stay.py) over the logged encounters."""
        types = {t for t in EVENT_TYPES if t.startswith("encounter.")}
        found = replay_observations(m, self.places.unit_types(), lambda: self._events(types), self.zone)
        rows = [(*place, value) for ts, place, value in found if start <= ts < end]
        schema = {"facility": pl.Utf8, "department": pl.Utf8, "unit": pl.Utf8, "value": pl.Float64}
        return pl.DataFrame(rows, schema=schema, orient="row")

    def _staffing_rows(
        self, kpi: KpiDefinition, m: StaffingRatioMeasure, start: float, end: float, by: Level
    ) -> list[ReportRow]:
        """Each unit's worst ratio (or minutes out of ratio) over the period, from the same
        step walk and roll-up as the stream (engine/operators/staffratio.py)."""
        levels = self.levels().filter(pl.col("level").is_in([m.patients, m.nurses]))
        unit_types = self.places.unit_types()
        per_group: dict[tuple[str, str | None, str | None], list[Result]] = {}
        for (fac, dep, unit), part in levels.group_by(["facility", "department", "unit"]):
            key = (str(fac), dep, unit)
            before = part.filter(pl.col("ts") < start)
            p0 = float(before.filter(pl.col("level") == m.patients)["delta"].sum())
            n0 = float(before.filter(pl.col("level") == m.nurses)["delta"].sum())
            inside = part.filter((pl.col("ts") >= start) & (pl.col("ts") < end))
            steps = [
                (ts, delta if level == m.patients else 0.0, delta if level == m.nurses else 0.0)
                for level, ts, delta in inside.select("level", "ts", "delta").iter_rows()
            ]
            unit_type = unit_types.get(key)  # type: ignore[arg-type]
            prof = profile((p0, n0), steps, start, end, kpi.levels_for(unit_type).limit)
            result = unit_result(kpi, prof, unit_type)
            for up in rollups(key):  # type: ignore[arg-type]
                if _level_of(up) == by:
                    per_group.setdefault(up, []).append(result)
        rows = []
        for key, parts in per_group.items():
            r = parts[0] if by == "unit" else rollup_result(kpi, parts)
            group = Group(facility=key[0], department=key[1], unit=key[2])
            rows.append(ReportRow(group, r.value, r.numerator, r.denominator, r.n, r.status))
        return _sorted(rows)

    # -- the report ------------------------------------------------------------------------------
    def report(
        self, kpi: KpiDefinition, start: datetime, end: datetime, by: Level = "unit"
    ) -> list[ReportRow]:
        a, b = start.timestamp(), end.timestamp()
        m = kpi.measure
        cols = LEVEL_COLUMNS[by]
        if isinstance(m, DurationMeasure | EventMeasure):
            values = (
                self._durations(m, a, b) if isinstance(m, DurationMeasure) else self._event_values(m, a, b)
            )
            return self._value_rows(kpi, values, cols, by)
        if isinstance(m, RatioMeasure):
            parts = self._ratio_parts(m, a, b)
            return self._ratio_rows(
                kpi,
                parts,
                cols,
                by,
                m.scale,
                m.annualise,
                b - a,
                rolls_all=m.roll_up == "all",
                adjusted=m.adjust is not None,
            )
        if isinstance(m, LevelMeasure):
            parts = self._gauge_parts(m, a, b)
            return self._ratio_rows(kpi, parts, cols, by, m.scale, False, b - a, rolls_all=m.per is None)
        if isinstance(m, StayMeasure):
            return self._value_rows(kpi, self._stays(m, a, b), cols, by)
        if isinstance(m, StaffingRatioMeasure):
            return self._staffing_rows(kpi, m, a, b, by)
        if isinstance(m, TopBoxMeasure):
            return self._top_box_rows(kpi, m, a, b, by)
        assert isinstance(m, ReadmissionMeasure)
        parts = self._readmission_parts(m, a, b)
        return self._ratio_rows(kpi, parts, cols, by, m.scale, False, b - a, rolls_all=True)

    def _top_box_rows(
        self, kpi: KpiDefinition, m: TopBoxMeasure, start: float, end: float, by: Level
    ) -> list[ReportRow]:
        """HCAHPS top box (engine/operators/topbox.py) in batch: per group, each item's top-box
        answers and answers pooled over the group's units (screeners, other domains' items and
        answers that do not apply have no top box here); n = distinct surveys."""
        cols = LEVEL_COLUMNS[by]
        answers = self.frame.filter(
            (pl.col("type") == m.event)
            & pl.col("item").is_in(sorted(items_of(m.domains)))
            & pl.col("top_box").is_not_null()
            & (pl.col("ts") >= start)
            & (pl.col("ts") < end)
        ).with_columns(survey=pl.coalesce("survey_id", "source_id"))
        answers = self._keyed(answers, by)
        tallies = answers.group_by(*cols, "item").agg(
            pl.col("top_box").cast(pl.Float64).sum().alias("top"), pl.len().cast(pl.Float64).alias("answered")
        )
        counts: dict[tuple[Any, ...], dict[str, list[float]]] = {}
        for rec in tallies.iter_rows(named=True):
            counts.setdefault(tuple(rec[c] for c in cols), {})[rec["item"]] = [rec["top"], rec["answered"]]
        rows = []
        for rec in answers.group_by(cols).agg(pl.col("survey").n_unique().alias("n")).iter_rows(named=True):
            score = composite_score(counts.get(tuple(rec[c] for c in cols), {}), m.domains)
            value = None if score is None else score * m.scale
            n = int(rec["n"])
            group = _group(rec, by)
            status = kpi.status_of(value, n, self._unit_type(group))
            rows.append(ReportRow(group, value, None, None, n, status))
        return _sorted(rows)

    def _keyed(self, frame: pl.DataFrame, by: Level) -> pl.DataFrame:
        """Rows that belong to a group at this level (a unit report needs a unit)."""
        if by == "unit":
            return frame.filter(pl.col("unit").is_not_null())
        if by == "department":
            return frame.filter(pl.col("department").is_not_null() | pl.col("unit").is_not_null())
        return frame

    def _value_rows(
        self, kpi: KpiDefinition, values: pl.DataFrame, cols: list[str], by: Level
    ) -> list[ReportRow]:
        agg = kpi.aggregate
        q = quantile_of(agg)
        v = pl.col("value")
        exprs = [pl.len().alias("n")]
        if agg == "count":
            exprs.append(pl.len().cast(pl.Float64).alias("result"))
        elif agg == "sum":
            exprs.append(v.sum().alias("result"))
        elif agg == "mean":
            exprs += [v.mean().alias("result"), v.sum().alias("num")]
        elif agg == "min":
            exprs.append(v.min().alias("result"))
        elif agg == "max":
            exprs.append(v.max().alias("result"))
        elif agg == "pct_within":
            exprs += [
                ((v <= kpi.within).sum() / pl.len() * 100.0).alias("result"),
                (v <= kpi.within).sum().alias("num"),
            ]
        else:
            assert q is not None
            exprs.append(v.quantile(q, interpolation="linear").alias("result"))
        grouped = self._keyed(values, by).group_by(cols).agg(exprs)
        rows = []
        for rec in grouped.iter_rows(named=True):
            group = _group(rec, by)
            value = rec["result"]
            n = int(rec["n"])
            num = rec.get("num")
            den = float(n) if agg in ("mean", "pct_within") else None
            rows.append(
                ReportRow(
                    group,
                    value,
                    None if num is None else float(num),
                    den,
                    n,
                    kpi.status_of(value, n, self._unit_type(group)),
                )
            )
        return _sorted(rows)

    def _ratio_rows(
        self,
        kpi: KpiDefinition,
        parts: pl.DataFrame,
        cols: list[str],
        by: Level,
        scale: float,
        annualise: bool,
        span: float,
        rolls_all: bool,
        adjusted: bool = False,
    ) -> list[ReportRow]:
        if "adj_num" not in parts.columns:
            parts = parts.with_columns(adj_num=pl.lit(0.0), adj_den=pl.lit(0.0))
        sums = [
            pl.col("num").sum(),
            pl.col("den").sum(),
            pl.col("adj_num").sum(),
            pl.col("adj_den").sum(),
            pl.col("events").sum(),
        ]
        per_unit = parts.group_by("facility", "department", "unit").agg(sums)
        if not rolls_all and by != "unit":
            per_unit = per_unit.filter(pl.col("den") > 0)  # units without a denominator stay out of roll-ups
        grouped = self._keyed(per_unit, by).group_by(cols).agg(sums)
        rows = []
        for rec in grouped.iter_rows(named=True):
            num, den = float(rec["num"]), float(rec["den"])
            if num == 0 and den == 0 and not rec["events"]:
                continue  # nothing observed here: the stream has no sample either
            n = int(den) if not isinstance(kpi.measure, LevelMeasure) else (1 if den > 0 else 0)
            value: float | None
            reported: float | None = den
            if adjusted:  # adjusted patient days: den x adj_num / adj_den (aggregates.Finalizer)
                adj_num, adj_den = float(rec["adj_num"]), float(rec["adj_den"])
                reported = None if adj_den == 0 else den * adj_num / adj_den
                value = None if not reported else num / reported * scale
            else:
                value = None if den == 0 else num / den * scale * (YEAR / span if annualise else 1.0)
            group = _group(rec, by)
            status = kpi.status_of(value, n, self._unit_type(group))
            rows.append(ReportRow(group, value, num, reported, n, status))
        return _sorted(rows)

    def _unit_type(self, group: Group) -> str | None:
        return self.places.unit_types().get(group.key)


def _group(rec: dict[str, Any], by: Level) -> Group:
    return Group(
        facility=rec["facility"],
        department=rec.get("department") if by != "facility" else None,
        unit=rec.get("unit") if by == "unit" else None,
    )


def _level_of(key: tuple[str, str | None, str | None]) -> Level:
    if key[2] is not None:
        return "unit"
    return "department" if key[1] is not None else "facility"


def _sorted(rows: list[ReportRow]) -> list[ReportRow]:
    return sorted(rows, key=lambda r: (r.group.facility, r.group.department or "", r.group.unit or ""))
