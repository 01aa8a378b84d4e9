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
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, tzinfo
from typing import Any, NamedTuple

import orjson
from prometheus_client import Counter

from connectors.deadletters import DeadLetterStore
from connectors.fhir.mapping import FHIRMapper
from connectors.fhir.outcome import FHIRInputError, Issue, issue, outcome, validate
from connectors.orders import OrderMemory
from engine.bus import EventSink, StorageUnavailable
from engine.config import FHIRSettings
from engine.events import EventBase
from engine.places import PlaceIndex
from engine.timebounds import DEFAULT_BOUNDS, TimeBounds

log = logging.getLogger(__name__)

FHIR_RESOURCES = Counter(
    "carescore_fhir_resources", "FHIR resources received, by outcome and type.", ["outcome", "resource_type"]
)
NOTIFICATION_GAPS = Counter(
    "carescore_fhir_notification_gaps", "Subscription notifications missing between two that arrived."
)
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

Answer = tuple[int, dict[str, Any]]


class Posted(NamedTuple):
    status: int
    answer: dict[str, Any]
    events: int = 0  # mapped
    new: int = 0  # of those, stored now (the rest were stored before)


class FHIRIngest:
    def __init__(
        self,
        sink: EventSink,
        dead_letters: DeadLetterStore,
        index: PlaceIndex,
        zone: tzinfo,
        settings: FHIRSettings | None = None,
        bounds: TimeBounds = DEFAULT_BOUNDS,
    ):
        self.sink = sink
        self.dead_letters = dead_letters
        self.index = index
        self.zone = zone
        self.settings = settings or FHIRSettings()
        self.bounds = bounds
        self.notifications: dict[str, int] = {}  # subscription -> last event number
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
        return posted.status, posted.answer

    async def post_counted(self, body: bytes, resource_type: str | None = None) -> Posted:
        """post(), and how many new events it stored (the bulk import counts them)."""

        def refuse(status: int, issues: list[Issue], kind: str) -> Posted:
            return Posted(*self._refuse(body, status, issues, kind))

        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return refuse(400, [issue("error", "structure", f"not JSON: {exc}")], "unreadable")
        try:
            kind = validate(_shell(payload), resource_type)
        except FHIRInputError as exc:
            name = payload.get("resourceType", "unknown") if isinstance(payload, dict) else "unknown"
            return refuse(exc.status, exc.issues, str(name))
        if kind == "Bundle":
            if resource_type not in (None, "Bundle"):
                return refuse(400, [issue("error", "invalid", "a Bundle goes to POST /fhir")], kind)
            return Posted(*await self._bundle(payload, body))
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
            stored = await self._store(events)
        except StorageUnavailable as exc:
            return refuse(503, [issue("error", "transient", f"{exc}; resend later")], kind)
        FHIR_RESOURCES.labels("accepted", kind).inc()
        summary = issue("information", "informational", f"{kind}: {len(events)} event(s), {stored} new")
        return Posted(201 if stored else 200, outcome([summary, *notes]), len(events), stored)

    # -- bundles ---------------------------------------------------------------------------------
    async def _bundle(self, bundle: dict[str, Any], body: bytes) -> Answer:
        btype = bundle.get("type")
        entries = [e for e in bundle.get("entry") or [] if isinstance(e, dict)]
        gap_issues = self._check_notification(bundle, entries) if btype == "history" else []
        self._note_orders(entries)
        if btype == "transaction":
            return await self._transaction(entries, body)
        if btype not in INDIVIDUAL:
            note = (
                f"Bundle.type {btype!r} is not taken (transaction, batch, message, collection, history are)"
            )
            return self._refuse(body, 422, [issue("error", "not-supported", note, "Bundle.type")], "Bundle")
        results = [await self._entry(e, i) for i, e in enumerate(entries)]
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

    async def _entry(self, entry: dict[str, Any], index: int) -> tuple[str, list[Issue], int]:
        resource = entry.get("resource")
        if resource is None:  # id-only notifications, or a request without a resource
            return "200 OK", [issue("information", "informational", "no resource in this entry")], 0
        raw = orjson.dumps(resource)
        try:
            kind = validate(resource)
            if kind not in MAPPED_TYPES:
                return (
                    "200 OK",
                    [issue("information", "not-supported", f"{kind} carries no KPI data: skipped")],
                    0,
                )
            resource = {**resource, "_fullUrl": entry.get("fullUrl")}
            events, notes = self.mapper().map(resource)
            stored = await self._store(events)
        except FHIRInputError as exc:
            self._refuse(raw, exc.status, exc.issues, str(resource.get("resourceType", "unknown")))
            return f"{exc.status} Bad Request", exc.issues, 0
        except StorageUnavailable as exc:
            self._refuse(raw, 503, [issue("error", "transient", str(exc))], str(resource.get("resourceType")))
            return "503 Service Unavailable", [issue("error", "transient", f"{exc}; resend later")], 0
        FHIR_RESOURCES.labels("accepted", kind).inc()
        return (
            "201 Created",
            [issue("information", "informational", f"{kind}: {len(events)} event(s)"), *notes],
            stored,
        )

    async def _transaction(self, entries: list[dict[str, Any]], body: bytes) -> Answer:
        """All or nothing: map every entry first, store only if all mapped."""
        planned: list[tuple[list[EventBase], list[Issue], str]] = []
        for i, entry in enumerate(entries):
            resource = entry.get("resource")
            if resource is None:
                planned.append(([], [], "200 OK"))
                continue
            try:
                kind = validate(resource)
                if kind not in MAPPED_TYPES:
                    planned.append(
                        ([], [issue("information", "not-supported", f"{kind}: skipped")], "200 OK")
                    )
                    continue
                events, notes = self.mapper().map({**resource, "_fullUrl": entry.get("fullUrl")})
            except FHIRInputError as exc:
                issues = [{**x, "diagnostics": f"entry[{i}]: {x['diagnostics']}"} for x in exc.issues]
                return self._refuse(body, exc.status, issues, "Bundle")
            planned.append((events, notes, "201 Created"))
        try:
            await self._store([e for events, _, _ in planned for e in events])
        except StorageUnavailable as exc:
            return self._refuse(body, 503, [issue("error", "transient", f"{exc}; resend later")], "Bundle")
        FHIR_RESOURCES.labels("accepted", "Bundle").inc()
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

    def _check_notification(self, bundle: dict[str, Any], entries: list[dict[str, Any]]) -> list[Issue]:
        """Subscriptions backport: count events since subscription start; report gaps."""
        if not entries:
            return []
        status = entries[0].get("resource") or {}
        subscription, first, last = _notification_numbers(status)
        if subscription is None or first is None:
            return []
        previous = self.notifications.get(subscription)
        self.notifications[subscription] = max(last or first, previous or 0)
        if previous is not None and first > previous + 1:
            missing = first - previous - 1
            NOTIFICATION_GAPS.inc(missing)
            log.warning(
                "fhir subscription notifications missing",
                extra={"subscription": subscription, "missing": missing},
            )
            return [
                issue(
                    "warning",
                    "incomplete",
                    f"{subscription}: {missing} notification(s) missing between {previous} and {first}; "
                    "query the server for what changed",
                )
            ]
        return []

    # -- storing and refusing ------------------------------------------------------------------
    async def _store(self, events: list[EventBase]) -> int:
        """Each event under its own key: a resource sent again stores nothing new."""
        if not events:
            return 0
        nowait = getattr(self.sink, "publish_nowait", None)
        pending = [
            nowait(e.source_id, [e]) if nowait is not None else self.sink.publish(e.source_id, [e])
            for e in events
        ]
        results = await asyncio.gather(*pending)
        return sum(1 for r in results if r.value == "accepted")

    def _refuse(self, body: bytes, status: int, issues: list[Issue], kind: str) -> Answer:
        FHIR_RESOURCES.labels("rejected", kind if kind in MAPPED_TYPES else "other").inc()
        reason = "; ".join(i["diagnostics"] for i in issues)[:2000]
        try:
            letter = self.dead_letters.add(
                "fhir", f"{status}: {reason}", body, content_type="application/fhir+json"
            )
            issues = [*issues, issue("information", "informational", f"kept as dead letter {letter}")]
        except Exception:
            log.exception("could not keep a rejected FHIR payload in the dead-letter store")
        return status, outcome(issues)


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


