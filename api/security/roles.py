"""What each carescore role may do, as data (`GRANTS`), and the one question routes ask: `allowed`.

    viewer       the page, KPIs, history, reports, the live stream (SSE), alerts (read), /metrics,
                 saving their own scorecard views; patient-level values from fewer than
                 privacy.small_cell_min patients suppressed
    clinician    what a viewer may, small cells shown, and acknowledge alerts, manage actions and
                 write analyses — for the units in their token only
    ops          what a viewer may, small cells shown, and silences, dead letters, replay
    integration  ingest (HL7/FHIR/feed uploads) and nothing else
    admin        everything, for every unit

A permission granted with `Scope.OWN_UNITS` holds only for a unit named in the principal's `units`
(from the IdP's claims or groups), and never for a question that names no unit.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from api.security.oidc import Principal


class Role(StrEnum):
    VIEWER = "viewer"
    CLINICIAN = "clinician"
    OPS = "ops"
    INTEGRATION = "integration"
    ADMIN = "admin"


class Permission(StrEnum):
    VIEW_PAGE = "view_page"
    VIEW_KPIS = "view_kpis"
    VIEW_HISTORY = "view_history"
    VIEW_REPORTS = "view_reports"
    VIEW_STREAM = "view_stream"  # SSE
    VIEW_ALERTS = "view_alerts"
    SAVE_VIEWS = "save_views"  # one's own scorecard views (shared ones: admin)
    VIEW_SMALL_CELLS = "view_small_cells"  # patient-level values from few patients (engine/smallcells.py)
    ACK_ALERTS = "ack_alerts"
    MANAGE_ACTIONS = "manage_actions"  # actions, initiatives, analyses (action plans)
    MANAGE_SILENCES = "manage_silences"
    VIEW_DEAD_LETTERS = "view_dead_letters"
    REPLAY_DEAD_LETTERS = "replay_dead_letters"
    INGEST = "ingest"
    VIEW_METRICS = "view_metrics"
    ADMIN = "admin"  # settings, users' view of the audit trail: whatever only an admin does


class Scope(StrEnum):
    ALL = "all"  # every unit, and questions that name no unit
    OWN_UNITS = "own_units"  # only the units in the principal's units claim


_VIEW = {
    Permission.VIEW_PAGE: Scope.ALL,
    Permission.VIEW_KPIS: Scope.ALL,
    Permission.VIEW_HISTORY: Scope.ALL,
    Permission.VIEW_REPORTS: Scope.ALL,
    Permission.VIEW_STREAM: Scope.ALL,
    Permission.VIEW_ALERTS: Scope.ALL,
    Permission.SAVE_VIEWS: Scope.ALL,
}

#: role -> {permission: scope}. The one table of who may do what.
GRANTS: Mapping[Role, Mapping[Permission, Scope]] = {
    Role.VIEWER: {**_VIEW, Permission.VIEW_METRICS: Scope.ALL},  # Prometheus scrapes with a viewer token
    Role.CLINICIAN: {
        **_VIEW,
        Permission.VIEW_SMALL_CELLS: Scope.ALL,
        Permission.ACK_ALERTS: Scope.OWN_UNITS,
        Permission.MANAGE_ACTIONS: Scope.OWN_UNITS,  # initiatives name no unit: admins only
    },
    Role.OPS: {
        **_VIEW,
        Permission.VIEW_SMALL_CELLS: Scope.ALL,
        Permission.MANAGE_SILENCES: Scope.ALL,
        Permission.VIEW_DEAD_LETTERS: Scope.ALL,
        Permission.REPLAY_DEAD_LETTERS: Scope.ALL,
        Permission.VIEW_METRICS: Scope.ALL,
    },
    Role.INTEGRATION: {Permission.INGEST: Scope.ALL},
    Role.ADMIN: dict.fromkeys(Permission, Scope.ALL),
}


def allowed(principal: Principal, permission: Permission | str, unit: str | None = None) -> bool:
    """May `principal` do `permission` (for `unit`, when the action concerns one unit)?"""
    wanted = Permission(permission)
    for name in principal.roles:
        try:
            scope = GRANTS[Role(name)].get(wanted)
        except ValueError:
            continue  # not a carescore role
        if scope is Scope.ALL or (scope is Scope.OWN_UNITS and unit is not None and unit in principal.units):
            return True
    return False
