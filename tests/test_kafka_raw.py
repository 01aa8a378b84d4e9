"""The raw inbound topics and `carescore remap`, against the real broker: HL7 over MLLP, FHIR
over HTTP and a feed file to a Kafka gateway; each accepted input is in its raw topic byte
for byte with its headers, a rejected one is not; a remap of the time range publishes only
the events the first mapping did not make."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from carescore.serve import Service
from carescore.transports.kafka.topics import events_topic, partitions_of, raw_topic
from connectors.hl7v2 import messages as m
from connectors.hl7v2.client import MLLPClient, ack_code
from engine.config import REPO_ROOT, KafkaSettings
from tests.kafka import kafka_settings
from tests.test_e2e_embedded import stat_pair

pytestmark = pytest.mark.kafka

FHIR = {"Content-Type": "application/fhir+json"}


async def everything(kafka: KafkaSettings, topic: str) -> list[ConsumerRecord]:
    """Every record of a topic, from the beginning to its end now (all partitions)."""
    tps = [TopicPartition(topic, p) for p in await partitions_of(kafka, topic)]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp, first in (await consumer.beginning_offsets(tps)).items():
            consumer.seek(tp, first)
        out: list[ConsumerRecord] = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                out += records
        return sorted(out, key=lambda r: (r.timestamp, r.partition, r.offset))
    finally:
        await consumer.stop()


async def topic_config(kafka: KafkaSettings, topic: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        answers = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    (resource,) = answers[0].resources
    return {entry[0]: entry[1] for entry in resource[4]}


def headers(record: ConsumerRecord) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers}


def task(tid: str, code: str, authored: datetime) -> bytes:
    """A FHIR Task as a nurse call system sends it: requested (placed), not yet answered."""
    return json.dumps(
        {
            "resourceType": "Task",
            "id": tid,
            "status": "requested",
            "intent": "order",
            "code": {"coding": [{"code": code}]},
            "for": {"reference": "Patient/p1"},
            "location": {"reference": "Location/4W"},
            "authoredOn": authored.isoformat(),
        }
    ).encode()


async def remap(config: Path, source: str, start: float, end: float) -> dict[str, Any]:
    """`carescore remap` as an operator runs it: a process of its own, its JSON report."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "carescore.cli",
        "remap",
        "--source",
        source,
        "--from",
        datetime.fromtimestamp(start, UTC).isoformat(),
        "--to",
        datetime.fromtimestamp(end, UTC).isoformat(),
        "--config",
        str(config),
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return json.loads(out)  # type: ignore[no-any-return]


