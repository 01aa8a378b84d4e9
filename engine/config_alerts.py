"""The alerting settings: where notices go (webhooks, email, Alertmanager), the alert store,
the feeds watched for silence. Secrets come from the value, a file or an environment variable
(engine/secrets.py) and are held as SecretStr."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator

from engine.durations import Duration
from engine.secrets import secret_from
from engine.yamlconf import Strict

_FILE = "an absolute path to a file holding it (a Docker/Kubernetes secret), instead of the value"
_ENV = "the environment variable holding it, instead of the value"


class WebhookSettings(Strict):
    name: str = "webhook"
    url: str = Field(description="a token in its query string is redacted in errors and logs")
    timeout: Duration = 5.0
    secret: SecretStr | None = Field(default=None, description="HMAC-SHA256 key for the signature header")
    secret_file: Path | None = Field(default=None, description=f"secret: {_FILE}")
    secret_env: str | None = Field(default=None, description=f"secret: {_ENV}")
    routed: bool = Field(
        default=False,
        description="false: every alert change (integrations); true: notices to people with a pager id",
    )

    @model_validator(mode="after")
    def _secret(self) -> Self:
        self.secret = secret_from("secret", self.secret, self.secret_file, self.secret_env)
        return self


class EmailSettings(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=25, ge=1, le=65535)
    sender: str = Field(description="From: address, e.g. carescore@hospital.example")
    starttls: bool = False
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = Field(default=None, description=f"password: {_FILE}")
    password_env: str | None = Field(default=None, description=f"password: {_ENV}")
    timeout: Duration = 10.0

    @model_validator(mode="after")
    def _secret(self) -> Self:
        self.password = secret_from("password", self.password, self.password_file, self.password_env)
        if self.password is not None and not self.starttls:
            raise ValueError("a password is sent to the SMTP relay only over TLS: set starttls: true")
        return self


class AlertmanagerSettings(Strict):
    url: str = Field(description="Alertmanager base URL, e.g. http://127.0.0.1:9093")
    resend_every: Duration = Field(default=60.0, description="firing alerts are re-sent this often")


class FeedRule(Strict):
    name: str = Field(description="what people call the feed, e.g. 'EMR HL7 interface'")
    source: Literal["hl7v2", "fhir", "feed"]
    events: str | None = Field(
        default=None, description="only event types starting with this, e.g. nursecall."
    )
    stale_after: Duration = Field(description="quiet this long is an outage")
    per: Literal["facility", "unit"] = Field(default="facility", description="one alert per facility or unit")
    severity: Literal["warning", "critical"] = "critical"


class AlertSettings(Strict):
    routes: Path | None = Field(default=None, description="routes.yaml (default: alerts/routes.yaml)")
    database: SecretStr | None = Field(
        default=None,
        description="postgresql://user:password@host/db to share alerts between processes (default: "
        "SQLite, data_dir); needed for several Kafka gateways (the holder of its advisory lock "
        "evaluates alerts); its password is redacted in errors and logs",
    )
    database_file: Path | None = Field(default=None, description=f"database: {_FILE}")
    database_env: str | None = Field(default=None, description=f"database: {_ENV}")
    webhooks: list[WebhookSettings] = Field(default_factory=list)
    email: EmailSettings | None = None
    alertmanager: AlertmanagerSettings | None = None
    feeds: list[FeedRule] = Field(
        default_factory=lambda: [FeedRule(name="HL7 v2 interface", source="hl7v2", stale_after=900.0)],
        description="data feeds whose silence is an alert (and inhibits the KPI alerts fed by them)",
    )
    base_url: str | None = Field(default=None, description="the scorecard's address, for links in notices")
    max_attempts: int = Field(default=8, ge=1)
    retry_backoff: Duration = 1.0

    @model_validator(mode="after")
    def _secret(self) -> Self:
        self.database = secret_from("database", self.database, self.database_file, self.database_env)
        return self
