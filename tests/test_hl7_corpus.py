"""Every HL7 v2 message in ../shared/testdata/hl7v2 sent over MLLP: each ends in AA with its
events stored, or AE/AR with a reason and a dead letter; no crash, hang or silent drop.
And the lean parser agrees with python-hl7 on every field of every message both can read."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hl7
import orjson
import pytest

from carescore.serve import Service
from connectors.hl7v2.client import MLLPClient, ack_code
from connectors.hl7v2.mapping import MapContext, MappingError, map_message
from connectors.hl7v2.parser import HL7ParseError, is_batch, parse, split_batch
from connectors.hl7v2.receiver import decode
from engine.config import Settings
from tests.conftest import needs_testdata


def corpus() -> list[Path]:
    folder = needs_testdata("hl7v2")
    files = sorted(p for p in folder.rglob("*.hl7") if p.is_file())
    assert len(files) > 250, "expected the fhir-converter and trusted-intermediary corpora"
    return files


async def test_every_corpus_message_is_processed_or_rejected_with_a_reason(
    settings_for: Callable[..., Settings],
) -> None:
    files = corpus()
    svc = Service(settings_for())
    await svc.start()
    outcomes: Counter[str] = Counter()
    accepted: list[tuple[Path, set[str]]] = []
    try:
        async with MLLPClient("127.0.0.1", svc.mllp.port, timeout=10) as client:
            for path in files:
                raw = path.read_bytes()
                reply = await asyncio.wait_for(client.send(raw), 10)  # no hang
                text = decode(raw)
                codes = [ack_code(part) for part in _acks(reply)]
                assert codes and all(c in ("AA", "AE", "AR") for c in codes), (path, reply)
                for code, message in zip(codes, split_batch(text) if is_batch(text) else [text], strict=True):
                    outcomes[code] += 1
                    if code == "AA":
                        accepted.append((path, _expected_ids(message, svc)))
                    else:
                        assert "ERR|" in reply or "ERR" in reply, (path, reply)
        await asyncio.sleep(0.2)
        stored = {record["source_id"] for record in svc.runtime.log.raw_records()}
        letters = svc.runtime.dead_letters.query(limit=10_000)
    finally:
        await svc.stop()
    # every accepted message's events are in the event log
    for path, ids in accepted:
        assert ids <= stored, f"{path}: events acknowledged but not stored"
    # every rejection is a dead letter with its reason
    rejected = outcomes["AE"] + outcomes["AR"]
    assert len([d for d in letters if d.source == "hl7v2"]) == rejected
    assert all(d.reason for d in letters)
    print(f"\nHL7 corpus over MLLP: {len(files)} files, outcomes {dict(outcomes)}")
    assert outcomes["AA"] > 100 and rejected > 0


def _acks(reply: str) -> list[str]:
    if reply.startswith("BHS"):
        return ["MSH" + part for part in reply.split("MSH")[1:]]
    return [reply]


def _expected_ids(text: str, svc: Service) -> set[str]:
    """The source ids the message's events must have (mapped again, independently)."""
    try:
        events = map_message(parse(text), MapContext(svc.settings.places, svc.settings.zone))
    except (HL7ParseError, MappingError):
        return set()
    return {e.source_id for e in events}


def _python_hl7_raw(segment: Any, field: int, rep: int, comp: int, sub: int) -> str:
    """python-hl7's value at a path, without unescaping (its extract_field rules)."""
    if field >= len(segment):
        return ""
    value = segment(field)
    if isinstance(value, str):
        return value if rep == comp == sub == 1 else ""
    if rep > len(value):
        return ""
    value = value(rep)
    if isinstance(value, str):
        return value if comp == sub == 1 else ""
    if comp > len(value):
        return ""
    value = value(comp)
    if isinstance(value, str):
        return value if sub == 1 else ""
    return value(sub) if sub <= len(value) else ""


def _shape(raw: str, enc: Any) -> tuple[int, int, int]:
    reps = raw.split(enc.repetition)
    comps = max(len(r.split(enc.component)) for r in reps)
    subs = max(len(c.split(enc.subcomponent)) for r in reps for c in r.split(enc.component))
    return len(reps), comps, subs


def test_lean_parser_agrees_with_python_hl7_on_every_field() -> None:
    compared = values = 0
    for path in corpus():
        text = decode(path.read_bytes())
        for message in split_batch(text) if is_batch(text) else [text]:
            try:
                ours = parse(message)
            except HL7ParseError:
                continue
            try:
                # the same input for both: segments without trailing blanks (ours drops them)
                lines = message.lstrip("\ufeff").replace("\r\n", "\r").replace("\n", "\r").split("\r")
                theirs = hl7.parse("\r".join(line.rstrip() for line in lines if line.strip()))
            except Exception:
                continue
            assert len(ours.segments) == len(theirs), path
            for seg, their_seg in zip(ours.segments, theirs, strict=True):
                assert seg.name == str(their_seg(0)), path
                for n in range(1, len(seg.fields)):
                    reps, comps, subs = (
                        _shape(seg.raw(n), ours.enc) if n > 2 or seg.name != "MSH" else (1, 1, 1)
                    )
                    for rep in range(1, reps + 1):
                        for comp in range(1, comps + 1):
                            for sub in range(1, subs + 1):
                                mine = seg.get(n, comp, sub, rep - 1, unescaped=False)
                                their = _python_hl7_raw(their_seg, n, rep, comp, sub)
                                assert mine == str(their), (
                                    path.name,
                                    seg.name,
                                    n,
                                    rep,
                                    comp,
                                    sub,
                                    mine,
                                    their,
                                )
                                values += 1
            compared += 1
    print(f"\nparser vs python-hl7: {compared} messages, {values} values identical")
    assert compared > 200


def test_corpus_events_are_valid_canonical_events(places: Any) -> None:
    """Mapping skips pydantic validation for speed: every event it builds must validate."""
    count = 0
    for path in corpus():
        text = decode(path.read_bytes())
        for message in split_batch(text) if is_batch(text) else [text]:
            try:
                events = map_message(parse(message), MapContext(places))
            except (HL7ParseError, MappingError):
                continue
            for event in events:
                again = type(event).model_validate(orjson.loads(orjson.dumps(event.model_dump(mode="json"))))
                assert again == event, path
                count += 1
    assert count > 100


@pytest.mark.parametrize("name", ["ADT-A01-01.hl7", "ORU-R01-01.hl7"])
def test_known_corpus_messages_map_to_events(name: str, places: Any) -> None:
    path = needs_testdata("hl7v2/fhir-converter") / name
    if not path.exists():
        pytest.skip(f"{name} not in this corpus version")
    events = map_message(parse(decode(path.read_bytes())), MapContext(places))
    assert events and all(e.source == "hl7v2" for e in events)
