"""carescore.yaml: every setting of a running carescore, validated at start.

Relative paths are resolved against the folder of the config file, so a config can sit
next to its KPI definitions and data folder. Errors name file, line and field.
"""

from __future__ import annotations

import ipaddress
from importlib import resources
from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from engine.durations import Duration
from engine.forecast import ForecastSettings
from engine.places import Places
from engine.timebounds import TimeBounds
from engine.yamlconf import ConfigError, load_yaml, validate_file

REPO_ROOT = Path(__file__).resolve().parent.parent
"""The source checkout: for tests, benchmarks and `make docs`; nothing a running carescore
reads is found through it (an installed wheel has no checkout)."""


def packaged_kpi_defs() -> Path:
    """The KPI catalogue shipped in the package (kpi_defs/*.yaml)."""
    return Path(str(resources.files("kpi_defs")))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TLSSettings(_Strict):
    cert: Path = Field(description="PEM certificate chain of this listener")
    key: Path = Field(description="PEM private key")
    client_ca: Path | None = Field(
        default=None, description="when set, senders must present a certificate signed by this CA"
    )


class MLLPSettings(_Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=2575, ge=0, le=65535)
    max_message_bytes: int = Field(default=1024 * 1024, ge=1024)
    idle_timeout: Duration = Field(
        default=300.0, description="a connection that sends nothing this long is closed"
    )
    frame_timeout: Duration = Field(
        default=30.0,
        description="a frame must be complete this long after its first byte (a slow drip is cut off)",
    )
    max_connections: int = Field(
        default=256, ge=1, description="open connections at once; more are refused with a log line"
    )
    allowed_facilities: list[str] = Field(
        default_factory=list, description="sending facilities (MSH-4.1) accepted; empty: any"
    )
    tls: TLSSettings | None = None
    plaintext_outside_loopback: bool = Field(
        default=False,
        description="allow a non-loopback host without tls (only behind a TLS-terminating proxy)",
    )

    @model_validator(mode="after")
    def _encrypted_off_loopback(self) -> Self:
        if self.enabled:
            _plaintext_refused(self.host, self.tls, self.plaintext_outside_loopback, "mllp")
        return self


class HL7Settings(_Strict):
    unused_triggers: Literal["accept", "reject"] = Field(
        default="accept",
        description="ADT trigger events no KPI uses (A31, A45, ...): accept answers AA and counts "
        "them (no events); reject answers AR 201 as before",
    )


class DeadLetterSettings(_Strict):
    max_rows: int = Field(
        default=100_000, ge=100, description="dead letters kept; the oldest are dropped (counted) beyond it"
    )
    retention: Duration = Field(
        default=30 * 86400.0, description="dead letters older than this are deleted (they hold PHI)"
    )


