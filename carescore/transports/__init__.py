"""Two ways events reach the engine: the embedded log and Kafka, behind one shell."""

from __future__ import annotations

from engine.config import Settings
from engine.core import Engine
from engine.definitions import Catalogue


def live_engine(settings: Settings, catalogue: Catalogue) -> Engine:
    """The engine a transport runs (the embedded runtime, each Kafka worker partition): the
    site's units and time zone, idle watermarks advancing on the wall clock."""
    return Engine(
        catalogue,
        settings.places,
        idle_timeout=settings.engine.idle_timeout,
        timezone=settings.timezone,
        wall_clock=True,
    )
