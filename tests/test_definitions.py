"""KPI definitions fail at start with file, line and field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from engine.config import REPO_ROOT, load_settings
from engine.definitions import load_catalogue
from engine.yamlconf import ConfigError

GOOD = (REPO_ROOT / "kpi_defs" / "lab_tat_stat.yaml").read_text()


def write(tmp_path: Path, text: str, name: str = "kpi.yaml") -> Path:
    folder = tmp_path / "defs"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text)
    return folder


def problems(folder: Path) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_catalogue(folder)
    return err.value.problems


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_shipped_catalogue_is_valid() -> None:
    catalogue = load_catalogue(REPO_ROOT / "kpi_defs")
    assert {"lab_tat_stat", "bed_occupancy", "average_length_of_stay"} <= set(catalogue.kpis)


def test_unknown_field_names_file_line_and_field(tmp_path: Path) -> None:
    text = GOOD.replace("unit: min\n", "unit: min\ncolour: red\n")
    folder = write(tmp_path, text)
    (msg,) = problems(folder)
    assert msg.startswith(f"{folder / 'kpi.yaml'}:{line_of(text, 'colour')}: colour:")
    assert "Extra inputs are not permitted" in msg


def test_unknown_event_type(tmp_path: Path) -> None:
    text = GOOD.replace("event: lab.order", "event: lab.ordered")
    (msg,) = problems(write(tmp_path, text))
    assert f":{line_of(text, 'lab.ordered')}: measure.start.event:" in msg
    assert "unknown event type 'lab.ordered'" in msg


def test_unknown_event_field_in_where(tmp_path: Path) -> None:
    text = GOOD.replace("where: {priority: stat}", "where: {urgency: stat}")
    (msg,) = problems(write(tmp_path, text))
    assert "has no field 'urgency'" in msg and f":{line_of(text, 'urgency')}: measure.start.where:" in msg


def test_unknown_operator(tmp_path: Path) -> None:
    text = GOOD.replace("kind: duration", "kind: stopwatch")
    (msg,) = problems(write(tmp_path, text))
    assert f":{line_of(text, 'stopwatch')}: measure.kind:" in msg


def test_threshold_on_the_wrong_side_of_the_target(tmp_path: Path) -> None:
    text = GOOD.replace("thresholds: {warning: 60, critical: 75}", "thresholds: {warning: 30, critical: 75}")
    (msg,) = problems(write(tmp_path, text))
    assert "thresholds.warning (30) is on the wrong side of clear (55)" in msg
    assert "lower_is_better it must be above it" in msg


def test_bad_duration_and_duplicate_ids(tmp_path: Path) -> None:
    folder = write(tmp_path, GOOD.replace("size: 60m", "size: an hour"))
    (msg,) = problems(folder)
    assert "window.size" in msg and "is not a duration" in msg
    folder = write(tmp_path, GOOD, "a.yaml")
    (folder / "kpi.yaml").write_text(GOOD)
    (msg,) = problems(folder)
    assert "KPI 'lab_tat_stat' is already defined" in msg


def test_kpi_check_command(tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "carescore.cli", "kpi", "check", str(REPO_ROOT / "kpi_defs")],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    # the shipped catalogue is valid, every KPI with its standard and deviations
    assert ok.returncode == 0, ok.stderr
    assert "lab_tat_stat" in ok.stdout
    bad = write(tmp_path, GOOD.replace("direction: lower_is_better", "direction: down"))
    fail = subprocess.run(
        [sys.executable, "-m", "carescore.cli", "kpi", "check", str(bad)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert fail.returncode == 2
    assert f"{bad / 'kpi.yaml'}:{line_of(GOOD, 'direction')}: direction:" in fail.stderr


def test_kpi_check_fails_on_a_kpi_without_standard_or_deviations(tmp_path: Path) -> None:
    """A KPI must say which published definition it follows and how carescore differs from it;
    the engine still loads it (a missing citation is not a reason to stop the scorecard)."""

    def kpi(kpi_id: str, **keys: object) -> str:
        doc = {k: v for k, v in yaml.safe_load(GOOD).items() if k not in ("standard", "deviations")}
        return yaml.safe_dump({**doc, "id": kpi_id, **keys}, sort_keys=False)

    standard = {"text": "order to final result, STAT", "source": "CAP Q-Probes (example)"}
    folder = write(tmp_path, kpi("no_citation"), "a.yaml")
    write(tmp_path, kpi("no_deviations", standard=standard), "b.yaml")
    write(tmp_path, kpi("documented", standard=standard, deviations=[]), "c.yaml")
    assert len(load_catalogue(folder)) == 3

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "carescore.cli", "kpi", "check", str(folder)],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
        )

    fail = check()
    assert fail.returncode == 2
    problems = [line.strip() for line in fail.stderr.splitlines() if line.startswith("  ")]
    assert [p.split(" KPI ")[0] for p in problems] == [
        f"{folder / 'a.yaml'}:1: standard:",
        f"{folder / 'a.yaml'}:1: deviations:",
        f"{folder / 'b.yaml'}:1: deviations:",
    ]
    assert "'no_citation' has no standard" in problems[0]
    (folder / "a.yaml").unlink()
    (folder / "b.yaml").write_text(kpi("no_deviations", standard=standard, deviations=["windows are UTC"]))
    ok = check()
    assert ok.returncode == 0, ok.stderr
    assert "2 KPI definitions valid" in ok.stdout


def test_settings_errors_name_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "carescore.yaml"
    path.write_text("mllp:\n  port: 99999\ntimezone: Mars/Olympus\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    text = "\n".join(err.value.problems)
    assert f"{path}:2: mllp.port:" in text
    assert f"{path}:3: timezone:" in text and "unknown time zone" in text


def test_the_kpi_docs_match_the_catalogue() -> None:
    from engine.kpi_docs import render_markdown

    docs = (REPO_ROOT / "docs" / "kpis.md").read_text()
    assert docs == render_markdown(load_catalogue(REPO_ROOT / "kpi_defs")), "run `make docs`"
