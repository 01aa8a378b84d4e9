"""docs/kpis.md from the KPI catalogue: each KPI's definition in one line, the standard it
follows and what carescore does differently, and the strategy map's objectives over them
(`make docs`; a test fails when it is stale)."""

from __future__ import annotations

from engine.config import REPO_ROOT
from engine.definitions.catalogue import Catalogue, load_catalogue
from engine.definitions.kpi import PERSPECTIVE_TITLES, Perspective
from engine.definitions.objectives import LAYER


def _one_line(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render_markdown(catalogue: Catalogue) -> str:
    lines = [
        "# KPI catalogue",
        "",
        "Generated from [`kpi_defs/`](../kpi_defs/) by `make docs`: each KPI's definition as",
        "computed, the published standard it follows, and where carescore deviates from it.",
        "",
    ]
    for perspective in Perspective:
        kpis = [k for k in catalogue if k.perspective is perspective]
        lines += [f"## {PERSPECTIVE_TITLES[perspective]}", "", "| KPI | definition | standard | deviations |"]
        lines.append("|---|---|---|---|")
        for kpi in kpis:
            standard = (
                f"{_one_line(kpi.standard.text)} ({_one_line(kpi.standard.source)})" if kpi.standard else "—"
            )
            deviations = "<br>".join(f"• {_one_line(d)}" for d in kpi.deviations or []) or "none"
            lines.append(
                f"| **{_one_line(kpi.name)}** (`{kpi.id}`, {kpi.unit}) | {_one_line(kpi.definition)} "
                f"| {standard} | {deviations} |"
            )
        lines.append("")
    return "\n".join(lines + _objectives(catalogue))


def _objectives(catalogue: Catalogue) -> list[str]:
    """The strategy map as a table: objectives bottom-up (learning & growth first), their KPIs
    with weights and the objectives they drive."""
    if not catalogue.objectives:
        return []
    lines = [
        "## Strategy map",
        "",
        "Objectives from [`kpi_defs/objectives/`](../kpi_defs/objectives/), causes first; an",
        "objective's status is its KPIs' weighted (or worst) status at a place, `GET /api/v1/objectives`.",
        "A department's or unit's own objective (held at its places) supports a wider one: its status",
        "there counts in that objective's roll-up with the weight given.",
        "",
        "| objective | perspective | held by | KPIs (weight) | drives | supports (weight) |",
        "|---|---|---|---|---|---|",
    ]
    for objective in sorted(catalogue.objectives.values(), key=lambda o: LAYER[o.perspective]):
        kpis = ", ".join(f"`{k.kpi}` ({k.weight:g})" for k in objective.kpis)
        drives = ", ".join(f"`{d}`" for d in objective.drives) or "—"
        held = (
            "hospital"
            if objective.level == "facility"
            else f"{objective.level}: {', '.join(objective.places)}"
        )
        up = objective.supports
        supports = f"`{up.objective}` ({up.weight:g})" if up else "—"
        lines.append(
            f"| **{_one_line(objective.name)}** (`{objective.id}`) "
            f"| {PERSPECTIVE_TITLES[objective.perspective]} | {held} | {kpis} | {drives} | {supports} |"
        )
    lines.append("")
    return lines


if __name__ == "__main__":
    print(render_markdown(load_catalogue(REPO_ROOT / "kpi_defs")), end="")
