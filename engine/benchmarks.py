"""Benchmarking: peer benchmark sets from CSV files, and the league table of places for a KPI.

A KPI's own benchmark (kpi_defs: value, source, year) is one external figure; hospitals also
compare themselves with peer groups (a state's teaching hospitals, a national file), which
change every year and belong in data files, not in the definitions: `scorecard.benchmarks`
names CSV files with the columns kpi, value, source, year, peer_group.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.definitions import Direction, KpiDefinition
from engine.report_rows import ReportRow
from engine.samples import GroupKey
from engine.yamlconf import ConfigError

COLUMNS = ("kpi", "value", "source", "year", "peer_group")


class PeerBenchmark(BaseModel):
    """One peer group's figure for one KPI, with its citation."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    kpi: str
    value: float
    source: str = Field(min_length=1, description="who published it: document, table, edition")
    year: int = Field(ge=1900, le=2100, description="the year the value describes")
    peer_group: str = Field(min_length=1, description="e.g. California teaching hospitals")


def load_peer_benchmarks(
    paths: Iterable[Path], kpis: Mapping[str, KpiDefinition]
) -> dict[str, list[PeerBenchmark]]:
    """Every file's rows by KPI; raise ConfigError naming file:line: column for each bad row."""
    found: dict[str, list[PeerBenchmark]] = {}
    problems: list[str] = []
    for path in paths:
        try:
            with path.open(newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
                if missing:
                    problems.append(f"{path}:1: header: missing column(s) {', '.join(missing)}")
                    continue
                for row in reader:
                    problems.extend(_take(path, reader.line_num, row, kpis, found))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            problems.append(f"{path}: cannot read the benchmark file: {exc}")
    if problems:
        raise ConfigError(problems)
    return found


def _take(
    path: Path,
    line: int,
    row: dict[Any, Any],
    kpis: Mapping[str, KpiDefinition],
    into: dict[str, list[PeerBenchmark]],
) -> list[str]:
    extra = row.pop(None, None)  # csv puts cells beyond the header under None
    if extra:
        return [f"{path}:{line}: (row): {len(extra)} cell(s) more than the header has"]
    values = {k: v for k, v in row.items() if k in COLUMNS}
    try:
        bench = PeerBenchmark.model_validate(values)
    except ValidationError as exc:
        return [f"{path}:{line}: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    if bench.kpi not in kpis:
        return [f"{path}:{line}: kpi: unknown KPI {bench.kpi!r}"]
    into.setdefault(bench.kpi, []).append(bench)
    return []


def _better_or_equal(kpi: KpiDefinition, value: float, reference: float) -> bool:
    return value <= reference if kpi.direction is Direction.lower_is_better else value >= reference


def _against(kpi: KpiDefinition, value: float | None, reference: float | None) -> dict[str, Any] | None:
    """value - reference, and whether the value is at least as good as the reference."""
    if value is None or reference is None:
        return None
    return {
        "reference": reference,
        "difference": value - reference,
        "meets": _better_or_equal(kpi, value, reference),
    }


def league_table(
    kpi: KpiDefinition,
    rows: Iterable[ReportRow],
    unit_types: Mapping[GroupKey, str],
    peers: Iterable[PeerBenchmark] = (),
) -> list[dict[str, Any]]:
    """The places best first by the KPI's direction, places without a value last.

    rank: 1 + the places strictly better (ties share a rank: 1, 2, 2, 4); percentile: the
    mid-rank percentile rank, (places worse + half the places equal, itself included) / places
    x 100, so the best of four distinct places is at 87.5 and the worst at 12.5. Distances are
    value - target (the unit type's target for a unit), value - the KPI's external benchmark,
    value - each peer group's figure."""
    peers = list(peers)
    rated = [r for r in rows if r.value is not None]
    unrated = [r for r in rows if r.value is None]
    sign = 1.0 if kpi.direction is Direction.lower_is_better else -1.0
    rated.sort(key=lambda r: (sign * (r.value or 0.0), tuple(part or "" for part in r.group.key)))
    values = [r.value or 0.0 for r in rated]
    out = []
    for row in [*rated, *unrated]:
        value = row.value
        unit_type = unit_types.get(row.group.key)
        entry: dict[str, Any] = {
            **row.to_json(),
            "unit_type": unit_type,
            "rank": None,
            "percentile": None,
            "target": _against(kpi, value, kpi.levels_for(unit_type).target),
            "benchmark": _against(kpi, value, kpi.benchmark.value if kpi.benchmark else None),
            "peers": [
                {"peer_group": p.peer_group, "year": p.year, **(_against(kpi, value, p.value) or {})}
                for p in peers
            ],
        }
        if value is not None:
            better = sum(1 for v in values if sign * v < sign * value)
            equal = sum(1 for v in values if v == value)
            worse = len(values) - better - equal
            entry["rank"] = better + 1
            entry["percentile"] = (worse + 0.5 * equal) / len(values) * 100.0
        out.append(entry)
    return out