def _notification_numbers(status: dict[str, Any]) -> tuple[str | None, int | None, int | None]:
    """(subscription, first event number, last event number) of a notification's status."""
    if status.get("resourceType") == "SubscriptionStatus":
        subscription = (status.get("subscription") or {}).get("reference")
        numbers = [int(e["eventNumber"]) for e in status.get("notificationEvent") or [] if "eventNumber" in e]
        total = status.get("eventsSinceSubscriptionStart")
        if not numbers and total is not None:
            numbers = [int(total)]
        return subscription, min(numbers, default=None), max(numbers, default=None)
    if status.get("resourceType") == "Parameters":
        params = {p.get("name"): p for p in status.get("parameter") or []}
        subscription = (params.get("subscription") or {}).get("valueReference", {}).get("reference")
        numbers = []
        for p in status.get("parameter") or []:
            if p.get("name") == "notification-event":
                for part in p.get("part") or []:
                    if part.get("name") == "event-number":
                        numbers.append(int(part.get("valueString") or part.get("valueInteger64") or 0))
        since = params.get("events-since-subscription-start")
        if not numbers and since is not None:
            numbers = [int(since.get("valueString") or since.get("valueInteger64") or 0)]
        return subscription, min(numbers, default=None), max(numbers, default=None)
    return None, None, None


def now() -> datetime:
    return datetime.now(UTC)
