"""Fuzz targets shared by the hypothesis properties (tests/test_fuzz.py, in every run) and
the longer `make fuzz` run (atheris when it installs, hypothesis with more examples, and
junk over real sockets): each takes bytes and asserts what must hold for any input."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from connectors.deadletters import DeadLetterStore
from connectors.hl7v2.mapping import MapContext
from connectors.hl7v2.mllp import Frame, FrameDecoder
from connectors.hl7v2.parser import HL7ParseError, parse
from connectors.hl7v2.receiver import HL7Receiver, decode
from engine.bus import Published
from engine.events import EventBase
from engine.places import Places

MAX = 2048


class MemorySink:
    """Stores nothing durable: the fuzz is about parsing, mapping and answering."""

    def __init__(self) -> None:
        self.keys: set[str] = set()

    async def publish(self, message_key: str, events: list[EventBase]) -> Published:
        if message_key in self.keys:
            return Published.duplicate
        self.keys.add(message_key)
        return Published.accepted


_loop: asyncio.AbstractEventLoop | None = None
_receiver: HL7Receiver | None = None


def receiver(places: Places | None = None) -> HL7Receiver:
    global _receiver
    if _receiver is None:
        shm = Path("/dev/shm")
        folder = Path(tempfile.mkdtemp(prefix="carescore-fuzz-", dir=shm if shm.is_dir() else None))
        _receiver = HL7Receiver(MemorySink(), DeadLetterStore(folder / "dl.sqlite"), MapContext(places))
    return _receiver


def run(coro: Any) -> Any:
    global _loop
    if _loop is None:
        _loop = asyncio.new_event_loop()
    return _loop.run_until_complete(coro)


def hl7_message(data: bytes) -> None:
    """Any bytes as one MLLP frame's content: an ACK that our own parser reads, whose MSA-1
    is AA, AE or AR; a rejection always has a reason and a dead letter."""
    outcome = run(receiver().handle(decode(data)))
    ack = parse(outcome.reply)
    msa = next(s for s in ack.segments if s.name == "MSA")
    assert msa.first(1) == outcome.ack in ("AA", "AE", "AR"), outcome.reply
    if outcome.ack != "AA":
        assert outcome.text, "a rejection without a reason"
        assert outcome.dead_letter, "a rejection without a dead letter"
        assert any(s.name == "ERR" for s in ack.segments), outcome.reply


def hl7_parse(data: bytes) -> None:
    """The parser alone: a Message or HL7ParseError, nothing else; every field read is a str."""
    try:
        msg = parse(decode(data))
    except HL7ParseError:
        return
    for seg in msg.segments:
        for n in range(min(len(seg.fields), 30)):
            assert isinstance(seg.first(n), str)
            assert isinstance(seg.get(n, 2, 2, 1), str)


def mllp_stream(data: bytes) -> None:
    """Framing: the same bytes give the same frames however TCP cuts them, no frame body
    is over the limit, and the decoder never holds more than the limit plus one read."""
    if not data:
        return
    cut = data[0] % 17 + 1
    stream = data[1:]
    whole = FrameDecoder(MAX)
    expected = whole.feed(stream)
    pieces = FrameDecoder(MAX)
    got: list[Frame] = []
    for i in range(0, len(stream), cut):
        got += pieces.feed(stream[i : i + cut])
        assert len(pieces.buf) <= MAX + cut + 1
    assert [(f.kind, f.body) for f in got] == [(f.kind, f.body) for f in expected]
    assert whole.pending() == pieces.pending()
    for f in got:
        assert len(f.body) <= MAX if f.kind == "message" else len(f.body) <= 4096


TARGETS = {"hl7_message": hl7_message, "hl7_parse": hl7_parse, "mllp_stream": mllp_stream}
