"""The Kafka runtime's event archive (engine/event_archive.py) without a broker: records as
the gateway's sink writes them, archived in flushes that repeat records (a crash before the
commit) and merged, read back as the very frame the embedded log gives for the same events."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from polars.testing import assert_frame_equal

from engine.event_archive import archive_files, archive_frame, compact, write_part
from engine.eventframe import log_frame
from engine.eventlog import EventLog
from engine.events import EventBase, dump_events
from tests.kafka import hospital_events


def as_records(events: list[EventBase], partition: int, per_record: int) -> list[tuple[int, int, bytes]]:
    """Runs of events as JSON arrays at consecutive offsets, as sink.py batches them."""
    runs = [events[i : i + per_record] for i in range(0, len(events), per_record)]
    return [(partition, offset, dump_events(run)) for offset, run in enumerate(runs)]


def test_the_archive_reads_back_as_the_event_log_with_copies_dropped(tmp_path: Path) -> None:
    events = hospital_events(hours=2, facilities=("DEMO",))
    assert len(events) > 150
    log = EventLog(tmp_path / "events", fsync=False)
    log.append_now(events)
    want = log_frame(log.segment_paths())

    records = as_records(events, 0, 7)
    root = tmp_path / "archive"
    third = len(records) // 3
    write_part(root, 0, records[:third])
    # a crash after writing the second flush but before its commit: read again from the same
    # offset, the records arrive in other batches (another offset range, another file name)
    write_part(root, 0, records[third : 2 * third])
    write_part(root, 0, records[third : third + 5])
    write_part(root, 0, records[third + 5 :])
    files = archive_files(root)
    hours = {f.parent for f in files}
    assert len(hours) >= 2  # two hours of events: one folder per hour of event time
    got = archive_frame(root)
    assert got.schema == want.schema
    assert len(got) == len(events)  # the 5 + third records written twice are there once
    assert_frame_equal(got, want)

    merged = [compact(folder, 2) for folder in hours]
    assert any(merged)  # an hour written by several flushes becomes one file
    assert all(len(list(folder.glob("*.parquet"))) == 1 for folder in hours)
    assert_frame_equal(archive_frame(root), want)
    assert not list(root.rglob("*.tmp"))


def test_an_empty_archive_is_an_empty_log(tmp_path: Path) -> None:
    frame = archive_frame(tmp_path / "none")
    assert len(frame) == 0 and frame.schema == log_frame([]).schema
    assert isinstance(frame, pl.DataFrame)


def test_the_archive_folder_defaults_inside_the_data_folder(tmp_path: Path) -> None:
    from engine.config import Settings, load_settings

    config = tmp_path / "conf" / "carescore.yaml"
    config.parent.mkdir()
    config.write_text("data_dir: data\n")
    assert load_settings(config).archive_path == tmp_path / "conf" / "data" / "archive"
    config.write_text("data_dir: data\nruntime: {kafka: {archive: {path: ../shared/archive}}}\n")
    assert load_settings(config).archive_path == tmp_path / "shared" / "archive"  # next to the config
    assert Settings().runtime.kafka.archive.enabled
