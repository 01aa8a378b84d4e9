"""KPI definitions: the YAML schema in kpi_defs/, validated at start.

A KPI is a *measure* (what is observed per event: a duration between paired events, a count,
a sum of a field, a level such as the patient census) folded by an *aggregate* (p90, mean,
ratio ...) over an event-time *window*, per place (unit, rolled up to department and
facility), held against a target, thresholds and a benchmark.

The parts live in submodules: match (which events), measures (what is observed), window
(over which time), kpi (one definition whole) and catalogue (the files). This package
exposes the names used outside the engine (the API, alerts, the application shell).
"""

from engine.definitions.catalogue import Catalogue, _documents, load_catalogue
from engine.definitions.kpi import PERSPECTIVE_TITLES, Direction, KpiDefinition, Perspective
from engine.definitions.objectives import LAYER, Objective

__all__ = [
    "LAYER",
    "PERSPECTIVE_TITLES",
    "Catalogue",
    "Direction",
    "KpiDefinition",
    "Objective",
    "Perspective",
    "_documents",
    "load_catalogue",
]
