"""OpenID Connect bearer tokens: an access token (a signed JWT) from the hospital's IdP — Entra ID,
Okta, Keycloak, ADFS — verified against the keys the issuer publishes (its JWKS, found through its
discovery document) and turned into a `Principal`: who, with which carescore roles, for which units.

All JWT and JWK work is joserfc's; this module only decides what to accept:

- only asymmetric signatures (RS256, ES256, PS256 — configurable among those, never `none` nor HS*,
  so a public key can never be used as an HMAC secret), with a key of the matching type;
- the token's `iss` must be the configured issuer exactly, `aud` must contain the configured
  audience, `exp` must be in the future (with a small leeway), `sub` must be present;
- a key id the cached JWKS does not know makes one refetch, at most once per `jwks_refetch_interval`
  whatever the number of tokens asking (a token from a foreign issuer never triggers a fetch: its
  `iss` is refused first);
- the JWKS is refetched when older than `jwks_cache_ttl`; if the IdP cannot be reached then, the keys
  already known keep working, and with none known `OidcUnavailable` is raised (a 503, not a 401).

Every refusal is a `TokenError` with a `reason` (a `TokenErrorReason`), for logs and the 401 body.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import httpx
from joserfc import jws
from joserfc.errors import ExpiredTokenError, InvalidClaimError, JoseError, MissingClaimError
from joserfc.jwk import JWKRegistry, Key
from joserfc.jwt import JWTClaimsRegistry

from api.security.roles import Role
from engine.config_listeners import OidcAlgorithm, OidcSettings, check_idp_url

log = logging.getLogger(__name__)

Algorithm = OidcAlgorithm
#: The key type each allowed algorithm needs (an RS256 token is never checked with an EC key).
KEY_TYPE: dict[str, str] = {"RS256": "RSA", "PS256": "RSA", "ES256": "EC"}


class TokenErrorReason(StrEnum):
    MALFORMED = "malformed"  # not a compact JWS, bad base64/JSON, too large
    ALGORITHM = "algorithm"  # alg none, HS*, or another not allowed
    WRONG_ISSUER = "wrong_issuer"
    UNKNOWN_KEY = "unknown_key"  # no key with the token's kid, even after a JWKS refetch
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"  # nbf or iat in the future
    WRONG_AUDIENCE = "wrong_audience"
    MISSING_CLAIM = "missing_claim"
    INVALID_CLAIM = "invalid_claim"


class TokenError(Exception):
    """The token is refused (HTTP 401): `reason` says why, `detail` says more."""

    def __init__(self, reason: TokenErrorReason, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)


class OidcUnavailable(Exception):
    """The IdP's discovery document or keys could not be fetched, and no keys are known (HTTP 503)."""


@dataclass(frozen=True)
class Principal:
    """A verified caller. `roles` are carescore roles (role_map applied, unknown names dropped);
    `units` are carescore unit ids the caller is scoped to."""

    subject: str
    name: str
    roles: frozenset[str]
    units: frozenset[str]
    issuer: str
    client_id: str | None = None
    expires_at: float = math.inf
    #: an integration token's scope (api/security/tokens.py): fhir, feed:<name>, read, all-ingest, all;
    #: None for IdP tokens (their roles alone decide)
    scope: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def principal_from_claims(settings: OidcSettings, claims: Mapping[str, Any]) -> Principal:
    """The Principal for claims that were already verified."""
    known = {r.value for r in Role}
    roles: set[str] = set()
    for name in _strings(_claim(claims, settings.roles_claim)):
        role = settings.role_map.get(name) if settings.role_map else name
        if role is not None and str(role) in known:
            roles.add(str(role))
    units: set[str] = set()
    for value in _strings(_claim(claims, settings.units_claim)):
        if settings.unit_prefix:
            if not value.startswith(settings.unit_prefix):
                continue
            value = value[len(settings.unit_prefix) :]
        unit = settings.unit_map.get(value, value) if settings.unit_map else value
        if unit:
            units.add(unit)
    subject = str(claims["sub"])
    name = next((str(claims[c]) for c in settings.name_claims if claims.get(c)), subject)
    client = claims.get("azp") or claims.get("client_id")
    return Principal(
        subject=subject,
        name=name,
        roles=frozenset(roles),
        units=frozenset(units),
        issuer=str(claims["iss"]),
        client_id=str(client) if client else None,
        expires_at=float(claims["exp"]),
        claims=dict(claims),
    )


