"""docs/kpis.md from the KPI catalogue: each KPI's definition in one line, the standard it
follows and what carescore does differently (`make docs`; a test fails when it is stale)."""

from __future__ import annotations

from engine.config import REPO_ROOT
from engine.definitions.catalogue import Catalogue, load_catalogue
from engine.definitions.kpi import PERSPECTIVE_TITLES, Perspective


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
    return "\n".join(lines)


if __name__ == "__main__":
    print(render_markdown(load_catalogue(REPO_ROOT / "kpi_defs")), end="")
