"""The Grafana dashboards and Prometheus rules (deploy/grafana, deploy/prometheus) are current,
pass promtool, and every PromQL expression in them returns data from a real Prometheus that
scrapes a real carescore fed by the demo hospital.

Grafana itself is not installed here: what is proven is the JSON the SDK generates (current,
its queries) and each query against Prometheus, not how Grafana draws it."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import yaml

from engine.config import REPO_ROOT
from tests.alerting import free_port
from tests.labserver import EB, SB, Server, exchange
from tests.prometheus import Prometheus, running_prometheus, tool

DEPLOY = REPO_ROOT / "deploy"
RULES = sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))
RULE_TESTS = sorted((DEPLOY / "prometheus" / "tests").glob("*.yml"))
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
# An alerting rule is `<expression> <comparison> <number>` (deploy/prometheus/rules/carescore.yml).
ALERT_SHAPE = re.compile(r"^(?P<lhs>.*\S)\s*(==|!=|>=|<=|>|<)\s*-?[0-9.]+\s*$", re.S)
LABEL_VALUES = re.compile(r"^label_values\((?P<match>.*),\s*(?P<label>\w+)\)$", re.S)
#: panels whose series only a `carescore worker` process exports: proven against a real worker on a
#: real Kafka broker (test_worker_panels_...), not against the demo-fed embedded carescore
WORKER_ONLY = {"Kafka consumer lag, by events partition (records)"}


def load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grafana_build", DEPLOY / "grafana" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def boards() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in DASHBOARDS]


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels") or []  # inside a collapsed row


def substitute(expr: str, board: dict[str, Any]) -> str:
    """A query as Grafana sends it with every variable on All: the variable's allValue."""
    for var in sorted(board["templating"]["list"], key=lambda v: -len(v["name"])):
        expr = expr.replace(f"${var['name']}", var["allValue"])
    assert "$" not in expr, f"an unknown variable in {expr!r}"
    return expr


def rules() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                yield path.name, rule


# --- generated files, promtool, the compose wiring -------------------------------------------


def test_generated_dashboards_and_reference_rules_are_current() -> None:
    stale = load_build().stale()
    assert not stale, f"stale (run `make dashboards`): {[str(p.relative_to(REPO_ROOT)) for p in stale]}"


def test_one_dashboard_per_perspective_and_one_for_operations() -> None:
    kpis = [yaml.safe_load(p.read_text()) for p in (REPO_ROOT / "kpi_defs").glob("*.yaml")]
    by_uid = {b["uid"]: b for b in boards()}
    assert set(by_uid) == {
        "carescore-financial",
        "carescore-patient",
        "carescore-internal-process",
        "carescore-learning-growth",
        "carescore-operations",
    }
    for perspective in ("financial", "patient", "internal_process", "learning_growth"):
        board = by_uid[f"carescore-{perspective.replace('_', '-')}"]
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert set(variables) == {"facility", "department", "unit", "kpi"}
        ids = {k["id"] for k in kpis if k["perspective"] == perspective}
        assert set(variables["kpi"]["allValue"].split("|")) == ids
        titles = {p["title"] for p in panels(board)}
        assert {"Status", "Trend: change over the last hour", "$kpi: value vs target vs benchmark"} <= titles
    for board in by_uid.values():
        for panel in panels(board):
            for target in panel.get("targets") or []:
                assert target["datasource"] == {"type": "prometheus", "uid": "prometheus"}


