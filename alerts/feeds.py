"""Stopped data feeds: a source that has gone quiet is an alert of its own, and the KPI
alerts that depend on it are held back (inhibited) while it lasts, because a KPI fed by
a broken interface says nothing about the ward.

A rule arms once its feed has been seen (a feed never connected is not an outage); last
seen times are kept in the alert store, so a restart does not forget an outage.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Literal

from alerts.model import Change
from engine.config_alerts import FeedRule
from engine.durations import format_duration
from engine.events import EventBase
from engine.samples import GroupKey

FEED_ALERT = "feed_stale"
UNKNOWN_PLACES_ALERT = "unknown_places"


class FeedWatch:
    def __init__(
        self,
        rules: list[FeedRule],
        departments: dict[tuple[str, str], str] | None = None,
        facilities: set[str] | None = None,
        unknown: Callable[[], dict[str, set[str]]] | None = None,
    ):
        self.rules = rules
        self.departments = departments or {}  # (facility, unit) -> department, for labels
        # the configured facilities (None: any): a facility code a sender made up is accepted
        # (bounded) but is no feed of ours, and its going quiet pages nobody
        self.facilities = facilities
        self.unknown = unknown  # place codes accepted though not configured (Places.unknown_seen)
        self._unknown_reported: set[tuple[str, str]] = set()
        # an unknown_places alert from before a restart (the configuration may have changed since)
        self.restored_unknown: tuple[GroupKey, float] | None = None
        self.seen: dict[tuple[str, str, str], float] = {}  # (rule name, facility, unit or "") -> wall time
        self.down: dict[tuple[str, str, str], float] = {}  # outages in progress -> since

    def observe(self, events: Iterable[EventBase], now: float) -> None:
        seen = self.seen
        for rule in self.rules:
            prefix = rule.events
            for event in events:
                if event.source != rule.source or (prefix is not None and not event.type.startswith(prefix)):
                    continue
                if self.facilities is not None and (
                    event.facility not in self.facilities
                    or (rule.per == "unit" and event.unit and event.department is None)  # a made-up unit
                ):
                    continue
                unit = (event.unit or "") if rule.per == "unit" else ""
                seen[(rule.name, event.facility, unit)] = now

    def check(self, now: float) -> list[Change]:
        out: list[Change] = []
        rules = {r.name: r for r in self.rules}
        for key, last in self.seen.items():
            rule = rules.get(key[0])
            if rule is None:
                continue
            quiet = now - last
            if key not in self.down and quiet > rule.stale_after:
                self.down[key] = last
                out.append(self._change("fired", rule, key, last, quiet))
            elif key in self.down and quiet <= rule.stale_after:
                since = self.down.pop(key)
                out.append(self._change("resolved", rule, key, since, quiet))
        if self.unknown is not None:
            out += self._unknown_places(now)
        return out

    def _unknown_places(self, now: float) -> list[Change]:
        """One ops alert (warning) when senders use place codes the configuration lacks: the
        data is kept (bounded), but someone should add the ward or fix the sender."""
        if self._unknown_reported or self.unknown is None:
            return []  # once per run; every code accepted since is on /metrics
        seen = {(f, c) for f, codes in self.unknown().items() for c in codes}
        if self.restored_unknown is not None:
            place, since = self.restored_unknown
            self.restored_unknown = None
            if not seen:  # none since the restart: resolved; it fires again if they come back
                return [self._unknown_change("resolved", place, since, set())]
            self._unknown_reported = seen  # still firing from before the restart
            return []
        if not seen:
            return []
        self._unknown_reported = seen
        facility = next((f for f, _ in sorted(seen) if f), "")
        return [self._unknown_change("fired", (facility, None, None), now, seen)]

    def _unknown_change(
        self, kind: Literal["fired", "resolved"], place: GroupKey, since: float, seen: set[tuple[str, str]]
    ) -> Change:
        codes = sorted(f"{f}/{c}" if f else f"facility {c}" for f, c in seen)
        severity = "warning" if kind == "fired" else "ok"
        summary = (
            f"{len(seen)} unknown place code(s) accepted: {', '.join(codes)[:400]} "
            "(all of them: carescore_unknown_place on /metrics)"
            if kind == "fired"
            else "no unknown place codes since the restart"
        )
        return Change(
            kind=kind,
            name=UNKNOWN_PLACES_ALERT,
            place=place,
            labels={
                "kind": "feed",
                "kpi": UNKNOWN_PLACES_ALERT,
                "perspective": "internal_process",
                "facility": place[0],
                "department": None,
                "unit": None,
                "severity": severity,
                "source": "places",
            },
            title="Place codes not in the configuration",
            severity=severity,
            value=float(len(seen)),
            threshold=0.0,
            unit_of_measure="codes",
            started=since,
            summary=summary,
            details={"codes": codes},
        )

    def place(self, key: tuple[str, str, str]) -> GroupKey:
        _, facility, unit = key
        if not unit:
            return (facility, None, None)
        return (facility, self.departments.get((facility, unit)), unit)

    def inhibits(self, sources: set[str], event_types: set[str], place: GroupKey) -> str | None:
        """The outage (its summary) that silences a KPI alert here, if any."""
        rules = {r.name: r for r in self.rules}
        for key in self.down:
            rule = rules.get(key[0])
            if rule is None or rule.source not in sources:
                continue
            if rule.events is not None and not any(t.startswith(rule.events) for t in event_types):
                continue
            _, facility, unit = key
            if place[0] == facility and (not unit or place[2] == unit):
                return f"{rule.name} quiet since {datetime.fromtimestamp(self.down[key], UTC):%H:%M} UTC"
        return None

    def _change(
        self,
        kind: Literal["fired", "resolved"],
        rule: FeedRule,
        key: tuple[str, str, str],
        since: float,
        quiet: float,
    ) -> Change:
        place = self.place(key)
        where = place[2] or place[0]
        if kind == "fired":
            limit = format_duration(rule.stale_after)
            text = f"{rule.name}: no data from {where} for {format_duration(quiet)} (limit {limit})"
        else:
            text = f"{rule.name}: data from {where} again"
        return Change(
            kind=kind,
            name=f"{FEED_ALERT}:{rule.name}",
            place=place,
            labels={
                "kind": "feed",
                "kpi": FEED_ALERT,
                "perspective": "internal_process",
                "facility": place[0],
                "department": place[1],
                "unit": place[2],
                "severity": rule.severity if kind == "fired" else "ok",
                "source": rule.source,
                "feed": rule.name,
            },
            title=f"Data feed stopped: {rule.name}",
            severity=rule.severity if kind == "fired" else "ok",
            value=round(quiet / 60, 1),
            threshold=round(rule.stale_after / 60, 1),
            unit_of_measure="min quiet",
            started=since,
            summary=text,
            details={
                "feed": rule.name,
                "source": rule.source,
                "last_seen": datetime.fromtimestamp(since, UTC).isoformat(),
            },
        )
