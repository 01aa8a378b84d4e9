"""How a duration measure pairs events: which end events may end a start's interval (their
own filter, and no contradiction of the start's), and which events reach the operator at
all (routing hints). Built once per operator; the predicates are what runs per event.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.definitions.match import Match
from engine.definitions.measures import DurationMeasure
from engine.events import EVENT_TYPES, EventBase
from engine.operators.base import Hint, compile_where, hint_of

Predicate = Callable[[EventBase], bool]
EndTests = dict[str, list[tuple[Predicate | None, Predicate | None]]]


def end_tests_of(m: DurationMeasure) -> EndTests:
    """Event type -> (where test, contradiction test) for each end that has that type."""
    tests: EndTests = {}
    for end in m.ends:
        tests.setdefault(end.event, []).append((compile_where(end.where), contradiction(m.start, end)))
    return tests


def duration_hints(m: DurationMeasure, end_tests: EndTests) -> dict[str, Hint]:
    """Routing hints for the start and end events (none when one event type is both)."""
    if m.start.event in end_tests:
        return {}
    hints: dict[str, Hint] = {}
    start = hint_of(m.start.where)
    if start is not None:
        hints[m.start.event] = start
    for etype in end_tests:
        ends = [e for e in m.ends if e.event == etype]
        if len(ends) != 1:
            continue  # several ends of one type: their handler checks them all
        (end_match,) = ends
        end_fields = EVENT_TYPES[etype].model_fields
        shared = {k: v for k, v in m.start.where.items() if k in end_fields and k not in end_match.where}
        end = hint_of(shared, also_none=True) or hint_of(end_match.where)
        if end is not None:
            hints[etype] = end
    return hints


def never(event: EventBase) -> bool:
    return False


def any_end(tests: list[tuple[Predicate | None, Predicate | None]]) -> Predicate | None:
    """One predicate for the ends of one event type: any of them matches and does not
    contradict the start (None: every event of the type does)."""
    if len(tests) == 1:
        ok, contra = tests[0]
        if ok is None and contra is None:
            return None
        if contra is None:
            return ok
        if ok is None:
            return lambda event: not contra(event)
        return lambda event: ok(event) and not contra(event)
    return lambda event: any(
        (ok is None or ok(event)) and (contra is None or not contra(event)) for ok, contra in tests
    )


def contradiction(start: Match, end: Match) -> Predicate | None:
    """A test for end events that say they cannot belong to a matching start: the start
    filter's fields that the end event also carries (lab.result says its priority too),
    unless the end has its own filter on that field (an ED registration, class emergency,
    ends with an admission, class inpatient)."""
    if start.event == end.event:
        return None
    end_fields = EVENT_TYPES[end.event].model_fields
    checks = [
        (name, frozenset(v if isinstance(v, list) else [v]))
        for name, v in start.where.items()
        if name in end_fields and name not in end.where
    ]
    if not checks:
        return None

    def contradicts(event: EventBase) -> bool:
        for name, allowed in checks:
            value = getattr(event, name)
            if value is not None and value not in allowed:
                return True
        return False

    return contradicts
