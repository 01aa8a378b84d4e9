"""OpenID Connect: tokens from a real Keycloak (tests/keycloak.py) verified by api.security.oidc, the
forged and wrong ones refused with the right reason, refresh, key rotation, the page's PKCE flow;
and the role -> permission table (api.security.roles)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import html
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc.jwk import RSAKey
from pydantic import ValidationError

from api.security import (
    OidcSettings,
    OidcUnavailable,
    OidcVerifier,
    Permission,
    Principal,
    TokenError,
    TokenErrorReason,
    allowed,
)
from tests.alerting import free_port

if TYPE_CHECKING:  # imported by pytest as a plugin (below), which rewrites its asserts
    from tests.keycloak import Keycloak

pytest_plugins = ("tests.keycloak",)

needs_keycloak = pytest.mark.keycloak


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Header and claims of a JWT, unverified (for building the forged ones), and its signature."""
    header, payload, signature = token.split(".")
    return json.loads(unb64(header)), json.loads(unb64(payload)), signature


def reassemble(header: dict[str, Any], claims: dict[str, Any], signature: str) -> str:
    return ".".join((b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()), signature))


@pytest.fixture
async def make_verifier(keycloak: Keycloak) -> AsyncIterator[Callable[..., OidcVerifier]]:
    made: list[OidcVerifier] = []

    def make(**overrides: Any) -> OidcVerifier:
        settings = {"issuer": keycloak.issuer(), "audience": "carescore-api", **overrides}
        verifier = OidcVerifier(OidcSettings.model_validate(settings))
        made.append(verifier)
        return verifier

    yield make
    for verifier in made:
        await verifier.aclose()


async def refused(verifier: OidcVerifier, token: str) -> TokenError:
    with pytest.raises(TokenError) as caught:
        await verifier.verify(token)
    return caught.value


# ---- tokens that verify -------------------------------------------------------------------------------


@needs_keycloak
async def test_password_grant_tokens_verify_with_roles_and_units(
    keycloak: Keycloak, make_verifier: Callable[..., OidcVerifier]
) -> None:
    verifier = make_verifier()
    expected = {
        "viewer": ({"viewer"}, set()),
        "clinician-icu": ({"viewer", "clinician"}, {"ICU"}),  # unit from the group /units/ICU
        "clinician-med": ({"viewer", "clinician"}, {"4W", "3E"}),  # units from the user attribute
        "ops": ({"viewer", "ops"}, set()),
        "admin": ({"admin"}, set()),
    }
    for username, (roles, units) in expected.items():
        tokens = keycloak.password_grant(username)
        principal = await verifier.verify(tokens["access_token"])
        assert principal.name == username
        assert principal.roles == roles, username
        assert principal.units == units, username
        assert principal.issuer == keycloak.issuer()
        assert principal.client_id == "carescore-tests"
        assert principal.subject == parts(tokens["access_token"])[1]["sub"]
        assert principal.expires_at > time.time()
    assert verifier.jwks_fetches == 1  # discovery + JWKS once, then cached

    icu = await verifier.verify(keycloak.password_grant("clinician-icu")["access_token"])
    assert allowed(icu, Permission.ACK_ALERTS, unit="ICU")
    assert not allowed(icu, Permission.ACK_ALERTS, unit="4W")
    assert allowed(icu, Permission.VIEW_KPIS)
    assert not allowed(icu, Permission.MANAGE_SILENCES)


@needs_keycloak
async def test_client_credentials_token_is_an_integration(
    keycloak: Keycloak, make_verifier: Callable[..., OidcVerifier]
) -> None:
    principal = await make_verifier().verify(keycloak.client_credentials()["access_token"])
    assert principal.roles == {"integration"}
    assert principal.name == "service-account-carescore-tests"
    assert allowed(principal, Permission.INGEST)
    assert not allowed(principal, Permission.VIEW_PAGE)


