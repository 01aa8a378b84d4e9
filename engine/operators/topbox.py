"""HCAHPS top-box scores: per item, top-box answers and answers; per window, distinct surveys.

Each pane of each unit keeps, for every HCAHPS item of the KPI's domains, how many answers
were in the item's top box and how many were answered (engine/hcahps.py scores them in the
connectors), and the ids of the surveys they came from. Panes, windows and roll-ups merge by
adding the tallies and uniting the survey ids, so a department's item share pools its
patients' answers (as CMS pools a hospital's) and n counts each survey once. The value is
computed from the pooled tallies by the Finalizer (aggregate top_box).
"""

from __future__ import annotations

from datetime import tzinfo

from engine.aggregates import Acc
from engine.definitions.measures import TopBoxMeasure
from engine.events import EventBase
from engine.hcahps import items_of
from engine.operators.base import Handler, Hint, Output, place_of
from engine.operators.values import ValueOperator
from engine.samples import GroupKey


def survey_key(event: EventBase) -> str:
    """The survey an answer belongs to; an answer without a survey id is a survey of its own."""
    return getattr(event, "survey_id", None) or event.source_id


class TopBoxOperator(ValueOperator):
    measure: TopBoxMeasure

    def __init__(
        self,
        outputs: list[Output],
        unit_types: dict[GroupKey, str] | None = None,
        zone: tzinfo | None = None,
    ):
        super().__init__(outputs, unit_types, zone)
        self.items = items_of(self.measure.domains)

    def subscriptions(self) -> dict[str, Handler]:
        return {self.measure.event: self.on_answer}

    def routing_hints(self) -> dict[str, Hint]:
        return {self.measure.event: ("item", self.items)}

    def on_answer(self, event: EventBase) -> None:
        item = getattr(event, "item", None)
        top = getattr(event, "top_box", None)
        if item not in self.items or top is None:
            return  # another domain's item, a screener, or an answer that does not apply
        idx = self._pane_for(event.ts)
        if idx is None:
            return
        acc = self._acc(place_of(event), idx)
        acc.n += 1
        acc.merge_items({item: [1.0 if top else 0.0, 1.0]}, {survey_key(event)})

    def _n_of(self, acc: Acc) -> int:
        """The sample size is the number of surveys, not of answers."""
        return len(acc.keys or ())
