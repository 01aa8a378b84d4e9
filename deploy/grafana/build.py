"""Grafana dashboards as code (grafana-foundation-sdk) and the KPI reference rules for Prometheus.

    .venv/bin/python deploy/grafana/build.py          # what `make dashboards` runs
    .venv/bin/python deploy/grafana/build.py --check  # exit 1 when a committed file is stale

Writes deploy/grafana/dashboards/*.json (one dashboard per Balanced Scorecard perspective and
one for operations, provisioned by deploy/compose/grafana/provisioning/dashboards/) and
deploy/prometheus/rules/carescore-kpi-reference.yml (each KPI's target and benchmark from
kpi_defs/ as recording rules, so a panel can draw them next to the live value).

The PromQL lives here and in deploy/prometheus/rules/carescore.yml only; tests/test_monitoring.py
runs every expression against a real Prometheus scraping a real carescore.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml
from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DynamicConfigValue,
    ValueMap,
    ValueMappingResult,
    VariableOption,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
REFERENCE_RULES = ROOT / "deploy" / "prometheus" / "rules" / "carescore-kpi-reference.yml"
KPI_DEFS = ROOT / "kpi_defs"

# The provisioned data source (deploy/compose/grafana/provisioning/datasources/prometheus.yml).
DATASOURCE = DataSourceRef(type_val="prometheus", uid="prometheus")

PERSPECTIVES = {
    "financial": "Financial",
    "patient": "Patient",
    "internal_process": "Internal process",
    "learning_growth": "Learning & growth",
}

# The place filter every KPI query carries; `.*` (All) also matches the '' of roll-ups.
PLACE = 'facility=~"$facility",department=~"$department",unit=~"$unit"'

STATUS_MAPPING = ValueMap(
    options={
        "-1": ValueMappingResult(text="no data", color="text", index=0),
        "0": ValueMappingResult(text="ok", color="green", index=1),
        "1": ValueMappingResult(text="warning", color="orange", index=2),
        "2": ValueMappingResult(text="critical", color="red", index=3),
    }
)


def load_kpis(folder: Path = KPI_DEFS) -> list[dict[str, Any]]:
    kpis = [yaml.safe_load(p.read_text()) for p in sorted(folder.glob("*.yaml"))]
    return sorted(kpis, key=lambda k: (k["perspective"], k["id"]))


def query(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE)
    if legend:
        q = q.legend_format(legend)
    return q.instant() if instant else q.range()


def variable(name: str, label: str, expr: str) -> dash.QueryVariable:
    return (
        dash.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(expr)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(VariableOption(selected=True, text="All", value="$__all"))
    )


def series(title: str, unit: str = "short", *targets: prometheus.Dataquery) -> timeseries.Panel:
    panel = timeseries.Panel().title(title).datasource(DATASOURCE).unit(unit).height(8).span(12)
    for t in targets:
        panel = panel.with_target(t)
    return panel.legend(
        common_b.VizLegendOptions()
        .display_mode(common.LegendDisplayMode.TABLE)
        .placement(common.LegendPlacement.BOTTOM)
        .show_legend(True)
        .calcs(["lastNotNull", "max"])
    )


def single(title: str, expr: str, unit: str = "short", no_value: str | None = None) -> stat.Panel:
    panel = (
        stat.Panel()
        .title(title)
        .datasource(DATASOURCE)
        .unit(unit)
        .height(5)
        .span(6)
        .with_target(query(expr, instant=True))
        .graph_mode(common.BigValueGraphMode.AREA)
        .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]))
    )
    return panel.no_value(no_value) if no_value is not None else panel


def perspective_dashboard(key: str, kpis: list[dict[str, Any]]) -> dash.Dashboard:
    ids = [k["id"] for k in kpis]
    every = "|".join(ids)
    kpi_var = (
        dash.CustomVariable("kpi")
        .label("KPI")
        .values(",".join(ids))
        .multi(True)
        .include_all(True)
        .all_value(every)
        .current(VariableOption(selected=True, text="All", value="$__all"))
    )
    sel = f'kpi=~"$kpi",{PLACE}'
    status = (
        table.Panel()
        .title("Status")
        .description(
            "Each KPI and place now: -1 no data, 0 ok, 1 warning, 2 critical (carescore_kpi_status)."
        )
        .datasource(DATASOURCE)
        .height(10)
        .span(12)
        .with_target(
            query(f"carescore_kpi_status{{{sel}}}", ref="A", instant=True).format(PromQueryFormat.TABLE)
        )
        .mappings([STATUS_MAPPING])
        .override_by_name(
            "Value",
            [DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-background"})],
        )
    )
    counts = (
        timeseries.Panel()
        .title("Places by status")
        .description("How many KPI/place pairs are ok, warning, critical or without data.")
        .datasource(DATASOURCE)
        .height(10)
        .span(12)
        .with_target(
            query(
                'sum by (status) (carescore:kpi_places:count_by_status{kpi=~"$kpi",facility=~"$facility"})',
                legend="{{status}}",
            )
        )
        .stacking(common_b.StackingConfig().mode(common.StackingMode.NORMAL))
        .fill_opacity(40)
    )
    trend = (
        table.Panel()
        .title("Trend: change over the last hour")
        .description("Live value now minus the live value an hour ago (delta over 1h).")
        .datasource(DATASOURCE)
        .height(10)
        .span(12)
        .with_target(
            query(f"delta(carescore_kpi_value{{{sel}}}[1h])", instant=True).format(PromQueryFormat.TABLE)
        )
    )
    samples = series(
        "Observations in the live window",
        "short",
        query(f"carescore_kpi_samples{{{sel}}}", legend="{{kpi}} {{facility}}/{{department}}/{{unit}}"),
    )
    firing = single(
        "Alerts firing",
        # carescore_alerts_firing{kpi} has no sample while none of these KPIs fires: then the
        # answer is 0, but only while carescore reports these KPIs at all (a failed scrape stays
        # "no data", not a reassuring 0).
        'sum(carescore_alerts_firing{kpi=~"$kpi"}) or count(carescore_kpi_status{kpi=~"$kpi"}) * 0',
    )
    value = (
        series(
            "$kpi: value vs target vs benchmark",
            "short",
            query(
                f"carescore_kpi_value{{{sel}}}",
                legend="{{facility}}/{{department}}/{{unit}}",
                ref="A",
            ),
            query('carescore:kpi_target{kpi=~"$kpi"}', legend="target", ref="B"),
            query('carescore:kpi_benchmark{kpi=~"$kpi"}', legend="benchmark", ref="C"),
        )
        .repeat("kpi")
        .repeat_direction("h")
        .max_per_row(2)
        .override_by_name("target", [DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash"})])
        .override_by_name("benchmark", [DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dot"})])
    )
    title = PERSPECTIVES[key]
    return (
        dash.Dashboard(f"carescore: {title}")
        .uid(f"carescore-{key.replace('_', '-')}")
        .description(f"Balanced Scorecard, {title} perspective: {len(ids)} KPIs from kpi_defs/.")
        .tags(["carescore", "balanced-scorecard", key])
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
        .with_variable(
            variable("facility", "Facility", f'label_values(carescore_kpi_value{{kpi=~"{every}"}}, facility)')
        )
        .with_variable(
            variable(
                "department",
                "Department",
                f'label_values(carescore_kpi_value{{kpi=~"{every}",facility=~"$facility"}}, department)',
            )
        )
        .with_variable(
            variable(
                "unit",
                "Unit",
                f'label_values(carescore_kpi_value{{kpi=~"{every}",facility=~"$facility",'
                f'department=~"$department"}}, unit)',
            )
        )
        .with_variable(kpi_var)
        .with_row(dash.Row("Now"))
        .with_panel(status)
        .with_panel(counts)
        .with_panel(firing)
        .with_panel(trend)
        .with_panel(samples)
        .with_row(dash.Row("Value vs target vs benchmark"))
        .with_panel(value)
    )


def operations_dashboard() -> dash.Dashboard:
    inst = 'instance=~"$instance"'
    return (
        dash.Dashboard("carescore: operations")
        .uid("carescore-operations")
        .description("Ingest, rejects, late data, the event loop, Kafka workers, alerts and their delivery.")
        .tags(["carescore", "operations"])
        .refresh("30s")
        .time("now-3h", "now")
        .timezone("browser")
        .with_variable(variable("instance", "Instance", 'label_values(up{job=~"carescore.*"}, instance)'))
        .with_row(dash.Row("Ingest"))
        .with_panel(
            series(
                "Messages and rows per source",
                "reqps",
                query(f"sum by (source) (carescore:ingest:rate5m{{{inst}}})", legend="{{source}}"),
            )
        )
        .with_panel(
            series(
                "Canonical events processed",
                "ops",
                query(f"sum(rate(carescore_events_processed_total{{{inst}}}[5m]))", legend="events/s"),
            )
        )
        .with_panel(
            series(
                "Per type: HL7 message type, FHIR resource, feed",
                "reqps",
                query(
                    f"sum by (message_type) (carescore:hl7_messages:rate5m{{{inst}}})",
                    legend="HL7 {{message_type}}",
                    ref="A",
                ),
                query(
                    f"sum by (resource_type) (carescore:fhir_resources:rate5m{{{inst}}})",
                    legend="FHIR {{resource_type}}",
                    ref="B",
                ),
                query(
                    f"sum by (feed) (carescore:feed_rows:rate5m{{{inst}}})", legend="feed {{feed}}", ref="C"
                ),
            )
        )
        .with_panel(
            series(
                "Acknowledgements and outcomes",
                "reqps",
                query(
                    f"sum by (ack) (carescore:hl7_messages:rate5m{{{inst}}})", legend="HL7 {{ack}}", ref="A"
                ),
                query(
                    f"sum by (outcome) (carescore:fhir_resources:rate5m{{{inst}}})",
                    legend="FHIR {{outcome}}",
                    ref="B",
                ),
                query(
                    f"sum by (outcome) (carescore:feed_rows:rate5m{{{inst}}})",
                    legend="feed {{outcome}}",
                    ref="C",
                ),
            )
        )
        .with_panel(
            series(
                "HL7 ACK latency",
                "s",
                query(f"carescore:hl7_ack_seconds:p99_5m{{{inst}}}", legend="p99 {{instance}}", ref="A"),
                query(f"carescore:hl7_ack_seconds:p50_5m{{{inst}}}", legend="p50 {{instance}}", ref="B"),
            )
        )
        .with_panel(
            series(
                "MLLP connections",
                "short",
                query(
                    f"sum(increase(carescore_mllp_connections_total{{{inst}}}[5m]))",
                    legend="accepted",
                    ref="A",
                ),
                query(
                    f"sum(increase(carescore_mllp_connections_refused_total{{{inst}}}[5m]))",
                    legend="refused (max_connections)",
                    ref="B",
                ),
                query(
                    f"sum by (kind) (increase(carescore_mllp_framing_errors_total{{{inst}}}[5m]))",
                    legend="framing: {{kind}}",
                    ref="C",
                ),
            )
        )
        .with_row(dash.Row("Rejected and late"))
        .with_panel(
            series(
                "Dead letters",
                "short",
                query(
                    f"sum by (source) (carescore:dead_letters:increase1h{{{inst}}})",
                    legend="new in 1h: {{source}}",
                    ref="A",
                ),
                query(
                    f"sum by (source) (carescore_dead_letters_stored{{{inst}}})",
                    legend="stored: {{source}}",
                    ref="B",
                ),
            )
        )
        .with_panel(
            series(
                "Late events (after their window closed)",
                "ops",
                query(f"topk(10, carescore:late_events:rate5m{{{inst}}})", legend="{{kpi}}"),
            )
        )
        .with_row(dash.Row("Runtime"))
        .with_panel(
            series(
                "Event loop: lag and longest stall",
                "s",
                query(
                    f"carescore:event_loop_lag_seconds:p99_5m{{{inst}}}",
                    legend="lag p99 {{instance}}",
                    ref="A",
                ),
                query(
                    f"carescore_event_loop_stall_max_seconds{{{inst}}}",
                    legend="longest stall {{instance}}",
                    ref="B",
                ),
            )
        )
        .with_panel(
            series(
                "Watermark lag, by source (how late windows close)",
                "s",
                # each runtime's engines (the embedded one, each worker's partitions) by source
                query(
                    f"max by (instance, source) (carescore_watermark_lag_seconds{{{inst}}})",
                    legend="{{source}} {{instance}}",
                ),
            )
        )
        .with_panel(
            series(
                "Components up and restarts",
                "short",
                query(f"carescore_component_up{{{inst}}}", legend="up: {{component}}", ref="A"),
                query(
                    f"increase(carescore_component_restarts_total{{{inst}}}[1h])",
                    legend="restarts/1h: {{component}}",
                    ref="B",
                ),
            )
        )
        .with_panel(
            series(
                "Durability: log write errors, corrupt lines, engine errors (1h)",
                "short",
                query(
                    f"increase(carescore_eventlog_write_errors_total{{{inst}}}[1h])",
                    legend="log write",
                    ref="A",
                ),
                query(
                    f"increase(carescore_eventlog_corrupt_lines_total{{{inst}}}[1h])",
                    legend="corrupt lines",
                    ref="B",
                ),
                query(
                    f"increase(carescore_engine_event_errors_total{{{inst}}}[1h])",
                    legend="engine errors",
                    ref="C",
                ),
            )
        )
        .with_row(dash.Row("Kafka workers"))
        .with_panel(
            series(
                "Worker events read, by outcome",
                "ops",
                # carescore_worker_events_total{outcome} exists only in `carescore worker` processes
                # (labelled, so absent until a worker reads a record): with no worker the rate
                # really is 0, shown as one 0 series instead of an empty panel.
                query(
                    f"sum by (outcome) (rate(carescore_worker_events_total{{{inst}}}[5m])) or on() vector(0)",
                    legend="{{outcome}}",
                ),
            )
        )
        .with_panel(
            series(
                "Worker partitions, checkpoints, samples, offset gaps, stalls",
                "short",
                query(f"sum(carescore_worker_partitions{{{inst}}})", legend="partitions held", ref="A"),
                query(
                    f"sum(rate(carescore_worker_checkpoints_total{{{inst}}}[5m]))",
                    legend="checkpoints/s",
                    ref="B",
                ),
                query(
                    f"sum(rate(carescore_worker_samples_total{{{inst}}}[5m]))", legend="samples/s", ref="C"
                ),
                query(
                    f"sum(increase(carescore_worker_offset_gaps_total{{{inst}}}[1h]))",
                    legend="offset gaps/1h",
                    ref="D",
                ),
                query(
                    f"sum(increase(carescore_worker_stalled_partitions_total{{{inst}}}[1h]))",
                    legend="partitions sent back/1h",
                    ref="E",
                ),
            )
        )
        .with_panel(
            series(
                "Kafka consumer lag, by events partition (records)",
                "short",
                # only `carescore worker` processes have it (tests/test_monitoring.py proves it
                # against a real worker): no series here means no worker, not no lag
                query(
                    f"max by (partition) (carescore_kafka_consumer_lag_records{{{inst}}})",
                    legend="partition {{partition}}",
                ),
            )
        )
        .with_row(dash.Row("Alerts"))
        .with_panel(
            single(  # 0 while nothing fires, as long as carescore reports KPIs (see the perspectives)
                "Alerts firing",
                f"sum(carescore_alerts_firing{{{inst}}}) or count(carescore_kpi_status{{{inst}}}) * 0",
            ).span(6)
        )
        .with_panel(
            series(
                "Alert transitions (1h)",
                "short",
                query(
                    f"sum by (kind) (increase(carescore_alert_transitions_total{{{inst}}}[1h]))",
                    legend="{{kind}}",
                ),
            ).span(6)
        )
        .with_panel(
            series(
                "Notices by channel and outcome",
                "short",
                query(
                    f"sum by (channel, outcome) (carescore:alert_notifications:increase1h{{{inst}}})",
                    legend="{{channel}} {{outcome}}",
                ),
            ).description(
                "delivered, retry (an attempt failed, backing off), failed (gave up after "
                "alerts.max_attempts: a dead letter notify:<channel>), cancelled."
            )
        )
        .with_panel(
            series(
                "Alert changes held in memory (store not taking them)",
                "short",
                query(f"carescore_alert_changes_unstored{{{inst}}}", legend="{{instance}}"),
            )
        )
        .with_panel(
            series(
                "Alert leader (1: evaluates alerts and sends notices)",
                "short",
                query(f"carescore_alert_leader{{{inst}}}", legend="{{instance}}"),
            ).description(
                "Of gateways sharing a PostgreSQL alert store exactly one shows 1 (the holder of "
                "its advisory lock); an embedded carescore always leads."
            )
        )
    )


def reference_rules(kpis: list[dict[str, Any]]) -> dict[str, Any]:
    """Each KPI's target and benchmark (where kpi_defs gives one number) as constant series. KPIs
    whose target depends on the unit type (by_unit_type) have no single target and none here."""
    rules: list[dict[str, Any]] = []
    for k in kpis:
        labels = {"kpi": k["id"], "perspective": k["perspective"]}
        if isinstance(k.get("target"), int | float):
            rules.append(
                {"record": "carescore:kpi_target", "expr": f"vector({k['target']})", "labels": labels}
            )
        bench = (k.get("benchmark") or {}).get("value")
        if isinstance(bench, int | float):
            rules.append({"record": "carescore:kpi_benchmark", "expr": f"vector({bench})", "labels": labels})
    return {"groups": [{"name": "carescore-kpi-reference", "rules": rules}]}


def render() -> dict[Path, str]:
    """Every generated file and its text."""
    kpis = load_kpis()
    out: dict[Path, str] = {}
    boards = [perspective_dashboard(p, [k for k in kpis if k["perspective"] == p]) for p in PERSPECTIVES]
    boards.append(operations_dashboard())
    for board in boards:
        built = board.build()
        assert built.uid is not None
        out[DASHBOARDS / f"{built.uid}.json"] = (
            json.dumps(built, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"
        )
    header = "# Generated by deploy/grafana/build.py from kpi_defs/ (`make dashboards`): do not edit.\n"
    out[REFERENCE_RULES] = header + yaml.safe_dump(reference_rules(kpis), sort_keys=False, width=110)
    return out


def stale() -> list[Path]:
    expected = render()
    found = {p for p in DASHBOARDS.glob("*.json")} | set(expected)
    return sorted(p for p in found if not p.exists() or p.read_text() != expected.get(p))


def main(argv: list[str]) -> int:
    if "--check" in argv:
        bad = stale()
        for p in bad:
            print(f"stale: {p.relative_to(ROOT)} (run `make dashboards`)", file=sys.stderr)
        return 1 if bad else 0
    DASHBOARDS.mkdir(parents=True, exist_ok=True)
    expected = render()
    for old in DASHBOARDS.glob("*.json"):
        if old not in expected:
            old.unlink()
    for path, text in expected.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
