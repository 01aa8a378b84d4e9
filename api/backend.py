"""What the API needs from a runtime. The embedded runtime provides it; so does the Kafka
runtime's API process (filled from the sample and alert topics)."""

from __future__ import annotations

from typing import Any, Protocol

from alerts.service import AlertService
from connectors.deadletters import DeadLetterStore
from engine.definitions import Catalogue
from engine.history import History
from engine.places import Places
from engine.runtime.state import KpiBoard


class Backend(Protocol):
    catalogue: Catalogue
    places: Places
    board: KpiBoard
    history: History
    alerts: AlertService
    dead_letters: DeadLetterStore
    ready: bool

    def health(self) -> dict[str, Any]: ...
