"""The KPI catalogue: every definition file in kpi_defs/, loaded and validated at start,
with every problem of every file reported at once (file and line), not the first only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from engine.definitions.kpi import KpiDefinition
from engine.yamlconf import ConfigError, describe_errors, load_yaml


class Catalogue(BaseModel):
    """All KPIs, in file order, with where each came from."""

    kpis: dict[str, KpiDefinition]
    files: dict[str, Path]

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
    files = sorted(p for p in directory.rglob("*") if p.suffix in (".yaml", ".yml"))
    problems: list[str] = []
    kpis: dict[str, KpiDefinition] = {}
    origin: dict[str, Path] = {}
    for path in files:
        try:
            data, lines = load_yaml(path)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
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
    return Catalogue(kpis=kpis, files=origin)
