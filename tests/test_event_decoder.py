"""engine/event_decoder.py reads events with msgspec and lets pydantic decide whatever msgspec
refuses: what it accepts, and the events it builds, must be pydantic's. Here pydantic's own
validation of the discriminated union (the decoder before msgspec) is the reference, on
events the HL7 connector made of every corpus message and on generated records full of
values a foreign or broken producer could write (numbers as strings, dates without zones,
booleans as words, extra and missing fields)."""

from __future__ import annotations

import typing
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import AwareDatetime, BaseModel, TypeAdapter

from connectors.hl7v2.mapping import MapContext, MappingError, map_message
from connectors.hl7v2.parser import HL7ParseError, is_batch, parse, split_batch
from connectors.hl7v2.receiver import decode
from engine.config import Settings
from engine.event_decoder import parse_event, parse_events
from engine.events import EVENT_TYPES, Event, EventBase, dump_event, dump_events
from tests.conftest import needs_testdata

# the reference: pydantic on the union, as engine/events.py read events before msgspec
REFERENCE_ONE: TypeAdapter[Any] = TypeAdapter(Event)
REFERENCE_MANY: TypeAdapter[Any] = TypeAdapter(list[Event])


def reference(data: bytes | str) -> list[EventBase] | str:
    """pydantic's events for the record, or the name of the error it refuses it with."""
    try:
        if data[:1] in (b"[", "["):
            return list(REFERENCE_MANY.validate_json(data))
        return [REFERENCE_ONE.validate_json(data)]
    except ValueError as exc:
        return f"{type(exc).__module__}.{type(exc).__name__}"


def decoded(data: bytes | str) -> list[EventBase] | str:
    """The decoder's events, or the name of its error (any but a ValueError fails the test:
    the worker and the log catch only those)."""
    try:
        return parse_events(data)
    except ValueError as exc:
        return f"{type(exc).__module__}.{type(exc).__name__}"


def assert_same(got: list[EventBase] | str, expected: list[EventBase] | str) -> None:
    if isinstance(expected, str) or isinstance(got, str):
        assert got == expected
        return
    assert len(got) == len(expected)
    for ours, theirs in zip(got, expected, strict=True):
        assert type(ours) is type(theirs)
        fields = {k: v for k, v in ours.__dict__.items() if k not in ("ts", "place")}
        assert list(fields) == list(theirs.__dict__)  # pydantic's field order
        assert fields == theirs.__dict__
        for name, value in fields.items():
            other = theirs.__dict__[name]
            assert type(value) is type(other), name  # 2 is not 2.0, nor True 1
            if isinstance(value, datetime):  # the same instant, written with the same offset
                assert value.utcoffset() == other.utcoffset(), name
            else:
                assert repr(value) == repr(other), name  # -0.0 is not 0.0
        assert ours.ts == theirs.event_time.timestamp()
        assert ours.place == (theirs.facility, theirs.department, theirs.unit)


# -- events of real messages ---------------------------------------------------------------


def corpus_events() -> list[EventBase]:
    """Every event the HL7 connector makes of the corpus (trusted-built, as the MLLP path)."""
    settings = Settings.model_validate({"demo": {"enabled": False}})
    context = MapContext(settings.places, settings.zone)
    events: list[EventBase] = []
    for path in sorted(p for p in Path(needs_testdata("hl7v2")).rglob("*.hl7") if p.is_file()):
        text = decode(path.read_bytes())
        for message in split_batch(text) if is_batch(text) else [text]:
            try:
                events += map_message(parse(message), context)
            except (HL7ParseError, MappingError):
                continue
    return events


def test_every_event_of_the_hl7_corpus_reads_back_as_pydantic_reads_it() -> None:
    events = corpus_events()
    kinds = {e.type for e in events}
    assert len(events) > 300 and {"encounter.admit", "lab.result"} <= kinds, (len(events), kinds)
    for event in events:
        one = dump_event(event)
        assert_same(decoded(one), reference(one))
        assert_same([parse_event(one)], reference(one))
    for start in range(0, len(events), 50):  # as the Kafka records carry them
        record = dump_events(events[start : start + 50])
        assert_same(decoded(record), reference(record))


