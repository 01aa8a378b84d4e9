"""Period reports computed with polars from the event log (monthly review, benchmarking).

A report for [from, to) is computed from scratch, in batch, over the stored events, with
polars doing the pairing, filtering, windowing, grouping and aggregation. For a period that
is one of the stream's windows it must equal the stream's closed sample: the property
tests hold the two implementations against each other. What is shared is only the
derivation of levels from ADT/roster/HR moves (the census trackers), which is replayed
here over the logged events, because those rules (cancels undo, transfers move) are
domain rules, not windowing.

Here: the levels replayed from the log and each measure's frame; the event measures'
pairing and counting rules are in engine/report_events.py, the folding of a frame into
rows per unit, department or facility in engine/report_rows.py. ReportRow and Level are
importable from here (the API and the runtimes use them).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, tzinfo
from typing import Any

import polars as pl

from engine.census import CensusTracker
from engine.definitions.kpi import KpiDefinition
from engine.definitions.measures import (
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
from engine.event_decoder import parse_event
from engine.events import EVENT_TYPES, EventBase
from engine.hcahps import composite_score, items_of
from engine.levels import BedTracker, StaffTracker
from engine.operators.readmission import Cohort
from engine.operators.staffratio import Result, profile, rollup_result, unit_result
from engine.operators.stay import replay_observations
from engine.places import Places
from engine.report_events import counted, durations, event_values, ts_seconds
from engine.report_rows import (
    LEVEL_COLUMNS,
    Level,
    ReportRow,
    keyed,
    level_of,
    ratio_rows,
    row_group,
    sorted_rows,
    value_rows,
)
from engine.roster import RosterTracker
from engine.samples import Group, rollups
from engine.stays import PLACED_BY_ENCOUNTER
from engine.windows import zone_of

LEVEL_UNITS = {"days": 86400.0, "hours": 3600.0}


class Reporter:
    """Computes reports over one snapshot of the log (a polars frame).

    A period is whatever [from, to) is asked for: nothing is aligned to days or months. The
    site's time zone only decides the calendar days inside measures (a stay's midnights, a
    readmission's 30 calendar days), as it does in the stream."""

    def __init__(
        self, frame: pl.DataFrame, places: Places | None = None, timezone: str | tzinfo | None = None
    ):
        self.frame = frame.with_columns(ts=ts_seconds("event_time"))
        self.places = places or Places()
        self.zone = zone_of(timezone)
        self._levels: pl.DataFrame | None = None
        self._positioned: pl.DataFrame | None = None
        self._census = CensusTracker(lambda *_: None)
        self._place_by_encounter()

    def _place_by_encounter(self) -> None:
        """Nurse calls that name their encounter but no unit, at the encounter's unit then, as
        the stream places them (StayBook.place_by_encounter) over the logged stays."""
        if "encounter_id" not in self.frame.columns:
            return
        todo = self.frame.with_row_index("_row").filter(
            pl.col("type").is_in(list(PLACED_BY_ENCOUNTER))
            & pl.col("unit").is_null()
            & pl.col("encounter_id").is_not_null()
        )
        if todo.is_empty():
            return
        self.levels()  # replays the census: its stays
        fills = []
        for record in todo.drop("ts").iter_rows(named=True):
            event = parse_event({k: v for k, v in record.items() if v is not None and k != "_row"})
            placed = self._census.book.place_by_encounter(event)
            if placed is not event:
                fills.append((record["_row"], placed.department, placed.unit))
        schema = {"_row": pl.UInt32, "_department": pl.Utf8, "_unit": pl.Utf8}
        fill = pl.DataFrame(fills, schema=schema, orient="row")
        self.frame = (
            self.frame.with_row_index("_row")
            .join(fill, on="_row", how="left")
            .with_columns(
                department=pl.coalesce("_department", "department"), unit=pl.coalesce("_unit", "unit")
            )
            .drop("_row", "_department", "_unit")
        )

    @property
    def positioned(self) -> pl.DataFrame:
        """The log with its row index `_pos`: log order breaks ties, as arrival order does."""
        if self._positioned is None:
            self._positioned = self.frame.with_row_index("_pos")
        return self._positioned

    # -- levels ------------------------------------------------------------------------------
    def levels(self) -> pl.DataFrame:
        """(level, facility, department, unit, ts, delta) from the census/roster trackers."""
        if self._levels is None:
            rows: list[tuple[str, str, str | None, str | None, float, float]] = []

            def emit(level: str, key: tuple[str, str | None, str | None], ts: float, delta: float) -> None:
                rows.append((level, key[0], key[1], key[2], ts, delta))

            routes: dict[str, Any] = {}
            census = self._census = CensusTracker(emit, self.places.census, self.places.unit_types())
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
    def _part(self, part: EventPart | LevelPart | StayMeasure, start: float, end: float) -> pl.DataFrame:
        if isinstance(part, StayMeasure):  # each stay or visit counts one
            visits = self._stays(part, start, end)
            one = pl.lit(1.0).alias("x")
            return visits.select("facility", "department", "unit", one, pl.lit(1).alias("events"))
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
        rows = counted(self.positioned, part).filter((pl.col("ts") >= start) & (pl.col("ts") < end))
        value = pl.lit(1.0) if part.field is None else pl.col(part.field).cast(pl.Float64).fill_null(0.0)
        return rows.select("facility", "department", "unit", value.alias("x"), pl.lit(1).alias("events"))

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
                if level_of(up) == by:
                    per_group.setdefault(up, []).append(result)
        rows = []
        for key, parts in per_group.items():
            r = parts[0] if by == "unit" else rollup_result(kpi, parts)
            group = Group(facility=key[0], department=key[1], unit=key[2])
            rows.append(ReportRow(group, r.value, r.numerator, r.denominator, r.n, r.status))
        return sorted_rows(rows)

    # -- the report ------------------------------------------------------------------------------
    def report(
        self, kpi: KpiDefinition, start: datetime, end: datetime, by: Level = "unit"
    ) -> list[ReportRow]:
        a, b = start.timestamp(), end.timestamp()
        m = kpi.measure
        cols = LEVEL_COLUMNS[by]
        units = self.places.unit_types()
        if isinstance(m, DurationMeasure | EventMeasure):
            values = (
                durations(self.positioned, m, a, b)
                if isinstance(m, DurationMeasure)
                else event_values(self.frame, m, a, b)
            )
            return value_rows(kpi, values, cols, by, units)
        if isinstance(m, RatioMeasure):
            parts = self._ratio_parts(m, a, b)
            return ratio_rows(
                kpi,
                parts,
                cols,
                by,
                units,
                m.scale,
                m.annualise,
                b - a,
                rolls_all=m.roll_up == "all",
                adjusted=m.adjust is not None,
            )
        if isinstance(m, LevelMeasure):
            parts = self._gauge_parts(m, a, b)
            return ratio_rows(kpi, parts, cols, by, units, m.scale, False, b - a, rolls_all=m.per is None)
        if isinstance(m, StayMeasure):
            return value_rows(kpi, self._stays(m, a, b), cols, by, units)
        if isinstance(m, StaffingRatioMeasure):
            return self._staffing_rows(kpi, m, a, b, by)
        if isinstance(m, TopBoxMeasure):
            return self._top_box_rows(kpi, m, a, b, by)
        assert isinstance(m, ReadmissionMeasure)
        parts = self._readmission_parts(m, a, b)
        return ratio_rows(kpi, parts, cols, by, units, m.scale, False, b - a, rolls_all=True)

    def _top_box_rows(
        self, kpi: KpiDefinition, m: TopBoxMeasure, start: float, end: float, by: Level
    ) -> list[ReportRow]:
        """HCAHPS top box (engine/operators/topbox.py) in batch: per group, each item's top-box
        answers and answers pooled over the group's units (screeners, other domains' items and
        answers that do not apply have no top box here); n = distinct surveys."""
        cols = LEVEL_COLUMNS[by]
        units = self.places.unit_types()
        answers = self.frame.filter(
            (pl.col("type") == m.event)
            & pl.col("item").is_in(sorted(items_of(m.domains)))
            & pl.col("top_box").is_not_null()
            & (pl.col("ts") >= start)
            & (pl.col("ts") < end)
        ).with_columns(survey=pl.coalesce("survey_id", "source_id"))
        answers = keyed(answers, by)
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
            group = row_group(rec, by)
            status = kpi.status_of(value, n, units.get(group.key))
            rows.append(ReportRow(group, value, None, None, n, status))
        return sorted_rows(rows)
