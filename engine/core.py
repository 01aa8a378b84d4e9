"""The engine: one object that owns every KPI operator and routes events to them.

Both runtimes drive it the same way: `process(event)` for each canonical event in log
order, `advance(now)` on a timer (returns closed-window samples), `live(now)` for the
current values. Watermarks are kept per source (hl7v2, fhir, feed); an operator's windows
close on the slowest source that has fed it (engine/watermarks.py: a quiet source advances
with the wall clock after `idle_timeout`, and no watermark moves back).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import tzinfo
from typing import Any

import orjson

from engine.aggregates import Finalizer
from engine.census import CensusTracker
from engine.definitions.catalogue import Catalogue
from engine.definitions.kpi import KpiDefinition
from engine.definitions.measures import (
    DurationMeasure,
    EventMeasure,
    LevelMeasure,
    RatioMeasure,
    ReadmissionMeasure,
    StaffingRatioMeasure,
    StayMeasure,
    TopBoxMeasure,
)
from engine.events import EventBase
from engine.history import windows_of
from engine.levels import BedTracker, StaffTracker
from engine.operators.base import Handler, Hint, Operator, Output
from engine.operators.duration import DurationOperator
from engine.operators.events import EventValueOperator
from engine.operators.gauge import GaugeOperator
from engine.operators.ratio import RatioOperator
from engine.operators.readmission import ReadmissionOperator
from engine.operators.staffratio import StaffingRatioOperator
from engine.operators.stay import StayOperator
from engine.operators.topbox import TopBoxOperator
from engine.places import Places
from engine.roster import RosterTracker
from engine.samples import GroupKey, Sample
from engine.stays import PLACED_BY_ENCOUNTER
from engine.watermarks import Watermarks
from engine.windows import PaneClock, zone_of
from engine.yamlconf import ConfigError

STATE_VERSION = 6
"""Bumped when the snapshot's shape or meaning changes: an older snapshot is not restored, the
log is replayed instead (embedded) or the partition starts over (Kafka). 6: panes of whole
days are local days of the site's time zone (pane numbers of day windows mean other instants)."""

OPERATORS: dict[type, type[Operator]] = {
    DurationMeasure: DurationOperator,
    LevelMeasure: GaugeOperator,
    EventMeasure: EventValueOperator,
    RatioMeasure: RatioOperator,
    ReadmissionMeasure: ReadmissionOperator,
    StaffingRatioMeasure: StaffingRatioOperator,
    StayMeasure: StayOperator,
    TopBoxMeasure: TopBoxOperator,
}

LEVEL_SOURCES = {
    "beds": ("bed.",),
    "patients": ("encounter.",),
    "patients_present": ("encounter.",),
    "licensed_staff": ("staffing.",),
    "staff": ("hr.",),
    "registered_nurses": ("hr.",),
    "direct_care_rns": ("hr.",),
    "certified_nurses": ("hr.",),
    "budgeted_rn_positions": ("hr.",),
    "rn_vacancies": ("hr.",),
}


def finalizer_for(kpi: KpiDefinition) -> Finalizer:
    m = kpi.measure
    if isinstance(m, LevelMeasure | ReadmissionMeasure):
        return Finalizer("ratio", scale=m.scale)
    if isinstance(m, RatioMeasure):
        return Finalizer("ratio", scale=m.scale, annualise=m.annualise, adjusted=m.adjust is not None)
    if isinstance(m, TopBoxMeasure):
        return Finalizer("top_box", scale=m.scale, domains=m.domains)
    return Finalizer(kpi.aggregate, kpi.within)


def signature(kpi: KpiDefinition) -> bytes:
    """KPIs with the same measure and window share one operator (state kept once)."""
    return orjson.dumps(
        [kpi.measure.model_dump(mode="json", by_alias=True), kpi.window.model_dump(mode="json")],
        option=orjson.OPT_SORT_KEYS,
    )


