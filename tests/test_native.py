"""The compiled engine (engine/native.py): what the suite and `carescore run` execute, the same
windows as the pure-Python source, and never an old build behind an edited source."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import engine.core
from carescore.serve import Service
from engine import native
from tests.conftest import needs_testdata

ROOT = Path(__file__).resolve().parent.parent


def needs_build() -> None:
    """Skipped on a machine that could not compile (the engine runs as pure Python there, and
    says why at start) or when told to run pure Python; under CI, where make test builds it and
    nothing turns it off, a failure."""
    if native.turned_off():
        pytest.skip(f"{native.OFF_VARIABLE} is set: this run is about the pure-Python engine")
    if native.check()[0] is None:
        reason = f"no usable engine build: {native.check()[1]}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI=true, so this is a failure, not a skip")
        pytest.skip(reason)


def test_the_suite_runs_the_compiled_engine_when_it_is_built() -> None:
    needs_build()
    assert native.active, native.reason
    assert Path(engine.core.__file__).is_relative_to(native.BUILD)
    assert Path(engine.core.__file__).suffix == ".so"


# 40,000 events of every type through every KPI, windows closed every 3,000 events and 40 days
# past the end, then the live values: every closed window and live value, in one digest.
WORKLOAD = """
import hashlib, json, sys
from bench.workload import hospital, stream
from engine import native
from engine.config import REPO_ROOT
from engine.core import Engine
from engine.definitions import load_catalogue

places = hospital()
events = stream(40_000, places, seed=5)
e = Engine(load_catalogue(REPO_ROOT / "kpi_defs"), places)
out = []
for i, ev in enumerate(events):
    e.process(ev)
    if i % 3000 == 2999:
        out.extend(e.advance(ev.received_time.timestamp()))
now = events[-1].received_time.timestamp() + 40 * 86400
out.extend(e.advance(now))
rows = sorted(repr((s.kpi, s.group, s.window.start, s.window.end, s.value, s.numerator, s.denominator,
                    s.n, s.status)) for s in e.windows(out))
rows += sorted(repr((s.kpi, s.group, s.value, s.numerator, s.denominator, s.n, s.status))
               for s in e.live(now))
print(json.dumps({"compiled": native.active, "file": sys.modules["engine.core"].__file__,
                  "rows": len(rows), "sha256": hashlib.sha256("\\n".join(rows).encode()).hexdigest()}))
"""


def run_script(script: str, pure: bool, *args: str) -> dict[str, object]:
    """A script's last line of JSON, run compiled or (pure) as Python in a fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if k != native.OFF_VARIABLE}
    if pure:
        env[native.OFF_VARIABLE] = "1"
    done = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def test_compiled_and_pure_python_engines_give_the_same_windows_and_live_values() -> None:
    needs_build()
    compiled, pure = run_script(WORKLOAD, False), run_script(WORKLOAD, True)
    assert compiled["compiled"] is True and str(compiled["file"]).endswith(".so")
    assert pure["compiled"] is False and str(pure["file"]).endswith("engine/core.py")
    assert int(str(compiled["rows"])) > 10_000  # windows of every kind closed, not an empty run
    assert compiled["rows"] == pure["rows"]
    assert compiled["sha256"] == pure["sha256"]


# Every field of every corpus message and of hostile texts read every way the mapping reads
# them (first, get, components, repetitions, DTM; segments by name, after another, batches),
# and every message mapped to its events or its error (the interpreted mapping calling the
# compiled parser), compiled and as Python: one digest each.
PARSING = """
import hashlib, json, sys
from pathlib import Path
from engine import native
from connectors.hl7v2.dtm import parse_dtm
from connectors.hl7v2.mapping import MapContext, MappingError, map_message
from connectors.hl7v2.parser import HL7ParseError, is_batch, parse, split_batch
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

zone = ZoneInfo("America/New_York")
texts = [p.read_bytes().decode("utf-8", "surrogateescape").replace("\\r\\n", "\\r").replace("\\n", "\\r")
         for p in sorted(Path(sys.argv[1]).rglob("*.hl7"))]
texts += [
    "MSH|^~\\\\&|A|B|C|D|20240102030405||ADT^A01|1|P|2.5\\rPID|||\\\\F\\\\X\\\\T\\\\^x~y&z||",
    "MSH|^~\\\\&|A\\rPV1||I|W1^101^A^F&sub~W2|||||||||||||||V1\\x00\\u00e9",
    "MSH#$%@*#A#B\\rOBR#1#O1$r1%s1##20240229#20240230#2024022912+0530#1999#x",
    "MSH|^~\\\\&", "MSH|", "PID|1", "", "MSH|^~\\\\&|" + "|" * 300 + "\\r" + "ZZZ|" * 50,
]
rows = []
for text in texts:
    rows.append(repr((is_batch(text), split_batch(text) if is_batch(text) else None)))
    try:
        msg = parse(text)
    except HL7ParseError as exc:
        rows.append(repr(("error", exc.reason, exc.segment, exc.field)))
        continue
    rows.append(repr((msg.message_type, msg.trigger, msg.control_id, msg.version, msg.sending_facility)))
    for name in sorted({seg.name for seg in msg.segments}):
        after = msg.after(msg.segments[0], name, stop=("OBR",))
        rows.append(repr((name, msg.first(name), len(msg.all(name)), after)))
    try:
        context = MapContext(received=datetime(2026, 1, 1, tzinfo=UTC))
        mapped = map_message(msg, context, unused_triggers="accept")
        rows.append(repr([sorted(e.model_dump(mode="json").items()) for e in mapped]))
    except MappingError as exc:
        rows.append(repr(("mapping", exc.reason, exc.ack, exc.code, exc.segment, exc.field, exc.component)))
    for seg in msg.segments:
        for n in range(len(seg.fields) + 2):
            values = (seg.first(n), seg.get(n, 2), seg.get(n, 1, 2), seg.get(n, rep=1), seg.raw(n),
                      seg.get(n, unescaped=False), seg.components(n, 4), seg.repetitions(n))
            try:
                when = parse_dtm(seg.first(n), zone).isoformat() if seg.first(n) else None
            except ValueError as exc:
                when = str(exc)
            rows.append(repr((seg.name, n, values, when)))
print(json.dumps({"compiled": native.active, "file": sys.modules["connectors.hl7v2.parser"].__file__,
                  "rows": len(rows), "sha256": hashlib.sha256("\\n".join(rows).encode()).hexdigest()}))
"""