async def test_accepted_inputs_are_kept_as_received_and_a_remap_publishes_only_new_events(
    kafka_broker: str, tmp_path: Path
) -> None:
    """Sent: an ORM order (latin-1 bytes: the patient is Müller) and its ORU result over MLLP,
    an A09 (a trigger no KPI uses: AA, no events) and an ORM of a message type carescore does
    not take (AR); a nurse-call Task (201, one
    event: placed), a Task whose code is not in fhir.nurse_call_codes (200, no event) and a
    body that is not JSON (400); a quality feed file of two rows, three events (a fall with
    injury is a quality.fall and a quality.fall_injury; a pressure injury one event) and one
    whose only row names no known unit (422).

    In the raw topics: the three HL7 messages, the two Tasks, the one file, byte for byte.
    Remap of HL7 with the same mapping: 3 messages, 4 events (order: lab.order; result with
    OBR-7, -14 and -22: lab.collect, lab.receive, lab.result), all 4 already published, 0 new.
    Remap of FHIR after two fixes, `nurse_call_codes += bed-call` and 4W's department renamed
    medicine -> medsurg: 2 events; the nurse call's placed event changed (its department) and
    not published again, the bed call's new (1), published with medsurg and its original
    receive time; a second remap finds it published: 1 unchanged, 1 changed, 0 new. Remap of
    feeds: 3 events, 0 new."""
    settings, config = await kafka_settings(kafka_broker, tmp_path, raw={"enabled": True, "retention": "1d"})
    kafka = settings.runtime.kafka
    for source in ("hl7", "fhir", "feeds"):  # one day (86,400,000 ms), not Kafka's forever
        assert (await topic_config(kafka, raw_topic(kafka, source)))["retention.ms"] == "86400000"
    gateway = Service(settings)
    await gateway.start()
    began = time.time()
    try:
        ordered = datetime.now(UTC) - timedelta(hours=1)
        patient = m.Patient("MRN7", "Müller", "Jürgen", "19600101", "M")
        where = m.Visit(patient, "I", m.Location("ICU", "", "1", "DEMO"), "V7", "DEMO")
        order_text, result_text = stat_pair("O1", "ICU", ordered, 30, where)
        order, result = order_text.encode("latin-1"), result_text.encode()
        tracking = m.adt("A09", ordered, where).encode()  # patient departing, tracking: no KPI uses it
        unknown = stat_pair("O2", "ICU", ordered, 30, where)[0].replace("ORM^O01^ORM_O01", "ZZZ^Z01^ZZZ_Z01")
        async with MLLPClient("127.0.0.1", gateway.mllp.port) as client:
            assert ack_code(await client.send(order)) == "AA"
            assert ack_code(await client.send(result)) == "AA"
            assert ack_code(await client.send(tracking)) == "AA"  # no events: nothing else to wait for
            assert ack_code(await client.send(unknown)) == "AR"

        call, bed_call = task("T1", "nurse-call", ordered), task("T2", "bed-call", ordered)
        day = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
        quality = (
            "event,time,unit,days,stage,present_on_admission,patient_id,record_id\n"
            f"fall_injury,{day},4W,,,,,SAFE-1\n"
            f"pressure_injury,{day},4W,,2,false,MRN0002,WOC-1\n"
        ).encode()
        nowhere = f"event,time,unit\nfall_injury,{day},NOWHERE\n".encode()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.api_port}") as http:
            assert (await http.post("/fhir/Task", content=call, headers=FHIR)).status_code == 201
            assert (await http.post("/fhir/Task", content=bed_call, headers=FHIR)).status_code == 200
            assert (await http.post("/fhir/Task", content=b"{not json", headers=FHIR)).status_code == 400
            feed = {"Content-Type": "text/csv"}
            taken = await http.post("/api/v1/feeds/quality", content=quality, headers=feed)
            assert taken.status_code == 200 and taken.json()["events"] == 3, taken.text
            refused = await http.post("/api/v1/feeds/quality", content=nowhere, headers=feed)
            assert refused.status_code == 422, refused.text
        ended = time.time()

        hl7 = await everything(kafka, raw_topic(kafka, "hl7"))
        assert [r.value for r in hl7] == [order, result, tracking]  # the AR'd message is not there
        assert [r.key for r in hl7] == [b"DEMO", b"DEMO", b"DEMO"]
        for r in hl7:
            h = headers(r)
            assert began * 1000 <= r.timestamp == int(h["received"]) <= ended * 1000
            assert (h["connector"], h["content-type"]) == ("mllp", "x-application/hl7-v2+er7")
            assert h["key"].startswith("DEMO|")  # sender|control id|digest: what it was stored under
        fhir = await everything(kafka, raw_topic(kafka, "fhir"))
        assert [r.value for r in fhir] == [call, bed_call]  # not the 400
        assert [headers(r)["connector"] for r in fhir] == ["fhir:Task", "fhir:Task"]
        assert {headers(r)["content-type"] for r in fhir} == {"application/fhir+json"}
        feeds = await everything(kafka, raw_topic(kafka, "feeds"))
        assert [r.value for r in feeds] == [quality]  # not the 422
        assert headers(feeds[0])["content-type"] == "text/csv"
        assert json.loads(headers(feeds[0])["detail"]) == {"feed": "quality", "format": "csv", "file": None}
        # the events topic holds pseudonyms, the raw topic the name as sent
        published = await everything(kafka, events_topic(kafka))
        assert b"M\xfcller" in order and not any(b"MRN7" in r.value for r in published)
        before = sum(len(orjson.loads(r.value)) for r in published)
        assert before == 4 + 1 + 3  # the HL7 pair's, the nurse call's, the feed's

        same = await remap(config, "hl7", began, ended)
        assert {
            k: same[k] for k in ("messages", "accepted", "rejected", "events", "unchanged", "changed", "new")
        } == {
            "messages": 3,
            "accepted": 3,
            "rejected": 0,
            "events": 4,
            "unchanged": 4,
            "changed": 0,
            "new": 0,
        }
        rows = await remap(config, "feeds", began, ended)
        assert (rows["messages"], rows["events"], rows["unchanged"], rows["new"]) == (1, 3, 3, 0)

        fixed = yaml.safe_load(config.read_text())
        fixed["fhir"] = {"nurse_call_codes": ["nurse-call", "bed-call"]}
        medicine = fixed["places"]["facilities"][0]["departments"][1]
        assert medicine["id"] == "medicine" and medicine["units"][0]["id"] == "4W"
        medicine["id"] = "medsurg"  # 4W's department renamed: the nurse call's event changes
        fixed_config = tmp_path / "fixed.yaml"
        fixed_config.write_text(yaml.safe_dump(fixed))
        first = await remap(fixed_config, "fhir", began, ended)
        assert (first["messages"], first["events"], first["unchanged"], first["changed"], first["new"]) == (
            2,
            2,
            0,
            1,
            1,
        )
        (new_id,) = first["new_ids"]
        (changed_id,) = first["changed_ids"]
        assert new_id.startswith("fhir:Task/T2:placed") and changed_id.startswith("fhir:Task/T1:placed")
        after = await everything(kafka, events_topic(kafka))
        added = [e for r in after for e in orjson.loads(r.value) if e["source_id"] == new_id]
        assert len(added) == 1 and sum(len(orjson.loads(r.value)) for r in after) == before + 1
        assert added[0]["type"] == "nursecall.placed" and added[0]["patient_id"].startswith("pt-")
        assert added[0]["department"] == "medsurg"
        kept = [e for r in after for e in orjson.loads(r.value) if e["source_id"] == changed_id]
        assert [e["department"] for e in kept] == ["medicine"]  # as first counted: not corrected
        received = datetime.fromisoformat(added[0]["received_time"]).timestamp()
        assert received * 1000 == pytest.approx(fhir[1].timestamp, abs=1)  # when it came, not now
        again = await remap(fixed_config, "fhir", began, ended)
        assert (again["unchanged"], again["changed"], again["new"]) == (1, 1, 0)
    finally:
        await gateway.stop()


