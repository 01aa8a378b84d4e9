"""Pydantic models built over values the engine has already checked, without validation.

Validation is the right door for what comes from outside; for values the engine's own code
typed itself (a connector's parsed fields, a closed window's result) it is most of the cost
of building the model, millions of times over a backfill. The model is then exactly what
validation would have made of those values: callers give every field, in its final type.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

_set = object.__setattr__


def unvalidated(cls: type[M], values: dict[str, Any], fields_set: set[str]) -> M:
    """An instance of `cls` whose fields are `values` (every field present, nothing checked,
    filled in or converted); `fields_set` is shared, never changed (nothing reads it)."""
    model = cls.__new__(cls)
    _set(model, "__dict__", values)
    _set(model, "__pydantic_fields_set__", fields_set)
    _set(model, "__pydantic_extra__", None)
    _set(model, "__pydantic_private__", None)
    return model
