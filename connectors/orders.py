"""What a lab order said about itself, for the later messages about it that do not say it.

A specimen receipt (FHIR Specimen, an HL7 status or result message without TQ1/ORC-7
priority) or a result names its order but not always the order's priority or the unit that
placed it. The STAT in-lab turnaround starts at the receipt and counts only STAT receipts,
per unit: without the order's priority and place such a receipt would count nowhere. The
connectors remember each order's priority and place when they see the order and fill them
in on the later events of the same order.

Bounded (the oldest orders are forgotten first) and in memory only: after a restart, or
for an order never sent to carescore, a receipt or result that does not carry its own
priority stays without one (None) and is counted in no STAT or routine in-lab KPI; a
result without a unit is counted at facility level only.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

DEFAULT_SIZE = 200_000
"""About 14 days of orders for a 500-bed hospital; each entry is a few hundred bytes."""


class OrderMemory:
    __slots__ = ("entries", "size")

    def __init__(self, size: int = DEFAULT_SIZE):
        self.size = size
        self.entries: OrderedDict[str, tuple[str | None, dict[str, Any]]] = OrderedDict()

    def remember(self, order_id: str, priority: str | None, place: dict[str, Any]) -> None:
        """The order's priority and place (facility, department, unit); a later message about
        the same order that says more (a priority, a unit) fills in what was missing."""
        known = self.entries.pop(order_id, None)
        if known is not None:
            priority = priority or known[0]
            if place.get("unit") is None and known[1].get("unit") is not None:
                place = known[1]
        self.entries[order_id] = (priority, dict(place))
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)

    def recall(self, order_id: str) -> tuple[str | None, dict[str, Any]] | None:
        return self.entries.get(order_id)

    def fill(
        self, order_id: str, priority: str | None, place: dict[str, Any]
    ) -> tuple[str | None, dict[str, Any]]:
        """The event's own priority and place, with what the order said where they are
        missing (a place without a unit takes the order's place)."""
        known = self.entries.get(order_id)
        if known is None:
            return priority, place
        if priority is None:
            priority = known[0]
        if place.get("unit") is None and known[1].get("unit") is not None:
            place = {**place, **{k: known[1].get(k) for k in ("facility", "department", "unit")}}
        return priority, place

    def __len__(self) -> int:
        return len(self.entries)
