"""How a duration measure pairs events: which end events may end a start's interval (their
own filter, and no contradiction of the start's), and which events reach the operator at
all (routing hints). Built once per operator; the predicates are what runs per event.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.definitions.match import Match
from engine.definitions.measures import DurationMeasure
from engine.events import EVENT_TYPES, EventBase
from engine.operators.base import Hint, Tests, all_in, hint_of, where_tests

Predicate = Callable[[EventBase], bool]
EndTests = dict[str, list[Tests]]


def end_tests_of(m: DurationMeasure) -> EndTests:
    """Event type -> for each end that has that type, the membership tests an event must
    pass to end a matching start: the end's own filter, and no contradiction of the start's."""
    tests: EndTests = {}
    for end in m.ends:
        tests.setdefault(end.event, []).append(where_tests(end.where) + consistent(m.start, end))
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


def any_end(tests: list[Tests]) -> Predicate | None:
    """One predicate for the ends of one event type: any of them matches and does not
    contradict the start (None: every event of the type does)."""
    checks = [all_in(t) for t in tests]
    if len(checks) == 1 or None in checks:
        return checks[0] if len(checks) == 1 else None
    return lambda event: any(check(event) for check in checks)  # type: ignore[misc]


def consistent(start: Match, end: Match) -> Tests:
    """What end events must not contradict of a matching start: the start filter's fields
    that the end event also carries (lab.result says its priority too), unless the end has
    its own filter on that field (an ED registration, class emergency, ends with an
    admission, class inpatient). An end that leaves the field empty says nothing."""
    if start.event == end.event:
        return []
    end_fields = EVENT_TYPES[end.event].model_fields
    return [
        (name, allowed | {None})
        for name, allowed in where_tests(start.where)
        if name in end_fields and name not in end.where
    ]
