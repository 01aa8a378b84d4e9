"""FHIR R4 ingest: single resources and Bundles, validated, mapped, stored, answered.

- transaction: all entries validate and map, or nothing is stored (400);
  answered with a transaction-response Bundle.
- batch: each entry on its own; answered with a batch-response Bundle (per-entry status).
- collection, message, history (subscription notifications), searchset: each entry on its
  own, answered with one OperationOutcome listing what was stored and what was not.
- Subscription notifications (R4B SubscriptionStatus, or the R4 backport's Parameters, as
  the first entry): the event number is checked against the last one seen for the
  subscription, and a gap is reported and counted, not ignored.
Rejected payloads go to the dead-letter store with the reason, like rejected HL7.

Hostile input is answered, never raised: a Bundle with more than fhir_limits.max_entries
entries gets 413 (the body limit is enforced while the body streams in, connectors/fhir/http.py),
JSON or a resource nested too deeply gets 400. Parsing and validating a large body (the
costly part: fhir.resources builds a model per element) runs on a worker thread, so a 20 MB
Bundle does not hold the event loop and with it every MLLP ACK; mapping and storing stay on
the loop (the order memory and the sink are the loop's).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, tzinfo
from typing import Any

import orjson

from connectors.deadletters import DeadLetterStore
from connectors.fhir.checks import (
    INDIVIDUAL,
    MAPPED_TYPES,
    OFF_LOOP_BYTES,
    YIELD_EVERY,
    Checked,
    EntryCheck,
    check,
)
from connectors.fhir.mapping import FHIRMapper
from connectors.fhir.notifications import Notifications
from connectors.fhir.outcome import FHIRInputError, Issue, issue, outcome
from connectors.metrics import FHIR_RESOURCES, NOTIFICATION_GAPS
from connectors.orders import OrderMemory
from connectors.pipeline import Pipeline, Result, counted, digest
from engine.bus import EventSink, RawInput, StorageUnavailable
from engine.config import FHIRLimits, FHIRSettings
from engine.events import EventBase
from engine.places import PlaceIndex
from engine.privacy import Pseudonyms
from engine.timebounds import DEFAULT_BOUNDS, TimeBounds

log = logging.getLogger(__name__)

__all__ = ["MAPPED_TYPES", "NOTIFICATION_GAPS", "FHIRIngest", "answered"]

Answer = tuple[int, dict[str, Any]]


def answered(status: int, body: dict[str, Any], events: int = 0, new: int = 0) -> Result:
    """A FHIR answer as the pipeline's Result: code the HTTP status, answer the body (an
    OperationOutcome or a response Bundle), text its first diagnostics."""
    first = (body.get("issue") or [{}])[0].get("diagnostics", "")
    return Result(str(status), status < 300, first, events, new, answer=body)


class FHIRIngest:
    def __init__(
        self,
        sink: EventSink,
        dead_letters: DeadLetterStore,
        index: PlaceIndex,
        zone: tzinfo,
        settings: FHIRSettings | None = None,
        bounds: TimeBounds = DEFAULT_BOUNDS,
        limits: FHIRLimits | None = None,
        pseudonyms: Pseudonyms | None = None,
    ):
        self.pipeline = Pipeline(sink, dead_letters, pseudonyms)
        self.index = index
        self.zone = zone
        self.settings = settings or FHIRSettings()
        self.bounds = bounds
        self.limits = limits or FHIRLimits()
        self.notifications = Notifications()
        self.orders = OrderMemory()  # lab orders seen: Specimens and results take their priority

    def mapper(self) -> FHIRMapper:
        return FHIRMapper(self.index, self.zone, self.settings, self.orders, self.bounds)

    def _note_orders(self, entries: list[dict[str, Any]]) -> None:
        """The Bundle's lab orders first: a Specimen or result may come before its order."""
        mapper = self.mapper()
        for entry in entries:
            resource = entry.get("resource")
            if isinstance(resource, dict) and resource.get("resourceType") == "ServiceRequest":
                mapper.note_order(resource)

    # -- entry points --------------------------------------------------------------------
    async def post(self, body: bytes, resource_type: str | None = None) -> Answer:
        """POST /fhir (a Bundle) or POST /fhir/{resource_type} (one resource)."""
        posted = await self.post_counted(body, resource_type)
        return int(posted.code), posted.answer

    async def post_counted(self, body: bytes, resource_type: str | None = None) -> Result:
        """post() as the pipeline's Result, with how many new events it stored (the bulk
        import and the dead-letter replay count them). A request answered 2xx is kept as
        received in the raw topic (when the sink keeps raw records) before it is answered;
        if that fails, 503 like a failed store (its events, stored, are duplicates when resent)."""
        received = time.time()
        result = await self._post_counted(body, resource_type)
        if not result.taken or not self.pipeline.keeps_raw:
            return result
        raw = RawInput(
            "fhir",
            body,
            "application/fhir+json",
            f"fhir:{resource_type or 'Bundle'}",
            received,
            f"fhir:{digest(body.decode('utf-8', 'surrogateescape'))}",
            detail=resource_type or "",
        )
        try:
            await self.pipeline.record(raw)
        except StorageUnavailable as exc:
            issues = [issue("error", "transient", f"{exc}; resend later")]
            return answered(*self._refuse(body, 503, issues, resource_type or "Bundle"))
        return result

    async def _post_counted(self, body: bytes, resource_type: str | None) -> Result:

        def refuse(status: int, issues: list[Issue], kind: str) -> Result:
            return answered(*self._refuse(body, status, issues, kind))

        if len(body) > OFF_LOOP_BYTES:
            checked = await asyncio.to_thread(check, body, resource_type, self.limits)
        else:
            checked = check(body, resource_type, self.limits)
        kind, payload = checked.kind, checked.payload
        if checked.refusal is not None:
            status, issues = checked.refusal
            if not checked.keep:
                return answered(*self.too_large(issues, kind))
            return refuse(status, issues, kind)
        if kind == "Bundle":
            return answered(*await self._bundle(payload, body, checked))
        if kind not in MAPPED_TYPES:
            note = (
                f"{kind} carries no KPI data; send Encounter, ServiceRequest, Specimen, DiagnosticReport, "
                "Observation, ChargeItem, Claim, QuestionnaireResponse, Task, Communication or Location"
            )
            return refuse(422, [issue("error", "not-supported", note, "resourceType")], kind)
        try:
            events, notes = self.mapper().map(payload)
        except FHIRInputError as exc:
            return refuse(exc.status, exc.issues, kind)
        try:
            stored = await self.pipeline.store_each(events)
        except StorageUnavailable as exc:
            return refuse(503, [issue("error", "transient", f"{exc}; resend later")], kind)
        counted(FHIR_RESOURCES, "accepted", kind).inc()
        summary = issue("information", "informational", f"{kind}: {len(events)} event(s), {stored} new")
        return answered(201 if stored else 200, outcome([summary, *notes]), len(events), stored)

    def too_large(self, issues: list[Issue], kind: str = "unknown") -> Answer:
        """413, counted but not kept as a dead letter: replaying it would meet the same limit,
        and the sender, who still has it, is told to split it."""
        counted(FHIR_RESOURCES, "rejected", kind if kind in MAPPED_TYPES else "other").inc()
        log.warning("fhir request refused as too large", extra={"reason": issues[0]["diagnostics"]})
        return 413, outcome(issues)

    # -- bundles ---------------------------------------------------------------------------------
    async def _bundle(self, bundle: dict[str, Any], body: bytes, checked: Checked) -> Answer:
        btype = bundle.get("type")
        entries = checked.entries
        gap_issues = self.notifications.check(entries) if btype == "history" else []
        self._note_orders(entries)
        if btype == "transaction":
            return await self._transaction(entries, checked.checks, body)
        if btype not in INDIVIDUAL:
            note = (
                f"Bundle.type {btype!r} is not taken (transaction, batch, message, collection, history are)"
            )
            return self._refuse(body, 422, [issue("error", "not-supported", note, "Bundle.type")], "Bundle")
        results = []
        for i, (entry, entry_check) in enumerate(zip(entries, checked.checks, strict=True)):
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)  # a Bundle of 10,000 unmapped entries stores nothing to wait on
            results.append(await self._entry(entry, entry_check, body))
        if btype == "batch":
            return 200, {
                "resourceType": "Bundle",
                "type": "batch-response",
                "entry": [
                    {"response": {"status": status, "outcome": outcome(iss)}} for status, iss, _ in results
                ],
            }
        stored = sum(n for _, _, n in results)
        issues = [
            issue(
                "information",
                "informational",
                f"Bundle ({btype}): {len(entries)} entries, {stored} new event(s)",
            )
        ]
        for i, (status, iss, _) in enumerate(results):
            for item in iss:
                if item["severity"] != "information" or status.startswith("2"):
                    issues.append({**item, "diagnostics": f"entry[{i}]: {item['diagnostics']}"})
        return 200, outcome(gap_issues + issues)

    async def _entry(
        self, entry: dict[str, Any], kind: EntryCheck, body: bytes
    ) -> tuple[str, list[Issue], int]:
        resource = entry.get("resource")
        if kind is None:  # id-only notifications, or a request without a resource
            return "200 OK", [issue("information", "informational", "no resource in this entry")], 0
        try:
            if isinstance(kind, FHIRInputError):
                raise kind
            if kind not in MAPPED_TYPES:
                return (
                    "200 OK",
                    [issue("information", "not-supported", f"{kind} carries no KPI data: skipped")],
                    0,
                )
            events, notes = self.mapper().map({**entry["resource"], "_fullUrl": entry.get("fullUrl")})
            stored = await self.pipeline.store_each(events)
        except FHIRInputError as exc:
            self._refuse(_raw(resource, body), exc.status, exc.issues, _type_of(resource))
            return f"{exc.status} Bad Request", exc.issues, 0
        except StorageUnavailable as exc:
            self._refuse(
                _raw(resource, body), 503, [issue("error", "transient", str(exc))], _type_of(resource)
            )
            return "503 Service Unavailable", [issue("error", "transient", f"{exc}; resend later")], 0
        counted(FHIR_RESOURCES, "accepted", kind).inc()
        return (
            "201 Created",
            [issue("information", "informational", f"{kind}: {len(events)} event(s)"), *notes],
            stored,
        )

    async def _transaction(
        self, entries: list[dict[str, Any]], checks: list[EntryCheck], body: bytes
    ) -> Answer:
        """All or nothing: map every entry first, store only if all mapped."""
        planned: list[tuple[list[EventBase], list[Issue], str]] = []
        for i, (entry, kind) in enumerate(zip(entries, checks, strict=True)):
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)  # nothing is stored before all are mapped: safe to yield
            if kind is None:
                planned.append(([], [], "200 OK"))
                continue
            try:
                if isinstance(kind, FHIRInputError):
                    raise kind
                if kind not in MAPPED_TYPES:
                    planned.append(
                        ([], [issue("information", "not-supported", f"{kind}: skipped")], "200 OK")
                    )
                    continue
                events, notes = self.mapper().map({**entry["resource"], "_fullUrl": entry.get("fullUrl")})
            except FHIRInputError as exc:
                issues = [{**x, "diagnostics": f"entry[{i}]: {x['diagnostics']}"} for x in exc.issues]
                return self._refuse(body, exc.status, issues, "Bundle")
            planned.append((events, notes, "201 Created"))
        try:
            await self.pipeline.store_each([e for events, _, _ in planned for e in events])
        except StorageUnavailable as exc:
            return self._refuse(body, 503, [issue("error", "transient", f"{exc}; resend later")], "Bundle")
        counted(FHIR_RESOURCES, "accepted", "Bundle").inc()
        return 200, {
            "resourceType": "Bundle",
            "type": "transaction-response",
            "entry": [
                {
                    "response": {
                        "status": status,
                        "outcome": outcome(
                            [issue("information", "informational", f"{len(events)} event(s)"), *notes]
                        ),
                    }
                }
                for events, notes, status in planned
            ],
        }

    # -- refusing ------------------------------------------------------------------------------
    def _refuse(self, body: bytes, status: int, issues: list[Issue], kind: str) -> Answer:
        counted(FHIR_RESOURCES, "rejected", kind if kind in MAPPED_TYPES else "other").inc()
        reason = "; ".join(i["diagnostics"] for i in issues)[:2000]
        letter = self.pipeline.keep(
            "fhir", f"{status}: {reason}", body, what="FHIR payload", content_type="application/fhir+json"
        )
        if letter is not None:
            issues = [*issues, issue("information", "informational", f"kept as dead letter {letter}")]
        return status, outcome(issues)


def _raw(resource: Any, body: bytes) -> bytes:
    """One entry's resource for its dead letter; the whole body if it cannot be written back
    (orjson stops at 255 levels): kept whole rather than lost."""
    try:
        return orjson.dumps(resource)
    except TypeError:
        return body


def _type_of(resource: Any) -> str:
    return str(resource.get("resourceType", "unknown")) if isinstance(resource, dict) else "unknown"


def now() -> datetime:
    return datetime.now(UTC)
