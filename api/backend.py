"""What the API needs from a runtime. The embedded runtime provides it; so does the Kafka
runtime's API process (filled from the sample and alert topics).

The API knows alerts and dead letters only through the small protocols here: the alert
service (alerts/service.py) and the dead-letter store and replayer (connectors/) satisfy them,
and the application package (carescore/serve.py) hands them in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from engine.benchmarks import PeerBenchmark
from engine.board import KpiBoard
from engine.config import ScorecardSettings
from engine.definitions import Catalogue
from engine.history import History
from engine.places import Places
from engine.reports import Level, ReportRow


class AlertRecord(Protocol):
    """One alert as the API shows it."""

    @property
    def kpi(self) -> str: ...

    def as_json(self) -> dict[str, Any]: ...


class Plans(Protocol):
    """Action plans (alerts/plans/store.py): actions, initiatives with milestones, analyses per
    KPI per period. Rows are the API's JSON; refusals raise ValueError with `field` and `status`."""

    def create_action(self, fields: Mapping[str, Any], actor: str) -> dict[str, Any]: ...

    def get_action(self, action_id: str) -> dict[str, Any] | None: ...

    def list_actions(self, filters: Mapping[str, Any], limit: int = 500) -> list[dict[str, Any]]: ...

    def update_action(self, action_id: str, fields: Mapping[str, Any], actor: str) -> dict[str, Any]: ...

    def events(self, kind: str, item_id: str) -> list[dict[str, Any]]: ...

    def markers(
        self, kpi: str | None, place: Mapping[str, str | None], start: float | None, end: float | None
    ) -> list[dict[str, Any]]: ...

    def create_initiative(
        self, fields: Mapping[str, Any], milestones: Sequence[Mapping[str, Any]], actor: str
    ) -> dict[str, Any]: ...

    def get_initiative(self, initiative_id: str) -> dict[str, Any] | None: ...

    def list_initiatives(self, filters: Mapping[str, Any], limit: int = 500) -> list[dict[str, Any]]: ...

    def update_initiative(
        self, initiative_id: str, fields: Mapping[str, Any], actor: str
    ) -> dict[str, Any]: ...

    def add_milestone(
        self, initiative_id: str, milestone: Mapping[str, Any], actor: str
    ) -> dict[str, Any]: ...

    def update_milestone(
        self, initiative_id: str, milestone_id: str, fields: Mapping[str, Any], actor: str
    ) -> dict[str, Any]: ...

    def put_analysis(
        self, kpi: str, period: str, place: tuple[str, str, str], text: Mapping[str, str], author: str
    ) -> dict[str, Any]: ...

    def analysis(self, kpi: str, period: str, place: tuple[str, str, str]) -> dict[str, Any]: ...

    def analyses(self, period: str, place: tuple[str, str, str]) -> list[dict[str, Any]]: ...


class Alerts(Protocol):
    """The alert service, as far as the API reads and acts on it."""

    @property
    def plans(self) -> Plans: ...

    def query(self, state: str | None = None, limit: int = 200) -> Sequence[AlertRecord]: ...

    def get(self, alert_id: str) -> AlertRecord | None: ...

    def started_between(self, start: str, end: str) -> Sequence[AlertRecord]:
        """Alerts whose breach began in [start, end) (ISO 8601 UTC), oldest first."""
        ...

    def firing(self) -> Sequence[AlertRecord]: ...

    def audit(self, alert_id: str) -> list[dict[str, Any]]: ...

    def notices(self, alert_id: str) -> list[dict[str, Any]]: ...

    def acknowledge(self, alert_id: str, who: str, note: str | None = None) -> AlertRecord | None: ...

    def silence(
        self, matchers: Mapping[Any, Any], starts: float, ends: float, by: str, comment: str | None
    ) -> dict[str, Any]: ...

    def silences(self, include_expired: bool = False) -> list[dict[str, Any]]: ...

    def expire_silence(self, silence_id: str, by: str) -> bool: ...


class DeadLetter(Protocol):
    def summary(self) -> dict[str, Any]: ...


class DeadLetters(Protocol):
    """Inputs that could not be used, kept for a look and a replay."""

    def query(
        self, *, source: str | None = None, limit: int = 100, after: int = 0
    ) -> Sequence[DeadLetter]: ...

    def count(self) -> dict[str, int]: ...

    def select(self, ids: list[int], source: str | None, include_replayed: bool) -> Sequence[Any]:
        """Letters to replay: these ids (KeyError naming the missing), or every pending one."""
        ...


class Replayed(Protocol):
    @property
    def taken(self) -> bool: ...

    def as_dict(self) -> dict[str, Any]: ...


class Replayer(Protocol):
    """Sends dead letters through their connector again."""

    async def replay(self, letters: Any) -> Sequence[Replayed]: ...


class Backend(Protocol):
    catalogue: Catalogue
    places: Places
    board: KpiBoard
    history: History
    alerts: Alerts
    dead_letters: DeadLetters
    ready: bool
    scorecard: ScorecardSettings
    peers: Mapping[str, list[PeerBenchmark]]
    """peer benchmark sets by KPI id (scorecard.benchmarks)"""
    small_cell_min: int  # privacy.small_cell_min: below it, viewers see patient-level values suppressed

    def health(self) -> dict[str, Any]: ...

    def report(self, kpi_id: str, start: datetime, end: datetime, by: Level = "unit") -> list[ReportRow]: ...