# -- generated records, valid and not ------------------------------------------------------

ODD_VALUES: list[Any] = [
    None, "", "x", 0, 1, -3, 1.5, 1e300, True, False, [], {}, "yes", "true", "1.5", "12",
    "2026-03-08T00:00:00Z", "2026-03-08T00:00:00", "2026-03-08", "2026-03-08 00:00:00+00:00",
    "2026-03-08T05:30:00+05:30", "2026-03-08T00:00Z", "2026-13-40T00:00:00Z", 1772928000,
    "1772928000", "hl7v2", "fhir", "feed", "2026-03-08T00:00:00+02:52:36",
]  # fmt: skip
ODD = st.sampled_from(ODD_VALUES)


OFFSETS = st.one_of(
    st.just(UTC), st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
)


def valid(annotation: Any) -> st.SearchStrategy[Any]:
    if annotation is AwareDatetime:
        # six digits of a second at most: carescore writes no more (the decoder's one
        # difference); offsets in whole minutes (neither reads a historical +02:52:36)
        return st.datetimes(
            min_value=datetime(1800, 1, 1), max_value=datetime(2300, 1, 1), timezones=OFFSETS
        ).map(lambda d: d.isoformat())
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return st.sampled_from(typing.get_args(annotation))
    if origin is not None:  # X | None
        return st.one_of(*(valid(a) for a in typing.get_args(annotation)))
    return {
        str: st.text(max_size=8),
        float: st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**60), 2**60)),
        bool: st.booleans(),
        int: st.integers(),
        type(None): st.none(),
    }[annotation]


@st.composite
def event_dict(draw: st.DrawFn, noisy: bool = True) -> dict[str, Any]:
    """An event of any type; noisy: some fields odd or left out (a third of the events
    stay clean, so records pydantic accepts are common too), some events with a key no
    model has."""
    type_ = draw(st.sampled_from(sorted(EVENT_TYPES)))
    noise = draw(st.sampled_from([0, 3, 10, 30])) if noisy else 0  # percent of fields
    fields: dict[str, Any] = {"type": type_}
    for name, info in EVENT_TYPES[type_].model_fields.items():
        if name == "type":
            continue
        roll = draw(st.integers(0, 99))
        if roll >= 2 * noise:
            fields[name] = draw(valid(info.annotation))
        elif roll >= noise:
            fields[name] = draw(ODD)
        # else: left out
    if noisy and draw(st.integers(0, 9)) == 0:
        fields[draw(st.sampled_from(["extra", "ts", "place", "Type"]))] = draw(ODD)
    return fields


def plain(annotation: Any) -> Any:
    """A valid value of the field's type (the first of a Literal or a union)."""
    if annotation is AwareDatetime:
        return "2026-03-08T00:00:00+01:00"
    args = typing.get_args(annotation)
    if args:
        return args[0] if typing.get_origin(annotation) is typing.Literal else plain(args[0])
    return {str: "x", float: 2.5, bool: True, int: 3}[annotation]


def test_every_odd_value_in_every_field_is_judged_as_pydantic_judges_it() -> None:
    """Each event type with every field set, then each field in turn left out or given each
    odd value: the decoder and pydantic agree on every one of those records."""
    outcomes = {"read": 0, "refused": 0}
    for type_, model in sorted(EVENT_TYPES.items()):
        full = {name: plain(info.annotation) for name, info in model.model_fields.items()}
        full["type"] = type_
        for name in model.model_fields:
            trials = [{k: v for k, v in full.items() if k != name}]
            trials += [{**full, name: value} for value in ODD_VALUES]
            for fields in trials:
                record = orjson.dumps(fields)
                expected = reference(record)
                assert_same(decoded(record), expected)
                outcomes["refused" if isinstance(expected, str) else "read"] += 1
    assert outcomes["read"] > 1000 and outcomes["refused"] > 1000, outcomes


