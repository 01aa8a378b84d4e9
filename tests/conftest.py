"""Shared fixtures: settings on free ports in a temp folder, a running embedded service."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.config import REPO_ROOT, Settings
from engine.places import Places

pytest.register_assert_rewrite("tests.browser")  # a plugin whose helpers tests also import

TESTDATA = REPO_ROOT.parent / "shared" / "testdata"

DEMO_PLACES: dict[str, Any] = yaml.safe_load((REPO_ROOT / "carescore" / "defaults.yaml").read_text())[
    "places"
]


# session fixtures that start a server, and how a test file shows it uses one
SHARED_SERVERS = {"kafka_broker": r"\bkafka_broker\b", "keycloak": r"\btests\.keycloak\b"}


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`make test`'s scheduling (pytest-xdist `--dist loadscope`): a test file is a unit, so a
    module-scoped fixture (the MIMIC backfill, ...) is built once, and every file that names a
    shared server's fixture is one unit, so one Kafka broker and one Keycloak start, not one
    per worker. (xdist's loadgroup marks do not work under pytest 9.2: they rename the test by
    an attribute pytest no longer reads.)"""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    names: dict[str, str] = {}

    class SharedServerScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            if path not in names:
                text = (REPO_ROOT / path).read_text() if (REPO_ROOT / path).is_file() else ""
                server = next((s for s, used in SHARED_SERVERS.items() if re.search(used, text)), None)
                names[path] = server or path
            return names[path]

    return SharedServerScheduling(config, log)


def needs_testdata(sub: str) -> Path:
    """The corpus folder (tests read ../shared/testdata, never a copy). Absent, the test is
    skipped with the reason on a developer's machine, but fails under CI (CI=true): a CI run
    without the corpus must not go green while skipping the real-data proofs."""
    path = TESTDATA / sub
    if not path.is_dir():
        reason = f"corpus {path} is absent (it lives outside the repo, in ../shared/testdata)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI=true, so this is a failure, not a skip")
        pytest.skip(reason)
    return path


@pytest.fixture
def places() -> Places:
    return Places.model_validate(DEMO_PLACES)


@pytest.fixture
def kpi_dir(tmp_path: Path) -> Callable[..., Path]:
    """A copy of kpi_defs/ with some fields overridden per KPI id (e.g. a shorter `for`)."""

    def make(overrides: dict[str, dict[str, Any]] | None = None) -> Path:
        target = tmp_path / "kpi_defs"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(REPO_ROOT / "kpi_defs", target)
        for kpi_id, changes in (overrides or {}).items():
            matches = [p for p in target.rglob("*.yaml") if yaml.safe_load(p.read_text()).get("id") == kpi_id]
            assert matches, f"no KPI {kpi_id} in kpi_defs"
            data = yaml.safe_load(matches[0].read_text())
            data.update(changes)
            matches[0].write_text(yaml.safe_dump(data, sort_keys=False))
        return target

    return make


@pytest.fixture
def settings_for(tmp_path: Path, places: Places) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        base: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "places": places,
            "mllp": {"port": 0},
            "api": {"port": 0},
            "demo": {"enabled": False},
            "engine": {"tick": 0.2, "snapshot_every": 3600},
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                base[key] = {**base[key], **value}
            else:
                base[key] = value
        return Settings.model_validate(base)

    return make


@pytest.fixture
async def service(settings_for: Callable[..., Settings]) -> AsyncIterator[Any]:
    from carescore.serve import Service

    svc = Service(settings_for())
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()


@pytest.fixture
def smtp() -> Iterator[tuple[int, Any]]:
    """A real SMTP server (aiosmtpd) on 127.0.0.1: (port, mailbox)."""
    from aiosmtpd.controller import Controller

    from tests.alerting import Mailbox, free_port

    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, mailbox
    finally:
        controller.stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server for the session (tests/postgres.py)."""
    from tests.postgres import start_postgres

    yield from start_postgres()


@pytest.fixture
def pg(postgres_url: str) -> Iterator[str]:
    """A fresh database per test on the session's PostgreSQL server."""
    import uuid

    import psycopg

    name = f"t{uuid.uuid4().hex[:12]}"
    admin = postgres_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield postgres_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Apache Kafka broker (KRaft, one node) started by deploy/kafka/kafka.sh for the
    session, on free loopback ports; stopped at the end."""
    import subprocess

    from tests.alerting import free_port
    from tests.kafka import KAFKA_SH

    folder = tmp_path_factory.mktemp("kafka")
    port, controller = free_port(), free_port()
    started = subprocess.run(
        [str(KAFKA_SH), "start", str(folder), str(port), str(controller)], capture_output=True, text=True
    )
    if started.returncode != 0:
        pytest.fail(f"the Kafka broker did not start: {started.stdout}{started.stderr}")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([str(KAFKA_SH), "stop", str(folder)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 48 MB tmpfs mounted for the test (Linux, root): a real filesystem to fill up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        message = f"cannot mount a small tmpfs here ({made.stderr.strip()}): the disk-fault proofs need root"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
