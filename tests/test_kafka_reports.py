"""Period reports on the Kafka runtime, through real sockets against the real broker: the same
HL7 over MLLP to an embedded carescore and to a Kafka gateway (its archiver writing the events
topic to Parquet) with a real `carescore worker`; `/api/v1/reports` of the same period equal
on both, `/compare`, `/compliance` and `/reviews` answering on Kafka."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from carescore.metrics import ARCHIVE_LAG
from carescore.serve import Service
from carescore.transports.kafka.gateway import KafkaGateway
from demo.hospital import DemoHospital
from engine.event_archive import archive_files
from engine.places import Places
from tests.conftest import DEMO_PLACES
from tests.kafka import Worker, kafka_settings, until
from tests.test_e2e_embedded import stat_pair
from tests.test_kafka_gateway import embedded_twin, send_all

pytestmark = pytest.mark.kafka

# a duration (p90, and a share within a limit), ratios (of counts, of sums), a level (gauge),
# stays, a readmission cohort and the staffing walk: every kind the demo's HL7 gives rows for
KPIS = [
    "lab_tat_stat",
    "lab_tat_stat_within_target",
    "nurse_call_response_p90",
    "ed_lwbs_rate",
    "average_cost_per_procedure",
    "bed_occupancy",
    "ed_los_discharged",
    "readmission_30d_rate",
    "nurse_ratio_minutes_out",
]


def demo_messages(hours: float) -> list[str]:
    """The demo hospital's HL7 for the last `hours` (ending 10 min ago), in the order it sends them."""
    end = time.time() - 600
    hospital = DemoHospital(Places.model_validate(DEMO_PLACES), seed=5)
    hospital.seed_history(end - hours * 3600, 0)
    return [text for sent_at, text in hospital.due(end) if sent_at >= end - hours * 3600]


async def get(svc: Service, path: str, **params: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{svc.api_port}", timeout=120) as client:
        return await client.get(path, params=params)


async def report(svc: Service, kpi: str, start: datetime, end: datetime, by: str) -> list[dict[str, Any]]:
    response = await get(
        svc, f"/api/v1/reports/{kpi}", **{"from": start.isoformat(), "to": end.isoformat(), "by": by}
    )
    assert response.status_code == 200, response.text
    return response.json()["rows"]  # type: ignore[no-any-return]


async def test_period_reports_on_kafka_equal_the_embedded_ones(kafka_broker: str, tmp_path: Path) -> None:
    """Four hand-made STAT troponin pairs on the ICU, ordered at H+5, +10, +15 and +20 min with
    H nine hours ago (before anything of the demo's), then four hours of the demo hospital's HL7.

    By hand, for [H, H+2h) on the ICU: turnarounds 30, 45, 70 and 90 min, all resulted by H+110
    min (a turnaround counts in the period of its result). lab_tat_stat is the p90 (linear) of
    the four: rank 0.9 x 3 = 2.7 lies between the 3rd and 4th smallest, 70 + 0.7 x (90 - 70) =
    84.0 min, n 4 (a count: the orders resulted); lab_tat_stat_within_target is 2 of 4 within
    60 min = 50.0 %. Over the whole span, every KPI of KPIS by unit and by facility equals the
    embedded report."""
    settings, config = await kafka_settings(kafka_broker, tmp_path)
    h = datetime.fromtimestamp((time.time() - 9 * 3600) // 3600 * 3600, UTC)
    hand = [
        text
        for i, (minute, tat) in enumerate([(5, 30), (10, 45), (15, 70), (20, 90)])
        for text in stat_pair(f"H{i}", "ICU", h + timedelta(minutes=minute), tat)
    ]
    messages = hand + demo_messages(4)
    worker = Worker(config, tmp_path / "worker.log")
    embedded = Service(embedded_twin(config, tmp_path / "embedded"))
    gateway = Service(settings)
    await embedded.start()
    await gateway.start()
    try:
        await asyncio.gather(send_all(embedded, messages), send_all(gateway, messages))
        runtime = gateway.runtime
        assert isinstance(runtime, KafkaGateway) and runtime.archiver is not None
        archiver = runtime.archiver

        def archived() -> bool:
            lags = archiver.lags()
            return archiver.rows >= runtime.sink.produced and len(lags) == 4 and not any(lags.values())

        # every published event in a committed file: the archiver's offsets at the topic's end
        await until(archived, 60, "the archiver committed every event")
        lag_shown = {s.labels["partition"]: s.value for s in ARCHIVE_LAG.collect()[0].samples}
        published = runtime.sink.produced
        files = archive_files(settings.archive_path)

        end = datetime.fromtimestamp(time.time() // 3600 * 3600 + 3600, UTC)
        hand_period = h + timedelta(hours=2)
        icu = {}
        for kpi in ("lab_tat_stat", "lab_tat_stat_within_target"):
            rows = {r["group"]["unit"]: r for r in await report(gateway, kpi, h, hand_period, "unit")}
            icu[kpi] = rows["ICU"]
            assert rows == {
                r["group"]["unit"]: r for r in await report(embedded, kpi, h, hand_period, "unit")
            }
        same: dict[str, Any] = {}
        for kpi in KPIS:
            for by in ("unit", "facility"):
                kafka_rows = await report(gateway, kpi, h, end, by)
                embedded_rows = await report(embedded, kpi, h, end, by)
                same[f"{kpi} by {by}"] = (kafka_rows == embedded_rows, len(embedded_rows), kafka_rows)
                assert any(r["value"] is not None for r in embedded_rows), (kpi, by)

        month = (datetime.now(UTC) - timedelta(minutes=30)).strftime("%Y-%m")  # the demo's labs
        answers = {
            "compare": await get(gateway, "/api/v1/compare/lab_tat_stat", period=month),
            "compliance": await get(gateway, "/api/v1/compliance", period=month),
            "review": await get(gateway, f"/api/v1/reviews/{month}"),
        }
    finally:
        await gateway.stop()
        await embedded.stop()
        worker.stop()
    assert published > 500 and files  # the stream went through Kafka into Parquet
    assert lag_shown == {str(p): 0.0 for p in range(4)}  # carescore_archive_lag_records
    assert icu["lab_tat_stat"]["value"] == pytest.approx(84.0) and icu["lab_tat_stat"]["n"] == 4
    within = icu["lab_tat_stat_within_target"]
    assert within["value"] == pytest.approx(50.0) and (within["numerator"], within["denominator"]) == (2, 4)
    differ = {k: v for k, v in same.items() if not v[0]}
    assert not differ, differ
    for name, response in answers.items():
        assert response.status_code == 200, (name, response.text)
    assert answers["compare"].json()["rows"], answers["compare"].text
