"""FHIR R4 ingest over HTTP: every official example with its outcome, Bundle semantics,
idempotent snapshots, element paths in OperationOutcome, subscription notification gaps."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from carescore.serve import Service
from engine.privacy import Pseudonyms, load_key
from tests.conftest import needs_testdata

FHIR = {"Content-Type": "application/fhir+json"}

# Reviewed outcomes: (HTTP status, events stored). Files not listed must still answer with a
# well-formed OperationOutcome / response Bundle, 2xx or 4xx, and leave a dead letter on 4xx.
EXPECTED = {
    "Encounter-emerg.json": (201, 5),  # arrived, then moved through 3 more locations, ... in progress
    "Encounter-f203.json": (201, 2),  # admitted and discharged (period start/end)
    "Encounter-home.json": (201, 2),
    "Encounter-example.json": (200, 0),  # no period: nothing to place in time
    "ServiceRequest-example-pgx.json": (201, 1),  # a LOINC-coded order with authoredOn
    "ServiceRequest-colonoscopy.json": (200, 0),  # not a laboratory order
    "ServiceRequest-ft4.json": (200, 0),  # laboratory, but no authoredOn
    "Specimen-101.json": (201, 2),  # collected and received
    "Specimen-sst.json": (201, 1),
    "Specimen-isolate.json": (200, 0),  # no request to pair with
    "Claim-100156.json": (201, 1),
    "Claim-100150.json": (200, 0),  # no total
    "ChargeItem-example.json": (201, 1),
    "Procedure-f001.json": (201, 1),
    "Procedure-ambulation.json": (200, 0),  # not done
    "Task-example1.json": (200, 0),  # a lab task, not a nurse call
    "QuestionnaireResponse-f201.json": (200, 0),  # a history questionnaire, not patient experience
    "Location-2.json": (200, 0),  # a room, not a bed
    "Patient-example.json": (422, 0),  # no KPI data in a Patient on its own
    "Bundle-f001.json": (200, 1),  # collection: DiagnosticReport basedOn its ServiceRequest
    "Bundle-bundle-transaction.json": (200, 0),  # transaction of Patients and Parameters
}


async def post(svc: Service, path: str, body: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{svc.api_port}") as client:
        return await client.post(path, content=content, headers=FHIR)


def fhir_events(svc: Service) -> list[dict[str, Any]]:
    return [r for r in svc.runtime.log.raw_records() if r["source"] == "fhir"]


async def test_every_official_example_gets_its_outcome(service: Service) -> None:
    folder = needs_testdata("fhir-r4/r4-examples")
    files = sorted(folder.glob("*.json"))
    assert len(files) > 250
    statuses: Counter[int] = Counter()
    for path in files:
        resource = json.loads(path.read_bytes())
        before = len(fhir_events(service))
        letters_before = len(service.runtime.dead_letters.query(source="fhir", limit=10_000))
        url = "/fhir" if resource["resourceType"] == "Bundle" else f"/fhir/{resource['resourceType']}"
        response = await post(service, url, path.read_bytes())
        statuses[response.status_code] += 1
        assert response.headers["content-type"] == "application/fhir+json"
        body = response.json()
        assert body["resourceType"] in ("OperationOutcome", "Bundle"), path.name
        stored = len(fhir_events(service)) - before
        letters = len(service.runtime.dead_letters.query(source="fhir", limit=10_000)) - letters_before
        if response.status_code >= 400:
            assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["severity"] == "error"
            assert letters == 1 and stored == 0, path.name
        else:
            assert letters == 0, path.name
        if path.name in EXPECTED:
            assert (response.status_code, stored) == EXPECTED[path.name], (path.name, body)
    print(f"\nFHIR examples: {len(files)} files, {dict(statuses)}")
    assert set(statuses) <= {200, 201, 422}


def encounter(status: str, start: str, end: str | None = None, unit: str = "4W") -> dict[str, Any]:
    period = {"start": start, **({"end": end} if end else {})}
    return {
        "resourceType": "Encounter",
        "id": "enc-1",
        "status": status,
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": {"reference": "Patient/p1"},
        "period": period,
        "location": [{"location": {"reference": f"Location/{unit}"}, "period": {"start": start}}],
    }


async def test_encounter_snapshots_are_idempotent_and_move_the_census(service: Service) -> None:
    start = (datetime.now(UTC) - timedelta(hours=5)).isoformat(timespec="seconds")
    end = (datetime.now(UTC) - timedelta(hours=1)).isoformat(timespec="seconds")
    first = await post(service, "/fhir/Encounter", encounter("in-progress", start))
    again = await post(service, "/fhir/Encounter", encounter("in-progress", start))
    assert (first.status_code, again.status_code) == (201, 200)  # the same admission, stored once
    stay = Pseudonyms(load_key(service.settings.pseudonym_key_file)).of("enc", "enc-1")  # the engine's key
    census = service.runtime.engine.census.stays[stay]
    assert census.place == ("DEMO", "medicine", "4W")
    done = await post(service, "/fhir/Encounter", encounter("finished", start, end))
    assert done.status_code == 201
    kinds = [r["type"] for r in fhir_events(service)]
    assert kinds == ["encounter.admit", "encounter.discharge"]
    assert service.runtime.engine.census.stays[stay].place is None


async def test_invalid_elements_are_named_in_the_outcome(service: Service) -> None:
    bad = encounter("in-progress", "yesterday")
    response = await post(service, "/fhir/Encounter", bad)
    assert response.status_code == 400
    paths = [i["expression"][0] for i in response.json()["issue"] if i["severity"] == "error"]
    assert "Encounter.period.start" in paths and "Encounter.location[0].period.start" in paths
    wrong_type = await post(service, "/fhir/Observation", encounter("in-progress", "2026-01-01"))
    assert wrong_type.status_code == 400 and "resourceType" in wrong_type.json()["issue"][0]["diagnostics"]
    not_json = await post(service, "/fhir", b"{not json")
    assert not_json.status_code == 400


async def test_a_charge_item_amount_is_its_total_price_and_must_be_finite(service: Service) -> None:
    """FHIR R4 ChargeItem.priceOverride is the "total price of the charge overriding the list
    price associated with the code": the amount whatever the quantity (before, it was multiplied
    by ChargeItem.quantity). A decimal of "1e400" passes the R4 model but is inf as a number:
    refused, not stored (the event log would have written it as null, which a restore refuses)."""
    when = datetime.now(UTC).isoformat(timespec="seconds")

    def charge(ident: str, price: float | str, quantity: float) -> dict[str, Any]:
        return {
            "resourceType": "ChargeItem",
            "id": ident,
            "status": "billed",
            "code": {"text": "test"},
            "subject": {"reference": "Patient/p1"},
            "occurrenceDateTime": when,
            "quantity": {"value": quantity},
            "priceOverride": {"value": price, "currency": "USD"},
        }

    huge = await post(service, "/fhir/ChargeItem", charge("huge", "1e400", 1))
    assert huge.status_code == 422, huge.text
    errors = [i for i in huge.json()["issue"] if i["severity"] == "error"]
    assert errors[0]["expression"] == ["ChargeItem.priceOverride.value"]
    assert "not a finite amount" in errors[0]["diagnostics"]
    assert len(service.runtime.dead_letters.query(source="fhir", limit=10)) == 1  # kept, replayable
    four = await post(service, "/fhir/ChargeItem", charge("four", 12.5, 4))
    assert four.status_code == 201, four.text
    # 12.5 is the total for the four units, by R4's definition; the only charge stored
    assert [e["amount"] for e in fhir_events(service)] == [12.5]


async def test_transaction_is_all_or_nothing_and_batch_is_per_entry(service: Service) -> None:
    good = encounter("in-progress", "2026-02-01T10:00:00+00:00")
    bad = {
        **encounter("in-progress", "2026-02-01T10:00:00+00:00"),
        "id": "enc-2",
        "period": {"start": "nope"},
    }
    entries = [
        {"resource": good, "request": {"method": "PUT", "url": "Encounter/enc-1"}},
        {"resource": bad, "request": {"method": "PUT", "url": "Encounter/enc-2"}},
    ]
    tx = await post(service, "/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert tx.status_code == 400 and "entry[1]" in tx.json()["issue"][0]["diagnostics"]
    assert fhir_events(service) == []  # nothing from the valid entry either
    batch = await post(service, "/fhir", {"resourceType": "Bundle", "type": "batch", "entry": entries})
    assert batch.status_code == 200
    statuses = [e["response"]["status"] for e in batch.json()["entry"]]
    assert statuses[0].startswith("201") and statuses[1].startswith("400")
    assert [r["type"] for r in fhir_events(service)] == ["encounter.admit"]


async def test_lab_turnaround_from_fhir_resources(service: Service) -> None:
    ordered = datetime.now(UTC) - timedelta(minutes=50)
    request = {
        "resourceType": "ServiceRequest",
        "id": "sr-9",
        "status": "active",
        "intent": "order",
        "priority": "stat",
        "code": {"coding": [{"system": "http://loinc.org", "code": "6598-7"}]},
        "subject": {"reference": "Patient/p1"},
        "authoredOn": ordered.isoformat(),
        "locationReference": [{"reference": "Location/ICU"}],
    }
    report = {
        "resourceType": "DiagnosticReport",
        "id": "dr-9",
        "status": "final",
        "category": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB"}]}
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": "6598-7"}]},
        "basedOn": [{"reference": "ServiceRequest/sr-9"}],
        "subject": {"reference": "Patient/p1"},
        "issued": (ordered + timedelta(minutes=40)).isoformat(),
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": request}, {"resource": report}],
    }
    assert (await post(service, "/fhir", bundle)).status_code == 200
    op: Any = service.runtime.engine.by_kpi["lab_tat_stat"]
    values = [v for panes in op.panes.values() for acc in panes.values() for v in acc.values or []]
    assert values == [pytest.approx(40.0)]
    assert ("DEMO", "critical_care", "ICU") in op.panes


def notification(event: int, kind: str = "R4B") -> dict[str, Any]:
    if kind == "R4B":
        status = {
            "resourceType": "SubscriptionStatus",
            "status": "active",
            "type": "event-notification",
            "subscription": {"reference": "Subscription/ward"},
            "notificationEvent": [{"eventNumber": str(event)}],
        }
    else:
        status = {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "subscription", "valueReference": {"reference": "Subscription/ward"}},
                {"name": "notification-event", "part": [{"name": "event-number", "valueString": str(event)}]},
            ],
        }
    return {"resourceType": "Bundle", "type": "history", "entry": [{"resource": status}]}


@pytest.mark.parametrize("kind", ["R4B", "R4-backport"])
async def test_subscription_notification_gaps_are_reported(service: Service, kind: str) -> None:
    from connectors.fhir.ingest import NOTIFICATION_GAPS

    gaps_before = NOTIFICATION_GAPS._value.get()
    for number in (1, 2):
        response = await post(service, "/fhir", notification(number, kind))
        assert response.status_code == 200
        assert all(i["severity"] != "warning" for i in response.json()["issue"])
    gap = await post(service, "/fhir", notification(6, kind))
    warnings = [i for i in gap.json()["issue"] if i["severity"] == "warning"]
    assert len(warnings) == 1 and "3 notification(s) missing" in warnings[0]["diagnostics"]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.api_port}") as client:
        metrics = (await client.get("/metrics")).text
    assert f"carescore_fhir_notification_gaps_total {gaps_before + 3}" in metrics


def test_fhir_examples_are_not_copied_into_the_repo() -> None:
    assert not list(Path(__file__).parent.glob("**/*.fhir.json"))