@needs_keycloak
async def test_refresh_token_grant_gives_a_new_token_that_verifies(
    keycloak: Keycloak, make_verifier: Callable[..., OidcVerifier]
) -> None:
    verifier = make_verifier()
    first = keycloak.password_grant("ops")
    before = await verifier.verify(first["access_token"])
    second = keycloak.refresh(first["refresh_token"])
    assert second["access_token"] != first["access_token"]
    after = await verifier.verify(second["access_token"])
    assert after.subject == before.subject
    assert after.roles == {"viewer", "ops"}
    assert parts(second["access_token"])[1]["jti"] != parts(first["access_token"])[1]["jti"]


@needs_keycloak
async def test_expired_token_is_refused_and_refresh_gives_a_valid_one(
    keycloak: Keycloak, make_verifier: Callable[..., OidcVerifier]
) -> None:
    """carescore-tests-short issues access tokens that live 3 s."""
    strict = make_verifier(leeway=0)
    lenient = make_verifier(leeway=60)
    tokens = keycloak.password_grant("viewer", client="carescore-tests-short")
    claims = parts(tokens["access_token"])[1]
    assert claims["exp"] - claims["iat"] == 3
    await strict.verify(keycloak.password_grant("viewer")["access_token"])  # keys fetched beforehand
    deadline = time.monotonic() + 15
    while time.time() <= claims["exp"]:  # the condition itself: the clock is past exp
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    error = await refused(strict, tokens["access_token"])
    assert error.reason is TokenErrorReason.EXPIRED
    assert (await lenient.verify(tokens["access_token"])).name == "viewer"  # only exp was wrong

    renewed = keycloak.refresh(tokens["refresh_token"], client="carescore-tests-short")
    principal = await strict.verify(renewed["access_token"])
    assert principal.name == "viewer"
    assert principal.client_id == "carescore-tests-short"


# ---- tokens that are refused --------------------------------------------------------------------------


