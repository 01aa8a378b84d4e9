"""The KPI catalogue: every definition file in kpi_defs/, loaded and validated at start,
with every problem of every file reported at once (file and line), not the first only; and
the strategic objectives over the KPIs (kpi_defs/objectives/, engine/definitions/objectives.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from engine.definitions.kpi import KpiDefinition
from engine.definitions.objectives import OBJECTIVES_DIR, Objective, load_objectives
from engine.definitions.views import VIEWS_DIR, BuiltinView, load_views
from engine.yamlconf import ConfigError, describe_errors, line_of, load_yaml, loaded


class Catalogue(BaseModel):
    """All KPIs, in file order, with where each came from, and the objectives they measure."""

    kpis: dict[str, KpiDefinition]
    files: dict[str, Path]
    objectives: dict[str, Objective] = {}
    views: dict[str, BuiltinView] = {}

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.kpis.values())

    def __len__(self) -> int:
        return len(self.kpis)

    def __getitem__(self, kpi_id: str) -> KpiDefinition:
        return self.kpis[kpi_id]


def _documents(data: Any) -> list[tuple[tuple[Any, ...], Any]]:
    """A file holds one KPI, a list of KPIs, or {kpis: [...]} (one file per perspective)."""
    if isinstance(data, dict) and "kpis" in data and "id" not in data:
        return [(("kpis", i), d) for i, d in enumerate(data["kpis"] or [])]
    if isinstance(data, list):
        return [((i,), d) for i, d in enumerate(data)]
    return [((), data)]


def load_catalogue(directory: Path) -> Catalogue:
    """Load every *.yaml / *.yml below directory; raise ConfigError listing every problem."""
    if not directory.is_dir():
        raise ConfigError([f"{directory}: KPI definition folder does not exist"])
    files = sorted(
        p
        for p in directory.rglob("*")
        if p.suffix in (".yaml", ".yml")
        and p.relative_to(directory).parts[0] not in (OBJECTIVES_DIR, VIEWS_DIR)
    )
    problems: list[str] = []
    kpis: dict[str, KpiDefinition] = {}
    origin: dict[str, Path] = {}
    for path, data, lines in loaded(files, problems):
        if data is None:
            problems.append(f"{path}: file is empty")
            continue
        for prefix, doc in _documents(data):
            try:
                kpi = KpiDefinition.model_validate(doc)
            except ValidationError as exc:
                problems.extend(describe_errors(path, lines, exc, prefix, data=doc))
                continue
            if kpi.id in kpis:
                line = lines.get((*prefix, "id"))
                problems.append(f"{path}:{line}: id: KPI {kpi.id!r} is already defined in {origin[kpi.id]}")
                continue
            kpis[kpi.id] = kpi
            origin[kpi.id] = path
    if problems:
        raise ConfigError(problems)
    if not kpis:
        raise ConfigError([f"{directory}: no KPI definitions (*.yaml) found"])
    problems.extend(_compliance_links(kpis, origin))
    objectives, wrong = load_objectives(directory / OBJECTIVES_DIR, kpis)  # checked against the KPIs
    problems.extend(wrong)
    views, wrong = load_views(directory / VIEWS_DIR, kpis)  # the built-in views, checked too
    problems.extend(wrong)
    if problems:
        raise ConfigError(problems)
    return Catalogue(kpis=kpis, files=origin, objectives=objectives, views=views)


def _compliance_links(kpis: dict[str, KpiDefinition], origin: dict[str, Path]) -> list[str]:
    """compliance.minutes_out must name a KPI that counts minutes (aggregate minutes_over)."""
    problems = []
    for kpi in kpis.values():
        name = kpi.compliance.minutes_out if kpi.compliance else None
        counter = kpis.get(name) if name else None
        if name and (counter is None or counter.aggregate != "minutes_over"):
            line = line_of(load_yaml(origin[kpi.id])[1], ("compliance", "minutes_out"))
            problems.append(
                f"{origin[kpi.id]}:{line}: compliance.minutes_out: {name!r} is not a KPI with "
                "aggregate minutes_over (the minutes out of compliance are counted by one)"
            )
    return problems
