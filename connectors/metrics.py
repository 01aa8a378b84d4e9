"""Connector metrics (prometheus client_python naming: unit suffixes, bounded labels)."""

from prometheus_client import Counter, Histogram

HL7_MESSAGES = Counter(
    "carescore_hl7_messages",
    "HL7 v2 messages received, by acknowledgement code and message type.",
    ["ack", "message_type"],
)
HL7_UNUSED = Counter(
    "carescore_hl7_unused",
    "HL7 v2 messages of a trigger event no KPI uses, acknowledged AA without events "
    "(hl7.unused_triggers: accept), by type.",
    ["type"],
)
HL7_INTERNAL_ERRORS = Counter(
    "carescore_hl7_internal_errors",
    "HL7 v2 messages answered AE 207 because of an unexpected error (a bug) while mapping or "
    "storing them; each is a dead letter.",
    ["stage"],
)
HL7_DUPLICATES = Counter(
    "carescore_hl7_duplicate_messages",
    "HL7 v2 messages acknowledged again without storing (same facility, control id, content).",
)
HL7_ACK_SECONDS = Histogram(
    "carescore_hl7_ack_seconds",
    "Time from a complete MLLP frame to its ACK being written.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
FHIR_RESOURCES = Counter(
    "carescore_fhir_resources", "FHIR resources received, by outcome and type.", ["outcome", "resource_type"]
)
NOTIFICATION_GAPS = Counter(
    "carescore_fhir_notification_gaps", "Subscription notifications missing between two that arrived."
)
FEED_ROWS = Counter("carescore_feed_rows", "Feed rows received, by feed and outcome.", ["feed", "outcome"])
MLLP_FRAMING_ERRORS = Counter(
    "carescore_mllp_framing_errors",
    "MLLP framing problems: junk outside frames, oversize or unterminated messages.",
    ["kind"],
)
MLLP_CONNECTIONS = Counter("carescore_mllp_connections", "MLLP connections accepted.")
DEAD_LETTERS = Counter(
    "carescore_dead_letters", "Inputs kept in the dead-letter store, by source.", ["source"]
)
DEAD_LETTERS_DROPPED = Counter(
    "carescore_dead_letters_dropped",
    "Dead letters deleted: past retention, over the cap, or over the memory bound while the store "
    "could not be written.",
    ["why"],
)
HL7_FACILITY_REFUSED = Counter(
    "carescore_hl7_facility_refused",
    "HL7 v2 messages answered AR because an event's facility is not one the client certificate "
    "may send for (mllp.client_facilities).",
)
MLLP_REFUSED = Counter(
    "carescore_mllp_connections_refused",
    "MLLP connections closed on arrival because mllp.max_connections were already open.",
)
INBOX_FILES = Counter(
    "carescore_feed_inbox_files",
    "Files from the watched feed folder, by outcome: taken (done/), failed (failed/), vanished, "
    "purged (past retention).",
    ["outcome"],
)
