"""The KPI history on a full disk, for real: history.sqlite on a small tmpfs that the test fills.

The data folder is on the machine's disk and its history.sqlite a link into a 48 MB tmpfs
(SQLite follows the link: the file, its WAL and its shared memory live on the tmpfs), filled
with a ballast file but for 512 KB (this import's history takes about 2 MB). `carescore
import hl7` of three weeks of STAT lab pairs then stores every message in the event log while
the history's writes find the disk full. Promises held:

- the import says so in one line and exits 1, and writes no snapshot (a snapshot past windows
  the history lacks would keep them from ever being closed again);
- with the space back, the same import run again stores nothing twice (every message already
  stored), and its start closes those windows again: the history then holds every window the
  same import stores on a healthy disk, with the same values.

Before, the import logged the failure, went on, wrote its snapshot past the windows and exited
0: those windows were missing from the history for good.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from carescore.settings import settings_from
from carescore.transports import live_engine
from engine.definitions import load_catalogue
from engine.history import History
from tests.helpers import every_window
from tests.labserver import logged, order, result, write_config
from tests.smalldisk import fill
from tests.test_backfill import command

PAIRS = 2000


def feed(path: Path, now: datetime) -> Path:
    """STAT potassium pairs every 15 minutes from 30 days ago (about 21 days), resulted after 5
    to 44 minutes (a turnaround that changes from window to window: a history row each), as
    HL7 v2 without MLLP, one message after another."""
    first = now - timedelta(days=30)
    messages = []
    for k in range(PAIRS):
        ordered = first + timedelta(minutes=15 * k)
        pair = f"H{k:05d}"
        messages += [order(pair, ordered), result(pair, ordered, ordered + timedelta(minutes=5 + 7 * k % 40))]
    path.write_text("\r".join(messages) + "\r")
    return path


def windows(config: Path, before: datetime) -> set[tuple[object, ...]]:
    """Every window the folder's history answers that ends before `before` (later ones depend
    on when the import closed them), without the time each was computed at."""
    settings = settings_from(str(config))
    engine = live_engine(settings, load_catalogue(settings.kpi_defs))
    history = History(settings.data_dir / "history.sqlite", engine.pane_clocks())
    try:
        return every_window(history, before)
    finally:
        history.close()


@pytest.mark.timeout(600)
def test_an_import_whose_history_finds_the_disk_full_exits_1_and_the_next_start_stores_every_window(
    tmp_path: Path, small_disk: Path
) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    hl7 = feed(tmp_path / "labs.hl7", now)
    for folder in ("healthy", "full"):
        (tmp_path / folder).mkdir()
    healthy, full = write_config(tmp_path / "healthy", 0, 0), write_config(tmp_path / "full", 0, 0)
    data = tmp_path / "full" / "data"
    data.mkdir(mode=0o700)
    (data / "history.sqlite").symlink_to(small_disk / "history.sqlite")

    done = command("import", "hl7", str(hl7), "--config", str(healthy))
    assert done.returncode == 0, done.stderr[-2000:]

    ballast = fill(small_disk, leave=512 * 1024)  # room to open the history, not to write it
    failed = command("import", "hl7", str(hl7), "--config", str(full))
    assert failed.returncode == 1, (failed.stdout[-1000:], failed.stderr[-2000:])
    said = re.search(r"error: the history could not store ([\d,]+) closed windows \((.*?)\)", failed.stderr)
    assert said is not None, failed.stderr[-2000:]
    assert "disk is full" in said.group(2)
    assert "Traceback" not in failed.stderr.split("error: the history")[-1]
    assert f"{2 * PAIRS:,} accepted" in failed.stdout  # every message stored in the log all the same
    assert not list(data.glob("snapshot*")), "a snapshot went past windows the history lacks"

    ballast.unlink()  # the space returns
    again = command("import", "hl7", str(hl7), "--config", str(full))
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{2 * PAIRS:,} already stored" in again.stdout, again.stdout[-1000:]
    # each message once: an order's event; a result's collection (OBR-7), receipt (OBR-14) and result
    assert logged(data) == dict.fromkeys(("lab.order", "lab.collect", "lab.receive", "lab.result"), PAIRS)

    cutoff = now - timedelta(days=8)  # a day past the last result
    expected = windows(healthy, cutoff)
    assert len(expected) > 1000
    assert windows(full, cutoff) == expected
