"""The lock files (issue 14 item 7): every package pinned with its hashes, every requirement of
pyproject.toml met by the pins, the image's locks held to the tests' versions, and the Makefile
and Dockerfile installing from them with --require-hashes (the image: a wheel, not the source).

pip's hash-checking mode (pip docs, "Secure installs") refuses any requirement that is not
pinned with == and does not carry --hash, and any package whose archive matches none of them.
A lock that falls behind pyproject.toml is caught here before make install's pip check.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from engine.config import REPO_ROOT

LOCKS = REPO_ROOT / "requirements"
#: the platform the locks are made for (make lock: --python-version 3.11, x86_64 Linux)
ENVIRONMENT = {
    "python_version": "3.11",
    "python_full_version": "3.11.2",
    "platform_system": "Linux",
    "sys_platform": "linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}


def pins(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of a pip-compile style file (continuation lines joined)."""
    text = path.read_text().replace("\\\n", " ")
    found: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(
            r"([A-Za-z0-9_.\-]+)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})*)(?:\s*;.*)?", line
        )
        assert match, f"{path.name}: not pinned with hashes: {line[:80]}"
        name, version, hashes = match.groups()
        found[canonicalize_name(name)] = (version, hashes.split())
    return found


def project() -> dict[str, list[str]]:
    data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return {"": data["dependencies"], **data["optional-dependencies"]}


@pytest.mark.parametrize("name", ["dev.txt", "runtime.txt", "build.txt"])
def test_every_locked_package_is_pinned_with_a_hash(name: str) -> None:
    locked = pins(LOCKS / name)
    assert locked
    for package, (_, hashes) in locked.items():
        assert hashes, f"{name}: {package} has no --hash"


@pytest.mark.parametrize(
    ("name", "extras"), [("dev.txt", ["", "test", "dev", "postgres"]), ("runtime.txt", ["", "postgres"])]
)
def test_the_pins_meet_every_requirement_of_pyproject(name: str, extras: list[str]) -> None:
    locked = pins(LOCKS / name)
    wanted = [Requirement(r) for extra in extras for r in project()[extra]]
    missing = []
    for req in wanted:
        if req.marker is not None and not req.marker.evaluate(ENVIRONMENT):
            continue
        pinned = locked.get(canonicalize_name(req.name))
        if pinned is None or not req.specifier.contains(pinned[0], prereleases=True):
            missing.append(f"{req} (locked: {pinned[0] if pinned else 'absent'})")
    assert not missing, f"{name} is out of step with pyproject.toml (make lock): {missing}"


def test_the_image_runs_the_versions_the_tests_ran() -> None:
    dev = pins(LOCKS / "dev.txt")
    for name in ("runtime.txt", "build.txt"):
        for package, (version, _) in pins(LOCKS / name).items():
            assert dev[package][0] == version, f"{name}: {package} {version}, dev.txt {dev[package][0]}"


def test_make_and_the_dockerfile_install_only_from_the_locks() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "LOCK := requirements/dev.txt" in makefile
    assert "pip install -q --require-hashes -r $(LOCK)" in makefile
    assert "pip install -q --no-deps --no-build-isolation -e ." in makefile  # nothing fetched unchecked
    dockerfile = (REPO_ROOT / "deploy" / "Dockerfile").read_text()
    installs = re.findall(r"pip (?:install|wheel)[^\n]*", dockerfile)
    assert len(installs) == 4, installs
    for line in installs:
        assert "--require-hashes -r" in line or "--no-deps" in line, line
    assert (
        "-e " not in dockerfile
        and "pip install --no-cache-dir --no-deps /tmp/wheels/carescore-" in dockerfile
    )
    # an exact Python and Debian release in both stages (a digest could not be read here: README)
    bases = re.findall(r"^FROM (\S+)", dockerfile, re.M)
    assert len(bases) == 2 and len(set(bases)) == 1, bases
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", bases[0]), bases
