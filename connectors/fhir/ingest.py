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
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any, NamedTuple

import orjson
from prometheus_client import Counter

from connectors.deadletters import DeadLetterStore
from connectors.fhir.mapping import FHIRMapper
from connectors.fhir.outcome import FHIRInputError, Issue, issue, outcome, validate
from connectors.orders import OrderMemory
from engine.bus import EventSink, StorageUnavailable
from engine.config import FHIRLimits, FHIRSettings
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
OFF_LOOP_BYTES = 16 * 1024  # bodies above are parsed and validated on a worker thread; below, the
# hop to the thread costs more than the work (the bulk import posts resources one by one)
YIELD_EVERY = 100  # Bundle entries mapped between two turns of the event loop
NESTED = "nested too deeply to be a FHIR resource"

Answer = tuple[int, dict[str, Any]]
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
        limits: FHIRLimits | None = None,
    ):
        self.sink = sink
        self.dead_letters = dead_letters
        self.index = index
        self.zone = zone
        self.settings = settings or FHIRSettings()
        self.bounds = bounds
        self.limits = limits or FHIRLimits()
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

        if len(body) > OFF_LOOP_BYTES:
            checked = await asyncio.to_thread(check, body, resource_type, self.limits)
        else:
            checked = check(body, resource_type, self.limits)
        kind, payload = checked.kind, checked.payload
        if checked.refusal is not None:
            status, issues = checked.refusal
            if not checked.keep:
                return Posted(*self.too_large(issues, kind))
            return refuse(status, issues, kind)
        if kind == "Bundle":
            return Posted(*await self._bundle(payload, body, checked))
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

    def too_large(self, issues: list[Issue], kind: str = "unknown") -> Answer:
        """413, counted but not kept as a dead letter: replaying it would meet the same limit,
        and the sender, who still has it, is told to split it."""
        FHIR_RESOURCES.labels("rejected", kind if kind in MAPPED_TYPES else "other").inc()
        log.warning("fhir request refused as too large", extra={"reason": issues[0]["diagnostics"]})
        return 413, outcome(issues)

    # -- bundles ---------------------------------------------------------------------------------
    async def _bundle(self, bundle: dict[str, Any], body: bytes, checked: Checked) -> Answer:
        btype = bundle.get("type")
        entries = checked.entries
        gap_issues = self._check_notification(bundle, entries) if btype == "history" else []
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
            stored = await self._store(events)
        except FHIRInputError as exc:
            self._refuse(_raw(resource, body), exc.status, exc.issues, _type_of(resource))
            return f"{exc.status} Bad Request", exc.issues, 0
        except StorageUnavailable as exc:
            self._refuse(
                _raw(resource, body), 503, [issue("error", "transient", str(exc))], _type_of(resource)
            )
            return "503 Service Unavailable", [issue("error", "transient", f"{exc}; resend later")], 0
        FHIR_RESOURCES.labels("accepted", kind).inc()
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


def _raw(resource: Any, body: bytes) -> bytes:
    """One entry's resource for its dead letter; the whole body if it cannot be written back
    (orjson stops at 255 levels): kept whole rather than lost."""
    try:
        return orjson.dumps(resource)
    except TypeError:
        return body


def _type_of(resource: Any) -> str:
    return str(resource.get("resourceType", "unknown")) if isinstance(resource, dict) else "unknown"


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
