"""Mergeable partial aggregates.

Windows are unions of panes and roll-ups are unions of units, so every partial aggregate
must merge exactly: sums add, value lists concatenate, ratios keep numerator and
denominator apart (a hospital ratio is sum over sum, never a mean of unit ratios).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from typing import Any

from engine.definitions.kpi import quantile_of
from engine.hcahps import composite_score


class Acc:
    """Partial aggregate of observed values (and of numerator/denominator for ratios)."""

    __slots__ = (
        "adj_den",
        "adj_num",
        "den",
        "hi",
        "is_sorted",
        "items",
        "keys",
        "lo",
        "n",
        "num",
        "total",
        "values",
    )

    def __init__(self, keep_values: bool = False) -> None:
        self.n = 0
        self.total = 0.0
        self.lo = math.inf
        self.hi = -math.inf
        self.values: list[float] | None = [] if keep_values else None
        self.is_sorted = False
        self.num = 0.0
        self.den = 0.0
        self.adj_num = 0.0  # a ratio's denominator adjustment (adjusted patient days), summed apart
        self.adj_den = 0.0
        self.items: dict[str, list[float]] | None = None  # survey item -> [top-box answers, answers]
        self.keys: set[str] | None = None  # distinct survey ids (the sample size of a top-box score)

    def add(self, value: float) -> None:
        self.n += 1
        self.total += value
        if value < self.lo:
            self.lo = value
        if value > self.hi:
            self.hi = value
        if self.values is not None:
            self.values.append(value)
            self.is_sorted = False

    def sorted_values(self) -> list[float]:
        """The values, sorted in place once (every percentile of one window shares it)."""
        assert self.values is not None
        if not self.is_sorted:
            self.values.sort()
            self.is_sorted = True
        return self.values

    def merge(self, other: Acc) -> None:
        self.n += other.n
        self.total += other.total
        self.lo = min(self.lo, other.lo)
        self.hi = max(self.hi, other.hi)
        if self.values is not None and other.values:
            # a copy of one sorted list is sorted: a unit's total then needs no sort of its own
            self.is_sorted = other.is_sorted and not self.values
            self.values.extend(other.values)
        self.num += other.num
        self.den += other.den
        self.adj_num += other.adj_num
        self.adj_den += other.adj_den
        if other.items is not None:
            self.merge_items(other.items, other.keys or set())

    def merge_items(self, items: dict[str, list[float]], keys: set[str]) -> None:
        if self.items is None or self.keys is None:
            self.items, self.keys = {}, set()
        for item, (top, answered) in items.items():
            tally = self.items.get(item)
            if tally is None:
                self.items[item] = [top, answered]
            else:
                tally[0] += top
                tally[1] += answered
        self.keys |= keys

    def to_state(self) -> list[Any]:
        """JSON-safe: an empty accumulator's infinite bounds become None (JSON has no inf)."""
        lo = None if self.lo == math.inf else self.lo
        hi = None if self.hi == -math.inf else self.hi
        state: list[Any] = [self.n, self.total, lo, hi, self.values, self.num, self.den]
        if self.adj_num or self.adj_den or self.items is not None:
            state += [self.adj_num, self.adj_den]
        if self.items is not None:
            state.append({"items": self.items, "keys": sorted(self.keys or ())})
        return state

    @classmethod
    def from_state(cls, state: Sequence[Any]) -> Acc:
        acc = cls()
        n, total, lo, hi, acc.values, num, den = state[:7]
        acc.n, acc.total, acc.num, acc.den = n, total, num, den
        acc.lo = math.inf if lo is None else lo
        acc.hi = -math.inf if hi is None else hi
        if len(state) > 7:
            acc.adj_num, acc.adj_den = state[7], state[8]
        if len(state) > 9:
            acc.items = {k: list(v) for k, v in state[9]["items"].items()}
            acc.keys = set(state[9]["keys"])
        return acc


def merged(accs: Iterable[Acc], keep_values: bool) -> Acc:
    out = Acc(keep_values)
    for acc in accs:
        out.merge(acc)
    return out


def quantile(values: Sequence[float], q: float, presorted: bool = False) -> float:
    """Linear interpolation between closest ranks (NumPy's and polars' default 'linear')."""
    ordered = values if presorted else sorted(values)
    if not ordered:
        raise ValueError("quantile of no values")
    pos = (len(ordered) - 1) * q
    lo = math.floor(pos)
    hi = math.ceil(pos)
    if lo == hi:
        return ordered[lo]
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


YEAR = 365.0 * 86400.0


class Finalizer:
    """Turns an Acc into (value, numerator, denominator) for one named aggregate."""

    def __init__(
        self,
        aggregate: str,
        within: float | None = None,
        scale: float = 1.0,
        annualise: bool = False,
        adjusted: bool = False,
        domains: Sequence[str] = (),
    ):
        self.aggregate = aggregate
        self.q = quantile_of(aggregate)
        self.within = within
        self.scale = scale
        self.annualise = annualise
        self.adjusted = adjusted
        self.domains = tuple(domains)  # top_box: the HCAHPS domains averaged
        self.needs_values = self.q is not None or aggregate == "pct_within"

    def __call__(self, acc: Acc, span: float = 0.0) -> tuple[float | None, float | None, float | None]:
        """span: the window's length in seconds (for annualised rates)."""
        agg = self.aggregate
        if agg == "ratio":
            if self.adjusted:
                return self._adjusted(acc)
            if acc.den == 0:
                return None, acc.num, acc.den
            value = acc.num / acc.den * self.scale
            if self.annualise:
                if span <= 0:
                    return None, acc.num, acc.den
                value *= YEAR / span
            return value, acc.num, acc.den
        if agg == "top_box":  # HCAHPS: mean of the domains' means of item top-box shares
            score = composite_score(acc.items, self.domains) if acc.items else None
            return (None if score is None else score * self.scale), None, None
        if agg == "count":
            return float(acc.n), None, None
        if acc.n == 0:
            return None, None, None
        if agg == "sum":
            return acc.total, None, None
        if agg == "mean":
            return acc.total / acc.n, acc.total, float(acc.n)
        if agg == "min":
            return acc.lo, None, None
        if agg == "max":
            return acc.hi, None, None
        if agg == "pct_within":
            assert acc.values is not None and self.within is not None
            hits = bisect_right(acc.sorted_values(), self.within)
            return hits / acc.n * 100.0, float(hits), float(acc.n)
        assert self.q is not None and acc.values is not None
        return quantile(acc.sorted_values(), self.q, presorted=True), None, None

    def _adjusted(self, acc: Acc) -> tuple[float | None, float | None, float | None]:
        """num / (den x adj_num / adj_den): the reported denominator is the adjusted one."""
        if acc.adj_den == 0:
            return None, acc.num, None
        den = acc.den * acc.adj_num / acc.adj_den
        if den == 0:
            return None, acc.num, den
        return acc.num / den * self.scale, acc.num, den
