"""Parsing and validating a FHIR request body, before anything is mapped: JSON, the Bundle's
size (fhir_limits.max_entries), each resource against its R4 model. No state is touched, so
a large body is checked on a worker thread (connectors/fhir/ingest.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from connectors.fhir.outcome import FHIRInputError, Issue, issue, validate
from engine.config import FHIRLimits

MAPPED_TYPES = {
    "Encounter",
    "ServiceRequest",
    "Specimen",
    "DiagnosticReport",
    "Observation",
    "ChargeItem",
    "Claim",
    "QuestionnaireResponse",
    "Task",
    "Communication",
    "Location",
    "Procedure",
    "Bundle",
}
INDIVIDUAL = {"batch", "collection", "message", "history", "searchset", "document"}
OFF_LOOP_BYTES = 16 * 1024  # bodies above are parsed and validated on a worker thread; below, the
# hop to the thread costs more than the work (the bulk import posts resources one by one)
YIELD_EVERY = 100  # Bundle entries mapped between two turns of the event loop
NESTED = "nested too deeply to be a FHIR resource"

EntryCheck = str | FHIRInputError | None  # the entry's resource type, why it is invalid, or no resource


@dataclass
class Checked:
    """What parsing and validating a body found (on a worker thread for a large body)."""

    payload: Any = None
    kind: str = "unknown"  # the resource type, as counted in FHIR_RESOURCES
    refusal: tuple[int, list[Issue]] | None = None
    keep: bool = True  # a refused body is kept as a dead letter (not when it is too large)
    entries: list[dict[str, Any]] = field(default_factory=list)  # a Bundle's
    checks: list[EntryCheck] = field(default_factory=list)  # each entry's resource, validated


def check(body: bytes, resource_type: str | None, limits: FHIRLimits) -> Checked:
    """Parse and validate: no state is touched, so it can run on any thread."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:  # also JSON nested deeper than orjson's 1024 levels
        return Checked(kind="unreadable", refusal=(400, [issue("error", "structure", f"not JSON: {exc}")]))
    name = str(payload.get("resourceType", "unknown")) if isinstance(payload, dict) else "unknown"
    entries = payload.get("entry") if name == "Bundle" else None
    if isinstance(entries, list) and len(entries) > limits.max_entries:
        note = (
            f"the Bundle has {len(entries)} entries; at most {limits.max_entries} are taken in one "
            "request (fhir_limits.max_entries): split it"
        )
        return Checked(
            kind=name, refusal=(413, [issue("error", "too-costly", note, "Bundle.entry")]), keep=False
        )
    try:
        kind = _validate(_shell(payload), resource_type)
    except FHIRInputError as exc:
        return Checked(payload, name, (exc.status, exc.issues))
    if kind != "Bundle":
        return Checked(payload, kind)
    if resource_type not in (None, "Bundle"):
        return Checked(payload, kind, (400, [issue("error", "invalid", "a Bundle goes to POST /fhir")]))
    taken = [e for e in payload.get("entry") or [] if isinstance(e, dict)]
    btype = payload.get("type")
    checks = [_check_entry(e) for e in taken] if btype == "transaction" or btype in INDIVIDUAL else []
    return Checked(payload, kind, entries=taken, checks=checks)


def _validate(resource: Any, expected_type: str | None = None) -> str:
    """validate(), with nesting past the recursion limit an input error (400), not a crash."""
    try:
        return validate(resource, expected_type)
    except RecursionError:
        raise FHIRInputError(400, [issue("error", "structure", NESTED)]) from None


def _check_entry(entry: dict[str, Any]) -> EntryCheck:
    resource = entry.get("resource")
    if resource is None:
        return None
    try:
        return _validate(resource)
    except FHIRInputError as exc:
        return exc


def _shell(payload: Any) -> Any:
    """A Bundle without its entries' resources: each entry is validated on its own, so one
    bad entry is reported as that entry (and a batch keeps the good ones)."""
    if not isinstance(payload, dict) or payload.get("resourceType") != "Bundle":
        return payload
    entries = [
        {k: v for k, v in e.items() if k != "resource"} if isinstance(e, dict) else e
        for e in payload.get("entry") or []
    ]
    return {**payload, "entry": entries} if entries else payload
