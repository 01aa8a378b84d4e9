"""Overdue actions and missed milestones are alerts of their own (kind `action`), routed to the
item's owner (routes.yaml, a role with scope: owner). Each one resolves when the action is done or
cancelled, the milestone is done, or the due time is moved later.

Like the feed watch, this turns state into Changes on each tick; which items are firing is kept
here, and taken again from the store's firing alerts after a restart (no second notice).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import orjson

from alerts.model import Alert, Change
from alerts.plans.store import PlanStore
from engine.definitions import Catalogue
from engine.samples import GroupKey

log = logging.getLogger(__name__)

PLAN_KIND = "action"
ACTION_OVERDUE = "action_overdue"
MILESTONE_MISSED = "milestone_missed"


class PlanWatch:
    def __init__(self, plans: PlanStore, catalogue: Catalogue, severity: str = "warning"):
        self.plans = plans
        self.catalogue = catalogue
        self.severity = severity
        self.firing: dict[str, GroupKey] = {}  # alert name -> place
        self._failing = False  # said once per outage of the store, not every tick

    def restore(self, alerts: Iterable[Alert]) -> None:
        self.firing.update({a.alert_name: a.place for a in alerts if a.kind == PLAN_KIND})

    def check(self, now: float) -> list[Change]:
        """Fired for items late now and not yet firing; resolved for firing ones no longer late.
        A store that cannot be read now: nothing changes until the next tick."""
        try:
            late = {**self._actions(now), **self._milestones(now)}
        except Exception as exc:
            if not self._failing:
                log.warning("action plans not checked (%s: %s)", type(exc).__name__, exc)
            self._failing = True
            return []
        self._failing = False
        out = [change for name, change in late.items() if name not in self.firing]
        for change in out:
            self.firing[change.name] = change.place
        for name in [n for n in self.firing if n not in late]:
            out.append(self._resolved(name, self.firing.pop(name), now))
        return out

    def _actions(self, now: float) -> dict[str, Change]:
        out = {}
        for a in self.plans.overdue_actions(now):
            kpi = self.catalogue.kpis.get(a["kpi"])
            name = f"{ACTION_OVERDUE}:{a['id']}"
            place = (a["facility"], a["department"], a["unit"])
            where = place[2] or place[1] or place[0]
            summary = f"action overdue (due {a['due']}, {a['status']}): {a['title']} ({a['kpi']}, {where})"
            perspective = kpi.perspective.value if kpi else None
            out[name] = self._fired(name, ACTION_OVERDUE, place, a, perspective, summary, now)
        return out

    def _milestones(self, now: float) -> dict[str, Change]:
        out = {}
        for m in self.plans.missed_milestones(now):
            objectives = orjson.loads(m["objectives"])
            first = self.catalogue.objectives.get(objectives[0]) if objectives else None
            name = f"{MILESTONE_MISSED}:{m['id']}"
            summary = f"milestone missed (due {m['due']}): {m['title']}, initiative {m['initiative']}"
            perspective = first.perspective.value if first else None
            place = (m["facility"], None, None)
            out[name] = self._fired(name, MILESTONE_MISSED, place, m, perspective, summary, now)
        return out

    def _fired(
        self,
        name: str,
        what: str,
        place: GroupKey,
        item: Mapping[str, Any],
        perspective: str | None,
        summary: str,
        now: float,
    ) -> Change:
        return self._change(
            "fired", name, what, place, item["owner"], perspective, summary, item["due_ts"], now
        )

    def _resolved(self, name: str, place: GroupKey, now: float) -> Change:
        what = name.split(":", 1)[0]
        summary = "done, cancelled or due later" if what == ACTION_OVERDUE else "done, or due later"
        return self._change("resolved", name, what, place, None, None, f"{what}: {summary}", now, now)

    def _change(
        self,
        kind: Literal["fired", "resolved"],
        name: str,
        what: str,
        place: GroupKey,
        owner: str | None,
        perspective: str | None,
        summary: str,
        due: float,
        now: float,
    ) -> Change:
        severity = self.severity if kind == "fired" else "ok"
        return Change(
            kind=kind,
            name=name,
            place=place,
            labels={
                "kind": PLAN_KIND,
                "kpi": what,
                "perspective": perspective,
                "facility": place[0],
                "department": place[1],
                "unit": place[2],
                "severity": severity,
                "source": "plans",
                "owner": owner,
            },
            title=what.replace("_", " ").capitalize(),
            severity=severity,
            value=round(max(now - due, 0.0) / 3600, 2),
            threshold=0.0,
            unit_of_measure="h overdue",
            started=due,
            summary=summary,
            details={"item": name.split(":", 1)[1]},
        )
