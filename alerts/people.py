"""Roles to people: whoever is on shift with the role where the alert is (the staffing
feed's roster), else the role's static fallback from routes.yaml."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from alerts.routes import Person, RoutesConfig
from engine.samples import GroupKey

log = logging.getLogger(__name__)

Roster = Callable[[str], list[tuple[str, GroupKey]]]  # roster role -> (staff id, place) on shift


@dataclass(frozen=True)
class Contact:
    staff_id: str
    role: str
    person: Person
    on_shift: bool

    def as_dict(self) -> dict[str, str | bool | None]:
        return {
            "staff_id": self.staff_id,
            "name": self.person.name,
            "role": self.role,
            "pager": self.person.pager,
            "on_shift": self.on_shift,
        }


class Directory:
    def __init__(self, config: RoutesConfig, roster: Roster | None = None):
        self.config = config
        self.roster = roster or (lambda _role: [])

    def resolve(self, role_id: str, place: GroupKey, owner: str | None = None) -> list[Contact]:
        role = self.config.roles[role_id]
        facility, department, unit = place
        if role.scope == "owner":
            if owner is not None and owner in self.config.people:
                return [Contact(owner, role_id, self.config.people[owner], False)]
            fallback = role.fallback.get(facility, [])
            return [Contact(s, role_id, self.config.people[s], False) for s in fallback]
        wanted = {"unit": unit, "department": department, "facility": facility}[role.scope]
        if wanted is None:  # e.g. a facility-wide alert for a per-unit role: nobody in particular
            return []

        def in_scope(p: GroupKey) -> bool:
            if p[0] != facility:
                return False
            return {"unit": p[2] == unit, "department": p[1] == department, "facility": True}[role.scope]

        on_shift = sorted(s for s, p in self.roster(role.roster_role or role_id) if in_scope(p))
        found = [
            Contact(s, role_id, self.config.people[s], True) for s in on_shift if s in self.config.people
        ]
        unknown = [s for s in on_shift if s not in self.config.people]
        if unknown:
            log.warning(
                "on shift but not in the contact list (routes.yaml people)",
                extra={"role": role_id, "staff": unknown},
            )
        if found:
            return found
        return [Contact(s, role_id, self.config.people[s], False) for s in role.fallback.get(wanted, [])]