def test_generated_records_are_read_as_pydantic_reads_them() -> None:
    """Records of one to three generated events; the comparison proves little if nearly every
    record drawn was refused (or read), so it must have seen plenty of each."""
    outcomes = {"read": 0, "refused": 0}

    @settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(event_dict(), min_size=1, max_size=3), st.booleans())
    def compare(events: list[dict[str, Any]], array: bool) -> None:
        record = orjson.dumps(events if array else events[0])
        expected = reference(record)
        assert_same(decoded(record), expected)
        outcomes["refused" if isinstance(expected, str) else "read"] += 1

    compare()
    assert outcomes["read"] >= 100 and outcomes["refused"] >= 100, outcomes


@settings(max_examples=300, deadline=None)
@given(event_dict(noisy=False))
def test_events_as_carescore_writes_them_are_read_without_pydantic(fields: dict[str, Any]) -> None:
    """The fast path is taken where it can be: a valid event as dump_event and dump_events
    write it is read without pydantic validating anything (its entry points counted)."""
    event = EVENT_TYPES[fields["type"]].model_validate(fields)
    records = [dump_event(event), dump_events([event, event])]
    expected = [reference(r) for r in records]
    import engine.event_decoder as decoder

    calls: list[str] = []

    class Counting:
        def __init__(self, adapter: Any) -> None:
            self.adapter = adapter

        def validate_json(self, data: Any) -> Any:
            calls.append("validate_json")
            return self.adapter.validate_json(data)

        def validate_python(self, data: Any) -> Any:
            calls.append("validate_python")
            return self.adapter.validate_python(data)

    adapters, init = (decoder._adapter, decoder._list_adapter), BaseModel.__init__

    def counted_init(self: Any, **data: Any) -> None:
        calls.append("__init__")
        init(self, **data)

    decoder._adapter, decoder._list_adapter = (Counting(a) for a in adapters)  # type: ignore[assignment]
    BaseModel.__init__ = counted_init  # type: ignore[method-assign]
    try:
        got = [decoded(r) for r in records]
    finally:
        decoder._adapter, decoder._list_adapter = adapters
        BaseModel.__init__ = init  # type: ignore[method-assign]
    assert calls == []
    for ours, theirs in zip(got, expected, strict=True):
        assert_same(ours, theirs)


def test_a_time_with_more_than_six_digits_of_a_second_is_rounded_not_cut() -> None:
    """The one documented difference (engine/event_decoder.py): msgspec rounds 0.9999996 s to
    1 s where pydantic keeps 0.999999 s."""
    record = (
        b'{"type":"lab.order","event_time":"2026-03-08T00:00:00.9999996Z",'
        b'"received_time":"2026-03-08T00:00:00Z","source":"hl7v2","source_id":"s","facility":"F","order_id":"o"}'
    )
    [event] = parse_events(record)
    [theirs] = typing.cast(list[EventBase], reference(record))
    # 2026-03-08T00:00:00Z is 1,772,928,000 s after the epoch (tests/test_epoch_seconds.py)
    assert event.ts == 1_772_928_001.0
    assert theirs.event_time.microsecond == 999_999


@pytest.mark.parametrize(
    "record",
    [
        # nested deeper than msgspec's recursion limit before the tag: RecursionError in msgspec
        b'{"facility":' + b"[" * 3000 + b"]" * 3000 + b',"type":"lab.order"}',
        '{"type":"lab.order","facility":"\ud800"}',  # a str with a lone surrogate
        b"",
        b"{",
        b"null",
        b"[]",
        b'[{"type":"lab.order"}]',
        b'{"type":"nope.event","event_time":"2026-03-08T00:00:00Z"}',
    ],
)
def test_unreadable_records_raise_pydantics_error_or_read_as_nothing(record: bytes | str) -> None:
    expected = reference(record)
    assert expected in ("pydantic_core._pydantic_core.ValidationError", [])
    assert_same(decoded(record), expected)
