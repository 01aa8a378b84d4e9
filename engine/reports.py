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

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import polars as pl

from engine.definitions import (
    TIME_UNITS,
    DurationMeasure,
    EventMeasure,
    EventPart,
    KpiDefinition,
    LevelMeasure,
    LevelPart,
    Match,
    RatioMeasure,
    ReadmissionMeasure,
    quantile_of,
)
from engine.events import parse_event
from engine.levels import BedTracker, CensusTracker, RosterTracker, StaffTracker
from engine.places import Places
from engine.samples import Group

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
        expr = expr & pl.col(name).is_in(options)
    return frame.filter(expr)


def _places(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select("facility", "department", "unit")


class Reporter:
    """Computes reports over one snapshot of the log (a polars frame)."""

    def __init__(self, frame: pl.DataFrame, places: Places | None = None):
        self.frame = frame.with_columns(ts=_ts("event_time"))
        self.places = places or Places()
        self._levels: pl.DataFrame | None = None

    # -- levels ------------------------------------------------------------------------------
    def levels(self) -> pl.DataFrame:
        """(level, facility, department, unit, ts, delta) from the census/roster trackers."""
        if self._levels is None:
            rows: list[tuple[str, str, str | None, str | None, float, float]] = []

            def emit(level: str, key: tuple[str, str | None, str | None], ts: float, delta: float) -> None:
                rows.append((level, key[0], key[1], key[2], ts, delta))

            routes: dict[str, Any] = {}
            routes.update(CensusTracker(emit).handlers())
            routes.update(StaffTracker(emit).handlers())
            routes.update(RosterTracker(emit).handlers())
            routes.update(BedTracker(emit).handlers())
            wanted = self.frame.filter(pl.col("type").is_in(list(routes))).drop("ts")
            for record in wanted.iter_rows(named=True):
                event = parse_event({k: v for k, v in record.items() if v is not None})
                routes[event.type](event)
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
    def _first_per_key(self, match: Match, key: str, time: str, prefix: str) -> pl.DataFrame:
        """The earliest matching event per key, with its time and place."""
        return (
            _matching(self.frame, match)
            .filter(pl.col(key).is_not_null())
            .sort("ts")
            .group_by(key, maintain_order=True)
            .first()
            .select(key, pl.col("ts").alias(time), *[pl.col(c).alias(f"{prefix}{c}") for c in PLACE])
        )

    def _durations(self, m: DurationMeasure, start: float, end: float) -> pl.DataFrame:
        starts = self._first_per_key(m.start, m.key, "t0", "s_")
        ends = self._first_per_key(m.end, m.key, "t1", "e_")
        side = "s_" if m.attribute_to == "start" else "e_"
        pairs = starts.join(ends, on=m.key, how="inner")
        if m.cancel is not None:  # withdrawn before it ended: not counted
            cancels = self._first_per_key(m.cancel, m.key, "tc", "c_").select(m.key, "tc")
            pairs = pairs.join(cancels, on=m.key, how="left").filter(
                pl.col("tc").is_null() | (pl.col("tc") >= pl.col("t1"))
            )
        return pairs.filter(
            (pl.col("t1") >= pl.col("t0")) & (pl.col("t1") >= start) & (pl.col("t1") < end)
        ).select(
            *[pl.col(f"{side}{c}").alias(c) for c in PLACE],
            ((pl.col("t1") - pl.col("t0")) / TIME_UNITS[m.unit]).alias("value"),
        )

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
        rows = _matching(self.frame, part).filter((pl.col("ts") >= start) & (pl.col("ts") < end))
        value = pl.lit(1.0) if part.field is None else pl.col(part.field).cast(pl.Float64).fill_null(0.0)
        return rows.select("facility", "department", "unit", value.alias("x"), pl.lit(1).alias("events"))

    def _ratio_parts(self, m: RatioMeasure, start: float, end: float) -> pl.DataFrame:
        num = self._part(m.numerator, start, end).with_columns(num=pl.col("x"), den=pl.lit(0.0))
        den = self._part(m.denominator, start, end).with_columns(num=pl.lit(0.0), den=pl.col("x"))
        return pl.concat([num, den]).select("facility", "department", "unit", "num", "den", "events")

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
        admits = self.frame.filter(pl.col("type") == "encounter.admit")
        admit_class = admits.group_by("encounter_id").agg(
            pl.col("patient_class").first().alias("admit_class")
        )
        discharges = (
            self.frame.filter(pl.col("type") == "encounter.discharge")
            .join(admit_class, on="encounter_id", how="left")
            .with_columns(cls=pl.coalesce("patient_class", "admit_class"))
            .filter(
                pl.col("cls").is_in(m.patient_classes)
                & pl.col("patient_id").is_not_null()
                & ~pl.col("disposition").fill_null("").is_in(m.exclude_dispositions)
            )
            .select(
                "patient_id",
                pl.col("ts").alias("d_ts"),
                pl.col("encounter_id").alias("d_enc"),
                "facility",
                "department",
                "unit",
            )
            .sort("d_ts")
        )
        den = discharges.filter((pl.col("d_ts") >= start) & (pl.col("d_ts") < end)).select(
            "facility",
            "department",
            "unit",
            pl.lit(0.0).alias("num"),
            pl.lit(1.0).alias("den"),
            pl.lit(1).alias("events"),
        )
        readmits = (
            admits.filter(
                pl.col("patient_class").is_in(m.patient_classes) & pl.col("patient_id").is_not_null()
            )
            .select("patient_id", "ts", "encounter_id")
            .sort("ts")
            .join_asof(
                discharges,
                left_on="ts",
                right_on="d_ts",
                by="patient_id",
                strategy="backward",
                check_sortedness=False,
            )
            .filter(
                pl.col("d_ts").is_not_null()
                & (pl.col("ts") - pl.col("d_ts") <= m.within)
                & (pl.col("encounter_id") != pl.col("d_enc"))
                & (pl.col("ts") >= start)
                & (pl.col("ts") < end)
            )
            .select(
                "facility",
                "department",
                "unit",
                pl.lit(1.0).alias("num"),
                pl.lit(0.0).alias("den"),
                pl.lit(1).alias("events"),
            )
        )
        return pl.concat([readmits, den])

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
            return self._ratio_rows(kpi, parts, cols, by, m.scale, m.annualise, b - a, rolls_all=True)
        if isinstance(m, LevelMeasure):
            parts = self._gauge_parts(m, a, b)
            return self._ratio_rows(kpi, parts, cols, by, m.scale, False, b - a, rolls_all=m.per is None)
        assert isinstance(m, ReadmissionMeasure)
        parts = self._readmission_parts(m, a, b)
        return self._ratio_rows(kpi, parts, cols, by, m.scale, False, b - a, rolls_all=True)

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
    ) -> list[ReportRow]:
        sums = [pl.col("num").sum(), pl.col("den").sum(), pl.col("events").sum()]
        per_unit = parts.group_by("facility", "department", "unit").agg(sums)
        if not rolls_all and by != "unit":
            per_unit = per_unit.filter(pl.col("den") > 0)  # units without beds do not join the roll-up
        grouped = self._keyed(per_unit, by).group_by(cols).agg(sums)
        rows = []
        for rec in grouped.iter_rows(named=True):
            num, den = float(rec["num"]), float(rec["den"])
            if num == 0 and den == 0 and not rec["events"]:
                continue  # nothing observed here: the stream has no sample either
            value = None if den == 0 else num / den * scale * (YEAR / span if annualise else 1.0)
            n = int(den) if not isinstance(kpi.measure, LevelMeasure) else (1 if den > 0 else 0)
            group = _group(rec, by)
            rows.append(ReportRow(group, value, num, den, n, kpi.status_of(value, n, self._unit_type(group))))
        return _sorted(rows)

    def _unit_type(self, group: Group) -> str | None:
        return self.places.unit_types().get(group.key)


def _group(rec: dict[str, Any], by: Level) -> Group:
    return Group(
        facility=rec["facility"],
        department=rec.get("department") if by != "facility" else None,
        unit=rec.get("unit") if by == "unit" else None,
    )


def _sorted(rows: list[ReportRow]) -> list[ReportRow]:
    return sorted(rows, key=lambda r: (r.group.facility, r.group.department or "", r.group.unit or ""))
