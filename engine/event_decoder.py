"""Serialised events back into their models, about twice as fast as pydantic, with pydantic's
answers.

A Kafka worker decodes every event it counts, and an embedded start reads its whole log:
pydantic's validation of the discriminated union was a fifth of a worker's time
(bench/kafka_worker.py). Here msgspec validates the JSON into structs generated from the
pydantic models at import (one schema: the models in engine/events.py), and the events are
built from the structs' fields without validating them again.

msgspec is stricter than pydantic's lax mode (no numbers or dates as strings, no booleans
as "yes"), so whatever it refuses goes to pydantic, which gives the answer (its event or its
ValidationError, as before): what is accepted, and the values read, stay pydantic's. Not the
same: a time written with more than six digits of a second is rounded to the microsecond
here and cut by pydantic (carescore writes six at most; looking for longer ones cost more
than the decoding); times carry the standard library's timezone objects, not pydantic's
TzInfo (same offsets; tzname() differs); every field counts as set, as in
EventBase.trusted. tests/test_event_decoder.py holds both to each other.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from datetime import datetime
from typing import Any, Literal, Union

import msgspec
from pydantic import AwareDatetime, TypeAdapter

from engine.events import EVENT_MODELS, EVENT_TYPES, Event, EventBase, derive, types_of

_AWARE = typing.Annotated[datetime, msgspec.Meta(tz=True)]
_PLAIN = (str, float, bool, type(None))


def _mirror(annotation: Any) -> Any:
    """The msgspec type that accepts what `annotation` accepts strictly. A field of another
    kind fails the import (see _structs for constraints, aliases and validators)."""
    if annotation is AwareDatetime:
        return _AWARE
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return Union[tuple(_mirror(a) for a in typing.get_args(annotation))]  # noqa: UP007
    if origin is Literal or annotation in _PLAIN:
        return annotation
    raise TypeError(f"engine/event_decoder.py has no msgspec form for {annotation!r}")


def _structs() -> list[type[msgspec.Struct]]:
    """One struct per event type (msgspec tags a struct by one value). Its fields are the
    model's in the model's order, so an event's __dict__ has pydantic's order."""
    found = []
    for model in EVENT_MODELS:
        _only_types(model)
        fields: list[Any] = []
        for name, info in model.model_fields.items():
            if name == "type":  # the tag
                continue
            kind = _mirror(info.annotation)
            fields.append((name, kind) if info.is_required() else (name, kind, info.default))
        for type_ in types_of(model):
            struct = msgspec.defstruct(
                "Struct_" + type_.replace(".", "_"),
                fields,
                tag=type_,
                tag_field="type",
                forbid_unknown_fields=True,
                kw_only=True,
            )
            found.append(struct)
    return found


def _only_types(model: type[EventBase]) -> None:
    """Fail the import for what a struct cannot mirror: a field's constraints (ge, max_length),
    alias or default factory, a validator or model_post_init, or a configuration other than
    EventBase's."""
    decorators = model.__pydantic_decorators__
    validators = any(getattr(decorators, f.name) for f in dataclasses.fields(decorators))
    post_init = model.model_post_init is not EventBase.model_post_init
    if validators or post_init or model.model_config != EventBase.model_config:
        raise TypeError(f"engine/event_decoder.py cannot mirror {model.__name__}: config or validators")
    for name, info in model.model_fields.items():
        if info.metadata or info.alias or info.validation_alias or info.default_factory is not None:
            raise TypeError(f"engine/event_decoder.py cannot mirror {model.__name__}.{name}")


_ANY = Union[tuple(_structs())]  # type: ignore[valid-type]  # noqa: UP007
_ONE = msgspec.json.Decoder(_ANY)
_MANY = msgspec.json.Decoder(list[_ANY])  # type: ignore[valid-type]
_KEEP = (datetime,)
_adapter: TypeAdapter[Any] = TypeAdapter(Event)
_list_adapter: TypeAdapter[Any] = TypeAdapter(list[Event])


def parse_event(data: dict[str, Any] | bytes | str) -> EventBase:
    """Validate one serialised event (dict or JSON) back into its model."""
    if isinstance(data, dict):
        event = _adapter.validate_python(data)
    else:
        fast = _decode(data, many=False)
        event = fast[0] if fast is not None else _adapter.validate_json(data)
    derive(event.__dict__)
    return event  # type: ignore[no-any-return]


def parse_events(data: bytes | str) -> list[EventBase]:
    """One record of the Kafka events topic: a JSON array of events, or a single event."""
    many = data[:1] in (b"[", "[")
    events = _decode(data, many)
    if events is None:
        events = _list_adapter.validate_json(data) if many else [_adapter.validate_json(data)]
    for event in events:
        derive(event.__dict__)
    return events


def _decode(data: bytes | str, many: bool) -> list[EventBase] | None:
    """The events of a JSON array (`many`) or of one JSON object, or None where msgspec
    refuses it: then pydantic decides."""
    try:
        structs = _MANY.decode(data) if many else [_ONE.decode(data)]
    except Exception:  # msgspec's errors, RecursionError (deep nesting), UnicodeEncodeError: pydantic's call
        return None
    events = []
    # every field, the tag first (pydantic's order), datetimes kept as they are: one C call
    for values in msgspec.to_builtins(structs, builtin_types=_KEEP):
        events.append(EVENT_TYPES[values["type"]].checked(values))
    return events