def test_compiled_and_pure_python_hl7_parsers_read_every_field_the_same() -> None:
    needs_build()
    corpus = needs_testdata("hl7v2")
    compiled, pure = run_script(PARSING, False, str(corpus)), run_script(PARSING, True, str(corpus))
    assert compiled["compiled"] is True and str(compiled["file"]).endswith(".so")
    assert pure["compiled"] is False and str(pure["file"]).endswith("connectors/hl7v2/parser.py")
    assert int(str(compiled["rows"])) > 50_000  # 271 corpus messages' fields, not an empty run
    assert compiled["rows"] == pure["rows"]
    assert compiled["sha256"] == pure["sha256"]


def copy_sources(to: Path) -> None:
    shutil.copytree(ROOT / "engine", to / "engine", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(ROOT / "pyproject.toml", to / "pyproject.toml")
    for module in native.MODULES:  # the compiled modules outside engine/ (the HL7 v2 parser)
        source = native.source_of(module)
        if not source.is_relative_to(ROOT / "engine"):
            (to / source.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, to / source.relative_to(ROOT))


@pytest.mark.parametrize(
    "edited",
    [
        "engine/operators/duration.py",  # compiled
        "connectors/hl7v2/parser.py",  # compiled, outside engine/
        "engine/samples.py",  # not compiled, but the compiled modules check its types
        "pyproject.toml",  # the mypy settings the build was checked with
    ],
)
def test_an_edited_source_is_never_shadowed_by_its_old_build(tmp_path: Path, edited: str) -> None:
    needs_build()
    copy_sources(tmp_path)
    files, _ = native.check(root=tmp_path)
    assert files is not None and set(native.MODULES) <= set(files)

    path = tmp_path / edited
    if edited == "pyproject.toml":
        path.write_text(path.read_text().replace("[tool.mypy]", "[tool.mypy]\nstrict_optional = false", 1))
        expected = "pyproject.toml [tool.mypy] changed since the build"
    else:
        path.write_text(path.read_text() + "\n# edited after the build\n")
        expected = f"{edited} changed since the build"
    files, reason = native.check(root=tmp_path)
    assert files is None
    assert reason == expected


def test_a_new_engine_module_also_makes_the_build_stale(tmp_path: Path) -> None:
    needs_build()
    copy_sources(tmp_path)
    (tmp_path / "engine" / "newcomer.py").write_text("X = 1\n")
    files, reason = native.check(root=tmp_path)
    assert files is None and reason == "engine/newcomer.py changed since the build"


def test_a_build_for_another_interpreter_or_module_list_is_not_used(tmp_path: Path) -> None:
    needs_build()
    manifest = json.loads((native.BUILD / native.MANIFEST).read_text())
    build = tmp_path / "build"
    build.mkdir()

    (build / native.MANIFEST).write_text(json.dumps({**manifest, "tag": "cpython-310 .cpython-310.so"}))
    files, reason = native.check(build=build)
    assert files is None and reason.startswith("built for 'cpython-310")

    fewer = manifest["modules"][1:]
    (build / native.MANIFEST).write_text(json.dumps({**manifest, "modules": fewer}))
    files, reason = native.check(build=build)
    assert files is None and reason == "built from another list of modules"

    (build / native.MANIFEST).write_text(json.dumps(manifest))  # right manifest, no files beside it
    files, reason = native.check(build=build)
    assert files is None and reason.startswith("build incomplete")

    (build / native.MANIFEST).write_text("[1, 2]")  # JSON, but not a manifest: never an import error
    files, reason = native.check(build=build)
    assert files is None and "unusable" in reason


PRINT_WHICH = "import engine.core, engine.native as n; print(n.active, engine.core.__file__)"


def test_carescore_pure_python_turns_the_build_off() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PRINT_WHICH],
        cwd=ROOT,
        env={**os.environ, native.OFF_VARIABLE: "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    active, file = done.stdout.split()
    assert active == "False" and file.endswith("engine/core.py")


async def test_the_start_banner_says_which_engine_runs(service: Service) -> None:
    """One line, no repetition: `engine      compiled by mypyc 2.4.1, 26 modules`, or pure
    Python with the reason."""
    (line,) = [x.strip() for x in service.banner().splitlines() if x.strip().startswith("engine ")]
    if native.active:
        assert line == f"engine      compiled by mypyc {native.reason.split('mypyc ')[1]}"
        assert line.count("compiled") == 1 and f"{len(native.MODULES)} modules" in line
    else:
        assert line == f"engine      pure Python ({native.reason})"
