"""An installed carescore runs without the source tree: the wheel carries its default settings,
the KPI catalogue, the alert routes and the compiled engine, and without --config the data goes
to ./var/carescore under the folder it was started in (not into site-packages, not into a
checkout)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from engine import native
from engine.config import REPO_ROOT
from tests.labserver import wait_for
from tests.test_native import needs_build


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from this checkout, installed (without dependencies: the test's own
    virtualenv has them) into a folder of its own."""
    root = tmp_path_factory.mktemp("wheel")
    # pip builds in the checkout's build/, and setuptools packs whatever build/lib holds: an
    # earlier build's files (an engine/_native of another build) must not pass for this one's
    shutil.rmtree(REPO_ROOT / "build", ignore_errors=True)
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
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    engine_line = next(line.strip() for line in err.splitlines() if line.strip().startswith("engine "))
    if native.check()[0] is not None and not native.turned_off():  # the wheel was built compiled
        assert engine_line.startswith("engine      compiled by mypyc "), engine_line


_WHICH_ENGINE = """
import json, sys
import engine.core, connectors.hl7v2.parser
from engine import native
print(json.dumps({"active": native.active, "reason": native.reason,
                  "core": engine.core.__file__, "parser": connectors.hl7v2.parser.__file__}))
"""


def _which_engine(site: Path, cwd: Path) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONSAFEPATH": "1"}
    env.pop(native.OFF_VARIABLE, None)
    done = subprocess.run(
        [sys.executable, "-c", _WHICH_ENGINE], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    found: dict[str, object] = json.loads(done.stdout)
    return found


def test_the_installed_engine_runs_compiled(installed: Path, tmp_path: Path) -> None:
    """The container image and any pip install run what `make run` runs: the wheel carries the
    build (engine/_native), and the installed engine and HL7 parser load from it."""
    needs_build()
    wheel = next(installed.parent.glob("carescore-*.whl"))
    cp = f"cp{sys.version_info.major}{sys.version_info.minor}"
    tag = f"-{cp}-{cp}-"
    assert tag in wheel.name and not wheel.name.endswith("-any.whl"), wheel.name  # compiled code inside
    assert (installed / "engine" / "_native" / native.MANIFEST).is_file()
    found = _which_engine(installed, tmp_path)
    assert found["active"] is True, found["reason"]
    assert str(found["reason"]).startswith("compiled by mypyc "), found
    for module in ("core", "parser"):
        path = Path(str(found[module]))
        assert path.is_relative_to(installed / "engine" / "_native") and path.suffix == ".so", found


def test_an_edited_installed_engine_runs_its_source(installed: Path, tmp_path: Path) -> None:
    """An installed source changed after the build (a hotfix by hand): the packaged build is old
    code for it, so the whole engine runs from the .py files and says which file differs."""
    needs_build()
    site = tmp_path / "site"
    shutil.copytree(installed, site)
    with (site / "engine" / "windows.py").open("a") as f:
        f.write("\n# edited after the build\n")
    found = _which_engine(site, tmp_path)
    assert found["active"] is False
    assert found["reason"] == "engine/windows.py changed since the build", found
    assert found["core"] == str(site / "engine" / "core.py"), found
    assert found["parser"] == str(site / "connectors" / "hl7v2" / "parser.py"), found


def test_only_the_packaged_defaults_start_the_demo_hospital(tmp_path: Path) -> None:
    """Simulated patients must never mix into a real hospital's data: a settings file of one's
    own runs without the demo unless it asks for it; `make run` (the packaged defaults) has it."""
    from carescore.settings import DEFAULT_CONFIG
    from engine.config import load_settings

    own = tmp_path / "carescore.yaml"
    own.write_text("timezone: UTC\n")
    assert load_settings(own).demo.enabled is False
    assert load_settings(DEFAULT_CONFIG, base=tmp_path).demo.enabled is True


def _checkout_copy(into: Path) -> Path:
    """The files git tracks (no build/, no .native/): a fresh clone as far as a wheel build sees."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        target = into / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, target)
    return into


def test_a_wheel_that_cannot_compile_is_pure_python_or_refused(tmp_path: Path) -> None:
    """No mypy (or no compiler) where the wheel is built: a pure-Python wheel that says so in its
    tag and carries no build, or, with CARESCORE_NATIVE=require (the image), no wheel at all."""
    checkout = _checkout_copy(tmp_path / "checkout")
    shim = tmp_path / "shim" / "mypy"  # mypyc cannot be imported: what a machine without it sees
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('no mypy on this machine')\n")
    env = {**os.environ, "PYTHONPATH": str(shim.parent)}
    env.pop("CARESCORE_NATIVE", None)

    def wheel(out: Path, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v", "-w", out, "."],
            cwd=checkout,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=300,
        )

    refused = wheel(tmp_path / "refused", CARESCORE_NATIVE="require")
    assert refused.returncode != 0
    assert "engine: not compiled: ImportError('no mypy on this machine')" in refused.stdout + refused.stderr
    assert not list((tmp_path / "refused").glob("*.whl"))

    pure = wheel(tmp_path / "pure")
    assert pure.returncode == 0, pure.stderr[-3000:]
    built = next((tmp_path / "pure").glob("carescore-*.whl"))
    assert built.name.endswith("-py3-none-any.whl"), built.name
    assert not [n for n in zipfile.ZipFile(built).namelist() if "_native" in n]


def test_a_checkout_uses_only_its_own_build(tmp_path: Path) -> None:
    """A checkout (its pyproject.toml) never serves an engine/_native left in it; an install
    (no pyproject.toml) serves only that."""
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    assert native.locate(tmp_path) == (tmp_path / ".native", False)
    (tmp_path / "pyproject.toml").unlink()
    assert native.locate(tmp_path) == (tmp_path / "engine" / "_native", True)
