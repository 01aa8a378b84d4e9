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


async def rewind_archiver(settings: Any, to: dict[int, int]) -> None:
    """Commit earlier offsets for the archiver's group, as a gateway killed after writing its
    files and before committing leaves them. Retried while the broker still counts the killed
    member in the group (until its session times out)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from carescore.transports.kafka.archiver import archive_group
    from carescore.transports.kafka.topics import events_topic

    topic = events_topic(settings.runtime.kafka)
    offsets = {TopicPartition(topic, p): at for p, at in to.items()}
    deadline = time.monotonic() + 60
    while True:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.runtime.kafka.bootstrap,
            group_id=archive_group(settings),
            enable_auto_commit=False,
        )
        await consumer.start()
        consumer.assign(list(offsets))
        try:
            await consumer.commit(offsets)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
        finally:
            await consumer.stop()
        await asyncio.sleep(0.5)


async def test_a_sigkilled_gateway_loses_no_archived_event_and_reads_copies_once(
    kafka_broker: str, tmp_path: Path
) -> None:
    """A `carescore run` gateway archives two hours of events (four facilities, four
    partitions, records of up to 5 events as the sink writes them) and is SIGKILLed. Its
    archiver's committed offsets are then set back to half of each partition — the state a kill
    between writing the files and committing leaves, made certain — and more events arrive.
    The restarted gateway writes the second half of each partition again (copies on disk) and
    the new events; the archive reads back as every event exactly once, in each partition's
    order: the event log's frame of the same events."""
    import subprocess
    import sys

    import polars as pl
    from polars.testing import assert_frame_equal

    from engine.config import REPO_ROOT
    from engine.event_archive import archive_frame
    from engine.eventframe import log_frame
    from engine.eventlog import EventLog
    from tests.kafka import hospital_events, produce

    # no merging here: the copies the rewind makes stay on disk to be counted
    settings, config = await kafka_settings(kafka_broker, tmp_path, archive={"compact_at": 1000})
    events = hospital_events(hours=2, facilities=("DEMO", "EAST", "WEST", "NORTH"))
    first, later = events[: len(events) * 2 // 3], events[len(events) * 2 // 3 :]
    await produce(settings, first, per_record=5, stamp=False)
    root = settings.archive_path

    def archived(n: int) -> bool:
        try:
            return len(archive_frame(root)) >= n
        except Exception:  # a file being merged away: look again
            return False

    with (tmp_path / "gateway.log").open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "carescore.cli", "run", "--config", str(config)],
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        await until(lambda: archived(len(first)), 90, "the first gateway archived the first events")
    finally:
        proc.kill()
        proc.wait(timeout=30)
    offsets = pl.concat([pl.read_parquet(f, columns=["_partition", "_offset"]) for f in archive_files(root)])
    last = offsets.group_by("_partition").agg(pl.col("_offset").max())
    halves = {int(p): int(o) // 2 for p, o in last.iter_rows()}
    assert len(halves) >= 2, halves  # four facilities keyed over four partitions (some may share one)
    await rewind_archiver(settings, halves)
    await produce(settings, later, per_record=5, stamp=False)

    gateway = Service(settings)
    await gateway.start()
    try:
        runtime = gateway.runtime
        assert isinstance(runtime, KafkaGateway) and runtime.archiver is not None
        archiver = runtime.archiver
        await until(
            lambda: len(archiver.lags()) == 4 and not any(archiver.lags().values()),
            90,
            "the restarted gateway's archiver reached the end of every partition",
        )
        rewritten = archiver.rows
    finally:
        await gateway.stop()
    on_disk = sum(pl.read_parquet(f, columns=["source_id"]).height for f in archive_files(root))
    got = archive_frame(root)
    log = EventLog(tmp_path / "reference", fsync=False)
    log.append_now(sorted(events, key=lambda e: e.facility))  # a facility's events in their order
    want = log_frame(log.segment_paths())
    assert len(got) == len(events) and got["source_id"].n_unique() == len(events)
    assert on_disk > len(events)  # the second halves are on disk twice...
    assert rewritten > len(later)  # ...written again after the rewind
    assert_frame_equal(  # each facility's events in the order they were produced
        got.with_row_index("i").sort("facility", "i").drop("i"),
        want.with_row_index("i").sort("facility", "i").drop("i"),
    )
