"""What the API needs from a runtime. The embedded runtime provides it; so does the Kafka
runtime's API process (filled from the sample and alert topics)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from alerts.service import AlertService
from connectors.deadletters import DeadLetterStore
from engine.board import KpiBoard
from engine.config import ScorecardSettings
from engine.definitions import Catalogue
from engine.history import History
from engine.places import Places
from engine.reports import Level, ReportRow


class Backend(Protocol):
    catalogue: Catalogue
    places: Places
    board: KpiBoard
    history: History
    alerts: AlertService
    dead_letters: DeadLetterStore
    ready: bool
    scorecard: ScorecardSettings

    def health(self) -> dict[str, Any]: ...

    def report(self, kpi_id: str, start: datetime, end: datetime, by: Level = "unit") -> list[ReportRow]: ...
