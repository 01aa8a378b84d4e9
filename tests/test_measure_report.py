"""FHIR R4 Measure and MeasureReport over REST, from HL7 sent over MLLP, validated with the
fhir.resources R4B models (R4B is R4's resources with R4's MeasureReport/Measure shape;
the package's default is R5) and the numbers worked by hand."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.measure import Measure
from fhir.resources.R4B.measurereport import MeasureReport

from carescore.serve import Service
from connectors.hl7v2.client import MLLPClient, ack_code
from tests.test_e2e_embedded import admit, stat_pair

# STAT order-to-final-result minutes sent per unit (orders one minute apart)
SENT = {"ICU": [25, 35, 45, 70], "ED": [20, 90]}


async def _send(service: Service, start: datetime) -> None:
    async with MLLPClient("127.0.0.1", service.mllp.port) as client:
        assert ack_code(await client.send(admit("V01", "4W", start))) == "AA"
        for unit, tats in SENT.items():
            for i, tat in enumerate(tats):
                for msg in stat_pair(f"{unit}{i}", unit, start + timedelta(minutes=i), tat):
                    assert ack_code(await client.send(msg)) == "AA"


async def _get(service: Service, path: str, **params: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.api_port}") as client:
        return await client.get(path, params=params)


def _counts(populations: list[Any]) -> dict[str, int | None]:
    return {p.code.coding[0].code: p.count for p in populations}


def _strata(group: Any) -> dict[str, Any]:
    return {s.value.coding[0].code: s for s in group.stratifier[0].stratum}


async def _report(service: Service, kpi: str, period: str, n: int) -> MeasureReport:
    """The MeasureReport once the event log holds all n orders of the period."""
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        response = await _get(service, f"/api/v1/measure-reports/{kpi}", period=period)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/fhir+json")
        report = MeasureReport.model_validate(response.json())
        total = _counts(report.group[0].population).get("initial-population") if report.group else None
        if total == n:
            return report
        assert asyncio.get_running_loop().time() < deadline, response.text
        await asyncio.sleep(0.2)


async def test_measure_report_of_stat_labs_is_valid_r4_and_hand_checked(service: Service) -> None:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3)
    await _send(service, start)
    # the period holds every order and its result (the last result is at start + 91 min)
    period = f"{(start - timedelta(minutes=5)).isoformat()}/{(start + timedelta(hours=2)).isoformat()}"

    # lab_tat_stat_within_target, published definition: STAT orders with order-to-final-result
    # <= 60 min / STAT orders resulted (+ open past 60 min, none here) x 100, per unit.
    # ICU 25, 35, 45 <= 60, 70 > 60: 3/4 = 75 %. ED 20 <= 60, 90 > 60: 1/2 = 50 %.
    # Facility DEMO: (3 + 1) / (4 + 2) = 66.667 %.
    report = await _report(service, "lab_tat_stat_within_target", period, 6)
    assert report.status == "complete" and report.type == "summary"
    assert report.measure.endswith("/api/v1/measures/lab_tat_stat_within_target")
    assert report.reporter is not None and report.reporter.display == "DEMO"
    (group,) = report.group
    assert _counts(group.population) == {"initial-population": 6, "numerator": 4, "denominator": 6}
    assert float(group.measureScore.value) == pytest.approx(400 / 6)
    assert (group.measureScore.system, group.measureScore.code) == ("http://unitsofmeasure.org", "%")
    strata = _strata(group)
    assert set(strata) == {"ICU", "ED"}  # a stratum per unit data was sent for
    assert _counts(strata["ICU"].population) == {"initial-population": 4, "numerator": 3, "denominator": 4}
    assert float(strata["ICU"].measureScore.value) == pytest.approx(75.0)
    assert _counts(strata["ED"].population) == {"initial-population": 2, "numerator": 1, "denominator": 2}
    assert float(strata["ED"].measureScore.value) == pytest.approx(50.0)

    # lab_tat_stat_median, continuous variable: the median of order-to-final-result minutes.
    # ICU [25, 35, 45, 70]: (35 + 45) / 2 = 40 min. ED [20, 90]: 55 min.
    # Facility [20, 25, 35, 45, 70, 90]: (35 + 45) / 2 = 40 min.
    median = await _report(service, "lab_tat_stat_median", period, 6)
    (group,) = median.group
    assert _counts(group.population) == {
        "initial-population": 6,
        "measure-population": 6,
        "measure-observation": 6,
    }
    assert float(group.measureScore.value) == pytest.approx(40.0) and group.measureScore.code == "min"
    strata = _strata(group)
    assert float(strata["ICU"].measureScore.value) == pytest.approx(40.0)
    assert float(strata["ED"].measureScore.value) == pytest.approx(55.0)
    assert strata["ED"].measureScore.unit == "min"

    # bed_occupancy (a gauge in %: proportion), published definition: occupied bed time /
    # staffed bed time x 100. One patient on 4W (30 beds) from start to the period's end:
    # 120 of the period's 125 minutes: 120 / (30 x 125) x 100 = 3.2 %. The populations are the
    # period report's integrals: 7,200 patient-seconds over 30 x 7,500 = 225,000 bed-seconds.
    occupancy = await _report(service, "bed_occupancy", period, 1)
    ward = _strata(occupancy.group[0])["4W"]
    assert _counts(ward.population) == {"initial-population": 1, "numerator": 7200, "denominator": 225000}
    assert float(ward.measureScore.value) == pytest.approx(3.2)

    # the day and the month forms are periods too (UTC without a site time zone)
    for day_or_month in (start.date().isoformat(), start.strftime("%Y-%m")):
        r = await _get(service, "/api/v1/measure-reports/lab_tat_stat_median", period=day_or_month)
        assert r.status_code == 200, r.text
        MeasureReport.model_validate(r.json())


async def test_measures_are_valid_r4(service: Service) -> None:
    got = await _get(service, "/api/v1/measures/lab_tat_stat_within_target")
    assert got.status_code == 200 and got.headers["content-type"].startswith("application/fhir+json")
    m = Measure.model_validate(got.json())
    assert m.scoring.coding[0].code == "proportion"
    assert m.improvementNotation.coding[0].code == "increase"
    assert m.url.endswith("/api/v1/measures/lab_tat_stat_within_target")
    assert m.identifier[0].value == "lab_tat_stat_within_target"
    codes = [p.code.coding[0].code for p in m.group[0].population]
    assert codes == ["initial-population", "numerator", "denominator"]
    assert m.relatedArtifact and "Novis" in m.relatedArtifact[0].citation

    falls = Measure.model_validate(
        (await _get(service, "/api/v1/measures/falls_per_1000_patient_days")).json()
    )
    assert falls.scoring.coding[0].code == "ratio" and falls.improvementNotation.coding[0].code == "decrease"
    median = Measure.model_validate((await _get(service, "/api/v1/measures/lab_tat_stat_median")).json())
    assert median.scoring.coding[0].code == "continuous-variable"
    assert [p.code.coding[0].code for p in median.group[0].population] == [
        "initial-population",
        "measure-population",
        "measure-observation",
    ]
    # every KPI's Measure is valid R4
    kpis = (await _get(service, "/api/v1/kpis")).json()["kpis"]
    for kpi in kpis:
        Measure.model_validate((await _get(service, f"/api/v1/measures/{kpi['id']}")).json())


async def test_errors(service: Service) -> None:
    unknown = await _get(service, "/api/v1/measure-reports/nope", period="2026-11")
    assert unknown.status_code == 404
    assert (await _get(service, "/api/v1/measures/nope")).status_code == 404
    for bad in ("2026-13", "2026-11-31", "yesterday", "2026-11-02T00:00/2026-11-01T00:00", "a/b", "x/y/z"):
        r = await _get(service, "/api/v1/measure-reports/lab_tat_stat", period=bad)
        assert r.status_code == 422, (bad, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    assert (await _get(service, "/api/v1/measure-reports/lab_tat_stat")).status_code == 422


def test_ucum_codes() -> None:
    from api.fhir_measure import ucum_code

    assert ucum_code("per 1,000 patient-days") == "/10*3{patient-days}"
    assert ucum_code("per 100 discharges") == "/10*2{discharges}"
    assert ucum_code("%") == "%" and ucum_code("min") == "min" and ucum_code("h") == "h"


async def test_a_kafka_gateway_without_its_archive_answers_the_reports_501(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the Kafka runtime backend.report is the gateway's, which reads its event archive; with
    the archive turned off (runtime.kafka.archive.enabled false) the MeasureReport gives its 501
    (the gateway's own method, called unbound: it touches nothing of the gateway but that)."""
    from carescore.transports.kafka.gateway import KafkaGateway

    backend = service.app.state.backend
    monkeypatch.setattr(backend, "archiver", None, raising=False)
    monkeypatch.setattr(backend, "report", lambda *a: KafkaGateway.report(backend, *a))
    measure = await _get(service, "/api/v1/measure-reports/lab_tat_stat", period="2026-11")
    report = await _get(service, "/api/v1/reports/lab_tat_stat", **{"from": "2026-11-01", "to": "2026-12-01"})
    assert measure.status_code == report.status_code == 501
    assert measure.json()["title"] == report.json()["title"] == "Period reports need the event archive"