def test_rules_pass_promtool_check_and_their_unit_tests() -> None:
    promtool = tool("promtool")
    checked = subprocess.run([promtool, "check", "rules", *map(str, RULES)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [promtool, "test", "rules", *map(str, RULE_TESTS)], capture_output=True, text=True
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alerting_rule_compares_an_expression_with_a_number() -> None:
    alerts = [rule for _, rule in rules() if "alert" in rule]
    assert len(alerts) >= 10
    for rule in alerts:
        assert ALERT_SHAPE.match(rule["expr"].strip()), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}


def test_the_compose_prometheus_loads_the_rules(tmp_path: Path) -> None:
    """deploy/compose/prometheus.yml with its container paths pointed at this checkout."""
    promtool = tool("promtool")
    subprocess.run([DEPLOY / "compose" / "make-certs.sh", tmp_path], check=True, capture_output=True)
    text = (DEPLOY / "compose" / "prometheus.yml").read_text()
    text = text.replace("/etc/prometheus/carescore-ca.crt", str(tmp_path / "ca.crt"))
    text = text.replace("/etc/prometheus/rules", str(DEPLOY / "prometheus" / "rules"))
    (tmp_path / "prometheus.yml").write_text(text)
    checked = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for path in RULES:
        assert str(path) in checked.stdout


def test_compose_mounts_the_rules_and_the_provisioned_dashboards() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    assert "./prometheus/rules:/etc/prometheus/rules:ro" in compose["prometheus"]["volumes"]
    rule_files = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())["rule_files"]
    assert rule_files == ["/etc/prometheus/rules/*.yml"]
    provider = yaml.safe_load(
        (DEPLOY / "compose" / "grafana" / "provisioning" / "dashboards" / "carescore.yml").read_text()
    )["providers"][0]
    mounted = f"./grafana/dashboards:{provider['options']['path']}:ro"
    assert mounted in compose["grafana"]["volumes"]
    assert (DEPLOY / "grafana" / "dashboards").is_dir()
    datasource = yaml.safe_load(
        (DEPLOY / "compose" / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]
    assert datasource["uid"] == "prometheus"  # what every panel names


# --- every expression against a real Prometheus scraping a real carescore ------------------------


class _Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def carescore_config(folder: Path, mllp: int, api: int, hook: str, dead_hook: str) -> Path:
    """The packaged defaults (the demo hospital) on free ports, data in the test's folder, two
    webhooks: one that answers, one nobody listens on (its notices fail: max_attempts 1)."""
    config = yaml.safe_load((REPO_ROOT / "carescore" / "defaults.yaml").read_text())
    config["data_dir"] = str(folder / "data")
    config["mllp"]["port"] = mllp
    config["api"]["port"] = api
    config["alerts"]["webhooks"] = [
        {"name": "incidents", "url": hook},
        {"name": "dead-hook", "url": dead_hook},
    ]
    config["alerts"]["max_attempts"] = 1
    config["demo"]["enabled"] = True
    path = folder / "carescore.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def cause_rejects(mllp: int, api: int) -> None:
    """The traffic the demo never sends: an HL7 message refused (AR, a dead letter), junk outside
    MLLP frames (a framing error), a FHIR resource refused (400 with an OperationOutcome, a dead letter)."""
    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    unsupported = "\r".join(
        [
            f"MSH|^~\\&|EMR|DEMO|CARESCORE|DEMO|{now}||ADT^A20^ADT_A20|MONITOR-A20|P|2.5.1",
            f"EVN|A20|{now}",
            "NPU|ICU^1^01^DEMO|C",
        ]
    )
    with socket.create_connection(("127.0.0.1", mllp), timeout=10) as sock:
        ack = exchange(sock, unsupported)
        assert "MSA|AR|MONITOR-A20" in ack, ack
        sock.sendall(b"junk outside a frame\r\n" + SB + b"not hl7 at all" + EB + b"\r")
        sock.settimeout(5)
        with contextlib.suppress(TimeoutError, ConnectionError):
            sock.recv(65536)  # an AR for the unreadable frame, or the close
    bad = {"resourceType": "Encounter", "status": "not-a-status", "class": {"code": "IMP"}}
    answer = httpx.post(
        f"http://127.0.0.1:{api}/fhir/Encounter",
        content=json.dumps(bad),
        headers={"Content-Type": "application/fhir+json"},
        timeout=30,
    )
    assert answer.status_code == 400 and "kept as dead letter" in answer.text, answer.text


def expressions(worker_only: bool = False) -> dict[str, str]:
    """Every PromQL expression of every panel and rule, by where it comes from; those of the
    WORKER_ONLY panels alone with worker_only, else all but those."""
    found: dict[str, str] = {}
    for board in boards():
        for panel in panels(board):
            if (panel["title"] in WORKER_ONLY) != worker_only:
                continue
            for target in panel.get("targets") or []:
                found[f"{board['uid']} / {panel['title']} / {target['refId']}"] = substitute(
                    target["expr"], board
                )
    for file, rule in [] if worker_only else rules():
        if "alert" in rule:
            lhs = ALERT_SHAPE.match(rule["expr"].strip())
            assert lhs is not None, rule["alert"]
            found[f"{file} / {rule['alert']} (expression)"] = lhs["lhs"]
        elif rule["expr"].startswith("vector("):  # a KPI's target or benchmark: its recorded series
            found[f"{file} / {rule['record']} {rule['labels']['kpi']}"] = (
                f'{rule["record"]}{{kpi="{rule["labels"]["kpi"]}"}}'
            )
        else:
            found[f"{file} / {rule['record']}"] = rule["expr"]
            found[f"{file} / {rule['record']} (recorded)"] = rule["record"]
    return found


@pytest.mark.timeout(900)
def test_every_panel_and_rule_expression_returns_data_from_a_real_prometheus(tmp_path: Path) -> None:
    tool("promtool")
    hook_server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook_server.serve_forever, daemon=True).start()
    mllp, api = free_port(), free_port()
    config = carescore_config(
        tmp_path,
        mllp,
        api,
        hook=f"http://127.0.0.1:{hook_server.server_address[1]}/hook",
        dead_hook=f"http://127.0.0.1:{free_port()}/nobody-listens",
    )
    server = Server(config, api, tmp_path / "carescore.log")
    started = time.monotonic()
    try:
        server.start()
        cause_rejects(mllp, api)
        with running_prometheus(
            tmp_path / "prometheus", {"carescore-gateway": f"127.0.0.1:{api}"}, [str(p) for p in RULES]
        ) as prom:
            proven, took = prove_all(prom)
            alerts_checked = check_full_alert_expressions(prom)
            variables = check_variables(prom)
    finally:
        server.stop()
        hook_server.shutdown()
        hook_server.server_close()
    print(
        f"\n{proven} PromQL expressions returned data ({alerts_checked} alerting rules also ran whole, "
        f"{variables} dashboard variables answered) in {took:.0f} s; "
        f"{time.monotonic() - started:.0f} s with starting and stopping"
    )


