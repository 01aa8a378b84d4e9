"""`make run`'s one-time admin sign-in (issue 14 item 5, "safe defaults"): the first `carescore run`
of a data folder with the demo, no IdP and a loopback API prints an admin integration token once
in its banner (a print, never a log record; only its SHA-256 is stored), valid for 7 days; it
authenticates as itself (not as the local operator), the next start prints none, and without
the demo no token is made at all. Requests without credentials still act as the local operator.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from api.security.tokens import TokenStore
from engine.config import REPO_ROOT
from tests.alerting import free_port
from tests.conftest import DEMO_PLACES
from tests.test_hostile_inputs import spawn

TOKEN = re.compile(r"^    admin token (cs_([0-9a-f]{12})_\S+)$", re.M)
WEEK = 7 * 86400


def config(root: Path, demo: bool) -> tuple[Path, int, int]:
    api, mllp = free_port(), free_port()
    path = root / "carescore.yaml"
    settings: dict[str, Any] = {
        "data_dir": str(root / "data"),
        "places": DEMO_PLACES,
        "mllp": {"host": "127.0.0.1", "port": mllp},
        "api": {"host": "127.0.0.1", "port": api},
        "demo": {"enabled": demo, "backfill": "1h"},
        "engine": {"snapshot_every": 3600},
    }
    path.write_text(yaml.safe_dump(settings))
    return path, api, mllp


def banner(log: Path) -> str:
    """The banner (printed once start-up is done, which is after /healthz first answers)."""
    deadline = time.monotonic() + 60
    while "Ctrl-C stops it." not in (text := log.read_text()):
        assert time.monotonic() < deadline, text[-3000:]
        time.sleep(0.05)
    return "\n".join(line for line in text.splitlines() if not line.startswith("{"))


def token_cli(path: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "carescore.cli", "token", *args, "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("CARESCORE_")},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_first_demo_start_prints_an_admin_token_once(tmp_path: Path) -> None:
    path, api, mllp = config(tmp_path, demo=True)
    with spawn(path, api, mllp, tmp_path / "inbox") as running:
        found = TOKEN.search(banner(running.log))
        assert found, banner(running.log)
        token, token_id = found.groups()
        base = running.base
        # the token is verified as itself: a changed one is refused, it is not the local operator's
        assert (
            httpx.get(f"{base}/api/v1/kpis", headers={"Authorization": f"Bearer {token}x"}).status_code == 401
        )
        as_admin = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{base}/api/v1/dead-letters", headers=as_admin).status_code == 200  # audited
        entries = httpx.get(
            f"{base}/api/v1/audit", params={"principal": f"token:{token_id}"}, headers=as_admin
        )
        assert entries.status_code == 200
        assert [e["route"] for e in entries.json()["entries"]] == ["/api/v1/dead-letters"]
        assert httpx.get(f"{base}/api/v1/kpis").status_code == 200  # no credentials: the local operator
        assert f"carescore token revoke {token_id} withdraws it" in banner(running.log)
    log = running.log.read_text()
    assert all(token not in line for line in log.splitlines() if line.startswith("{"))  # no log record
    assert token.encode() not in (tmp_path / "data" / "tokens.sqlite").read_bytes()  # its hash only
    store = TokenStore(tmp_path / "data" / "tokens.sqlite")
    (info,) = store.list()
    store.close()
    assert info.expires is not None
    assert (info.id, info.role, info.scope, info.expires - info.created) == (token_id, "admin", "all", WEEK)

    with spawn(path, api, mllp, tmp_path / "inbox") as again:  # the second start: none
        assert "admin token" not in banner(again.log), banner(again.log)
        assert httpx.get(f"{again.base}/api/v1/audit", headers=as_admin).status_code == 200  # still valid
    listed = token_cli(path, "list")
    assert token_id in listed and "first start (demo admin)" in listed and token not in listed


def test_without_the_demo_no_token_is_made(tmp_path: Path) -> None:
    plain, api, mllp = config(tmp_path, demo=False)
    with spawn(plain, api, mllp, tmp_path / "inbox") as running:
        assert "sign-in     none (loopback only; every local user is admin)" in banner(running.log)
        assert "admin token" not in banner(running.log)
    assert token_cli(plain, "list").strip().splitlines()[1:] == []  # the header line, no token