def build_operators(catalogue: Catalogue, places: Places, zone: tzinfo | None = None) -> list[Operator]:
    """One operator per measure and window; zone: the site's time zone (where days begin)."""
    groups: dict[bytes, list[KpiDefinition]] = {}
    for kpi in catalogue:
        groups.setdefault(signature(kpi), []).append(kpi)
    unit_types = places.unit_types()
    operators: list[Operator] = []
    for kpis in groups.values():
        cls = OPERATORS[type(kpis[0].measure)]
        outputs = [Output(k, finalizer_for(k)) for k in kpis]
        if cls is GaugeOperator:
            capacity = places.capacity()
            if (
                getattr(kpis[0].measure, "level", None) == "patients"
            ):  # inpatient occupancy: no ED trolleys, no PACU bays
                excluded = set(places.census.exclude_unit_types)
                capacity = {k: v for k, v in capacity.items() if unit_types.get(k) not in excluded}
            operators.append(GaugeOperator(outputs, unit_types, capacity, zone))
        else:
            operators.append(cls(outputs, unit_types, zone))
    return operators


class Dispatch:
    """Calls the handlers of one event type; those with a hint only for matching values."""

    __slots__ = ("always", "field", "table")

    def __init__(self, handlers: list[tuple[Handler, Hint | None]]):
        counts: dict[str, int] = {}
        for _, hint in handlers:
            if hint is not None:
                counts[hint[0]] = counts.get(hint[0], 0) + 1
        self.field = max(counts, key=counts.__getitem__) if counts else None
        self.always: list[Handler] = []
        self.table: dict[Any, list[Handler]] = {}
        for handler, hint in handlers:
            if hint is None or hint[0] != self.field:
                self.always.append(handler)
                continue
            for value in hint[1]:
                self.table.setdefault(value, []).append(handler)

    def __call__(self, event: EventBase) -> None:
        for handler in self.always:
            handler(event)
        if self.field is not None:
            for handler in self.table.get(getattr(event, self.field), ()):
                handler(event)


def check_unit_types(catalogue: Catalogue, places: Places) -> None:
    """Every unit type in `places` needs a legal limit in each staffing-ratio KPI: a unit type
    without one would never breach (Title 22 sets a ratio for every unit type it names)."""
    problems = []
    types = sorted({unit.type for _, _, unit in places.units()})
    for kpi in catalogue:
        if not isinstance(kpi.measure, StaffingRatioMeasure):
            continue
        for unit_type in types:
            levels = kpi.by_unit_type.get(unit_type)
            if levels is None or levels.limit is None:
                units = [u.id for _, _, u in places.units() if u.type == unit_type]
                problems.append(
                    f"places: unit type {unit_type!r} (units {', '.join(units)}) has no limit in KPI "
                    f"{kpi.id} (file {catalogue.files.get(kpi.id, '?')}, by_unit_type): add "
                    f"by_unit_type.{unit_type}.limit, or give the units a type it lists "
                    f"({', '.join(sorted(kpi.by_unit_type))})"
                )
    if problems:
        raise ConfigError(problems)


