"""Strategic objectives: the strategy map over the KPIs (kpi_defs/objectives/*.yaml).

Kaplan and Norton's strategy map (Harvard Business Review, 2000; "Strategy Maps", 2004) links
objectives by cause and effect from the bottom up: learning & growth drives the internal
processes, which drive what patients get, which drives the financial results. An objective is
measured by KPIs of its own perspective, with weights, and `drives:` names the objectives it is
a cause of: the arrows go up (or across), never down, and never round in a circle.

Scorecards cascade (Kaplan & Norton, "Alignment", 2006): a department or a unit has objectives of
its own (`level`, held at the `places` named) that each `supports:` one objective of a wider
level with a weight; the wider objective's status rolls its supporting objectives' statuses up
with its own KPIs (engine/scorecard.py), so the ICU's "safe ICU staffing" counts in the
hospital's "build a skilled and engaged nursing workforce".
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from engine.definitions.kpi import KpiDefinition, Perspective
from engine.definitions.match import Strict
from engine.yamlconf import Loc, line_of, listed

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


Level = Literal["facility", "department", "unit"]
WIDTH: dict[str, int] = {"unit": 0, "department": 1, "facility": 2}
"""An objective supports one of a wider level only: a unit's a department's or the hospital's."""


class Supports(Strict):
    objective: str = Field(description="the wider objective this one contributes to")
    weight: float = Field(default=1.0, gt=0, description="its share in that objective's weighted status")


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
    level: Level = Field(default="facility", description="whose scorecard holds it")
    places: list[str] = Field(
        default_factory=list,
        description="where it is held: department ids (level department), unit ids or unit types (unit)",
    )
    supports: Supports | None = Field(default=None, description="the wider objective it rolls up into")

    def held_at(self, department: str | None, unit: str | None, unit_type: str | None) -> bool:
        """Whether a place (a unit with its type, a department, or the facility: None) holds it."""
        if self.level == "facility":
            return True
        if self.level == "department":
            return department in self.places
        return unit is not None and (unit in self.places or unit_type in self.places)

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
    problems.extend(_cascade(objective, objectives, path, lines, prefix))
    return problems


def _cascade(
    objective: Objective, objectives: dict[str, Objective], path: Path, lines: dict[Loc, int], prefix: Loc
) -> list[str]:
    """Places name where a department or unit objective is held; supports point to a wider level."""
    problems = []
    at = f"{path}:{line_of(lines, (*prefix, 'places'))}: {_field(prefix, 'places')}"
    if objective.level == "facility" and objective.places:
        problems.append(f"{at}: a facility objective is the hospital's: it names no places (or give a level)")
    if objective.level != "facility" and not objective.places:
        problems.append(f"{at}: a {objective.level} objective names the places that hold it")
    if objective.supports is not None:
        loc = (*prefix, "supports", "objective")
        at = f"{path}:{lines.get(loc)}: {_field(loc)}"
        wider = objectives.get(objective.supports.objective)
        if wider is None:
            problems.append(f"{at}: unknown objective {objective.supports.objective!r}")
        elif WIDTH[wider.level] <= WIDTH[objective.level]:
            problems.append(
                f"{at}: {objective.id!r} ({objective.level}) cannot support {wider.id!r} ({wider.level}): "
                "an objective supports one of a wider level (unit -> department -> facility)"
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
