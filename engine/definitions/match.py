"""Which events a KPI observes: an event type and equality filters on its fields, checked
against the canonical event schema and vocabularies when the definitions are loaded.

Also the strict base every section of a definition is built on: unknown keys are errors
(a misspelt key must not be silently ignored) and a loaded definition never changes.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from engine.events import EVENT_TYPES
from engine.vocabulary import VOCABULARIES

Scalar = str | int | float | bool


class Strict(BaseModel):
    """A section of a KPI definition: unknown keys are errors, loaded values never change."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Match(Strict):
    """Selects events: a type and equality filters on its fields (a list means any of)."""

    event: str
    where: dict[str, Scalar | list[Scalar]] = Field(default_factory=dict)

    @field_validator("event")
    @classmethod
    def _known_event(cls, value: str) -> str:
        if value not in EVENT_TYPES:
            raise ValueError(f"unknown event type {value!r}; known types: {', '.join(sorted(EVENT_TYPES))}")
        return value

    @field_validator("where")
    @classmethod
    def _known_fields(cls, where: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        event = info.data.get("event")
        if event is None:
            return where
        for name, expected in where.items():
            require_field(event, name)
            known = VOCABULARIES.get((event.split(".", 1)[0], name))
            if known is None:
                continue
            for value in expected if isinstance(expected, list) else [expected]:
                if value not in known:
                    raise ValueError(
                        f"{name} {value!r} is not in the canonical vocabulary (engine/vocabulary.py); "
                        f"known: {', '.join(sorted(known))}"
                    )
        return where


def require_field(event: str, name: str) -> None:
    fields = EVENT_TYPES[event].model_fields
    if name not in fields:
        raise ValueError(f"event {event!r} has no field {name!r}; fields: {', '.join(fields)}")
