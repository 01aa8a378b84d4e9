"""carescore.yaml: every setting of a running carescore, validated at start.

Relative paths are resolved against the folder of the config file, so a config can sit
next to its KPI definitions and data folder. Errors name file, line and field.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from engine.config_alerts import AlertSettings
from engine.config_listeners import APISettings, MLLPSettings, is_loopback
from engine.durations import Duration
from engine.forecast import ForecastSettings
from engine.kafka_security import KafkaSASL, KafkaTLS, SecurityProtocol, check_security
from engine.places import Places
from engine.privacy import KEY_FILE, PrivacySettings
from engine.timebounds import TimeBounds
from engine.yamlconf import ConfigError, Strict, line_of, load_yaml, validate_file

REPO_ROOT = Path(__file__).resolve().parent.parent
"""The source checkout: for tests, benchmarks and `make docs`; nothing a running carescore
reads is found through it (an installed wheel has no checkout)."""


def packaged_kpi_defs() -> Path:
    """The KPI catalogue shipped in the package (kpi_defs/*.yaml)."""
    return Path(str(resources.files("kpi_defs")))


class HL7Settings(Strict):
    unused_triggers: Literal["accept", "reject"] = Field(
        default="accept",
        description="ADT trigger events no KPI uses (A31, A45, ...): accept answers AA and counts "
        "them (no events); reject answers AR 201 as before",
    )


class DeadLetterSettings(Strict):
    max_rows: int = Field(
        default=100_000, ge=100, description="dead letters kept; the oldest are dropped (counted) beyond it"
    )
    retention: Duration = Field(
        default=30 * 86400.0, description="dead letters older than this are deleted (they hold PHI)"
    )


class EngineSettings(Strict):
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


class DemoSettings(Strict):
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
    scenarios: list[Literal["stat_backlog"]] = Field(
        default_factory=list,
        description="seeded scenarios at first start: stat_backlog, ICU STAT turnaround building up for "
        "90 minutes from the start (demo/labs.py), which a forecast alert sees coming",
    )


class FHIRSettings(Strict):
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


class FHIRLimits(Strict):
    max_body_bytes: int = Field(
        default=20 * 1024 * 1024, ge=1024, description="largest POST /fhir body; larger gets 413"
    )
    max_entries: int = Field(default=10_000, ge=1, description="most entries in one Bundle; more gets 413")


class FeedSettings(Strict):
    inbox: Path | None = Field(
        default=None, description="watched folder for feed files; default <data_dir>/inbox"
    )
    watch: bool = Field(default=True, description="take files dropped into the inbox")
    poll: Duration = Field(default=2.0, description="how often the inbox is looked at")
    max_upload_bytes: int = Field(
        default=50 * 1024 * 1024, ge=1024, description="largest feed upload over REST"
    )
    retention: Duration = Field(
        default=30 * 86400.0, description="files in the inbox's done/ and failed/ older than this are deleted"
    )


class ScorecardSettings(Strict):
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


class ArchiveSettings(Strict):
    """The copy of the events topic that period reports read on the Kafka runtime (archiver.py)."""

    enabled: bool = Field(default=True, description="the gateway archives the events topic to Parquet")
    path: Path | None = Field(
        default=None, description="folder of the Parquet files; default <data_dir>/archive"
    )
    flush_every: Duration = Field(
        default=2.0, description="at most this long between reading an event and its file (then the commit)"
    )
    max_rows: int = Field(default=50_000, ge=1, description="rows buffered before a flush comes sooner")
    compact_at: int = Field(
        default=24, ge=2, description="part files in one partition-hour before they are merged into one"
    )


class RawTopicSettings(Strict):
    """The raw inbound topics <prefix>.raw.hl7/.fhir/.feeds: every accepted input as received,
    for audit and `carescore remap`. They hold PHI as sent (names, MRNs), so they are opt-in."""

    enabled: bool = Field(
        default=False, description="publish every accepted input, as received, to <prefix>.raw.*"
    )
    retention: Duration = Field(
        default=7 * 86400.0,
        gt=0,
        description="the raw topics' retention.ms: how far back a remap can reach (holds PHI)",
    )
    max_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=1024 * 1024,
        description="largest raw record (the topics' max.message.bytes); covers fhir_limits.max_body_bytes",
    )


class KafkaSettings(Strict):
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
    session_timeout: Duration = Field(
        default=60.0,
        ge=6.0,
        le=1800.0,
        description="a worker that stops answering (killed, frozen, cut off) keeps its partitions "
        "this long before the group gives them to another: the fail-over time (the broker takes "
        "6 s to 30 min: group.min/max.session.timeout.ms)",
    )
    worker_metrics: str = Field(
        default="127.0.0.1:9101",
        description="host:port where `carescore worker` serves /metrics (empty: none)",
    )
    security_protocol: SecurityProtocol = Field(
        default="PLAINTEXT",
        description="PLAINTEXT (loopback, tests), SSL, or SASL_SSL (engine/kafka_security.py)",
    )
    tls: KafkaTLS | None = Field(default=None, description="CA, and client certificate for SSL/SASL_SSL")
    sasl: KafkaSASL | None = Field(
        default=None, description="SASL_SSL sign-in: mechanism, username, password"
    )
    archive: ArchiveSettings = Field(
        default_factory=ArchiveSettings,
        description="events to Parquet for period reports (consumer group <app_id>.archiver)",
    )
    raw: RawTopicSettings = Field(
        default_factory=RawTopicSettings,
        description="raw inbound topics (PHI as received) for audit and `carescore remap`",
    )

    @model_validator(mode="after")
    def _secure(self) -> Self:
        check_security(self.security_protocol, self.tls, self.sasl)
        return self


class RuntimeSettings(Strict):
    kind: Literal["embedded", "kafka"] = Field(
        default="embedded",
        description="embedded: one process, local event log; kafka: topics and Faust workers",
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)


class Settings(Strict):
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
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
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

    @property
    def archive_path(self) -> Path:
        return self.runtime.kafka.archive.path or self.data_dir / "archive"

    @property
    def pseudonym_key_file(self) -> Path:
        return self.privacy.pseudonym_key_file or self.data_dir / KEY_FILE


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


def _resolve_kafka_files(kafka: KafkaSettings, base: Path) -> None:
    for section, names in ((kafka.tls, ("cafile", "certfile", "keyfile")), (kafka.sasl, ("password_file",))):
        for name in names if section is not None else ():
            value = getattr(section, name)
            if value is not None and not value.is_absolute():
                setattr(section, name, (base / value).resolve())


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
    known = {f.id for f in settings.places.facilities}
    for i, entry in enumerate(settings.mllp.client_facilities):
        unknown = sorted(set(entry.facilities) - known)
        if unknown:
            line = line_of(lines, ("mllp", "client_facilities", i, "facilities"))
            field = f"mllp.client_facilities.{i}.facilities"
            raise ConfigError([f"{path}:{line}: {field}: unknown facility {', '.join(unknown)}"])
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
    key_file = settings.privacy.pseudonym_key_file
    if key_file is not None and not key_file.is_absolute():
        settings.privacy.pseudonym_key_file = (base / key_file).resolve()
    _resolve_kafka_files(settings.runtime.kafka, base)
    archive = settings.runtime.kafka.archive
    if archive.path is not None and not archive.path.is_absolute():
        archive.path = (base / archive.path).resolve()
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
