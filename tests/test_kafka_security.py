"""Kafka over TLS and SASL_SSL (SCRAM-SHA-512): a real broker from deploy/kafka/kafka.sh with
an SSL listener (client certificates required) and a SASL_SSL listener, certificates made by
deploy/compose/make-certs.sh and openssl, the SCRAM user made when the broker is formatted.
The whole Kafka runtime runs over SASL_SSL: MLLP into the gateway, the events topic, a real
`carescore worker` (Faust), the samples topic, the gateway's REST API."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from carescore.serve import Service
from carescore.transports.kafka.security import client_options
from carescore.transports.kafka.topics import ensure_topics, events_topic
from connectors.hl7v2 import messages as m
from connectors.hl7v2.client import MLLPClient, ack_code
from engine.config import REPO_ROOT, KafkaSettings
from tests.alerting import free_port
from tests.kafka import KAFKA_SH, Worker, kafka_settings

MAKE_CERTS = REPO_ROOT / "deploy" / "compose" / "make-certs.sh"


def _client_certificate(pki: Path) -> None:
    """client.crt/.key for CN=carescore-worker, signed by the same private CA."""
    key, csr, crt = pki / "client.key", pki / "client.csr", pki / "client.crt"
    run = {"check": True, "capture_output": True}
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=carescore-worker",
                    "-keyout", key, "-out", csr], **run)  # fmt: skip
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", pki / "ca.crt", "-CAkey", pki / "ca.key",
                    "-CAcreateserial", "-days", "1", "-out", crt], **run)  # fmt: skip


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("secure-kafka")
    pki = root / "pki"
    subprocess.run([MAKE_CERTS, pki, "localhost"], check=True, capture_output=True)
    _client_certificate(pki)
    (pki / "broker.pem").write_bytes((pki / "server.key").read_bytes() + (pki / "server.crt").read_bytes())
    password = secrets.token_urlsafe(18)
    (root / "kafka-password").write_text(password + "\n")
    plain, controller, tls, sasl = free_port(), free_port(), free_port(), free_port()
    extra = root / "extra.properties"
    extra.write_text(
        f"listeners=PLAINTEXT://127.0.0.1:{plain},CONTROLLER://127.0.0.1:{controller},"
        f"SSL://127.0.0.1:{tls},SASL_SSL://127.0.0.1:{sasl}\n"
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{plain},SSL://127.0.0.1:{tls},SASL_SSL://127.0.0.1:{sasl}\n"
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL\n"
        "sasl.enabled.mechanisms=SCRAM-SHA-512\n"
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
        "org.apache.kafka.common.security.scram.ScramLoginModule required;\n"
        f"ssl.keystore.type=PEM\nssl.keystore.location={pki / 'broker.pem'}\n"
        f"ssl.truststore.type=PEM\nssl.truststore.location={pki / 'ca.crt'}\n"
        "listener.name.ssl.ssl.client.auth=required\n"
    )
    env = {
        **os.environ,
        "KAFKA_EXTRA_PROPERTIES": str(extra),
        "KAFKA_SCRAM": f"SCRAM-SHA-512=[name=carescore,password={password}]",
    }
    folder = root / "broker"
    started = subprocess.run(
        [str(KAFKA_SH), "start", str(folder), str(plain), str(controller)],
        env=env,
        capture_output=True,
        text=True,
    )
    if started.returncode != 0:
        pytest.fail(f"the Kafka broker did not start: {started.stdout}{started.stderr}")
    try:
        yield {
            "pki": pki,
            "password": password,
            "password_file": root / "kafka-password",
            "ssl": tls,
            "sasl": sasl,
        }
    finally:
        subprocess.run([str(KAFKA_SH), "stop", str(folder)], capture_output=True)


def _sasl(broker: dict[str, Any], password_file: Path | None = None) -> dict[str, Any]:
    return {
        "security_protocol": "SASL_SSL",
        "tls": {"cafile": str(broker["pki"] / "ca.crt")},
        "sasl": {
            "mechanism": "SCRAM-SHA-512",
            "username": "carescore",
            "password_file": str(password_file or broker["password_file"]),
        },
    }


async def test_ssl_needs_the_client_certificate(broker: dict[str, Any]) -> None:
    pki = broker["pki"]
    tls = {
        "cafile": str(pki / "ca.crt"),
        "certfile": str(pki / "client.crt"),
        "keyfile": str(pki / "client.key"),
    }
    address = f"127.0.0.1:{broker['ssl']}"
    with_cert = KafkaSettings.model_validate({"bootstrap": address, "security_protocol": "SSL", "tls": tls})
    await asyncio.wait_for(ensure_topics(with_cert, attempts=3), 60)  # the handshake and the admin API
    without = KafkaSettings.model_validate(
        {"bootstrap": address, "security_protocol": "SSL", "tls": {"cafile": str(pki / "ca.crt")}}
    )
    with pytest.raises(RuntimeError, match="does not answer"):
        await asyncio.wait_for(ensure_topics(without, attempts=1), 60)
    plaintext = KafkaSettings.model_validate({"bootstrap": address})
    with pytest.raises(RuntimeError, match="does not answer"):
        await asyncio.wait_for(ensure_topics(plaintext, attempts=1), 60)


async def test_a_wrong_sasl_password_is_refused(broker: dict[str, Any], tmp_path: Path) -> None:
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password\n")
    settings = KafkaSettings.model_validate(
        {"bootstrap": f"127.0.0.1:{broker['sasl']}", **_sasl(broker, wrong)}
    )
    with pytest.raises(RuntimeError, match="does not answer"):
        await asyncio.wait_for(ensure_topics(settings, attempts=1), 60)


def test_sasl_without_tls_is_not_a_setting() -> None:
    with pytest.raises(ValueError, match="SASL_SSL"):
        KafkaSettings.model_validate(
            {"security_protocol": "SSL", "sasl": {"username": "u", "password_env": "X"}}
        )
    with pytest.raises(ValueError, match="exactly one"):
        KafkaSettings.model_validate({"security_protocol": "SASL_SSL", "sasl": {"username": "u"}})


async def test_gateway_and_worker_run_over_sasl_ssl(broker: dict[str, Any], tmp_path: Path) -> None:
    settings, config = await kafka_settings(f"127.0.0.1:{broker['sasl']}", tmp_path, **_sasl(broker))
    worker_log = tmp_path / "worker.log"
    worker = Worker(config, worker_log)
    svc = Service(settings)
    await svc.start()
    try:
        when = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
        async with MLLPClient("127.0.0.1", svc.mllp.port) as client:
            for i in range(3):
                patient = m.Patient(f"MRN-K{i}", "Roe", "Ann", "19600101", "F")
                visit = m.Visit(patient, "I", m.Location("4W", "1", str(i), "DEMO"), f"VK{i}", "DEMO")
                assert ack_code(await client.send(m.adt("A01", when, visit, admit=when))) == "AA"

        async def occupied() -> Any:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{svc.api_port}") as api:
                body = (await api.get("/api/v1/kpis/bed_occupancy", params={"unit": "4W"})).json()
            return next(
                (v for v in body["values"] if v["group"]["unit"] == "4W" and v["numerator"] == 3), None
            )

        deadline = asyncio.get_running_loop().time() + 120
        while (value := await occupied()) is None:
            assert worker.proc.poll() is None, worker_log.read_text()[-3000:]
            assert asyncio.get_running_loop().time() < deadline, worker_log.read_text()[-3000:]
            await asyncio.sleep(0.5)
        # 3 admitted to 4W's 30 beds (the demo's places), by hand: 3 / 30 x 100 = 10
        assert value["value"] == pytest.approx(10.0)
        assert worker.events("processed") >= 3
        # the events topic holds pseudonyms, never the MRNs or visit numbers sent
        consumer = AIOKafkaConsumer(
            events_topic(settings.runtime.kafka),
            bootstrap_servers=settings.runtime.kafka.bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            **client_options(settings.runtime.kafka),
        )
        await consumer.start()
        try:
            records = [r.value for batch in (await consumer.getmany(timeout_ms=5000)).values() for r in batch]
        finally:
            await consumer.stop()
        assert records and all(b"MRN-K" not in r and b"VK" not in r for r in records)
    finally:
        await svc.stop()
        worker.stop()
    assert broker["password"] not in worker_log.read_text()  # SecretStr: never logged
