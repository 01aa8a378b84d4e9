"""The wheel carries the compiled engine (engine/native.py) in engine/_native/.

Everything else about the package is in pyproject.toml. Compiling needs mypy, a C compiler and
carescore's dependencies installed (mypyc reads their types); without them the wheel is pure
Python and the build says why, unless CARESCORE_NATIVE=require (deploy/Dockerfile), which fails
it. A wheel with the compiled engine is tagged for this interpreter and platform; installed, the
build is used only while it matches the installed sources and interpreter (pure Python if not).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

ROOT = Path(__file__).resolve().parent


class BuildPy(build_py):
    """The sources as usual, then the checkout's build (made or refreshed first) beside them."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:  # pip install -e (make install): the checkout's own .native serves
            return
        into = (Path(self.build_lib) / "engine" / "_native").resolve()
        shutil.rmtree(into, ignore_errors=True)  # an earlier build's, left in build/lib
        required = os.environ.get("CARESCORE_NATIVE", "").strip().lower() == "require"
        command = [sys.executable, "-m", "engine.native_build", "--into", str(into)]
        # this checkout's engine package, whatever is installed or PYTHONSAFEPATH says
        env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
        done = subprocess.run(
            [*command, *(["--require"] if required else [])], cwd=ROOT, env=env, check=False
        )
        if done.returncode != 0:
            raise SystemExit(f"engine.native_build exited with {done.returncode}: see its message above")
        self.distribution.compiled_engine = (into / "manifest.json").is_file()  # type: ignore[attr-defined]


class WithEngine(Distribution):
    """A platform wheel (its files in platlib) once the compiled engine is in it."""

    compiled_engine = False

    def has_ext_modules(self) -> bool:
        return self.compiled_engine


class BdistWheel(bdist_wheel):
    """Built first, so the tag can say whether the wheel holds compiled code."""

    def run(self) -> None:
        if not self.skip_build:
            self.run_command("build")  # not run again by bdist_wheel.run
        self.root_is_pure = not self.distribution.has_ext_modules()
        super().run()


setup(cmdclass={"build_py": BuildPy, "bdist_wheel": BdistWheel}, distclass=WithEngine)
