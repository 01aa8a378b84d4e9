"""runtime.kafka's security settings: TLS to the brokers and SASL sign-in (SCRAM or PLAIN).

Events carry pseudonymised identifiers but still clinical facts (stays, results, places), so a
Kafka outside this host wants SSL or SASL_SSL. SASL over plaintext is not offered: it would send
the password in the clear. The password is read from a file or an environment variable, held
as a SecretStr (never printed or logged), never written in carescore.yaml.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator

from engine.yamlconf import Strict


class KafkaTLS(Strict):
    cafile: Path | None = Field(
        default=None, description="PEM CA bundle the brokers' certificates are checked against"
    )
    certfile: Path | None = Field(
        default=None, description="PEM client certificate (brokers with ssl.client.auth)"
    )
    keyfile: Path | None = Field(default=None, description="PEM private key of certfile")

    @model_validator(mode="after")
    def _pair(self) -> Self:
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("certfile and keyfile go together")
        return self


class KafkaSASL(Strict):
    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    username: str
    password_file: Path | None = Field(default=None, description="file holding the password (one line)")
    password_env: str | None = Field(default=None, description="environment variable holding the password")

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.password_file is None) == (self.password_env is None):
            raise ValueError("give the password as exactly one of password_file, password_env")
        return self

    def password(self) -> SecretStr:
        """Read when a client is made (a rotated file is picked up at the next start)."""
        if self.password_file is not None:
            return SecretStr(self.password_file.read_text().strip())
        value = os.environ.get(self.password_env or "")
        if not value:
            raise ValueError(f"runtime.kafka.sasl.password_env: ${self.password_env} is not set")
        return SecretStr(value)


SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_SSL"]


def check_security(protocol: SecurityProtocol, tls: KafkaTLS | None, sasl: KafkaSASL | None) -> None:
    """SASL only over TLS, and SASL_SSL only with SASL settings."""
    if protocol == "SASL_SSL" and sasl is None:
        raise ValueError("runtime.kafka.security_protocol SASL_SSL needs runtime.kafka.sasl")
    if sasl is not None and protocol != "SASL_SSL":
        raise ValueError(
            "runtime.kafka.sasl needs security_protocol SASL_SSL (SASL over plaintext sends the password)"
        )
    if tls is not None and protocol == "PLAINTEXT":
        raise ValueError("runtime.kafka.tls needs security_protocol SSL or SASL_SSL")
