"""/metrics: every KPI's live value as a gauge, plus the process's own counters.

KPI labels are kpi, facility, department, unit ('' on roll-ups): places, never patients.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from api.backend import Backend
from engine.scorecard import STATUS_LEVEL


class KpiCollector(Collector):
    def __init__(self, backend: Backend):
        self.backend = backend

    def collect(self) -> Iterator[Metric]:
        labels = ["kpi", "facility", "department", "unit"]
        value = GaugeMetricFamily(
            "carescore_kpi_value", "Live KPI value (in the KPI's own unit).", labels=labels
        )
        status = GaugeMetricFamily(
            "carescore_kpi_status",
            "Live KPI status: -1 no data, 0 ok, 1 warning, 2 critical.",
            labels=labels,
        )
        n = GaugeMetricFamily("carescore_kpi_samples", "Observations in the live window.", labels=labels)
        for sample in list(self.backend.board.current.values()):
            g = sample.group
            lv = [sample.kpi, g.facility, g.department or "", g.unit or ""]
            if sample.value is not None:
                value.add_metric(lv, sample.value)
            status.add_metric(lv, STATUS_LEVEL[sample.status])
            n.add_metric(lv, float(sample.n))
        yield from (value, status, n)

        firing = GaugeMetricFamily("carescore_alerts_firing", "Alerts firing now, by KPI.", labels=["kpi"])
        counts: dict[str, int] = {}
        for alert in self.backend.alerts.firing():
            counts[alert.kpi] = counts.get(alert.kpi, 0) + 1
        for kpi, count in counts.items():
            firing.add_metric([kpi], float(count))
        yield firing

        letters = GaugeMetricFamily(
            "carescore_dead_letters_stored",
            "Inputs in the dead-letter store, by source.",
            labels=["source"],
        )
        for source, count in self.backend.dead_letters.count().items():
            letters.add_metric([source], float(count))
        yield letters

        engine = getattr(self.backend, "engine", None)
        if engine is not None:
            processed = CounterMetricFamily(
                "carescore_events_processed", "Canonical events processed by the engine."
            )
            processed.add_metric([], float(engine.events_processed))
            yield processed
            late = CounterMetricFamily(
                "carescore_late_events",
                "Events that arrived after a window they belong to had closed.",
                labels=["kpi"],
            )
            for kpi, count in engine.late_events().items():
                late.add_metric([kpi], float(count))
            yield late
            unmatched = CounterMetricFamily(
                "carescore_hr_records_unmatched",
                "HR records that moved no headcount: separations, transfers and certifications of "
                "people neither hired through the feed nor in a baseline (no level goes below zero).",
                labels=["kind"],
            )
            for kind, count in engine.roster.unmatched.items():
                unmatched.add_metric([kind], float(count))
            yield unmatched

        yield from _durability(self.backend)


def _durability(backend: Backend) -> Iterator[Metric]:
    """What the runtime survived: event-log write failures cut back, unreadable log lines
    quarantined, history writes retried, events the engine raised on, components restarted
    by the supervisor."""
    log = getattr(backend, "log", None)
    if log is not None:
        for name, doc, value in (
            (
                "carescore_eventlog_write_errors",
                "Event-log writes or fsyncs that failed (cut back, answered AE).",
                log.write_errors,
            ),
            (
                "carescore_eventlog_corrupt_lines",
                "Unreadable event-log lines quarantined on replay.",
                log.corrupt_lines,
            ),
        ):
            family = CounterMetricFamily(name, doc)
            family.add_metric([], float(value))
            yield family
    history = getattr(backend, "history", None)
    if history is not None and hasattr(history, "write_errors"):
        for kind, name, doc, value in (
            (
                CounterMetricFamily,
                "carescore_history_write_errors",
                "KPI history writes that failed (their windows held for the next write) or dropped "
                "windows the store cannot take.",
                history.write_errors,
            ),
            (
                GaugeMetricFamily,
                "carescore_history_held_windows",
                "History rows (closed windows, as runs) a failed write holds for the next, and those "
                "a restart must close again (no snapshot is published until none is held).",
                history.held,
            ),
            (
                GaugeMetricFamily,
                "carescore_history_missed_closings",
                "Closings of windows that raised in this process (a bug): what they had closed is not "
                "in the history, and no snapshot is published until a restart replays it.",
                history.missed_closings,
            ),
        ):
            metric = kind(name, doc)
            metric.add_metric([], float(value))
            yield metric
    errors = getattr(backend, "engine_errors", None)
    if errors is not None:
        family = CounterMetricFamily(
            "carescore_engine_event_errors",
            "Events the engine raised on (logged, the rest of the batch processed).",
        )
        family.add_metric([], float(errors))
        yield family
    seen = backend.places.unknown_seen()
    if seen:  # bounded by places.max_unknown per facility: safe as labels
        unknown = GaugeMetricFamily(
            "carescore_unknown_place",
            "Facility and unit codes accepted though not configured (facility '' lists facility codes).",
            labels=["facility", "code"],
        )
        for facility, codes in sorted(seen.items()):
            for code in sorted(codes):
                unknown.add_metric([facility, code], 1.0)
        yield unknown
    components = getattr(backend, "components", None)
    if components:
        up = GaugeMetricFamily(
            "carescore_component_up",
            "1 while a component runs, 0 while it waits to restart.",
            labels=["component"],
        )
        restarts = CounterMetricFamily(
            "carescore_component_restarts", "Times a failed component was restarted.", labels=["component"]
        )
        for name, state in sorted(components.items()):
            up.add_metric([name], 1.0 if state.up else 0.0)
            restarts.add_metric([name], float(state.restarts))
        yield up
        yield restarts


def exposition(backend: Backend, registry: CollectorRegistry) -> bytes:
    return generate_latest(REGISTRY) + generate_latest(registry)


def kpi_registry(backend: Backend) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(KpiCollector(backend))
    return registry