async def set_max_bytes(kafka: KafkaSettings, topic: str, limit: int) -> None:
    """The topic's max.message.bytes, changed on the running broker; back once it reads so."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        change = ConfigResource(ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": str(limit)})
        await admin.alter_configs([change])
    finally:
        await admin.close()
    deadline = time.monotonic() + 30
    while (await topic_config(kafka, topic))["max.message.bytes"] != str(limit):
        assert time.monotonic() < deadline, "the broker did not take the new max.message.bytes"
        await asyncio.sleep(0.1)


async def test_an_input_whose_raw_record_the_broker_refuses_is_not_accepted(
    kafka_broker: str, tmp_path: Path
) -> None:
    """The raw topics refuse records over 200 bytes (max.message.bytes, set on the running
    broker; the events topic keeps its limit): an HL7 message (about 400 bytes) is answered AE
    and a FHIR Task 503, as when its events cannot be stored, and neither is in a raw topic.
    The limit lifted, the same message sent again is AA (its events a duplicate of the first
    try's, which the broker did take) and its raw record is there, once."""
    settings, _ = await kafka_settings(kafka_broker, tmp_path, raw={"enabled": True}, publish_timeout=3)
    kafka = settings.runtime.kafka
    for source in ("hl7", "fhir"):
        await set_max_bytes(kafka, raw_topic(kafka, source), 200)
    gateway = Service(settings)
    await gateway.start()
    try:
        order = stat_pair("O1", "ICU", datetime.now(UTC) - timedelta(hours=1), 30)[0]
        assert len(order) > 200
        call = task("T1", "nurse-call", datetime.now(UTC) - timedelta(hours=1))
        async with MLLPClient("127.0.0.1", gateway.mllp.port) as client:
            assert ack_code(await client.send(order)) == "AE"
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.api_port}") as http:
                refused = await http.post("/fhir/Task", content=call, headers=FHIR)
                assert refused.status_code == 503, refused.text
            assert await everything(kafka, raw_topic(kafka, "hl7")) == []
            assert await everything(kafka, raw_topic(kafka, "fhir")) == []
            await set_max_bytes(kafka, raw_topic(kafka, "hl7"), kafka.raw.max_bytes)
            ack = await client.send(order)
            assert ack_code(ack) == "AA" and "duplicate" in ack
        assert [r.value for r in await everything(kafka, raw_topic(kafka, "hl7"))] == [order.encode()]
    finally:
        await gateway.stop()