class OidcVerifier:
    """Verifies bearer tokens of one issuer. One per process; `aclose()` at the end.

    `client`: an httpx.AsyncClient to use (default: its own); `clock`: seconds since the epoch
    (tests). `jwks_fetches` counts the JWKS fetches made."""

    def __init__(
        self,
        settings: OidcSettings,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._client = client or httpx.AsyncClient(timeout=settings.http_timeout, follow_redirects=False)
        self._own_client = client is None
        self._clock = clock
        self._jwks_url = settings.jwks_url
        self._keys: dict[str | None, list[Key]] | None = None
        self._fetched_at = -math.inf  # time.monotonic() of the last successful JWKS fetch
        self._tried_at = -math.inf  # ... of the last attempt, successful or not
        self._lock = asyncio.Lock()
        self._endpoints: dict[str, str] | None = None
        self.jwks_fetches = 0

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def __aenter__(self) -> OidcVerifier:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---- verification ---------------------------------------------------------------------------

    async def verify(self, token: str) -> Principal:
        """The Principal of a valid access token; TokenError (with its reason) otherwise;
        OidcUnavailable when the IdP's keys cannot be had at all."""
        obj, header, unverified = self._parse(token)
        alg = header["alg"]
        # Before any key is looked up: a foreign issuer's token never costs a JWKS fetch.
        if unverified.get("iss") != self.settings.issuer:
            raise TokenError(TokenErrorReason.WRONG_ISSUER, f"iss {unverified.get('iss')!r}")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenError(TokenErrorReason.MALFORMED, "kid is not a string")
        key = await self._key_for(kid, alg)
        try:
            valid = jws.validate_compact(obj, key, algorithms=[alg])
        except JoseError as error:
            raise TokenError(TokenErrorReason.BAD_SIGNATURE, str(error)) from error
        if not valid:
            raise TokenError(TokenErrorReason.BAD_SIGNATURE, f"kid {kid!r}")
        claims = unverified  # the payload that was just verified
        self._validate_claims(claims)
        return principal_from_claims(self.settings, claims)

    def _parse(self, token: str) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        if not isinstance(token, str) or len(token) > self.settings.max_token_bytes:
            raise TokenError(TokenErrorReason.MALFORMED, "not a string, or too large")
        if token.count(".") != 2:
            raise TokenError(TokenErrorReason.MALFORMED, "not a signed JWT (compact JWS)")
        try:
            obj = jws.extract_compact(token.encode("ascii"))
            header = dict(obj.headers())
            claims = json.loads(obj.payload)
        except (JoseError, ValueError, UnicodeError) as error:
            raise TokenError(TokenErrorReason.MALFORMED, str(error) or type(error).__name__) from error
        if not isinstance(claims, dict):
            raise TokenError(TokenErrorReason.MALFORMED, "the payload is not a JSON object")
        alg = header.get("alg")
        if alg not in self.settings.algorithms:
            raise TokenError(TokenErrorReason.ALGORITHM, f"alg {alg!r} is not allowed")
        if "crit" in header:
            raise TokenError(TokenErrorReason.MALFORMED, "crit header parameters are not understood")
        return obj, header, claims

    def _validate_claims(self, claims: dict[str, Any]) -> None:
        settings = self.settings
        registry = JWTClaimsRegistry(
            now=lambda: int(self._clock()),
            leeway=math.ceil(settings.leeway),
            iss={"essential": True, "value": settings.issuer},
            aud={"essential": True, "value": settings.audience},
            exp={"essential": True},
            sub={"essential": True},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError as error:
            raise TokenError(TokenErrorReason.EXPIRED, f"exp {claims.get('exp')}") from error
        except MissingClaimError as error:
            raise TokenError(TokenErrorReason.MISSING_CLAIM, error.claim) from error
        except InvalidClaimError as error:
            reason = {
                "aud": TokenErrorReason.WRONG_AUDIENCE,
                "iss": TokenErrorReason.WRONG_ISSUER,
                "nbf": TokenErrorReason.NOT_YET_VALID,
                "iat": TokenErrorReason.NOT_YET_VALID,
            }.get(error.claim, TokenErrorReason.INVALID_CLAIM)
            raise TokenError(reason, f"{error.claim}: {error.description}") from error

    # ---- keys -----------------------------------------------------------------------------------

    async def _key_for(self, kid: str | None, alg: str) -> Key:
        keys = await self._current_keys()
        key = self._find(keys, kid, alg)
        if key is None:
            keys = await self._refetch_for_unknown_key()
            key = self._find(keys, kid, alg)
        if key is None:
            raise TokenError(TokenErrorReason.UNKNOWN_KEY, f"no {KEY_TYPE[alg]} key with kid {kid!r}")
        return key

    @staticmethod
    def _find(keys: dict[str | None, list[Key]], kid: str | None, alg: str) -> Key | None:
        if kid is None:  # allowed only when the issuer publishes exactly one key of the type
            fitting = [k for ks in keys.values() for k in ks if _fits(k, alg)]
            return fitting[0] if len(fitting) == 1 else None
        return next((k for k in keys.get(kid, []) if _fits(k, alg)), None)

    async def _current_keys(self) -> dict[str | None, list[Key]]:
        if self._keys is not None and time.monotonic() - self._fetched_at < self.settings.jwks_cache_ttl:
            return self._keys
        async with self._lock:
            if self._keys is not None and time.monotonic() - self._fetched_at < self.settings.jwks_cache_ttl:
                return self._keys
            if (
                self._keys is not None
                and time.monotonic() - self._tried_at < self.settings.jwks_refetch_interval
            ):
                return self._keys  # a refresh failed a moment ago: no request waits on the IdP again yet
            try:
                return await self._fetch_keys()
            except OidcUnavailable:
                if self._keys is None:
                    raise
                log.warning("the IdP's JWKS could not be refreshed; the keys known keep working")
                return self._keys

    async def _refetch_for_unknown_key(self) -> dict[str | None, list[Key]]:
        async with self._lock:
            assert self._keys is not None
            if time.monotonic() - self._tried_at < self.settings.jwks_refetch_interval:
                return self._keys  # fetched (or tried) a moment ago: no fetch storm from unknown kids
            return await self._fetch_keys()

    async def _fetch_keys(self) -> dict[str | None, list[Key]]:
        """Fetch the JWKS (under the lock); OidcUnavailable if it cannot be had."""
        self._tried_at = time.monotonic()
        url = self._jwks_url or await self._discover()
        document = await self._get_json(url, "JWKS")
        raw_keys = document.get("keys")
        if not isinstance(raw_keys, list):
            raise OidcUnavailable(f"the JWKS at {url} has no keys list")
        keys: dict[str | None, list[Key]] = {}
        for data in raw_keys:
            key = _import_signing_key(data, self.settings.algorithms)
            if key is not None:
                keys.setdefault(data.get("kid"), []).append(key)
        self.jwks_fetches += 1
        self._keys, self._fetched_at = keys, time.monotonic()
        return keys

    async def endpoints(self) -> dict[str, str]:
        """The issuer's authorization and token endpoints (its discovery document, fetched once)."""
        if self._endpoints is None:
            document = await self._get_json(self.settings.discovery_url, "discovery document")
            wanted = ("authorization_endpoint", "token_endpoint")
            if not all(isinstance(document.get(k), str) for k in wanted):
                raise OidcUnavailable("the discovery document has no authorization or token endpoint")
            self._endpoints = {k: check_idp_url(document[k], k) for k in wanted}
        return self._endpoints

    async def _discover(self) -> str:
        document = await self._get_json(self.settings.discovery_url, "discovery document")
        if document.get("issuer") != self.settings.issuer:
            raise OidcUnavailable(
                f"the discovery document names issuer {document.get('issuer')!r}, "
                f"not {self.settings.issuer!r}"
            )
        url = document.get("jwks_uri")
        if not isinstance(url, str):
            raise OidcUnavailable("the discovery document has no jwks_uri")
        try:
            self._jwks_url = check_idp_url(url, "jwks_uri")
        except ValueError as error:
            raise OidcUnavailable(str(error)) from error
        return self._jwks_url

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            response = await self._client.get(url, headers={"Accept": "application/json"})
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise OidcUnavailable(f"the {what} at {url} could not be fetched: {error}") from error
        if not isinstance(document, dict):
            raise OidcUnavailable(f"the {what} at {url} is not a JSON object")
        return document


def _fits(key: Key, alg: str) -> bool:
    key_alg = key.get("alg")
    return key.key_type == KEY_TYPE[alg] and (key_alg is None or key_alg == alg)


def _import_signing_key(data: Any, algorithms: tuple[str, ...]) -> Key | None:
    """A public signing key of an allowed type from one JWKS entry, or None (encryption keys,
    symmetric keys, other types, or a key that does not import are left out)."""
    if not isinstance(data, dict) or data.get("use", "sig") != "sig":
        return None
    if data.get("kty") not in {KEY_TYPE[a] for a in algorithms}:
        return None
    if data.get("alg") is not None and data.get("alg") not in algorithms:
        return None
    if any(p in data for p in ("d", "p", "q", "k")):  # private or symmetric material: refuse
        return None
    try:
        return JWKRegistry.import_key(data)
    except (JoseError, ValueError, TypeError):
        log.warning("a JWKS key (kid %r) could not be imported", data.get("kid"))
        return None
