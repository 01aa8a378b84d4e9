"""Secrets in the settings (issue 14 item 5, security review M6): the alert database URL, the SMTP
password and the webhook signing key are SecretStr, given inline, from a file or from an
environment variable, and never reach a log line (DEBUG included) or an HTTP answer; URLs are
redacted in errors (`postgresql://carescore:***@...`, webhook query values `***`).

The end-to-end tests run `carescore run` as a child process with log_level DEBUG against a real
PostgreSQL that demands a password (SCRAM), a webhook and an SMTP relay that nobody listens on,
fire a real alert over MLLP so both deliveries fail, and then read every log line and every
answer of the API for the secrets.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import SecretStr

from connectors.hl7v2.client import MLLPClient, ack_code
from engine.config import REPO_ROOT, load_settings
from engine.secrets import redact_url
from engine.yamlconf import ConfigError
from tests.alerting import free_port
from tests.conftest import DEMO_PLACES
from tests.postgres import start_postgres
from tests.test_alert_channels import FAST, ROUTES
from tests.test_e2e_embedded import now, stat_pair
from tests.test_hostile_inputs import spawn

DB_PASSWORD = "pgS3cretXq81"
SMTP_PASSWORD = "smtpS3cretLw27"
HOOK_SECRET = "hmacS3cretZr55"
HOOK_TOKEN = "tokS3cretNv90"


def test_redact_url_by_hand() -> None:
    # the user part keeps its name, loses its password; every query value is masked, names kept
    assert redact_url("postgresql://carescore:pw@db:5432/alerts?sslmode=require") == (
        "postgresql://carescore:***@db:5432/alerts?sslmode=***"
    )
    assert (
        redact_url("https://hooks.example/x?token=abc&team=icu")
        == "https://hooks.example/x?token=***&team=***"
    )
    assert redact_url("postgresql://carescore@db/alerts") == "postgresql://carescore@db/alerts"
    assert redact_url("http://127.0.0.1:9093") == "http://127.0.0.1:9093"


def write(path: Path, settings: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    return path


def test_secrets_come_from_a_file_the_environment_or_the_file_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "database"
    database.write_text(f"postgresql://carescore:{DB_PASSWORD}@db/alerts\n")  # the newline is dropped
    monkeypatch.setenv("TEST_SMTP_PASSWORD", SMTP_PASSWORD)
    config = write(
        tmp_path / "carescore.yaml",
        {
            "alerts": {
                "database_file": str(database),
                "email": {
                    "sender": "c@h.example",
                    "starttls": True,
                    "username": "carescore",
                    "password_env": "TEST_SMTP_PASSWORD",
                },
                "webhooks": [{"url": "https://hooks.example/x", "secret": HOOK_SECRET}],
            }
        },
    )
    settings = load_settings(config)
    alerts = settings.alerts
    assert isinstance(alerts.database, SecretStr) and isinstance(alerts.webhooks[0].secret, SecretStr)
    assert alerts.database.get_secret_value() == f"postgresql://carescore:{DB_PASSWORD}@db/alerts"
    assert alerts.email is not None and alerts.email.password is not None
    assert alerts.email.password.get_secret_value() == SMTP_PASSWORD
    assert alerts.webhooks[0].secret.get_secret_value() == HOOK_SECRET
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    for secret in (DB_PASSWORD, SMTP_PASSWORD, HOOK_SECRET):
        assert secret not in shown


@pytest.mark.parametrize(
    ("email", "expected"),
    [
        ({"password": SMTP_PASSWORD, "password_env": "HOME"}, "give one of password, password_env"),
        ({"password_file": "relative/secret"}, "password_file must be an absolute path"),
        ({"password_file": "/nonexistent/carescore-secret"}, "cannot be read"),
        ({"password_env": "CARESCORE_TEST_UNSET_VARIABLE"}, "CARESCORE_TEST_UNSET_VARIABLE is not set"),
        # RFC 3207: AUTH after STARTTLS, so the password never crosses the network in clear
        ({"password": SMTP_PASSWORD, "starttls": False}, "only over TLS: set starttls: true"),
    ],
)
def test_a_secret_given_wrongly_is_a_config_error_naming_file_line_field(
    tmp_path: Path, email: dict[str, Any], expected: str
) -> None:
    config = write(tmp_path / "carescore.yaml", {"alerts": {"email": {"sender": "c@h.example", **email}}})
    with pytest.raises(ConfigError) as refused:
        load_settings(config)
    (problem,) = refused.value.problems
    # line 1 `alerts:`, line 2 `  email:`: the section whose secret is wrong (its fields follow)
    assert problem.startswith(f"{config}:2: alerts.email: ") and expected in problem, problem
    assert SMTP_PASSWORD not in problem


@pytest.fixture(scope="module")
def postgres_with_password() -> Iterator[str]:
    """A real PostgreSQL whose user carescore must give DB_PASSWORD (SCRAM-SHA-256)."""
    yield from start_postgres(password=DB_PASSWORD)


def config_with_secrets(root: Path, database: str, kpi_defs: Path) -> tuple[Path, int, int]:
    api, mllp = free_port(), free_port()
    (root / "database").write_text(database + "\n")
    (root / "hook-secret").write_text(HOOK_SECRET)
    (root / "routes.yaml").write_text(ROUTES)
    config = write(
        root / "carescore.yaml",
        {
            "data_dir": str(root / "data"),
            "places": DEMO_PLACES,
            "kpi_defs": str(kpi_defs),
            "log_level": "DEBUG",
            "mllp": {"host": "127.0.0.1", "port": mllp},
            "api": {"host": "127.0.0.1", "port": api},
            "demo": {"enabled": False},
            "engine": {"tick": 0.2, "snapshot_every": 3600},
            "alerts": {
                "database_file": str(root / "database"),
                "routes": str(root / "routes.yaml"),
                "max_attempts": 1,  # the first failure makes the notice a dead letter (its reason served)
                "webhooks": [
                    {
                        "name": "pager",
                        "url": f"http://127.0.0.1:{free_port()}/hook?token={HOOK_TOKEN}",
                        "secret_file": str(root / "hook-secret"),
                    }
                ],
                "email": {
                    "host": "127.0.0.1",
                    "port": free_port(),  # nobody listens: ConnectionRefusedError
                    "sender": "carescore@h.example",
                    "starttls": True,
                    "username": "carescore",
                    "password_env": "TEST_SMTP_PASSWORD",
                },
            },
        },
    )
    return config, api, mllp


def assert_no_secret(where: str, text: str) -> None:
    for secret in (DB_PASSWORD, SMTP_PASSWORD, HOOK_SECRET, HOOK_TOKEN):
        assert secret not in text, f"{secret} in {where}"


async def test_failing_deliveries_log_and_serve_no_secret_at_debug(
    tmp_path: Path, kpi_dir: Any, postgres_with_password: str
) -> None:
    config, api, mllp = config_with_secrets(tmp_path, postgres_with_password, kpi_dir(FAST))
    with spawn(config, api, mllp, tmp_path / "inbox", env={"TEST_SMTP_PASSWORD": SMTP_PASSWORD}) as running:
        start = now() - timedelta(minutes=110)
        async with MLLPClient("127.0.0.1", mllp) as client:
            for i, tat in enumerate([85, 95, 105, 100]):  # ICU STAT results: a critical breach
                for msg in stat_pair(f"SLOW{i}", "ICU", start + timedelta(minutes=i), tat):
                    assert ack_code(await client.send(msg)) == "AA"
        base = running.base
        deadline = time.monotonic() + 60
        while True:  # both notices tried once, failed and kept as dead letters
            letters = httpx.get(f"{base}/api/v1/dead-letters", params={"source": "notify:pager"}).json()
            mails = httpx.get(f"{base}/api/v1/dead-letters", params={"source": "notify:email"}).json()
            if letters["dead_letters"] and mails["dead_letters"]:
                break
            assert time.monotonic() < deadline, running.tail()
            time.sleep(0.1)
        (alert,) = httpx.get(f"{base}/api/v1/alerts").json()["alerts"]
        answers = {
            path: httpx.get(f"{base}{path}")
            for path in (
                "/api/v1/alerts",
                f"/api/v1/alerts/{alert['id']}",
                "/api/v1/dead-letters",
                "/api/v1/audit",
                "/api/v1/silences",
                "/api/v1/kpis",
                "/metrics",
                "/openapi.json",
            )
        }
        running.alive()
    detail = answers[f"/api/v1/alerts/{alert['id']}"].json()
    errors = {n["channel"]: n["last_error"] for n in detail["notices"]}
    # the failures are explained, with the webhook's URL redacted
    assert "/hook?token=***" in errors["pager"] and "ConnectError" in errors["pager"], errors
    assert "ConnectionRefusedError" in errors["email"], errors
    for path, answer in answers.items():
        assert answer.status_code == 200, path
        assert_no_secret(path, answer.text)
    log = running.log.read_text()
    assert '"level":"debug"' in log  # DEBUG lines were written: the check below read them
    assert "token=***" in log  # the delivery failure was logged, redacted
    for line in log.splitlines():
        assert_no_secret("the log", line)


def test_a_wrong_database_password_is_reported_without_it(
    tmp_path: Path, postgres_with_password: str
) -> None:
    wrong = postgres_with_password.replace(DB_PASSWORD, "wrongS3cretKk34")
    config, _, _ = config_with_secrets(tmp_path, wrong, REPO_ROOT / "kpi_defs")
    done = subprocess.run(
        [sys.executable, "-m", "carescore.cli", "run", "--config", str(config)],
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", "TEST_SMTP_PASSWORD": SMTP_PASSWORD},
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert "password authentication failed" in out and "postgresql://carescore:***@127.0.0.1" in out, out
    assert "wrongS3cretKk34" not in out
    assert_no_secret("the output", out)
