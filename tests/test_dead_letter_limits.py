"""Dead letters under a flood and on a full disk: batched, capped, kept for a time, never a
second fault (connectors/deadletters.py).

They hold PHI, so they must not be kept forever (retention) nor grow without bound (cap);
and a store that cannot be written must not change what the sender is told.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from connectors.deadletters import DeadLetterStore
from connectors.metrics import DEAD_LETTERS_DROPPED
from tests.smalldisk import fill


def dropped(why: str) -> float:
    return DEAD_LETTERS_DROPPED.labels(why)._value.get()


def stored_rows(path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as db:  # a second, independent reader of the real file
        return db.execute("SELECT id, reason FROM dead_letters ORDER BY id").fetchall()


def test_a_flood_never_waits_on_the_store_and_is_stored_with_ids_given_at_once(tmp_path: Path) -> None:
    """20,000 bad rows while another process holds the database locked: every add returns
    at once (the old store blocked on each insert and then raised 'database is locked'), and
    once the lock is gone the writer thread stores them all."""
    path = tmp_path / "dl.sqlite"
    store = DeadLetterStore(path)
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        ids = [store.add("feed:finance", f"row {i}: amount is not a number", b"x") for i in range(20_000)]
        assert ids == list(range(1, 20_001))  # given at add time, in order, no gaps
        assert store.count() == {"feed:finance": 20_000}
    finally:
        locker.execute("COMMIT")
        locker.close()
    deadline = time.monotonic() + 60
    while len(stored_rows(path)) < 20_000:  # the writer thread stores them by itself
        assert time.monotonic() < deadline
        time.sleep(0.05)
    store.close()
    assert DeadLetterStore(path).add("hl7v2", "AR", b"y") == 20_001  # ids go on after a restart


def test_the_cap_keeps_the_newest_and_retention_deletes_the_old(tmp_path: Path) -> None:
    path = tmp_path / "dl.sqlite"
    store = DeadLetterStore(path, max_rows=100, retention=7 * 86400)
    for i in range(1000):
        store.add("hl7v2", f"AR {i}", b"raw")
    before = dropped("cap")
    store.prune_now()
    rows = stored_rows(path)
    assert [r[0] for r in rows] == list(range(901, 1001))  # the newest 100
    assert dropped("cap") - before == 900

    with sqlite3.connect(path) as db:  # 50 of them received eight days ago
        old = (datetime.now(UTC) - timedelta(days=8)).isoformat()
        db.execute("UPDATE dead_letters SET received_time = ? WHERE id <= 950", (old,))
    before = dropped("retention")
    store.prune_now()
    assert [r[0] for r in stored_rows(path)] == list(range(951, 1001))
    assert dropped("retention") - before == 50

    with sqlite3.connect(path) as db:  # all of them past retention: the table empties
        db.execute("UPDATE dead_letters SET received_time = ?", (old,))
    store.prune_now()
    assert stored_rows(path) == []
    store.close()
    # an id is never given twice: 1001 onwards, not 1 again, though the table is empty
    assert DeadLetterStore(path).add("hl7v2", "AR", b"raw") == 1001


def test_a_full_disk_holds_letters_in_memory_and_stores_them_when_space_returns(small_disk: Path) -> None:
    path = small_disk / "dl.sqlite"
    store = DeadLetterStore(path)
    store.add("hl7v2", "AR before", b"a")
    store.flush()
    ballast = fill(small_disk, leave=0)
    big = b"z" * 200_000
    ids = [store.add("hl7v2", f"AR while full {i}", big) for i in range(20)]  # never raises
    assert not store.flush()  # the disk refuses them
    assert store.failing_since is not None
    assert store.count()["hl7v2"] == 21  # held in memory, still counted on /metrics
    ballast.unlink()
    assert store.flush()
    assert store.failing_since is None
    assert [r[0] for r in stored_rows(path)] == [1, *ids]
    store.close()
