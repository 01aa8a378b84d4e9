"""runtime.kafka's TLS and SASL as each Kafka client takes them: one place for the aiokafka
producer (connectors' events), consumer (the gateway's samples) and admin client (topics), and
for Faust (the workers), so no client can be left on plaintext when the brokers want TLS."""

from __future__ import annotations

import ssl
from typing import Any

import faust
from aiokafka.helpers import create_ssl_context

from engine.config import KafkaSettings


def _ssl_context(kafka: KafkaSettings) -> ssl.SSLContext:
    tls = kafka.tls
    if tls is None:  # the system's CAs
        return create_ssl_context()
    return create_ssl_context(
        cafile=str(tls.cafile) if tls.cafile else None,
        certfile=str(tls.certfile) if tls.certfile else None,
        keyfile=str(tls.keyfile) if tls.keyfile else None,
    )


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaProducer, AIOKafkaConsumer and AIOKafkaAdminClient."""
    if kafka.security_protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {
        "security_protocol": kafka.security_protocol,
        "ssl_context": _ssl_context(kafka),
    }
    if kafka.sasl is not None:
        options |= {
            "sasl_mechanism": kafka.sasl.mechanism,
            "sasl_plain_username": kafka.sasl.username,
            "sasl_plain_password": kafka.sasl.password().get_secret_value(),
        }
    return options


def faust_credentials(kafka: KafkaSettings) -> faust.types.auth.CredentialsT | None:
    """Faust's broker_credentials for the same settings (None: plaintext)."""
    if kafka.security_protocol == "PLAINTEXT":
        return None
    context = _ssl_context(kafka)
    if kafka.sasl is None:
        return faust.SSLCredentials(context)
    return faust.SASLCredentials(
        username=kafka.sasl.username,
        password=kafka.sasl.password().get_secret_value(),
        ssl_context=context,
        mechanism=kafka.sasl.mechanism,
    )
