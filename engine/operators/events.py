"""Observations straight from events: counts, sums and values of a field (satisfaction)."""

from __future__ import annotations

from datetime import tzinfo

from engine.definitions.measures import EventMeasure
from engine.events import EventBase
from engine.operators.base import Handler, Hint, Output, compile_where, hint_of, place_of
from engine.operators.values import ValueOperator
from engine.samples import GroupKey


class EventValueOperator(ValueOperator):
    measure: EventMeasure

    def __init__(
        self,
        outputs: list[Output],
        unit_types: dict[GroupKey, str] | None = None,
        zone: tzinfo | None = None,
    ):
        super().__init__(outputs, unit_types, zone)
        self.accept = compile_where(self.measure.where)
        self.field = self.measure.field
        self.missing = 0

    def subscriptions(self) -> dict[str, Handler]:
        return {self.measure.event: self.on_event}

    def routing_hints(self) -> dict[str, Hint]:
        hint = hint_of(self.measure.where)
        return {self.measure.event: hint} if hint is not None else {}

    def on_event(self, event: EventBase) -> None:
        if self.accept is not None and not self.accept(event):
            return
        if self.field is None:
            value = 1.0
        else:
            raw = getattr(event, self.field)
            if raw is None:
                self.missing += 1  # a survey without a score: nothing to average
                return
            value = float(raw)
        self.observe(place_of(event), event.ts, value)
