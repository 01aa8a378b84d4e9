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


class Alerts(Protocol):
    """The alert service, as far as the API reads and acts on it."""

    def query(self, state: str | None = None, limit: int = 200) -> Sequence[AlertRecord]: ...

    def get(self, alert_id: str) -> AlertRecord | None: ...

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
    small_cell_min: int  # privacy.small_cell_min: below it, viewers see patient-level values suppressed

    def health(self) -> dict[str, Any]: ...

    def report(self, kpi_id: str, start: datetime, end: datetime, by: Level = "unit") -> list[ReportRow]: ...
