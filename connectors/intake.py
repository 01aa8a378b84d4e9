"""Every connector over one sink and one pipeline (connectors/pipeline.py): what `carescore
run` serves, and what the import and dead-letter replay commands drive without a server."""

from __future__ import annotations

from connectors.deadletters import DeadLetterStore
from connectors.feeds.ingest import FeedIngest
from connectors.fhir.ingest import FHIRIngest
from connectors.hl7v2.mapping import MapContext
from connectors.hl7v2.receiver import HL7Receiver
from connectors.pipeline import Pipeline
from engine.bus import EventSink
from engine.config import Settings
from engine.privacy import pseudonyms_from


class Intake:
    def __init__(self, settings: Settings, sink: EventSink, dead_letters: DeadLetterStore):
        pseudonyms = pseudonyms_from(settings.pseudonym_key_file)
        self.pipeline = Pipeline(sink, dead_letters, pseudonyms)
        zone = settings.zone
        index = settings.places.index()
        self.hl7 = HL7Receiver(
            sink,
            dead_letters,
            MapContext(settings.places, zone, bounds=settings.engine.bounds()),
            allowed_facilities=settings.mllp.allowed_facilities,
            unused_triggers=settings.hl7.unused_triggers,
            pseudonyms=pseudonyms,
        )
        self.fhir = FHIRIngest(
            sink,
            dead_letters,
            index,
            zone,
            settings.fhir,
            settings.engine.bounds(),
            settings.fhir_limits,
            pseudonyms=pseudonyms,
        )
        self.feeds = FeedIngest(
            sink, dead_letters, index, zone, settings.engine.bounds(), pseudonyms=pseudonyms
        )

    def keep_unusable(self, raw: bytes, reason: str) -> None:
        """MLLP data that is no message at all (junk between frames, an oversize or cut-off
        frame): kept as an "mllp" dead letter, replayable as HL7 once the sender is fixed."""
        self.pipeline.keep("mllp", reason, raw, what="unusable MLLP data")
