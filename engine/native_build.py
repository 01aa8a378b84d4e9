"""Build the compiled engine modules (engine/native.py) into .native/: `python -m engine.native_build`.

Does nothing when the build there already matches every source and this interpreter. A
machine without mypyc or a C compiler gets a message and runs the engine as pure Python;
--require makes that an error (make test under CI=true: the suite must prove what users run).
--into DIR then copies the build into DIR (setup.py: engine/_native/ of the wheel).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from engine.native import BUILD, MANIFEST, MODULES, ROOT, build_tag, check, source_of, sources


def build(out: Path = BUILD) -> None:
    import mypy.version
    from mypyc.build import mypycify
    from setuptools import setup

    os.chdir(ROOT)  # mypyc names modules by their path from the current directory
    paths = [str(source_of(m).relative_to(ROOT)) for m in MODULES]
    before = sources()
    staging = Path(tempfile.mkdtemp(prefix=".native-build-", dir=ROOT))
    try:
        setup(
            name="carescore-native",
            ext_modules=mypycify(paths, opt_level="3", target_dir=str(staging / "c")),
            script_args=[
                "-q",
                "build_ext",
                "--build-lib",
                str(staging / "lib"),
                "--build-temp",
                str(staging / "tmp"),
            ],
        )
        lib = staging / "lib"
        files = {}
        for so in lib.rglob("*.so"):
            relative = so.relative_to(lib)
            module = ".".join((*relative.parts[:-1], relative.name.split(".", 1)[0]))
            files[module] = str(relative)
        if sources() != before:
            raise RuntimeError("the engine's sources changed while they were being compiled")
        manifest = {
            "tag": build_tag(),
            "mypy": mypy.version.__version__,
            "modules": list(MODULES),
            "sources": before,
            "files": files,
        }
        (lib / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        old = staging / "old"
        if out.exists():
            out.rename(old)  # the old build aside, the new one in: never a half-written .native
        lib.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--require", action="store_true", help="fail if the engine cannot be compiled")
    parser.add_argument("--into", type=Path, help="then copy the build into this folder (a wheel's)")
    args = parser.parse_args()
    files, why = check()
    if files is not None:
        print(f"engine: {why}, up to date in {BUILD.relative_to(ROOT)}")
    else:
        print(f"engine: compiling {len(MODULES)} modules with mypyc ({why}); about 1.5 minutes")
        try:
            build()
        except Exception as exc:  # a missing compiler or header is a SystemExit/CompileError from setuptools
            return _failed(args.require, repr(exc))
        except SystemExit as exc:
            return _failed(args.require, f"setuptools exited ({exc})")
        files, why = check()
        if files is None:
            return _failed(args.require, why)
        print(f"engine: {why} in {BUILD.relative_to(ROOT)}")
    if args.into is not None:
        manifest = (BUILD / MANIFEST).read_bytes()
        shutil.rmtree(args.into, ignore_errors=True)
        shutil.copytree(BUILD, args.into)
        if (BUILD / MANIFEST).read_bytes() != manifest or (args.into / MANIFEST).read_bytes() != manifest:
            shutil.rmtree(args.into, ignore_errors=True)  # another build replaced it meanwhile: no mix
            return _failed(args.require, f"{BUILD} was rebuilt while it was copied; build again")
        print(f"engine: build copied into {args.into}")
    return 0


def _failed(required: bool, why: str) -> int:
    print(f"engine: not compiled: {why}; the engine runs as pure Python (slower)", file=sys.stderr)
    return 1 if required else 0


if __name__ == "__main__":
    sys.exit(main())
