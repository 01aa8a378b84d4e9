"""A restart knows exactly what was stored: a snapshot the messages whose events it holds, the
log the import batches after it.

The embedded runtime forks its snapshot from a tick, and a tick can run between a commit of
the event log (the engine has the events, the snapshot's position is past them) and the
callbacks that tell the appenders their messages are stored. If the process is SIGKILLed
before the next snapshot, the restart replays the log only after that position: a message
whose key the snapshot lacks is stored a second time when its sender, which never got the
ACK, sends it again.

The test takes the snapshot at exactly that moment (synchronously, as the forked child sees
the state), abandons the runtime as a kill would (nothing flushed or closed), starts a new
one on the same folder and resends: a duplicate, and the log holds the message once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from carescore.transports.embedded import EmbeddedRuntime
from connectors.pipeline import batch_key
from engine.bus import Published, StorageUnavailable
from engine.config import Settings
from engine.eventlog import BATCH_LINE_END, Position
from engine.events import EventBase, dump_event
from tests.helpers import enc, every_window, lab
from tests.labserver import logged


def message(key: str) -> list[EventBase]:
    """An order and its result as an HL7 message maps them: source ids `<message key>#n`."""
    events = [lab("lab.order", 0, "SNAP1"), lab("lab.result", 9, "SNAP1")]
    return [e.model_copy(update={"source_id": f"{key}#{n}"}) for n, e in enumerate(events)]


async def test_a_snapshot_between_a_commit_and_its_acks_knows_the_messages(
    settings_for: Callable[..., Settings],
) -> None:
    settings = settings_for()
    first = EmbeddedRuntime(settings)
    committed = first.log.on_commit
    assert committed is not None

    def commit_then_snapshot(events: list[EventBase], position: Position) -> None:
        committed(events, position)
        first.write_snapshot()  # a tick's fork before the appenders' callbacks have run

    first.log.on_commit = commit_then_snapshot
    key = "LIS|R0001|0123456789abcdef0123"
    assert await asyncio.wait_for(first.publish_nowait(key, message(key)), 30) is Published.accepted
    # killed: nothing closed or flushed, only the folder's lock given up as the kernel would
    first._lock.close()

    second = EmbeddedRuntime(settings)
    try:
        again = await asyncio.wait_for(second.publish_nowait(key, message(key)), 30)
        assert again is Published.duplicate
        assert second.engine.events_processed == 2
    finally:
        await second.close()
    assert logged(settings.data_dir) == {"lab.order": 1, "lab.result": 1}


def test_an_import_cut_off_before_its_snapshot_and_run_again_stores_each_batch_once(
    settings_for: Callable[..., Settings],
) -> None:
    """`carescore import` stores a file in batches (one append each, under the batch's key) and
    snapshots at its end. Killed before that and run again, its batches already in the log are
    duplicates: the restart rebuilds their keys from the log (before, only the events' message
    keys came back, and every batch since the last snapshot was stored a second time)."""
    settings = settings_for()
    batches = [[lab("lab.order", 0, f"IMP{n}"), lab("lab.result", 9, f"IMP{n}")] for n in range(3)]
    first = EmbeddedRuntime(settings)
    for batch in batches:
        assert first.ingest_now(batch_key(batch), batch) is Published.accepted
    first._lock.close()  # killed: no snapshot, nothing closed

    again = EmbeddedRuntime(settings)
    try:
        assert [again.ingest_now(batch_key(b), b) for b in batches] == [Published.duplicate] * 3
    finally:
        asyncio.run(again.close())
    assert logged(settings.data_dir) == {"lab.order": 3, "lab.result": 3}


async def test_a_restart_rebuilds_import_keys_from_import_batches_only(
    settings_for: Callable[..., Settings],
) -> None:
    """Import batch keys are kept whole (a snapshot holds all of them, never trimmed), so only an
    import batch's append may bring one back on replay. Before, every live message replayed
    became one: a restart after a kill, or a full replay after a KPI change, grew that set by
    every message in the log, and every snapshot after it carried them all."""
    settings = settings_for()
    first = EmbeddedRuntime(settings)
    keys = [f"LIS|R{n:04d}|0123456789abcdef0123" for n in range(5)]
    for key in keys:
        assert await asyncio.wait_for(first.publish_nowait(key, message(key)), 30) is Published.accepted
    batch = [lab("lab.order", 0, "IMPX"), lab("lab.result", 9, "IMPX")]
    assert first.ingest_now(batch_key(batch), batch) is Published.accepted
    first._lock.close()  # killed: no snapshot, nothing closed

    second = EmbeddedRuntime(settings)
    try:
        assert second.imported == {batch_key(batch)}
        assert [await second.publish_nowait(k, message(k)) for k in keys] == [Published.duplicate] * 5
        assert second.ingest_now(batch_key(batch), batch) is Published.duplicate
    finally:
        await second.close()

    third = EmbeddedRuntime(settings)  # from the snapshot the close wrote
    try:
        assert third.imported == {batch_key(batch)}
    finally:
        await third.close()
    assert logged(settings.data_dir) == {"lab.order": 6, "lab.result": 6}


def test_an_import_batch_an_earlier_version_wrote_is_still_a_duplicate_after_a_restart(
    settings_for: Callable[..., Settings],
) -> None:
    """Before import batches ended with their own mark, a batch's append ended as a message's
    does: a replayed append of several messages' events still gives its key back (as a recent
    key, as then)."""
    settings = settings_for()
    batch = [lab("lab.order", 0, "OLD1"), lab("lab.result", 9, "OLD2")]
    first = EmbeddedRuntime(settings)
    first.log.append_now(batch)  # the append as an earlier version's import wrote it
    first._lock.close()

    again = EmbeddedRuntime(settings)
    try:
        assert again.imported == set()
        assert again.ingest_now(batch_key(batch), batch) is Published.duplicate
    finally:
        asyncio.run(again.close())
    assert logged(settings.data_dir) == {"lab.order": 1, "lab.result": 1}


def segment(settings: Settings) -> Path:
    return settings.data_dir / "events" / "events-00000000.ndjson"


CUT_BATCH = {  # where a kill inside write() cut the batch's append of four lines (rows)
    "after its second line": lambda lines: len(lines[0]) + len(lines[1]) + 2,
    "after its third line": lambda lines: sum(len(x) + 1 for x in lines[:3]),
    "inside its third line": lambda lines: len(lines[0]) + len(lines[1]) + 2 + len(lines[2]) // 2,
    "before its last newline": lambda lines: sum(len(x) + 1 for x in lines) - 1,
}


@pytest.mark.parametrize("mark", ["marked", "mark lost"])
@pytest.mark.parametrize("cut", CUT_BATCH)
def test_an_import_batch_cut_short_by_a_kill_is_stored_once_when_imported_again(
    cut: str, mark: str, tmp_path: Path, settings_for: Callable[..., Settings]
) -> None:
    """An import killed inside write() leaves its batch's append cut anywhere, after whole
    lines too. Those are events of several rows (messages), as the lines of an earlier
    version that ran here after this one look, and were kept as such: the batch's key was not
    in the log, so importing again stored the kept lines a second time. The batch was never
    reported stored; the start cuts it back, also in a folder whose format mark is lost (a disk
    too full to write it: then every whole line is taken for an earlier version's), importing
    again stores it whole, and the log holds each event once: the stored batch's two, the cut
    batch's four."""
    settings = settings_for()
    stored = [lab("lab.order", 0, "IMPA"), lab("lab.result", 9, "IMPA")]
    batch = [lab("lab.order", 0, f"IMP{n}") for n in range(3)] + [lab("lab.result", 9, "IMP0")]
    scratch = settings_for(data_dir=tmp_path / "scratch")  # the writer's own bytes for the batch
    writer = EmbeddedRuntime(scratch)
    assert writer.ingest_now(batch_key(batch), batch) is Published.accepted
    asyncio.run(writer.close())
    written = segment(scratch).read_bytes()
    lines = written.rstrip(b"\n").split(b"\n")
    assert len(lines) == 4

    first = EmbeddedRuntime(settings)
    assert first.ingest_now(batch_key(stored), stored) is Published.accepted
    first._lock.close()  # killed inside the next batch's write:
    with open(segment(settings), "ab") as fh:
        fh.write(written[: CUT_BATCH[cut](lines)])
    if mark == "mark lost":
        (settings.data_dir / "events" / "format").unlink()

    again = EmbeddedRuntime(settings)
    try:
        assert again.engine.events_processed == 2
        assert again.ingest_now(batch_key(batch), batch) is Published.accepted
        assert again.ingest_now(batch_key(stored), stored) is Published.duplicate
    finally:
        asyncio.run(again.close())
    assert logged(settings.data_dir) == {"lab.order": 4, "lab.result": 2}


DAMAGE = {  # what a disk fault leaves of a line: its bytes unreadable, its ending kept or not
    "ending kept": lambda line: b"#" * (len(line) - 2) + line[-2:],
    "ending lost": lambda line: b"#" * len(line),
}


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("where", ["A's last and C's middle line", "B's first line"])
def test_an_unreadable_line_ending_an_import_batch_leaves_the_next_batch_its_key(
    damage: str, where: str, settings_for: Callable[..., Settings]
) -> None:
    """A disk fault in an import batch's line: the line is quarantined and replay goes on.
    A batch's key is its first and last event, so a batch whose first or last line cannot be
    read gets none back (importing it again stores it again, which a log cut off by a fault
    needs), a batch with an unreadable middle line gets its own. Before, the batch after one
    with an unreadable last line got a key made of that one's first event and its own last:
    neither the same batch nor the next was a duplicate when imported again. A line whose
    ending is lost too may have been the last of its batch or not: both readings give a key
    (a wrong one matches no batch: a later event of a batch to its last, or across two)."""
    settings = settings_for()
    batches = [[lab("lab.order", 0, f"Q{b}{n}") for n in range(3)] for b in "ABC"]
    (a0, _, a2), (b0, b1, b2), (c0, _, c2) = batches
    first = EmbeddedRuntime(settings)
    for batch in batches:
        assert first.ingest_now(batch_key(batch), batch) is Published.accepted
    first._lock.close()  # killed: no snapshot
    lines = segment(settings).read_bytes().split(b"\n")
    for damaged in (2, 7) if where.startswith("A") else (3,):  # lines 0-2 are A's, 3-5 B's, 6-8 C's
        lines[damaged] = DAMAGE[damage](lines[damaged])
    segment(settings).write_bytes(b"\n".join(lines))

    def key(*events: EventBase) -> str:
        return batch_key(list(events))

    expected = {  # worked out line by line from how each line ends (EmbeddedRuntime._firsts)
        ("A's last and C's middle line", "ending kept"): {key(b0, b2), key(c0, c2)},
        ("A's last and C's middle line", "ending lost"): {key(a0, b2), key(b0, b2), key(c0, c2), key(c2)},
        ("B's first line", "ending kept"): {key(a0, a2), key(c0, c2)},
        ("B's first line", "ending lost"): {key(a0, a2), key(b1, b2), key(c0, c2)},
    }[where, damage]
    again = EmbeddedRuntime(settings)
    try:
        assert again.log.corrupt_lines == (2 if where.startswith("A") else 1)
        assert again.imported == expected
        readable = [batch for batch in batches if batch_key(batch) in expected]
        assert [again.ingest_now(batch_key(b), b) for b in readable] == [Published.duplicate] * len(readable)
    finally:
        asyncio.run(again.close())


def test_an_import_batch_after_an_earlier_versions_lines_gets_its_own_key(
    settings_for: Callable[..., Settings],
) -> None:
    """Lines an earlier version wrote end with a plain newline and end no append: replayed
    before an import batch (no snapshot since), the batch's first event is its own, not the
    first of those lines (before, the batch was stored again when imported again)."""
    settings = settings_for()
    old = [lab("lab.order", 0, "OLD3"), lab("lab.result", 9, "OLD3")]
    segment(settings).parent.mkdir(parents=True)
    segment(settings).write_bytes(b"".join(dump_event(e) + b"\n" for e in old))
    batch = [lab("lab.order", 0, "NEW1"), lab("lab.order", 0, "NEW2")]
    first = EmbeddedRuntime(settings)
    assert first.engine.events_processed == 2
    assert first.ingest_now(batch_key(batch), batch) is Published.accepted
    first._lock.close()  # killed: no snapshot

    again = EmbeddedRuntime(settings)
    try:
        assert again.imported == {batch_key(batch)}
        assert again.ingest_now(batch_key(batch), batch) is Published.duplicate
    finally:
        asyncio.run(again.close())
    assert logged(settings.data_dir) == {"lab.order": 3, "lab.result": 1}


async def test_a_folder_the_start_could_not_mark_is_marked_before_its_first_append(
    settings_for: Callable[..., Settings],
) -> None:
    """A folder an earlier version wrote (plain newlines, no format file) where the start
    cannot write the format file (here a folder in the way of its temporary file: a real
    OSError, as a full disk gives): the start goes on, but an append is refused until the
    file is written (the sender is told it is not stored). Before, appends went on unmarked,
    and a message a kill cut short was kept whole at the next start as an earlier version's
    lines: the resend was answered "duplicate" and the rest of the message was lost."""
    settings = settings_for()
    old = [lab("lab.order", 0, "OLD4")]
    segment(settings).parent.mkdir(parents=True)
    segment(settings).write_bytes(b"".join(dump_event(e) + b"\n" for e in old))
    blocker = settings.data_dir / "events" / "format.tmp"
    blocker.mkdir()
    runtime = EmbeddedRuntime(settings)
    try:
        assert runtime.engine.events_processed == 1
        with pytest.raises(StorageUnavailable):
            await asyncio.wait_for(runtime.publish_nowait("LIS|M1|x", message("LIS|M1|x")), 30)
        blocker.rmdir()
        assert await asyncio.wait_for(runtime.publish_nowait("LIS|M1|x", message("LIS|M1|x")), 30) is (
            Published.accepted
        )
        written = segment(settings).read_bytes()
    finally:
        await runtime.close()
    kept = written.index(b" \n") + 2
    cut = written[:kept] + dump_event(message("LIS|M2|x")[0]) + b"\n"  # killed after M2's first line
    segment(settings).write_bytes(cut)  # (the snapshot the close wrote is at M1's end)
    again = EmbeddedRuntime(settings)
    try:
        assert again.engine.events_processed == 3  # the old line and M1's two, not M2's first
        assert await asyncio.wait_for(again.publish_nowait("LIS|M2|x", message("LIS|M2|x")), 30) is (
            Published.accepted
        )
    finally:
        await again.close()
    assert logged(settings.data_dir) == {"lab.order": 3, "lab.result": 2}


def test_a_snapshot_past_the_end_of_the_log_is_not_trusted(settings_for: Callable[..., Settings]) -> None:
    """A log restored from a backup older than the snapshot (or cut back by a repair the
    snapshot's build did not make): the snapshot says batch X is stored, the log ends before
    it. Trusted, the restart counted X's events and answered "duplicate" to X imported again,
    and X was lost; now the whole log is replayed and X is stored."""
    settings = settings_for()
    w = [lab("lab.order", 0, "BKW1"), lab("lab.order", 0, "BKW2")]
    x = [lab("lab.order", 0, "BKX1"), lab("lab.order", 0, "BKX2"), lab("lab.order", 0, "BKX3")]
    first = EmbeddedRuntime(settings)
    assert first.ingest_now(batch_key(w), w) is Published.accepted
    backup = segment(settings).read_bytes()
    assert first.ingest_now(batch_key(x), x) is Published.accepted
    asyncio.run(first.close())  # the snapshot: after X
    segment(settings).write_bytes(backup)  # the log as the backup had it

    again = EmbeddedRuntime(settings)
    try:
        assert again.engine.events_processed == 2
        assert again.imported == {batch_key(w)}
        assert again.ingest_now(batch_key(x), x) is Published.accepted
    finally:
        asyncio.run(again.close())
    assert logged(settings.data_dir) == {"lab.order": 5}


def test_a_snapshot_over_an_earlier_segment_of_another_size_is_not_trusted(
    settings_for: Callable[..., Settings],
) -> None:
    """Segment 0 restored from a backup older than the snapshot, segment 1 (where the snapshot
    points) still whole: the snapshot's position is a line start of the log there is, so it
    looked like its own. Trusted, the restart counted batch X (gone from segment 0) and
    answered "duplicate" to X imported again, and X was lost; now the snapshot keeps the sizes
    of the segments before its own, they differ, and the whole log is replayed."""
    settings = settings_for()
    w = [lab("lab.order", 0, "SGW1"), lab("lab.order", 0, "SGW2")]
    x = [lab("lab.order", 0, "SGX1"), lab("lab.order", 0, "SGX2"), lab("lab.order", 0, "SGX3")]
    y = [lab("lab.order", 0, "SGY1"), lab("lab.order", 0, "SGY2")]
    first = EmbeddedRuntime(settings)
    assert first.ingest_now(batch_key(w), w) is Published.accepted
    backup = segment(settings).read_bytes()
    assert first.ingest_now(batch_key(x), x) is Published.accepted
    first.log.segment_bytes = 1  # the next append starts segment 1
    assert first.ingest_now(batch_key(y), y) is Published.accepted
    asyncio.run(first.close())  # the snapshot: after Y, in segment 1
    assert (segment(settings).parent / "events-00000001.ndjson").exists()
    segment(settings).write_bytes(backup)  # segment 0 as the backup had it: without X

    again = EmbeddedRuntime(settings)
    try:
        assert again.engine.events_processed == 4  # W and Y, replayed
        assert again.ingest_now(batch_key(x), x) is Published.accepted
        assert again.ingest_now(batch_key(y), y) is Published.duplicate
    finally:
        asyncio.run(again.close())
    assert logged(settings.data_dir) == {"lab.order": 7}


@pytest.mark.parametrize("where", ["in the same segment", "at the start of the next segment"])
def test_a_batch_of_the_version_before_after_the_oldest_versions_lines_keeps_its_key(
    where: str, settings_for: Callable[..., Settings]
) -> None:
    """The oldest versions ended no line specially; the version before this one ended each
    append, an import batch too, with MESSAGE_END, and marked the folder where it began (at
    offset 0 of a segment when it started on an empty one). Its batch right after the oldest
    lines gets its own key back: replay knows the oldest lines end at the mark (before, the
    batch's first event was the first of those lines, and the batch was stored again when
    imported again)."""
    settings = settings_for()
    oldest = [lab("lab.order", 0, "OLD5"), lab("lab.result", 9, "OLD5")]
    batch = [lab("lab.order", 0, "MID1"), lab("lab.order", 0, "MID2")]
    plain = b"".join(dump_event(e) + b"\n" for e in oldest)
    marked = b"\n".join(dump_event(e) for e in batch) + b" \n"
    events = settings.data_dir / "events"
    events.mkdir(parents=True)
    if where == "in the same segment":
        segment(settings).write_bytes(plain + marked)
        mark = [0, len(plain)]
    else:
        segment(settings).write_bytes(plain)
        (events / "events-00000001.ndjson").write_bytes(marked)
        mark = [1, 0]
    (events / "format").write_text(f'{{"marked_from": {mark}}}\n')

    again = EmbeddedRuntime(settings)
    try:
        assert again.engine.events_processed == 4
        assert again.ingest_now(batch_key(batch), batch) is Published.duplicate
    finally:
        asyncio.run(again.close())
    assert logged(settings.data_dir) == {"lab.order": 3, "lab.result": 1}


def test_a_format_mark_past_the_end_of_the_log_is_marked_again(settings_for: Callable[..., Settings]) -> None:
    """A folder restored from an older backup with the newer format file left: the mark points
    past the end of the log. Kept, later appends passed it, and a replay took the mark for the
    end of an earlier version's lines in the middle of a batch: the batch's key was lost and
    it was stored again when imported again. The start marks the folder again at its end."""
    settings = settings_for()
    a = [lab("lab.order", 0, "STA1"), lab("lab.order", 0, "STA2")]
    b = [lab("lab.order", 0, "STB1"), lab("lab.order", 0, "STB2"), lab("lab.order", 0, "STB3")]
    first = EmbeddedRuntime(settings)
    assert first.ingest_now(batch_key(a), a) is Published.accepted
    asyncio.run(first.close())
    end = segment(settings).stat().st_size
    # the mark a longer log had: where batch B's first line will end
    past = end + len(dump_event(b[0]) + BATCH_LINE_END)
    (settings.data_dir / "events" / "format").write_text(f'{{"marked_from": [0, {past}]}}\n')

    second = EmbeddedRuntime(settings)
    assert second.log.marked_from.offset <= end
    assert second.ingest_now(batch_key(b), b) is Published.accepted
    second._lock.close()  # killed: no snapshot after B

    again = EmbeddedRuntime(settings)
    try:
        assert again.ingest_now(batch_key(b), b) is Published.duplicate
    finally:
        asyncio.run(again.close())
    assert logged(settings.data_dir) == {"lab.order": 5}


async def test_an_earlier_versions_message_under_a_mark_past_the_log_is_kept_whole(
    settings_for: Callable[..., Settings],
) -> None:
    """The oldest version's log (plain newlines) restored with a newer format file that points
    past it: its last message, two whole lines, was acknowledged and stays (taken for a
    marked log, the start cut it as a message cut short)."""
    settings = settings_for()
    key = "LIS|R0042|0123456789abcdef0123"
    old = b"".join(dump_event(e) + b"\n" for e in message(key))
    segment(settings).parent.mkdir(parents=True)
    segment(settings).write_bytes(old)
    (settings.data_dir / "events" / "format").write_text('{"marked_from": [0, 1000000]}\n')
    runtime = EmbeddedRuntime(settings)
    try:
        assert runtime.engine.events_processed == 2
        assert await asyncio.wait_for(runtime.publish_nowait(key, message(key)), 30) is Published.duplicate
    finally:
        await runtime.close()
    assert segment(settings).read_bytes() == old


def test_an_import_whose_history_fills_stores_every_batch_once_and_the_next_start_every_window(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    """An import closes windows as it goes: a batch is durable in the log, then the windows
    it closed go to the history. When that write fails (SQLite's own "database or disk is
    full": the history held to the pages it has), the batch is stored and keeps its key, the
    import goes on (the history keeps the windows for its next write, which fails too while
    the disk is full), and the stop writes no snapshot, so the next start, the disk fixed,
    closes those windows again and stores them. Its history is then the history of the same
    batches on a healthy disk. Before, the import stopped at the failure (and earlier still, a
    stop's snapshot went past windows the history never stored: gone for good)."""
    stays = 40

    def stay(n: int) -> list[EventBase]:  # each three days after the last
        return [
            enc("encounter.admit", n * 3 * 24 * 60, f"HF{n}"),
            enc("encounter.discharge", n * 3 * 24 * 60 + 600, f"HF{n}"),
        ]

    def importer(settings: Settings) -> EmbeddedRuntime:
        runtime = EmbeddedRuntime(settings)
        runtime.close_every = 2  # close windows after every stay (an import: every 2,000 events)
        return runtime

    healthy = importer(settings_for(data_dir=tmp_path / "healthy"))
    full_settings = settings_for(data_dir=tmp_path / "full")
    full = importer(full_settings)
    batches = [stay(n) for n in range(stays)]
    clock = batches[-1][-1].event_time.timestamp() + 3600  # an hour after the last discharge
    for n, batch in enumerate(batches):
        for runtime in (healthy, full):
            runtime.clock = lambda b=batch: b[-1].event_time.timestamp() + 3600
            assert runtime.ingest_now(batch_key(batch), batch) is Published.accepted
        if n == 1:  # the first two stays' windows stored; from here on the file cannot grow
            db = full.history._file.db
            assert db.execute("SELECT count(*) FROM runs").fetchone()[0] > 0
            db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")
    assert full.history.write_errors > 0 and full.history.held > 0, "the history never filled"
    assert full.ingest_now(batch_key(batches[-1]), batches[-1]) is Published.duplicate
    for runtime in (healthy, full):  # as `run`'s first tick after an import does
        runtime.clock = lambda: clock
        runtime.close_windows(clock)
        asyncio.run(runtime.close())
    assert healthy.snapshot_path.exists() and not full.snapshot_path.exists()
    assert logged(full_settings.data_dir) == {"encounter.admit": stays, "encounter.discharge": stays}

    again = EmbeddedRuntime(full_settings)  # the disk has room again (max_page_count was the connection's)
    again.clock = lambda: clock
    for batch in batches:  # every batch is known: an import run again stores none
        assert again.ingest_now(batch_key(batch), batch) is Published.duplicate
    again.close_windows(clock)
    reference = EmbeddedRuntime(healthy.settings)
    try:
        assert every_window(again.history) == every_window(reference.history) != set()
    finally:
        asyncio.run(again.close())
        reference._lock.close()
