"""The listeners' settings (MLLP and the HTTP API): TLS, which facilities a client certificate
may send for, who may sign in (OIDC), rate limits. A listener reachable from the network must
be encrypted or say that a TLS-terminating proxy stands in front of it."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from engine.durations import Duration
from engine.yamlconf import Strict


class TLSSettings(Strict):
    cert: Path = Field(description="PEM certificate chain of this listener")
    key: Path = Field(description="PEM private key")
    client_ca: Path | None = Field(
        default=None, description="when set, senders must present a certificate signed by this CA"
    )


class ClientFacilities(Strict):
    certificate: str = Field(
        description="a client certificate's subject CN or one of its subjectAltName values (DNS, email, URI)"
    )
    facilities: list[str] = Field(min_length=1, description="facility ids (places) it may send for")


class MLLPSettings(Strict):
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
    client_facilities: list[ClientFacilities] = Field(
        default_factory=list,
        description="with tls.client_ca: the facilities each client certificate may send for, checked on "
        "the facility every event resolves to; a certificate named by no entry may send nothing",
    )

    @model_validator(mode="after")
    def _encrypted_off_loopback(self) -> Self:
        if self.enabled:
            plaintext_refused(self.host, self.tls, self.plaintext_outside_loopback, "mllp")
        if self.client_facilities and (self.tls is None or self.tls.client_ca is None):
            raise ValueError("mllp.client_facilities needs mllp.tls.client_ca (senders' certificates)")
        return self


def is_loopback(host: str) -> bool:
    """Only this machine can reach a listener bound here."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plaintext_refused(host: str, tls: TLSSettings | None, allowed: bool, section: str) -> None:
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


class AuthSettings(Strict):
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


class RateSettings(Strict):
    rate: float = Field(gt=0, description="requests per second, per caller, refilled continuously")
    burst: int = Field(ge=1, description="requests a caller may send at once after a quiet spell")


class RateLimitSettings(Strict):
    """Per caller (the signed-in principal; the client address while no credentials are accepted):
    past the limit, 429 with Retry-After. The defaults are far above what the demo, a page or an
    interface engine sends; they stop a runaway script."""

    enabled: bool = True
    ingest: RateSettings = Field(
        default_factory=lambda: RateSettings(rate=500.0, burst=5000),
        description="every write: FHIR, feed uploads, ack, silences, replay",
    )
    reads: RateSettings = Field(
        default_factory=lambda: RateSettings(rate=200.0, burst=2000),
        description="every read: KPIs, the scorecard, reports, alerts, /metrics, the stream",
    )


class APISettings(Strict):
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
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)

    @model_validator(mode="after")
    def _encrypted_off_loopback(self) -> Self:
        plaintext_refused(self.host, self.tls, self.plaintext_outside_loopback, "api")
        return self