def prove_all(
    prom: Prometheus, timeout: float = 300.0, pending: dict[str, str] | None = None
) -> tuple[int, float]:
    """Poll every expression (of the embedded carescore, unless `pending` says which) until each
    has returned a non-empty result once."""
    if pending is None:
        pending = expressions()
        # The panels read "Alerts firing" as 0 while no sample exists; that the family is there
        # when an alert fires is proven by the demo's own (its ICU STAT labs come back slow).
        pending["the demo fires an alert"] = "carescore_alerts_firing"
    total = len(pending)
    started = time.monotonic()
    deadline, last = started + timeout, started
    while pending:
        for where, expr in list(pending.items()):
            if prom.query(expr)["result"]:
                del pending[where]
                last = time.monotonic()
        if not pending:
            break
        if time.monotonic() > deadline:
            listing = "\n".join(f"  {where}: {expr}" for where, expr in sorted(pending.items()))
            raise AssertionError(
                f"{len(pending)} of {total} expressions never returned data in {timeout:.0f} s "
                f"(the others within {last - started:.0f} s):\n{listing}"
            )
        time.sleep(1.0)  # the next scrape and rule evaluation (1 s)
    return total, time.monotonic() - started


def check_full_alert_expressions(prom: Prometheus) -> int:
    """Each alerting rule as written runs (empty while healthy) and is loaded and healthy."""
    count = 0
    for _, rule in rules():
        if "alert" in rule:
            prom.query(rule["expr"])
            count += 1
    loaded = prom.rules()
    assert len(loaded) == len(list(rules()))
    unhealthy = [(r["name"], r.get("lastError")) for r in loaded if r["health"] != "ok"]
    assert not unhealthy, unhealthy
    return count


def check_variables(prom: Prometheus) -> int:
    """Each dashboard variable's label_values() query lists at least one value."""
    count = 0
    for board in boards():
        for var in board["templating"]["list"]:
            if var["type"] != "query":
                continue
            parsed = LABEL_VALUES.match(var["query"])
            assert parsed is not None, var["query"]
            values = prom.label_values(parsed["label"], substitute(parsed["match"], board))
            assert [v for v in values if v], f"{board['uid']} ${var['name']}: no values"
            count += 1
    return count


@pytest.mark.kafka
@pytest.mark.timeout(600)
async def test_worker_panels_answer_from_a_real_kafka_worker(kafka_broker: str, tmp_path: Path) -> None:
    """The WORKER_ONLY panels (and the watermark lag, which workers export too) against Prometheus
    scraping a real `carescore worker` that has read an hour of the demo hospital's HL7 from Kafka."""
    from tests.kafka import Worker, hospital_events, kafka_settings, produce

    tool("prometheus")
    settings, config = await kafka_settings(kafka_broker, tmp_path)
    # stamped up to 10 min before now and all received now (tests/kafka.py hospital_events)
    events = hospital_events(hours=1.0, facilities=("DEMO",))
    worker = Worker(config, tmp_path / "worker.log")
    try:
        await produce(settings, events)
        assert await worker.processed_at_least(len(events)) == len(events)
        target = {"carescore-worker": worker.metrics_url.split("/")[2]}
        with running_prometheus(tmp_path / "prometheus", target, [str(p) for p in RULES]) as prom:
            pending = expressions(worker_only=True)
            assert pending, "no WORKER_ONLY panel in the dashboards"
            pending["watermark lag from a worker"] = 'carescore_watermark_lag_seconds{source="hl7v2"}'
            proven, _ = prove_all(prom, timeout=120, pending=pending)
            lags = prom.query("carescore_kafka_consumer_lag_records")["result"]
            (watermark,) = prom.query('carescore_watermark_lag_seconds{source="hl7v2"}')["result"]
    finally:
        worker.stop()
    # one facility, so one events partition (keyed by facility); every record is in the engine:
    # end offset - next offset to take = 0
    assert [(r["metric"]["partition"], float(r["value"][1])) for r in lags] == [
        (lags[0]["metric"]["partition"], 0.0)
    ]
    # the newest event is stamped >= 600 s before it was received: wall clock - watermark >= 600 s
    # whether the idle advance has started (then 600 s + the 60 s idle timeout) or not
    assert float(watermark["value"][1]) >= 600, watermark
    print(f"\n{proven} worker expressions returned data")
