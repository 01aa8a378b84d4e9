"""Scorecard views: which perspectives, KPIs and places one audience sees, and how laid out.

Built-in views for the usual audiences (executive, nursing, ED, finance, quality) live in
kpi_defs/views/*.yaml, checked against the KPIs when the catalogue loads (errors name file,
line and field); people save their own over the API (the same model, checked the same way).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from engine.definitions.kpi import KpiDefinition, Perspective
from engine.definitions.match import Strict
from engine.yamlconf import Loc, listed

VIEWS_DIR = "views"
"""The sub-folder of the KPI definitions that holds the built-in views, not KPIs."""


class PlaceRef(Strict):
    """A facility, a department or a unit (the fields it does not need left out)."""

    facility: str | None = Field(default=None, max_length=64)
    department: str | None = Field(default=None, max_length=64)
    unit: str | None = Field(default=None, max_length=64)


class Layout(Strict):
    kind: Literal["cards", "table"] = Field(default="cards", description="KPI cards or one table")
    columns: int = Field(default=3, ge=1, le=6, description="cards per row")


class ViewSpec(Strict):
    """What a view shows. Empty perspectives: all four; empty kpis: every KPI of those
    perspectives; empty places: the place asked for (the first facility by default)."""

    name: str = Field(min_length=1, max_length=120)
    description: str | None = Field(default=None, max_length=1000)
    perspectives: list[Perspective] = Field(default_factory=list, max_length=4)
    kpis: list[str] = Field(default_factory=list, max_length=200)
    places: list[PlaceRef] = Field(default_factory=list, max_length=50)
    layout: Layout = Field(default_factory=Layout)

    def shows(self, kpi: KpiDefinition) -> bool:
        if self.perspectives and kpi.perspective not in self.perspectives:
            return False
        return not self.kpis or kpi.id in self.kpis


class BuiltinView(ViewSpec):
    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]


def unknown_kpis(spec: ViewSpec, kpis: Mapping[str, KpiDefinition]) -> list[tuple[Loc, str]]:
    """(field, why) for each KPI id that is not defined, or whose perspective the view leaves out."""
    out: list[tuple[Loc, str]] = []
    for i, kpi_id in enumerate(spec.kpis):
        kpi = kpis.get(kpi_id)
        if kpi is None:
            out.append((("kpis", i), f"unknown KPI {kpi_id!r}"))
        elif spec.perspectives and kpi.perspective not in spec.perspectives:
            out.append(
                (
                    ("kpis", i),
                    f"KPI {kpi_id!r} is in the {kpi.perspective.value} perspective, not in the view's",
                )
            )
    return out


def load_views(
    directory: Path, kpis: Mapping[str, KpiDefinition]
) -> tuple[dict[str, BuiltinView], list[str]]:
    """Built-in views from directory/*.yaml ({views: [...]}); returns them and every problem
    found (file:line: field: what)."""
    problems: list[str] = []
    found: dict[str, BuiltinView] = {}
    for path, lines, prefix, view in listed(directory, "views", BuiltinView, problems):
        for loc, why in unknown_kpis(view, kpis):
            full = (*prefix, *loc)
            problems.append(f"{path}:{lines.get(full)}: {_field(full)}: {why}")
        if view.id in found:
            line = lines.get((*prefix, "id"))
            problems.append(f"{path}:{line}: {_field((*prefix, 'id'))}: view {view.id!r} is defined twice")
        found[view.id] = view
    return found, problems


def _field(loc: Loc) -> str:
    return ".".join(str(p) for p in loc)


def view_json(view: ViewSpec) -> dict[str, Any]:
    return view.model_dump(mode="json", exclude={"id"})
