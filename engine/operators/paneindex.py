"""Sorted pane indices: what a window reads, folds or looks ahead to, found by bisection.

Panes arrive in about time order, so an index is appended far more often than inserted. An
engine behind on closing (a restart, a compressed replay) holds years of panes: walking all
of them for every window closed made closing quadratic.
"""

from __future__ import annotations

import bisect


def add(order: list[int], idx: int) -> None:
    """Insert a new index, keeping the list sorted (an append in time order)."""
    if not order or idx > order[-1]:
        order.append(idx)
    else:
        bisect.insort(order, idx)


def before(order: list[int], idx: float) -> list[int]:
    """The indices below idx."""
    return order[: bisect.bisect_left(order, idx)]


def within(order: list[int], start: int, end: int) -> list[int]:
    """The indices in [start, end)."""
    return order[bisect.bisect_left(order, start) : bisect.bisect_left(order, end)]


def any_within(order: list[int], start: int, end: int) -> bool:
    at = bisect.bisect_left(order, start)
    return at < len(order) and order[at] < end


def first_from(order: list[int], idx: int) -> int | None:
    """The first index at or after idx."""
    at = bisect.bisect_left(order, idx)
    return order[at] if at < len(order) else None


def take_before(order: list[int], idx: int) -> list[int]:
    """Remove and return the indices below idx."""
    gone = bisect.bisect_left(order, idx)
    out = order[:gone]
    del order[:gone]
    return out
