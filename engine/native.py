"""The engine's hot modules compiled to C by mypyc, used only while they match their source.

The engine is typed Python; mypyc turns the modules every event and every tick runs through
(the operators, the engine core, census, stays, staff and bed levels, the roster,
aggregates, windows, watermarks), and the HL7 v2 parser and DTM reader every message runs
through, into C extensions that do the same work in less CPU. `make run`, `make test` and
`make bench` build them (engine/native_build.py) into `.native/` at the repository root, with
a manifest of the SHA-256 of every engine source (compiled or not: mypyc builds the types of
the modules they import into the C), of every compiled module's source and of the mypy
settings. At `import engine` a finder serves those modules from there when all of that still
matches and the interpreter is the one they were built for. Otherwise (one of those sources
edited since, another Python, no C compiler on the machine, CARESCORE_PURE_PYTHON=1) every
one of them imports from its .py as before. Never a mix: compiled modules call each other
directly, so one stale module would run old code.

Nothing is put beside the sources, so an edited .py is never shadowed by an old build.

An installed carescore (a wheel, the container image) carries the same build in
engine/_native/ (setup.py copies it in, building it first if needed): served only through the
same finder, after the same check against the installed sources (all but the mypy settings,
which an installed package does not have). A checkout uses only .native/.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / ".native"
"""A checkout's build (make native); an installed package's is engine/_native/ (locate())."""
MANIFEST = "manifest.json"
SETTINGS = "pyproject.toml [tool.mypy]"
MODULES = (
    "engine.core",
    "engine.aggregates",
    "engine.census",
    "engine.levels",
    "engine.roster",
    "engine.stays",
    "engine.windows",
    "engine.watermarks",
    "engine.operators.base",
    "engine.operators.duration",
    "engine.operators.events",
    "engine.operators.gauge",
    "engine.operators.intervals",
    "engine.operators.levelseries",
    "engine.operators.overdue",
    "engine.operators.pairing",
    "engine.operators.paneindex",
    "engine.operators.ratio",
    "engine.operators.readmission",
    "engine.operators.runs",
    "engine.operators.staffratio",
    "engine.operators.stay",
    "engine.operators.topbox",
    "engine.operators.values",
    "connectors.hl7v2.parser",
    "connectors.hl7v2.dtm",
)
"""Compiled together. A class another module subclasses must be compiled with it (mypyc:
interpreted classes cannot inherit from compiled ones), so every operator is here. The HL7 v2
parser and DTM reader import nothing of the project: every MLLP message's segments and times
go through them (connectors/__init__.py imports engine first, so they are served from here).

Compiled, a module's annotations are checked at run time (a wrong type is a TypeError, not
duck typing), its classes cannot be subclassed, pickled or copied from interpreted code, and
monkeypatching one of its functions does not reach compiled callers. Tests and tools that need
any of that run with CARESCORE_PURE_PYTHON=1 (the fuzzer does: atheris instruments bytecode)."""

OFF_VARIABLE = "CARESCORE_PURE_PYTHON"

active = False
"""True when this process runs the compiled modules."""
reason = "not checked"
"""Why not, when not active; what was loaded when it is."""


def source_of(module: str, root: Path = ROOT) -> Path:
    """A module's .py file."""
    return root.joinpath(*module.split(".")).with_suffix(".py")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sources(root: Path = ROOT) -> dict[str, str]:
    """What a build depends on: every engine source (a compiled module checks the types of what
    it imports), every compiled module's source and the mypy settings, by SHA-256. This module
    and the build script are not in the build."""
    paths = {*(root / "engine").rglob("*.py"), *(source_of(m, root) for m in MODULES)}
    found = {
        path.relative_to(root).as_posix(): digest(path)
        for path in sorted(paths)
        if path.name not in ("native.py", "native_build.py")
    }
    try:
        settings = tomllib.loads((root / "pyproject.toml").read_text()).get("tool", {}).get("mypy", {})
    except (OSError, tomllib.TOMLDecodeError):
        settings = None
    found[SETTINGS] = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    return found


def turned_off() -> bool:
    return os.environ.get(OFF_VARIABLE, "").strip().lower() not in ("", "0", "false", "no")


def build_tag() -> str:
    """What a build is only good for: this interpreter's ABI."""
    return f"{sys.implementation.cache_tag} {importlib.machinery.EXTENSION_SUFFIXES[0]}"


def check(
    build: Path = BUILD, root: Path = ROOT, installed: bool = False
) -> tuple[dict[str, Path] | None, str]:
    """The extension file of every compiled module, or None and why the build cannot be used.
    installed: an installed package's build, whose mypy settings are not there to compare (nor
    can an installed package change them). Never raises: whatever is wrong with a build, the
    engine runs from its source."""
    try:
        return _check(build, root, installed)
    except Exception as exc:
        return None, f"{build / MANIFEST} unusable: {exc!r}"


def locate(root: Path = ROOT) -> tuple[Path, bool]:
    """This copy's build and whether it is an installed package's: a checkout (it has its
    pyproject.toml) uses .native/, an installed carescore the engine/_native/ its wheel holds."""
    if (root / "pyproject.toml").is_file():
        return root / ".native", False
    return root / "engine" / "_native", True


def _check(build: Path, root: Path, installed: bool) -> tuple[dict[str, Path] | None, str]:
    try:
        manifest = json.loads((build / MANIFEST).read_text())
    except FileNotFoundError:
        return None, f"no build in {build}"
    except (OSError, ValueError) as exc:
        return None, f"{build / MANIFEST} unreadable: {exc}"
    if manifest.get("tag") != build_tag():
        return None, f"built for {manifest.get('tag')!r}, this interpreter is {build_tag()!r}"
    if sorted(manifest.get("modules", [])) != sorted(MODULES):
        return None, "built from another list of modules"
    built: dict[str, str] = dict(manifest.get("sources", {}))
    now = sources(root)
    if installed:
        built.pop(SETTINGS, None)
        now.pop(SETTINGS, None)
    changed = sorted(name for name in built.keys() | now.keys() if built.get(name) != now.get(name))
    if changed:
        more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
        return None, f"{changed[0]}{more} changed since the build"
    files = {name: build / relative for name, relative in manifest.get("files", {}).items()}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing or not set(MODULES) <= set(files):
        return None, f"build incomplete: {', '.join(missing) or 'modules without a file'}"
    return files, f"compiled by mypyc {manifest.get('mypy', '?')}, {len(MODULES)} modules"


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, files: dict[str, Path]):
        self.files = files

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        file = self.files.get(fullname)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(file))
        return importlib.util.spec_from_file_location(fullname, file, loader=loader)


def install() -> None:
    """Serve the compiled modules, if the build is good for these sources and this Python."""
    global active, reason
    if turned_off():
        reason = f"{OFF_VARIABLE} is set"
        return
    if any(module in sys.modules for module in MODULES):
        reason = "compiled modules (engine, HL7 parser) were imported before engine.native"
        return
    build, installed = locate()
    files, reason = check(build, installed=installed)
    if files is not None:
        sys.meta_path.insert(0, _Finder(files))
        active = True