def is_loopback(host: str) -> bool:
    """Only this machine can reach a listener bound here."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _plaintext_refused(host: str, tls: TLSSettings | None, allowed: bool, section: str) -> None:
    """A listener reachable from the network carries PHI and credentials: TLS, or an explicit
    statement that a TLS-terminating proxy on the same host stands in front of it."""
    if tls is None and not allowed and not is_loopback(host):
        raise ValueError(
            f"{section}.host {host!r} is reachable from the network but {section}.tls is not set; "
            f"give {section}.tls (cert, key) or, only behind a TLS-terminating proxy, set "
            f"{section}.plaintext_outside_loopback: true"
        )


RoleName = Literal["viewer", "clinician", "ops", "integration", "admin"]
OidcAlgorithm = Literal["RS256", "ES256", "PS256"]
_LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}


def check_idp_url(value: str, what: str) -> str:
    """An IdP address: https, or http on the loopback only (a local Keycloak in tests)."""
    parts = urlsplit(value)
    if parts.scheme == "https" or (parts.scheme == "http" and (parts.hostname or "") in _LOOPBACK_NAMES):
        if not parts.hostname:
            raise ValueError(f"{what} {value!r} has no host")
        return value
    raise ValueError(f"{what} must be an https URL (http only on the loopback, for tests): {value!r}")


class OidcSettings(BaseModel):
    """Where bearer tokens come from and how to read them (api/security/oidc.py verifies them).
    Durations as elsewhere: 30s, 10m, or seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str = Field(
        description="the IdP's issuer, exactly as in its tokens' iss, e.g. https://login.example/realms/x"
    )
    audience: str = Field(description="what the API's tokens carry in aud, e.g. carescore-api")
    page_client_id: str | None = Field(
        default=None,
        description="the IdP's public client the scorecard page signs in with (authorization code + "
        "PKCE S256; redirect URI: the page's address /), e.g. carescore-page; none: the page cannot sign in",
    )
    jwks_url: str | None = Field(
        default=None, description="the issuer's JWKS; default: jwks_uri of its .well-known document"
    )
    roles_claim: str = Field(
        default="roles", description="claim with the roles; dots for nested: realm_access.roles"
    )
    role_map: dict[str, RoleName] = Field(
        default_factory=dict,
        description="IdP role or group name -> carescore role; empty: the names are carescore's own",
    )
    units_claim: str = Field(default="units", description="claim with the user's units (or their groups)")
    unit_prefix: str = Field(
        default="", description="keep only values with this prefix, without it (groups: '/units/')"
    )
    unit_map: dict[str, str] = Field(
        default_factory=dict, description="IdP value (e.g. an Entra group id) -> carescore unit id"
    )
    name_claims: tuple[str, ...] = ("preferred_username", "name", "email")
    leeway: Duration = Field(default=30.0, description="clock skew allowed on exp, nbf, iat")
    jwks_cache_ttl: Duration = Field(default=600.0, description="the JWKS is fetched again after this")
    jwks_refetch_interval: Duration = Field(
        default=10.0, description="an unknown key id refetches the JWKS at most this often"
    )
    algorithms: tuple[OidcAlgorithm, ...] = ("RS256", "ES256", "PS256")
    http_timeout: Duration = 5.0
    max_token_bytes: int = Field(default=16384, gt=0)

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        return check_idp_url(value, "issuer")

    @field_validator("jwks_url")
    @classmethod
    def _jwks(cls, value: str | None) -> str | None:
        return None if value is None else check_idp_url(value, "jwks_url")

    @field_validator("algorithms")
    @classmethod
    def _algorithms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one algorithm (RS256, ES256, PS256)")
        return value

    @property
    def discovery_url(self) -> str:
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"


class AuthSettings(_Strict):
    """Who may call the API. Without `oidc` the API must be bound to the loopback (or run the demo),
    and a request without credentials acts as the local operator (admin); integration tokens
    (`carescore token create`) work either way."""

    oidc: OidcSettings | None = Field(
        default=None, description="bearer JWTs from this issuer (Keycloak, Entra ID, Okta, ADFS)"
    )
    max_silence: Duration = Field(
        default=24 * 3600.0, description="longest silence ops may create (admins may create longer)"
    )
    audit_retention: Duration = Field(
        default=365 * 86400.0, description="audit entries older than this are deleted"
    )


class APISettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    tls: TLSSettings | None = Field(default=None, description="HTTPS for the API and the scorecard page")
    plaintext_outside_loopback: bool = Field(
        default=False,
        description="allow a non-loopback host without tls (only behind a TLS-terminating proxy)",
    )
    docs: bool = Field(
        default=False, description="serve the OpenAPI document and its pages (/openapi.json, /docs, /redoc)"
    )
    trusted_hosts: list[str] = Field(
        default_factory=list,
        description="Host header values accepted (e.g. scorecard.hospital.org); empty: any",
    )
    auth: AuthSettings = Field(default_factory=AuthSettings)

    @model_validator(mode="after")
    def _encrypted_off_loopback(self) -> Self:
        _plaintext_refused(self.host, self.tls, self.plaintext_outside_loopback, "api")
        return self


class EngineSettings(_Strict):
    tick: Duration = Field(default=1.0, description="how often windows close and alerts evaluate")
    idle_timeout: Duration = Field(
        default=60.0, description="a source quiet this long advances its watermark by wall clock"
    )
    snapshot_every: Duration = 60.0
    fsync: bool = True
    max_future: Duration = Field(
        default=600.0,
        description="event times further ahead of their arrival are refused by the connectors (a mistyped "
        "year would otherwise move the watermark past every real event)",
    )
    max_age: Duration = Field(
        default=100 * 365 * 86400.0,
        description="event times older than this are refused (placeholder 1900 dates); backfills of a "
        "lifetime of records stay inside it",
    )

    def bounds(self) -> TimeBounds:
        return TimeBounds(self.max_future, self.max_age)


class WebhookSettings(_Strict):
    name: str = "webhook"
    url: str
    timeout: Duration = 5.0
    secret: str | None = Field(default=None, description="HMAC-SHA256 key for the signature header")
    routed: bool = Field(
        default=False,
        description="false: every alert change (integrations); true: notices to people with a pager id",
    )


class EmailSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=25, ge=1, le=65535)
    sender: str = Field(description="From: address, e.g. carescore@hospital.example")
    starttls: bool = False
    username: str | None = None
    password: str | None = None
    timeout: Duration = 10.0


class AlertmanagerSettings(_Strict):
    url: str = Field(description="Alertmanager base URL, e.g. http://127.0.0.1:9093")
    resend_every: Duration = Field(default=60.0, description="firing alerts are re-sent this often")


class FeedRule(_Strict):
    name: str = Field(description="what people call the feed, e.g. 'EMR HL7 interface'")
    source: Literal["hl7v2", "fhir", "feed"]
    events: str | None = Field(
        default=None, description="only event types starting with this, e.g. nursecall."
    )
    stale_after: Duration = Field(description="quiet this long is an outage")
    per: Literal["facility", "unit"] = Field(default="facility", description="one alert per facility or unit")
    severity: Literal["warning", "critical"] = "critical"


class AlertSettings(_Strict):
    routes: Path | None = Field(default=None, description="routes.yaml (default: alerts/routes.yaml)")
    database: str | None = Field(
        default=None,
        description="postgresql://user@host/db to share alerts between processes (default: SQLite, data_dir)",
    )
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


class DemoSettings(_Strict):
    enabled: bool = Field(
        default=False,
        description="simulated hospital traffic into this carescore (the packaged defaults turn it on; "
        "a settings file of one's own has it off unless it says so)",
    )
    seed: int = 7
    rate: float = Field(default=1.0, gt=0, description="speed factor for the simulated traffic")
    backfill: Duration = Field(
        default=12 * 3600.0,
        description="hours of live traffic simulated at first start (a month of stays and feeds is always)",
    )


class FHIRSettings(_Strict):
    experience_questionnaires: list[str] = Field(
        default_factory=lambda: ["hcahps", "patient-experience", "experience", "satisfaction"],
        description="QuestionnaireResponse.questionnaire containing one of these is an experience survey",
    )
    top_box_answers: list[str] = Field(
        default_factory=lambda: ["always", "definitely yes", "yes, definitely", "9", "10"],
        description="coded/text answers that are the most positive category, for questions that are "
        "not HCAHPS items (HCAHPS answers are scored on each item's own scale, engine/hcahps.py)",
    )
    top_box_min: float = Field(
        default=9.0, description="numeric answers at or above this are top box (0-10; not for HCAHPS items)"
    )
    nurse_call_codes: list[str] = Field(
        default_factory=lambda: ["nurse-call", "patient-call", "call-light"],
        description="Task.code / Communication.category codes that mark a nurse call",
    )


class FHIRLimits(_Strict):
    max_body_bytes: int = Field(
        default=20 * 1024 * 1024, ge=1024, description="largest POST /fhir body; larger gets 413"
    )
    max_entries: int = Field(default=10_000, ge=1, description="most entries in one Bundle; more gets 413")


class FeedSettings(_Strict):
    inbox: Path | None = Field(
        default=None, description="watched folder for feed files; default <data_dir>/inbox"
    )
    watch: bool = Field(default=True, description="take files dropped into the inbox")
    poll: Duration = Field(default=2.0, description="how often the inbox is looked at")
    max_upload_bytes: int = Field(
        default=50 * 1024 * 1024, ge=1024, description="largest feed upload over REST"
    )


class ScorecardSettings(_Strict):
    status: Literal["worst", "weighted"] = Field(
        default="worst",
        description="a perspective's status: the worst of its KPIs, or their weighted mean",
    )
    weights: dict[str, float] = Field(
        default_factory=dict, description="KPI id -> weight for 'weighted' (default 1)"
    )
    trend: int = Field(default=12, ge=0, le=500, description="closed windows shown as the trend")
    benchmarks: list[Path] = Field(
        default_factory=list,
        description="peer benchmark CSV files (kpi, value, source, year, peer_group) for /compare",
    )