@needs_keycloak
async def test_altered_signature_or_payload_is_refused(
    keycloak: Keycloak, make_verifier: Callable[..., OidcVerifier]
) -> None:
    verifier = make_verifier()
    token = keycloak.password_grant("viewer")["access_token"]
    header, claims, signature = parts(token)
    raw = bytearray(unb64(signature))
    raw[len(raw) // 2] ^= 0x01
    altered = ".".join([*token.split(".")[:2], b64(bytes(raw))])
    assert (await refused(verifier, altered)).reason is TokenErrorReason.BAD_SIGNATURE

    escalated = reassemble(header, {**claims, "roles": ["admin"], "units": ["ICU"]}, signature)
    assert (await refused(verifier, escalated)).reason is TokenErrorReason.BAD_SIGNATURE

    assert (await refused(verifier, token[: len(token) // 2])).reason is TokenErrorReason.MALFORMED
    assert (await refused(verifier, "not-a-jwt")).reason is TokenErrorReason.MALFORMED
    assert (await verifier.verify(token)).name == "viewer"  # the original still verifies


@needs_keycloak
async def test_token_for_another_audience_is_refused(
    keycloak: Keycloak, make_verifier: Callable[..., OidcVerifier]
) -> None:
    token = keycloak.password_grant("viewer", client="other-app", secret="other-app-secret")["access_token"]
    assert parts(token)[1]["aud"] == "other-api"
    error = await refused(make_verifier(), token)
    assert error.reason is TokenErrorReason.WRONG_AUDIENCE
    # the same token is fine for a verifier whose audience it is: only aud was wrong
    assert (await make_verifier(audience="other-api").verify(token)).name == "viewer"


@needs_keycloak
async def test_token_from_another_issuer_is_refused_without_a_key_fetch(
    keycloak: Keycloak, make_verifier: Callable[..., OidcVerifier]
) -> None:
    verifier = make_verifier()
    foreign = keycloak.password_grant("admin", realm="elsewhere")["access_token"]
    assert parts(foreign)[1]["iss"] == keycloak.issuer("elsewhere")
    assert (await refused(verifier, foreign)).reason is TokenErrorReason.WRONG_ISSUER
    assert verifier.jwks_fetches == 0

    # the other realm's token with iss rewritten to ours: its key is not one of ours
    header, claims, signature = parts(foreign)
    disguised = reassemble(header, {**claims, "iss": keycloak.issuer()}, signature)
    assert (await refused(verifier, disguised)).reason is TokenErrorReason.UNKNOWN_KEY
    # and a verifier for the other realm does accept the original
    other = make_verifier(issuer=keycloak.issuer("elsewhere"))
    assert (await other.verify(foreign)).roles == {"admin"}


@needs_keycloak
async def test_alg_none_and_hmac_with_the_public_key_are_refused(
    keycloak: Keycloak, make_verifier: Callable[..., OidcVerifier]
) -> None:
    verifier = make_verifier()
    token = keycloak.password_grant("viewer")["access_token"]
    header, claims, _ = parts(token)
    await verifier.verify(token)
    forged_claims = {**claims, "roles": ["admin"]}

    for alg in ("none", "None", "NONE"):
        unsigned = reassemble({**header, "alg": alg}, forged_claims, "")
        assert (await refused(verifier, unsigned)).reason is TokenErrorReason.ALGORITHM
    assert (await refused(verifier, reassemble({"typ": "JWT"}, forged_claims, ""))).reason in {
        TokenErrorReason.ALGORITHM,
        TokenErrorReason.MALFORMED,
    }

    # The classic confusion: HS256 keyed with the issuer's public RSA key (PEM), which anyone has.
    jwks = httpx.get(f"{keycloak.issuer()}/protocol/openid-connect/certs", timeout=10).json()
    signing = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    pem = RSAKey.import_key(signing).as_pem()
    signing_input = ".".join(reassemble({**header, "alg": "HS256"}, forged_claims, "").split(".")[:2])
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    confused = f"{signing_input}.{b64(mac)}"
    assert (await refused(verifier, confused)).reason is TokenErrorReason.ALGORITHM

    # an allowed alg whose key type does not match the key with that kid (ES256 vs an RSA key)
    mismatched = reassemble({**header, "alg": "ES256"}, claims, parts(token)[2])
    assert (await refused(verifier, mismatched)).reason is TokenErrorReason.UNKNOWN_KEY


@needs_keycloak
async def test_unknown_key_id_refetches_the_jwks_once_rate_limited(
    keycloak: Keycloak, make_verifier: Callable[..., OidcVerifier]
) -> None:
    verifier = make_verifier(jwks_refetch_interval=0.5)
    token = keycloak.password_grant("viewer")["access_token"]
    header, claims, signature = parts(token)
    await verifier.verify(token)
    assert verifier.jwks_fetches == 1
    unknown = reassemble({**header, "kid": "no-such-key"}, claims, signature)

    fetched_at = time.monotonic()
    while time.monotonic() - fetched_at <= 0.5:  # past the refetch interval
        await asyncio.sleep(0.05)
    results = await asyncio.gather(*(verifier.verify(unknown) for _ in range(20)), return_exceptions=True)
    assert all(isinstance(r, TokenError) and r.reason is TokenErrorReason.UNKNOWN_KEY for r in results)
    assert verifier.jwks_fetches == 2  # twenty tokens with an unknown kid: one refetch
    assert (await refused(verifier, unknown)).reason is TokenErrorReason.UNKNOWN_KEY
    assert verifier.jwks_fetches == 2  # within the interval: none


@needs_keycloak
async def test_idp_unreachable_is_unavailable_not_a_token_error(
    keycloak: Keycloak, make_verifier: Callable[..., OidcVerifier]
) -> None:
    token = keycloak.password_grant("viewer")["access_token"]
    verifier = make_verifier(jwks_url=f"http://127.0.0.1:{free_port()}/certs", http_timeout=2)
    with pytest.raises(OidcUnavailable):
        await verifier.verify(token)


# ---- the page: authorization code with PKCE -------------------------------------------------------------


def _login(keycloak: Keycloak, client: httpx.Client, redirect: str, **params: str) -> httpx.Response:
    """Open the authorization endpoint as a browser would and post the login form."""
    page = client.get(
        keycloak.endpoint("auth"),
        params={"client_id": "carescore-page", "response_type": "code", "scope": "openid",
                "redirect_uri": redirect, "state": "s-1", **params},
    )  # fmt: skip
    if page.status_code != 200:
        return page
    form = re.search(r'<form[^>]*id="kc-form-login"[^>]*action="([^"]+)"', page.text)
    assert form, page.text[:500]
    # Keycloak's login cookies are Secure. A browser sends them to http://127.0.0.1 (the loopback is a
    # secure context for browsers); httpx's cookie jar does not, so the test sends them as one would.
    cookies = "; ".join(f"{c.name}={c.value}" for c in client.cookies.jar)
    return client.post(
        html.unescape(form.group(1)),
        data={"username": "clinician-icu", "password": "clinician-pass"},
        headers={"Cookie": cookies},
    )


@needs_keycloak
async def test_page_authorization_code_flow_requires_pkce_s256(
    keycloak: Keycloak, make_verifier: Callable[..., OidcVerifier]
) -> None:
    redirect = f"http://127.0.0.1:{free_port()}/"  # nothing listens: the redirect is read, not followed
    code_verifier = secrets.token_urlsafe(48)
    challenge = b64(hashlib.sha256(code_verifier.encode()).digest())
    with httpx.Client(follow_redirects=False, timeout=30) as browser:
        done = _login(keycloak, browser, redirect, code_challenge=challenge, code_challenge_method="S256")
        assert done.status_code == 302, done.text[:500]
        location = urlsplit(done.headers["location"])
        assert f"{location.scheme}://{location.netloc}{location.path}" == redirect
        query = parse_qs(location.query)
        assert query["state"] == ["s-1"]
        exchange = {"grant_type": "authorization_code", "client_id": "carescore-page",
                    "code": query["code"][0], "redirect_uri": redirect}  # fmt: skip
        wrong = browser.post(keycloak.endpoint("token"), data={**exchange, "code_verifier": "x" * 50})
        assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"

    with httpx.Client(follow_redirects=False, timeout=30) as browser:
        done = _login(keycloak, browser, redirect, code_challenge=challenge, code_challenge_method="S256")
        code = parse_qs(urlsplit(done.headers["location"]).query)["code"][0]
        tokens = browser.post(
            keycloak.endpoint("token"), data={**exchange, "code": code, "code_verifier": code_verifier}
        )
        assert tokens.status_code == 200, tokens.text
        principal = await make_verifier().verify(tokens.json()["access_token"])
        assert principal.roles == {"viewer", "clinician"} and principal.units == {"ICU"}
        assert principal.client_id == "carescore-page"

    with httpx.Client(follow_redirects=False, timeout=30) as browser:
        no_pkce = _login(keycloak, browser, redirect)
        assert no_pkce.status_code == 302
        assert parse_qs(urlsplit(no_pkce.headers["location"]).query)["error"] == ["invalid_request"]
        plain = _login(
            keycloak, browser, redirect, code_challenge=code_verifier, code_challenge_method="plain"
        )
        assert parse_qs(urlsplit(plain.headers["location"]).query)["error"] == ["invalid_request"]
        elsewhere = _login(keycloak, browser, "http://attacker.example/", code_challenge=challenge,
                           code_challenge_method="S256")  # fmt: skip
        assert elsewhere.status_code == 400  # an unregistered redirect is never redirected to


# ---- key rotation (last: it changes the realm's active key) --------------------------------------------


@needs_keycloak
async def test_key_rotation_is_followed_through_one_jwks_refetch(
    keycloak: Keycloak, make_verifier: Callable[..., OidcVerifier]
) -> None:
    verifier = make_verifier(jwks_refetch_interval=0)
    old = keycloak.password_grant("viewer")["access_token"]
    await verifier.verify(old)
    assert verifier.jwks_fetches == 1

    # the tests client's service account may manage the realm (test realm only): add a newer key
    admin = {"Authorization": f"Bearer {keycloak.client_credentials()['access_token']}"}
    realm_url = f"{keycloak.url}/admin/realms/carescore"
    realm_id = httpx.get(realm_url, headers=admin, timeout=10).json()["id"]
    created = httpx.post(
        f"{realm_url}/components",
        headers=admin,
        timeout=30,
        json={
            "name": "rotated-rsa",
            "providerId": "rsa-generated",
            "providerType": "org.keycloak.keys.KeyProvider",
            "parentId": realm_id,
            "config": {"priority": ["1000"], "keySize": ["2048"], "algorithm": ["RS256"]},
        },
    )
    assert created.status_code == 201, created.text
    try:
        new = keycloak.password_grant("viewer")["access_token"]
        assert parts(new)[0]["kid"] != parts(old)[0]["kid"]
        assert (await verifier.verify(new)).name == "viewer"
        assert verifier.jwks_fetches == 2
        assert (await verifier.verify(old)).name == "viewer"  # the old key is still published
        assert verifier.jwks_fetches == 2
    finally:
        httpx.delete(created.headers["location"], headers=admin, timeout=30)


# ---- configuration and the role table (no IdP needed) ---------------------------------------------------


@pytest.mark.parametrize("algorithms", [("none",), ("HS256",), ("RS256", "HS512"), ()])
def test_settings_refuse_symmetric_and_none_algorithms(algorithms: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError):
        OidcSettings(issuer="https://idp.example/realms/x", audience="carescore-api", algorithms=algorithms)  # type: ignore[arg-type]


def test_settings_want_https_except_on_the_loopback() -> None:
    with pytest.raises(ValidationError):
        OidcSettings(issuer="http://idp.example/realms/x", audience="carescore-api")
    assert OidcSettings(issuer="http://127.0.0.1:8180/realms/x", audience="a").leeway == 30
    settings = OidcSettings(issuer="https://idp.example/x", audience="a", leeway="1m", jwks_cache_ttl="1h")  # type: ignore[arg-type]
    assert (settings.leeway, settings.jwks_cache_ttl) == (60, 3600)


def _principal(*roles: str, units: tuple[str, ...] = ()) -> Principal:
    return Principal(
        subject="s", name="n", roles=frozenset(roles), units=frozenset(units), issuer="https://idp.example"
    )


def test_role_table() -> None:
    viewer, ops, feed, admin = (
        _principal("viewer"),
        _principal("ops"),
        _principal("integration"),
        _principal("admin"),
    )
    clinician = _principal("clinician", units=("ICU", "ED"))
    for who in (viewer, clinician, ops, admin):
        for permission in ("view_page", "view_kpis", "view_history", "view_reports", "view_stream"):
            assert allowed(who, permission), (who.roles, permission)
    assert not any(allowed(feed, p) for p in Permission if p is not Permission.INGEST)
    assert allowed(feed, Permission.INGEST)
    assert not allowed(viewer, Permission.ACK_ALERTS, unit="ICU")
    assert allowed(clinician, Permission.ACK_ALERTS, unit="ED")
    assert not allowed(clinician, Permission.ACK_ALERTS, unit="4W")
    assert not allowed(clinician, Permission.ACK_ALERTS)  # a unit-scoped grant needs the unit
    for permission in (
        Permission.MANAGE_SILENCES,
        Permission.VIEW_DEAD_LETTERS,
        Permission.REPLAY_DEAD_LETTERS,
    ):
        assert (
            allowed(ops, permission)
            and not allowed(viewer, permission)
            and not allowed(clinician, permission)
        )
    assert all(allowed(admin, p, unit="4W") and allowed(admin, p) for p in Permission)
    assert not allowed(_principal(), Permission.VIEW_PAGE)
    assert not allowed(_principal("superuser"), Permission.VIEW_PAGE)


def test_role_and_unit_mapping_from_idp_names() -> None:
    """Entra/Okta-style claims: app roles and group names mapped onto carescore's."""
    from api.security.oidc import principal_from_claims

    settings = OidcSettings(
        issuer="https://idp.example/tenant/v2.0",
        audience="api://carescore",
        roles_claim="roles",
        role_map={"CareScore.Read": "viewer", "CareScore.Ack": "clinician"},  # type: ignore[dict-item]
        units_claim="groups",
        unit_prefix="/units/",
    )
    claims = {
        "iss": "https://idp.example/tenant/v2.0",
        "sub": "abc",
        "exp": time.time() + 60,
        "name": "Dr Who",
        "roles": ["CareScore.Read", "CareScore.Ack", "admin"],  # admin is not mapped: dropped
        "groups": ["/units/ICU", "/staff", "/units/ED"],
    }
    principal = principal_from_claims(settings, claims)
    assert principal.roles == {"viewer", "clinician"}
    assert principal.units == {"ICU", "ED"}
    assert principal.name == "Dr Who"
