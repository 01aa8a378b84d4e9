"""An installed carescore runs without the source tree: the wheel carries its default settings,
the KPI catalogue and the alert routes, and without --config the data goes to ./var/carescore
under the folder it was started in (not into site-packages, not into a checkout)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from engine.config import REPO_ROOT
from tests.labserver import wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from this checkout, installed (without dependencies: the test's own
    virtualenv has them) into a folder of its own."""
    root = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", root, "."],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    wheel = next(root.glob("carescore-*.whl"))
    site = root / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", site, wheel],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr
    return site


def _run(site: Path, cwd: Path, *args: str, **kw: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONSAFEPATH": "1"}
    env.pop("CARESCORE_DATA_DIR", None)
    return subprocess.Popen(
        [sys.executable, "-m", "carescore.cli", *args],
        cwd=cwd,
        env={**env, **kw},  # type: ignore[dict-item]
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_the_wheel_carries_defaults_catalogue_and_routes(installed: Path, tmp_path: Path) -> None:
    for packaged in (
        "carescore/defaults.yaml",
        "kpi_defs/bed_occupancy.yaml",
        "kpi_defs/objectives/strategy.yaml",  # the strategy map: loaded with the KPIs, at start
        "alerts/routes.yaml",
    ):
        assert (installed / packaged).is_file(), packaged
    check = _run(installed, tmp_path, "config", "check")
    out, err = check.communicate(timeout=120)
    assert check.returncode == 0, err
    # the packaged catalogue, from the install; the data under the folder it ran in
    assert f"KPIs from {installed / 'kpi_defs'}" in out, out
    assert f"data in {tmp_path / 'var' / 'carescore'}" in out, out


def test_an_installed_carescore_runs_from_any_folder(installed: Path, tmp_path: Path) -> None:
    api, mllp = _free_port(), _free_port()
    proc = _run(
        installed,
        tmp_path,
        "run",
        CARESCORE_DEMO="0",
        CARESCORE_API_PORT=str(api),
        CARESCORE_MLLP_PORT=str(mllp),
    )
    try:

        def healthy() -> bool:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            try:
                return httpx.get(f"http://127.0.0.1:{api}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for("carescore answers /healthz", healthy, timeout=120)
        kpis = httpx.get(f"http://127.0.0.1:{api}/api/v1/kpis", timeout=10).json()["kpis"]
        assert len(kpis) == len(list((installed / "kpi_defs").glob("*.yaml")))
        objectives = httpx.get(f"http://127.0.0.1:{api}/api/v1/objectives", timeout=10).json()["objectives"]
        assert objectives and all(o["kpis"] for o in objectives)  # the packaged strategy, loaded
        assert (tmp_path / "var" / "carescore" / "events").is_dir()  # the data where it was started
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert proc.returncode == 0


def test_only_the_packaged_defaults_start_the_demo_hospital(tmp_path: Path) -> None:
    """Simulated patients must never mix into a real hospital's data: a settings file of one's
    own runs without the demo unless it asks for it; `make run` (the packaged defaults) has it."""
    from carescore.settings import DEFAULT_CONFIG
    from engine.config import load_settings

    own = tmp_path / "carescore.yaml"
    own.write_text("timezone: UTC\n")
    assert load_settings(own).demo.enabled is False
    assert load_settings(DEFAULT_CONFIG, base=tmp_path).demo.enabled is True
