"""A real PostgreSQL (Debian's package) for the tests that claim one: initdb in a temporary
folder, started on 127.0.0.1 on a free port, stopped afterwards."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.alerting import free_port


def _binaries() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL is not installed: `make test` installs Debian's postgresql package")
    return Path(found[-1]).parent


def _as_owner(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run it as the postgres user then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def start_postgres(password: str | None = None) -> Iterator[str]:
    """password: the user carescore needs it (SCRAM-SHA-256 for every connection); None: trust."""
    bin_dir = _binaries()
    folder = Path(tempfile.mkdtemp(prefix="carescore-pg-"))
    data = folder / "data"
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    port = free_port()
    run = {"check": True, "capture_output": True}
    initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", "carescore", "--auth=trust"]
    if password is not None:
        pwfile = folder / "pw"
        pwfile.write_text(password)
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres", "postgres")
        initdb[-1] = "--auth=scram-sha-256"
        initdb.append(f"--pwfile={pwfile}")
    subprocess.run(_as_owner(initdb), **run)  # type: ignore[call-overload]
    user = f"carescore:{password}" if password is not None else "carescore"
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        _as_owner(
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(folder / "log"),
                "-w",
                "start",
            ]
        ),
        **run,  # type: ignore[call-overload]
    )
    try:
        import psycopg

        with psycopg.connect(f"postgresql://{user}@127.0.0.1:{port}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE alerts")
        yield f"postgresql://{user}@127.0.0.1:{port}/alerts"
    finally:
        subprocess.run(
            _as_owner([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]), capture_output=True
        )
        shutil.rmtree(folder, ignore_errors=True)
