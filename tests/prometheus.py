"""A real Prometheus (Debian's /usr/bin/prometheus) for tests: bound to 127.0.0.1 on a free
port, its own data folder, a 1-second scrape and rule evaluation, stopped at the end; and the
promtool it ships with."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.alerting import free_port


def tool(name: str) -> str:
    """The binary's path. Absent, the test is skipped on a developer's machine and fails under
    CI=true (`make test` installs the Debian package prometheus)."""
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if found is None:
        reason = f"{name} is not installed (Debian package prometheus; `make system-deps`)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI=true, so this is a failure, not a skip")
        pytest.skip(reason)
    return found


class Prometheus:
    def __init__(self, url: str, proc: subprocess.Popen[bytes], log: Path):
        self.url, self.proc, self.log = url, proc, log

    def query(self, expr: str) -> dict[str, Any]:
        """An instant query now: the API's `data` ({resultType, result}); raises on an error."""
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = answer.json()
        if body.get("status") != "success":
            raise AssertionError(f"{expr!r}: {body.get('errorType')}: {body.get('error')}")
        return dict(body["data"])

    def label_values(self, label: str, match: str) -> list[str]:
        answer = httpx.get(f"{self.url}/api/v1/label/{label}/values", params={"match[]": match}, timeout=10)
        body = answer.json()
        if body.get("status") != "success":
            raise AssertionError(f"label_values({match}, {label}): {body.get('error')}")
        return [str(v) for v in body["data"]]

    def rules(self) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.url}/api/v1/rules", timeout=10).json()
        return [rule for group in body["data"]["groups"] for rule in group["rules"]]


@contextmanager
def running_prometheus(folder: Path, targets: dict[str, str], rule_files: list[str]) -> Iterator[Prometheus]:
    """Prometheus scraping `targets` (job name -> host:port) every second with `rule_files`."""
    binary = tool("prometheus")
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": rule_files,
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [target]}]} for job, target in targets.items()
        ],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = folder / "prometheus.log"
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1d",
        ],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"prometheus exited with {proc.returncode}: {log.read_text()[-2000:]}"
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"prometheus did not become ready: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield Prometheus(url, proc, log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
