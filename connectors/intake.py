"""Every connector over one sink: what `carescore run` serves, and what the import and
dead-letter replay commands drive without a server."""

from __future__ import annotations

from connectors.deadletters import DeadLetterStore
from connectors.feeds.ingest import FeedIngest
from connectors.fhir.ingest import FHIRIngest
from connectors.hl7v2.mapping import MapContext
from connectors.hl7v2.receiver import HL7Receiver
from engine.bus import EventSink
from engine.config import Settings


class Intake:
    def __init__(self, settings: Settings, sink: EventSink, dead_letters: DeadLetterStore):
        zone = settings.zone
        index = settings.places.index()
        self.hl7 = HL7Receiver(
            sink,
            dead_letters,
            MapContext(settings.places, zone, bounds=settings.engine.bounds()),
            allowed_facilities=settings.mllp.allowed_facilities,
            unused_triggers=settings.hl7.unused_triggers,
        )
        self.fhir = FHIRIngest(
            sink, dead_letters, index, zone, settings.fhir, settings.engine.bounds(), settings.fhir_limits
        )
        self.feeds = FeedIngest(sink, dead_letters, index, zone, settings.engine.bounds())