class KafkaSettings(_Strict):
    bootstrap: str = Field(default="127.0.0.1:9092", description="the brokers, host:port[,host:port]")
    partitions: int = Field(default=8, ge=1, description="of the events topic: the most workers that help")
    replication: int = Field(
        default=1, ge=1, description="replication factor of the topics carescore creates"
    )
    app_id: str = Field(default="carescore", description="Faust app id: the consumer group and table topics")
    topic_prefix: str = Field(
        default="carescore", description="topics are <prefix>.events, <prefix>.kpi.samples, ..."
    )
    snapshot_every: int = Field(
        default=20_000, ge=1, description="events between engine checkpoints (a crash redoes at most these)"
    )
    publish_timeout: Duration = Field(default=5.0, description="a connector waits this long for acks=all")
    worker_metrics: str = Field(
        default="127.0.0.1:9101",
        description="host:port where `carescore worker` serves /metrics (empty: none)",
    )


class RuntimeSettings(_Strict):
    kind: Literal["embedded", "kafka"] = Field(
        default="embedded",
        description="embedded: one process, local event log; kafka: topics and Faust workers",
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)


class Settings(_Strict):
    data_dir: Path = Path("var/carescore")
    kpi_defs: Path = Field(default_factory=packaged_kpi_defs)
    timezone: str = Field(
        default="UTC",
        description="the site's time zone (IANA name): HL7 and feed times that carry no offset are "
        "read in it, KPI windows of whole days start at its midnight and calendar-month windows on "
        "its 1st, and calendar days in measures (midnights of a stay, 30 days to a readmission) are "
        "its dates",
    )
    places: Places = Field(default_factory=Places)
    mllp: MLLPSettings = Field(default_factory=MLLPSettings)
    api: APISettings = Field(default_factory=APISettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    demo: DemoSettings = Field(default_factory=DemoSettings)
    scorecard: ScorecardSettings = Field(default_factory=ScorecardSettings)
    forecasts: ForecastSettings = Field(default_factory=ForecastSettings)
    fhir: FHIRSettings = Field(default_factory=FHIRSettings)
    fhir_limits: FHIRLimits = Field(default_factory=FHIRLimits)
    hl7: HL7Settings = Field(default_factory=HL7Settings)
    dead_letters: DeadLetterSettings = Field(default_factory=DeadLetterSettings)
    feeds: FeedSettings = Field(default_factory=FeedSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Europe/London") from exc
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def inbox(self) -> Path:
        return self.feeds.inbox or self.data_dir / "inbox"


def unauthenticated_outside_loopback(settings: Settings) -> str | None:
    """Why these settings must not run: an API reachable from the network with nobody signing in
    (no api.auth.oidc) is allowed only for the demo hospital's simulated data."""
    api = settings.api
    if api.auth.oidc is None and not settings.demo.enabled and not is_loopback(api.host):
        return (
            f"api.host {api.host!r} is reachable from the network but api.auth.oidc is not set: "
            "without an identity provider every caller would be admin; set api.auth.oidc (issuer, "
            "audience) or bind api.host to 127.0.0.1"
        )
    return None


def load_settings(path: Path, *, base: Path | None = None) -> Settings:
    """Settings from a YAML file; relative paths are resolved against its folder (or `base`:
    the packaged defaults resolve against the current folder)."""
    data, lines = load_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of settings"])
    settings = validate_file(Settings, path, data, lines)
    refused = unauthenticated_outside_loopback(settings)
    if refused:
        line = lines.get(("api", "host")) or lines.get(("api",))
        raise ConfigError([f"{path}:{line}: api.host: {refused}"])
    base = base or path.resolve().parent
    if not settings.data_dir.is_absolute():
        settings.data_dir = (base / settings.data_dir).resolve()
    routes = settings.alerts.routes
    if routes is not None and not routes.is_absolute():
        settings.alerts.routes = (base / routes).resolve()
    settings.scorecard.benchmarks = [
        p if p.is_absolute() else (base / p).resolve() for p in settings.scorecard.benchmarks
    ]
    inbox = settings.feeds.inbox
    if inbox is not None and not inbox.is_absolute():
        settings.feeds.inbox = (base / inbox).resolve()
    if "kpi_defs" in data and not settings.kpi_defs.is_absolute():
        settings.kpi_defs = (base / settings.kpi_defs).resolve()
    for section in ("mllp", "api"):
        tls = getattr(settings, section).tls
        if tls is None:
            continue
        for name in ("cert", "key", "client_ca"):
            value = getattr(tls, name)
            if value is not None and not value.is_absolute():
                setattr(tls, name, (base / value).resolve())
            if value is not None and not getattr(tls, name).exists():
                line = lines.get((section, "tls", name))
                missing = getattr(tls, name)
                raise ConfigError([f"{path}:{line}: {section}.tls.{name}: {missing} does not exist"])
    return settings
