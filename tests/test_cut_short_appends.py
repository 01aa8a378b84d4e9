"""A message is in the event log whole or not at all, wherever a kill cuts the log.

A process SIGKILLed inside write() leaves the segment cut short at a page boundary, anywhere
in the append being written (the kernel copies page by page and stops at a fatal signal).
A STAT lab result message is three events (specimen collected, received, resulted), three
lines. Cut after its first or second line, the log kept part of the message; the restart
replayed that part and counted the message as stored, so the sender's resend (it never got
its ACK) was answered "duplicate" and the result was lost: the pair was never counted. The
crash proof (tests/test_crash_proof.py, 24 SIGKILLs) lost one pair that way in CI.

Each case here writes, after a cleanly stored order, a prefix of the bytes the log writer
itself wrote for the result (taken from a runtime of its own), starts the runtime on that
folder as after the kill, and resends the result as the sender would. Expected from the
guarantee (README "Guarantees": an AA'd message is counted once): the resend is stored, the
log holds each of the four events once, and the order/result pair is one observation of
lab_tat_stat.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from carescore.transports.embedded import EmbeddedRuntime
from connectors.hl7v2.base import MapContext, message_key
from connectors.hl7v2.mapping import map_message
from connectors.hl7v2.parser import parse
from engine.bus import Published
from engine.config import Settings
from engine.events import EventBase, dump_event
from tests.labserver import logged, order, result

ORDERED = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)


def mapped(settings: Settings, text: str) -> tuple[str, list[EventBase]]:
    """The message key and events, as the MLLP receiver maps them."""
    msg = parse(text)
    return message_key(msg), map_message(msg, MapContext(settings.places).at(datetime.now(UTC)))


async def store(runtime: EmbeddedRuntime, message: tuple[str, list[EventBase]]) -> Published:
    return await asyncio.wait_for(runtime.publish_nowait(*message), 30)


def segment(data: Path) -> Path:
    return data / "events" / "events-00000000.ndjson"


def facility_n(runtime: EmbeddedRuntime) -> int:
    for sample in runtime.engine.live(time.time()):
        if sample.kpi == "lab_tat_stat" and sample.group.unit is None and sample.group.department is None:
            return sample.n
    return 0


CUTS = {
    "inside its first line": lambda lines: len(lines[0]) // 2,
    "after its first line": lambda lines: len(lines[0]) + 1,
    "inside its second line": lambda lines: len(lines[0]) + 1 + len(lines[1]) // 2,
    "after its second line": lambda lines: len(lines[0]) + len(lines[1]) + 2,
    "before its last newline": lambda lines: sum(len(x) + 1 for x in lines) - 1,
}


@pytest.mark.parametrize("cut", CUTS)
async def test_a_message_cut_short_by_a_kill_is_stored_whole_when_resent(
    cut: str, tmp_path: Path, settings_for: Callable[..., Settings]
) -> None:
    settings = settings_for()
    the_order = mapped(settings, order("00001", ORDERED))
    the_result = mapped(settings, result("00001", ORDERED, ORDERED + timedelta(minutes=12)))
    assert [e.type for e in the_result[1]] == ["lab.collect", "lab.receive", "lab.result"]

    scratch = settings_for(data_dir=tmp_path / "scratch")  # the writer's own bytes for the result
    writer = EmbeddedRuntime(scratch)
    try:
        assert await store(writer, the_result) is Published.accepted
    finally:
        await writer.close()
    written = segment(scratch.data_dir).read_bytes()
    lines = written.rstrip(b"\n").split(b"\n")
    assert len(lines) == 3

    first = EmbeddedRuntime(settings)
    try:
        assert await store(first, the_order) is Published.accepted
    finally:
        await first.close()
    with open(segment(settings.data_dir), "ab") as fh:  # what the kill inside write() left
        fh.write(written[: CUTS[cut](lines)])

    second = EmbeddedRuntime(settings)
    try:
        assert await store(second, the_result) is Published.accepted  # not "duplicate"
        assert facility_n(second) == 1  # the pair: one observation
    finally:
        await second.close()
    stored = logged(settings.data_dir)
    assert stored == {"lab.order": 1, "lab.collect": 1, "lab.receive": 1, "lab.result": 1}, stored


async def test_a_log_from_before_messages_were_marked_keeps_every_whole_line(
    settings_for: Callable[..., Settings],
) -> None:
    """A folder written by an earlier version (lines end with a plain newline, no format file)
    and left with a torn last line: its whole lines stay, as they did then, and their bytes are
    not touched (a snapshot of that version points into them), on this start and every later
    one; and lines such a version writes after this one ran (a rollback, then this version
    again) stay too."""
    settings = settings_for()
    order_one = mapped(settings, order("00002", ORDERED))
    result_one = mapped(settings, result("00002", ORDERED, ORDERED + timedelta(minutes=12)))
    old = b"".join(dump_event(e) + b"\n" for e in order_one[1] + result_one[1])
    segment(settings.data_dir).parent.mkdir(parents=True)
    segment(settings.data_dir).write_bytes(old + old[:100])  # and a torn line
    for _ in range(2):
        runtime = EmbeddedRuntime(settings)
        try:
            assert facility_n(runtime) == 1
            assert runtime.log.corrupt_lines == 0
            assert await store(runtime, result_one) is Published.duplicate
        finally:
            await runtime.close()
        assert segment(settings.data_dir).read_bytes() == old
    # the earlier version again (a rollback): two more messages, plain newlines
    order_two = mapped(settings, order("00003", ORDERED))
    result_two = mapped(settings, result("00003", ORDERED, ORDERED + timedelta(minutes=12)))
    with open(segment(settings.data_dir), "ab") as fh:
        fh.write(b"".join(dump_event(e) + b"\n" for e in order_two[1] + result_two[1]))
    runtime = EmbeddedRuntime(settings)
    try:
        assert facility_n(runtime) == 2
        assert await store(runtime, result_two) is Published.duplicate
    finally:
        await runtime.close()
    stored = logged(settings.data_dir)
    assert stored == {"lab.order": 2, "lab.collect": 2, "lab.receive": 2, "lab.result": 2}, stored
