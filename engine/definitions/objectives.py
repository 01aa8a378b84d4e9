"""Strategic objectives: the strategy map over the KPIs (kpi_defs/objectives/*.yaml).

Kaplan and Norton's strategy map (Harvard Business Review, 2000; "Strategy Maps", 2004) links
objectives by cause and effect from the bottom up: learning & growth drives the internal
processes, which drive what patients get, which drives the financial results. An objective is
measured by KPIs of its own perspective, with weights, and `drives:` names the objectives it is
a cause of: the arrows go up (or across), never down, and never round in a circle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from engine.definitions.kpi import KpiDefinition, Perspective
from engine.definitions.match import Strict
from engine.yamlconf import Loc, listed

LAYER: dict[Perspective, int] = {
    Perspective.learning_growth: 0,
    Perspective.internal_process: 1,
    Perspective.patient: 2,
    Perspective.financial: 3,
}
"""Bottom to top of a strategy map: a cause sits on its effect's layer or below."""

OBJECTIVES_DIR = "objectives"
"""The sub-folder of the KPI definitions that holds objectives, not KPIs."""


class WeightedKpi(Strict):
    kpi: str
    weight: float = Field(default=1.0, gt=0, description="share in the objective's weighted status")


class Objective(Strict):
    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    name: str
    perspective: Perspective
    description: str | None = None
    kpis: list[WeightedKpi] = Field(min_length=1, description="the KPIs that measure it")
    drives: list[str] = Field(default_factory=list, description="objectives this one is a cause of")
    status: Literal["weighted", "worst"] = Field(
        default="weighted",
        description="its KPIs' weighted mean severity (engine/scorecard.py), or their worst",
    )

    @property
    def weights(self) -> dict[str, float]:
        return {k.kpi: k.weight for k in self.kpis}


def load_objectives(
    directory: Path, kpis: dict[str, KpiDefinition]
) -> tuple[dict[str, Objective], list[str]]:
    """Objectives from directory/*.yaml ({objectives: [...]}) checked against the KPIs and each
    other; returns them and every problem found (file:line: field: what)."""
    problems: list[str] = []
    found: dict[str, Objective] = {}
    where: dict[str, tuple[Path, dict[Loc, int], Loc]] = {}
    for path, lines, prefix, objective in listed(directory, "objectives", Objective, problems):
        if objective.id in found:
            line = lines.get((*prefix, "id"))
            problems.append(
                f"{path}:{line}: {_field(prefix, 'id')}: objective {objective.id!r} is defined twice"
            )
            continue
        found[objective.id] = objective
        where[objective.id] = (path, lines, prefix)
    for objective in found.values():
        problems.extend(_check(objective, found, kpis, *where[objective.id]))
    problems.extend(_cycles(found, where))
    return found, problems


def _field(prefix: Loc, *rest: Any) -> str:
    return ".".join(str(p) for p in (*prefix, *rest))


def _check(
    objective: Objective,
    objectives: dict[str, Objective],
    kpis: dict[str, KpiDefinition],
    path: Path,
    lines: dict[Loc, int],
    prefix: Loc,
) -> list[str]:
    problems = []
    for i, weighted in enumerate(objective.kpis):
        loc = (*prefix, "kpis", i, "kpi")
        at = f"{path}:{lines.get(loc)}: {_field(loc)}"
        kpi = kpis.get(weighted.kpi)
        if kpi is None:
            problems.append(f"{at}: unknown KPI {weighted.kpi!r}")
        elif kpi.perspective is not objective.perspective:
            problems.append(
                f"{at}: KPI {kpi.id!r} is in the {kpi.perspective.value} perspective, the objective in "
                f"{objective.perspective.value}: an objective is measured by KPIs of its own perspective"
            )
    for i, target in enumerate(objective.drives):
        loc = (*prefix, "drives", i)
        at = f"{path}:{lines.get(loc)}: {_field(loc)}"
        effect = objectives.get(target)
        if effect is None:
            problems.append(f"{at}: unknown objective {target!r}")
        elif LAYER[effect.perspective] < LAYER[objective.perspective]:
            problems.append(
                f"{at}: {objective.id!r} ({objective.perspective.value}) cannot drive {target!r} "
                f"({effect.perspective.value}): a strategy map's causes sit below their effects "
                "(learning_growth -> internal_process -> patient -> financial)"
            )
    return problems


def _cycles(
    objectives: dict[str, Objective], where: dict[str, tuple[Path, dict[Loc, int], Loc]]
) -> list[str]:
    """A cause that is, through other objectives, its own effect: reported once per cycle."""
    state: dict[str, int] = {}  # 1 on the path, 2 done
    problems: list[str] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for i, nxt in enumerate(objectives[node].drives):
            if nxt not in objectives:
                continue
            if state.get(nxt) == 1:
                file, lines, prefix = where[node]
                loc = (*prefix, "drives", i)
                cycle = " -> ".join([*path[path.index(nxt) :], nxt])
                problems.append(f"{file}:{lines.get(loc)}: {_field(loc)}: drives in a circle: {cycle}")
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in objectives:
        if start not in state:
            visit(start, [start])
    return problems
