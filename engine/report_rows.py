"""Report rows: per-unit values, or numerator and denominator parts, folded with polars into
one row per unit, department or facility, as the stream rolls units up and finalizes them
(engine/aggregates.py): a roll-up's ratio is sum over sum, its percentile is over the
values of all its units.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import polars as pl

from engine.definitions.kpi import KpiDefinition, quantile_of
from engine.definitions.measures import LevelMeasure
from engine.samples import Group, GroupKey

Level = Literal["unit", "department", "facility"]
LEVEL_COLUMNS: dict[str, list[str]] = {
    "unit": ["facility", "department", "unit"],
    "department": ["facility", "department"],
    "facility": ["facility"],
}
YEAR = 365.0 * 86400.0


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


def keyed(frame: pl.DataFrame, by: Level) -> pl.DataFrame:
    """Rows that belong to a group at this level (a unit report needs a unit)."""
    if by == "unit":
        return frame.filter(pl.col("unit").is_not_null())
    if by == "department":
        return frame.filter(pl.col("department").is_not_null() | pl.col("unit").is_not_null())
    return frame


def value_rows(
    kpi: KpiDefinition,
    values: pl.DataFrame,
    cols: list[str],
    by: Level,
    unit_types: Mapping[GroupKey, str],
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
    grouped = keyed(values, by).group_by(cols).agg(exprs)
    rows = []
    for rec in grouped.iter_rows(named=True):
        group = row_group(rec, by)
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
                kpi.status_of(value, n, unit_types.get(group.key)),
            )
        )
    return sorted_rows(rows)


def ratio_rows(
    kpi: KpiDefinition,
    parts: pl.DataFrame,
    cols: list[str],
    by: Level,
    unit_types: Mapping[GroupKey, str],
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
    grouped = keyed(per_unit, by).group_by(cols).agg(sums)
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
        group = row_group(rec, by)
        status = kpi.status_of(value, n, unit_types.get(group.key))
        rows.append(ReportRow(group, value, num, reported, n, status))
    return sorted_rows(rows)


def row_group(rec: dict[str, Any], by: Level) -> Group:
    return Group(
        facility=rec["facility"],
        department=rec.get("department") if by != "facility" else None,
        unit=rec.get("unit") if by == "unit" else None,
    )


def level_of(key: tuple[str, str | None, str | None]) -> Level:
    if key[2] is not None:
        return "unit"
    return "department" if key[1] is not None else "facility"


def sorted_rows(rows: list[ReportRow]) -> list[ReportRow]:
    return sorted(rows, key=lambda r: (r.group.facility, r.group.department or "", r.group.unit or ""))
