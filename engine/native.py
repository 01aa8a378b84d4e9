"""The engine's hot modules compiled to C by mypyc, used only while they match their source.

The engine is typed Python; mypyc turns the modules every event and every tick runs through
(the operators, the engine core, census, stays, staff and bed levels, the roster,
aggregates, windows, watermarks) into C extensions that do
the same work in less CPU. `make install` builds them (engine/native_build.py) into `.native/`
at the repository root, with a manifest of each source's SHA-256. At `import engine` a finder
serves those modules from there when every source still matches and the interpreter is the one
they were built for. Otherwise (a source edited since, another Python, no C compiler on the
machine, CARESCORE_PURE_PYTHON=1) every one of them imports from its .py as before. Never a
mix: compiled modules call each other directly, so one stale module would run old code.

Nothing is put beside the sources, so an edited .py is never shadowed by an old build.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / ".native"
MANIFEST = "manifest.json"
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
)
"""Compiled together. A class another module subclasses must be compiled with it (mypyc:
interpreted classes cannot inherit from compiled ones), so every operator is here."""

OFF_VARIABLE = "CARESCORE_PURE_PYTHON"

active = False
"""True when this process runs the compiled modules."""
reason = "not checked"
"""Why not, when not active; what was loaded when it is."""


def source_of(module: str, root: Path = ROOT) -> Path:
    return root.joinpath(*module.split(".")).with_suffix(".py")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_tag() -> str:
    """What a build is only good for: this interpreter's ABI."""
    return f"{sys.implementation.cache_tag} {importlib.machinery.EXTENSION_SUFFIXES[0]}"


def check(build: Path = BUILD, root: Path = ROOT) -> tuple[dict[str, Path] | None, str]:
    """The extension file of every compiled module, or None and why the build cannot be used."""
    try:
        manifest = json.loads((build / MANIFEST).read_text())
    except FileNotFoundError:
        return None, f"no build in {build} (make install builds one)"
    except (OSError, ValueError) as exc:
        return None, f"{build / MANIFEST} unreadable: {exc}"
    if manifest.get("tag") != build_tag():
        return None, f"built for {manifest.get('tag')!r}, this interpreter is {build_tag()!r}"
    sources: dict[str, str] = manifest.get("sources", {})
    if set(sources) != set(MODULES):
        return None, "built from another list of modules"
    for module, sha in sources.items():
        try:
            if digest(source_of(module, root)) != sha:
                return None, f"{source_of(module, root).relative_to(root)} changed since the build"
        except OSError as exc:
            return None, f"{module}: {exc}"
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
    if os.environ.get(OFF_VARIABLE, "") not in ("", "0"):
        reason = f"{OFF_VARIABLE} is set"
        return
    if any(module in sys.modules for module in MODULES):
        reason = "engine modules were imported before engine.native"
        return
    files, reason = check()
    if files is not None:
        sys.meta_path.insert(0, _Finder(files))
        active = True