class Engine:
    """timezone: the site's (settings `timezone`, an IANA name): windows of whole days start at
    its midnight and calendar-month windows on its 1st; calendar days inside measures (a
    stay's midnights, a readmission's 30 days) are its dates. Default UTC."""

    def __init__(
        self,
        catalogue: Catalogue,
        places: Places | None = None,
        idle_timeout: float = 60.0,
        timezone: str | tzinfo | None = None,
        wall_clock: bool = False,
    ):
        self.catalogue = catalogue
        self.places = places or Places()
        check_unit_types(catalogue, self.places)
        self.zone = zone_of(timezone)
        # wall_clock: `now` given to advance/live is the wall clock (the runtimes), so no
        # watermark may pass it; tests and replays that drive time themselves leave it off
        self.watermarks = Watermarks(idle_timeout, capped=wall_clock)
        self.operators = build_operators(catalogue, self.places, self.zone)
        self.by_kpi: dict[str, Operator] = {kid: op for op in self.operators for kid in op.kpi_ids}
        self.census = CensusTracker(self._level, self.places.census, self.places.unit_types())
        self.staff = StaffTracker(self._level)
        self.roster = RosterTracker(self._level)
        self.beds = BedTracker(self._level)
        self.routes: dict[str, list[Handler]] = {}
        self.level_routes: dict[str, list[Callable[[GroupKey, float, float], None]]] = {}
        self.type_sources: dict[str, set[str]] = {}
        self._source_routes: dict[str, dict[str, Dispatch | None]] = {}  # source -> type -> handlers
        self._op_types: list[set[str]] = []
        self._op_sources: list[frozenset[str]] | None = None  # per operator; None: to work out
        self.events_processed = 0
        hinted: dict[str, list[tuple[Handler, Hint | None]]] = {}
        for tracker in (self.census, self.staff, self.roster, self.beds):
            for etype, handler in tracker.handlers().items():
                self.routes.setdefault(etype, []).append(handler)
                hinted.setdefault(etype, []).append((handler, None))
        adt_types = set(self.census.handlers())
        for op in self.operators:
            types = set()
            for tally in op.stay_tallies() if isinstance(op, StayOperator | RatioOperator) else []:
                tally.attach(self.census.book)  # fed by the census's stays, not by their own copy
                types |= adt_types
            hints = op.routing_hints()
            for etype, handler in op.subscriptions().items():
                self.routes.setdefault(etype, []).append(handler)
                hinted.setdefault(etype, []).append((handler, hints.get(etype)))
                types.add(etype)
            for level, lhandler in op.level_subscriptions().items():
                self.level_routes.setdefault(level, []).append(lhandler)
                types.update(t for t in self.routes if t.startswith(LEVEL_SOURCES[level]))
            self._op_types.append(types)
        self.dispatch = {etype: Dispatch(handlers) for etype, handlers in hinted.items()}

    def _learn(self, etype: str, source: str) -> dict[str, Dispatch | None]:
        """First event of this type from this source: note it (watermarks) and route it."""
        self.type_sources.setdefault(etype, set()).add(source)
        self._op_sources = None
        routes = self._source_routes.setdefault(source, {})
        routes[etype] = self.dispatch.get(etype)
        return routes

    def _level(self, level: str, key: GroupKey, ts: float, delta: float) -> None:
        for handler in self.level_routes.get(level, ()):
            handler(key, ts, delta)

    def process(self, event: EventBase) -> None:
        source = event.source
        etype = event.type
        if etype in PLACED_BY_ENCOUNTER and event.unit is None:
            event = self.census.book.place_by_encounter(event)
        ts = event.ts
        wm = self.watermarks
        if ts > wm.max_ts.get(source, -math.inf):
            wm.max_ts[source] = ts
        wm.arrival[source] = event.received_time
        routes = self._source_routes.get(source)
        if routes is None or etype not in routes:
            routes = self._learn(etype, source)
        dispatch = routes[etype]
        if dispatch is not None:  # Dispatch.__call__, inlined: this is the hottest loop
            for handler in dispatch.always:
                handler(event)
            field = dispatch.field
            if field is not None:
                for handler in dispatch.table.get(getattr(event, field), ()):
                    handler(event)
        self.events_processed += 1

    def _sources(self, index: int) -> frozenset[str]:
        return self._all_sources()[index]

    def _all_sources(self) -> list[frozenset[str]]:
        """Each operator's sources, worked out again only after a new (type, source) pair:
        a tick closes windows in slices of 2 ms, and each slice asks for all of them."""
        found = self._op_sources
        if found is None:
            found = self._op_sources = [
                frozenset(s for etype in types for s in self.type_sources.get(etype, ()))
                for types in self._op_types
            ]
        return found

    def _watermarks(self, now: float) -> list[float | None]:
        """Each operator's watermark at `now` (the slowest of its sources), each source's
        worked out once, and only for the sources some operator reads: Watermarks.of() holds
        what it gives out, and a source whose events no KPI uses must not hold a watermark that
        a later, backdated event of a used type would then start from."""
        marks = self.watermarks
        found = self._all_sources()
        used = frozenset().union(*found)
        of = {s: marks.of(s, now) for s in used if s in marks.max_ts}
        return [min((of[s] for s in sources if s in of), default=None) for sources in found]

    def event_types_of(self, kpi_id: str) -> set[str]:
        return set(self._op_types[self.operators.index(self.by_kpi[kpi_id])])

    def sources_of(self, kpi_id: str) -> set[str]:
        """The sources (hl7v2, fhir, feed) whose events this KPI has been computed from."""
        return set(self._sources(self.operators.index(self.by_kpi[kpi_id])))

    def watermark_lags(self, now: float) -> dict[str, float]:
        """Seconds each source's watermark (idle advance included) is behind `now`: how long
        after the fact the windows it feeds close. Keyed by source (hl7v2, fhir, feed) only."""
        return {s: max(0.0, now - self.watermarks.of(s, now)) for s in self.watermarks.max_ts}

    def watermark_of(self, kpi_id: str, now: float) -> float | None:
        return self.watermarks.min_of(self._sources(self.operators.index(self.by_kpi[kpi_id])), now)

    def advance(self, now: float, deadline: float | None = None) -> list[Sample]:
        """Close every window the watermarks have passed; returns the closed windows as runs
        (engine/operators/runs.py Runs; windows() lists them one by one). deadline
        (time.perf_counter()): stop there and set `behind`; call again to go on."""
        out: list[Sample] = []
        adt_sources = self.type_sources.get("encounter.register", set()) | self.type_sources.get(
            "encounter.admit", set()
        )
        adt = self.watermarks.min_of(adt_sources, now)
        if adt is not None:
            self.census.expire(adt)  # before windows close, so an expiry lands in its own window
        for op, wm in zip(self.operators, self._watermarks(now), strict=True):
            if wm is not None:
                out.extend(op.advance(wm, deadline))
        if self.watermarks.max_ts:
            self.census.prune(min(self.watermarks.max_ts.values()))
        return out

    @property
    def behind(self) -> bool:
        """The last advance() stopped at its deadline with windows still to close."""
        return any(op.behind for op in self.operators)

    def live(self, now: float) -> list[Sample]:
        """Current values of every KPI, per unit and rolled up."""
        out: list[Sample] = []
        fallback = max(self.watermarks.max_ts.values(), default=None)
        for op, wm in zip(self.operators, self._watermarks(now), strict=True):
            if wm is None:
                wm = fallback if fallback is not None else now
            out.extend(op.live(wm))
        return out

    def snapshot(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "events_processed": self.events_processed,
            "watermarks": self.watermarks.snapshot(),
            "type_sources": {k: sorted(v) for k, v in self.type_sources.items()},
            "census": self.census.snapshot(),
            "staff": self.staff.snapshot(),
            "roster": self.roster.snapshot(),
            "beds": self.beds.snapshot(),
            "operators": {",".join(op.kpi_ids): op.snapshot() for op in self.operators},
        }

    def restore(self, snap: dict[str, Any]) -> None:
        self.events_processed = snap["events_processed"]
        self.watermarks.restore(snap["watermarks"])
        self.type_sources = {k: set(v) for k, v in snap["type_sources"].items()}
        self._op_sources = None
        self._source_routes = {}
        for etype, sources in list(self.type_sources.items()):
            for source in sources:
                self._learn(etype, source)
        self.census.restore(snap["census"])
        self.staff.restore(snap["staff"])
        self.roster.restore(snap["roster"])
        self.beds.restore(snap.get("beds", {}))
        for op in self.operators:
            state = snap["operators"].get(",".join(op.kpi_ids))
            if state is not None:
                op.restore(state)

    def pane_clocks(self) -> dict[str, PaneClock]:
        """Each KPI's pane clock, its own copy (the history expands runs with it, maybe on
        another thread)."""
        return {kpi.id: PaneClock.of(kpi.window, self.zone) for kpi in self.catalogue}

    def windows(self, closed: list[Sample]) -> list[Sample]:
        """What advance() returned, window by window (it returns runs of equal windows),
        in time order."""
        out = [w for run in closed for w in windows_of(run, self.by_kpi[run.kpi].clock)]
        out.sort(key=lambda s: s.window.end)
        return out

    def late_events(self) -> dict[str, int]:
        return {kid: op.late_events for kid, op in self.by_kpi.items()}
