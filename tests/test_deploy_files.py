"""The production deploy files (deploy/docker-compose.yml and what it mounts) stay true to
the code: no Docker engine exists here, so each piece is checked by the tool that reads it —
the settings loader, the CLI's own argument parser, Prometheus's promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from carescore.cli import build_parser
from engine.config import REPO_ROOT, load_settings

DEPLOY = REPO_ROOT / "deploy"
COMPOSE = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def test_compose_runs_a_broker_gateway_workers_prometheus_and_grafana() -> None:
    assert set(COMPOSE["services"]) == {"kafka", "gateway", "worker", "prometheus", "grafana"}


@pytest.mark.parametrize("service", ["gateway", "worker"])
def test_compose_commands_are_commands_carescore_accepts(service: str) -> None:
    command = COMPOSE["services"][service]["command"]
    args = build_parser().parse_args(command)
    assert args.config == "/etc/carescore/carescore.yaml"


def test_the_compose_settings_load_and_select_the_kafka_runtime(tmp_path: Path) -> None:
    """The file the image carries, with its in-image paths pointed at this checkout."""
    text = (DEPLOY / "compose" / "carescore.yaml").read_text()
    tls = tmp_path / "tls"
    subprocess.run([DEPLOY / "compose" / "make-certs.sh", tls], check=True, capture_output=True)
    text = text.replace("/var/lib/carescore", str(tmp_path / "data")).replace("/etc/carescore/tls", str(tls))
    config = tmp_path / "carescore.yaml"
    config.write_text(text)
    settings = load_settings(config)
    assert settings.runtime.kind == "kafka"
    assert settings.runtime.kafka.bootstrap == "kafka:9092"
    assert settings.runtime.kafka.worker_metrics.endswith(":9101")
    assert settings.api.host == settings.mllp.host == "0.0.0.0"  # reachable from other containers
    assert settings.api.tls is not None and settings.mllp.tls is not None  # and so encrypted
    assert settings.api.tls.cert == settings.mllp.tls.cert == tls / "server.crt"
    assert settings.places.units()


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus; `make system-deps`)")
    config = DEPLOY / "compose" / "prometheus.yml"
    subprocess.run([DEPLOY / "compose" / "make-certs.sh", tmp_path], check=True, capture_output=True)
    here = tmp_path / "prometheus.yml"  # the CA where the container mounts it, here
    here.write_text(config.read_text().replace("/etc/prometheus/carescore-ca.crt", str(tmp_path / "ca.crt")))
    checked = subprocess.run([promtool, "check", "config", str(here)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    scraped = {job["job_name"] for job in yaml.safe_load(config.read_text())["scrape_configs"]}
    assert scraped == {"carescore-gateway", "carescore-worker"}
