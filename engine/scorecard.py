"""The scorecard's one severity order, how a perspective (and a strategic objective) rolls its
KPIs up, and the labels a KPI or feed alert is known by. Pure.

Alert evaluation (which of two breaches is worse), the API's scorecard (a perspective's
status) and /metrics (a KPI's status as a number) all read the order from here; alert routes
and the API's silences match on the same labels.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from engine.definitions.objectives import Objective

MatchLabel = Literal["kpi", "perspective", "facility", "department", "unit", "severity", "kind"]
Matchers = dict[MatchLabel, str | list[str]]
"""Alert labels to match (routes, silences): the label equals the value, or is one of a list."""

SEVERITY: dict[str, float] = {"ok": 0.0, "warning": 1.0, "critical": 2.0}
"""ok < warning < critical; no_data is not a severity (it never starts, raises or ends a breach)."""

STATUS_LEVEL: dict[str, float] = {"no_data": -1.0, **SEVERITY}
"""A status as a number (/metrics): -1 no data, then the severities."""


def worse(a: str, b: str) -> str:
    """The more severe of two severities (the first when they are equal)."""
    return max(a, b, key=SEVERITY.__getitem__)


def perspective_status(items: Iterable[Mapping[str, Any]], rule: str, weights: Mapping[str, float]) -> str:
    """Worst of the KPIs with data, or their weighted mean severity (ok 0, warning 1,
    critical 2) rounded to the nearest status. KPIs without data do not count.

    `items` are the KPIs of one perspective, each with its `id` and live `status`."""
    rated = [i for i in items if i["status"] in SEVERITY]
    if not rated:
        return "no_data"
    if rule == "worst":
        return max((i["status"] for i in rated), key=SEVERITY.__getitem__)
    total = sum(weights.get(i["id"], 1.0) for i in rated)
    score = sum(weights.get(i["id"], 1.0) * SEVERITY[i["status"]] for i in rated) / total if total else 0.0
    return "critical" if score >= 1.5 else "warning" if score >= 0.5 else "ok"


def objective_status(
    objective: Objective, statuses: Mapping[str, str], supporting: Iterable[tuple[str, str, float]] = ()
) -> str:
    """An objective's status from its KPIs' live statuses (kpi id -> status), by the same rule
    as a perspective's, with the objective's own weights; a cascaded objective's `supporting`
    objectives (label, status, weight), one per place that holds them, count as items too."""
    items = [{"id": k.kpi, "status": statuses.get(k.kpi, "no_data")} for k in objective.kpis]
    weights = dict(objective.weights)
    for label, status, weight in supporting:
        items.append({"id": label, "status": status})
        weights[label] = weight
    return perspective_status(items, objective.status, weights)
