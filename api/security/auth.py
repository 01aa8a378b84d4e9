"""Who is calling, and may they: the FastAPI dependencies every route declares.

`Auth` turns a request into a `Principal`:

- `Authorization: Bearer cs_...`: an integration token (tokens.py), with or without an IdP;
- `Authorization: Bearer <JWT>`: verified by the OidcVerifier when `api.auth.oidc` is set;
- no credentials: the local operator (admin, subject "local") when there is no IdP (the API is then
  bound to the loopback, or runs the demo hospital), else 401.

Missing or refused credentials are 401 with `WWW-Authenticate: Bearer` and a problem body saying
why (never echoing the token); a permission the principal lacks is 403; an IdP whose keys cannot
be fetched is 503. `require(Permission.X)` is the dependency a route declares; it carries
`.permission` so tests can check that every route has one.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, Request

from api.problems import Problem
from api.security.oidc import OidcUnavailable, OidcVerifier, Principal, TokenError
from api.security.ratelimit import RateLimiter
from api.security.roles import GRANTS, Permission, Role, Scope, allowed
from api.security.tokens import TokenStore, scope_permits

log = logging.getLogger(__name__)

LOCAL_OPERATOR = Principal(
    subject="local",
    name="local operator",
    roles=frozenset({Role.ADMIN.value}),
    units=frozenset(),
    issuer="local",
)


class Auth:
    """How this API process authenticates. verifier: bearer JWTs (None: no IdP); tokens: the
    integration token store (None: none); local: requests without credentials are the local
    operator (only without an IdP); max_silence: longest silence a non-admin may create."""

    def __init__(
        self,
        *,
        verifier: OidcVerifier | None = None,
        tokens: TokenStore | None = None,
        local: bool = False,
        max_silence: float = math.inf,
    ):
        self.verifier = verifier
        self.tokens = tokens
        self.local = local and verifier is None
        self.max_silence = max_silence
        self._internal: dict[str, Principal] = {}

    def internal_token(self, name: str, role: Role, scope: str) -> str:
        """A token that lives in this process only (the demo hospital's uploads): never stored."""
        token = "csi_" + secrets.token_urlsafe(32)
        self._internal[token] = Principal(
            subject=f"internal:{name}",
            name=name,
            roles=frozenset({role.value}),
            units=frozenset(),
            issuer="carescore",
            scope=scope,
        )
        return token

    @property
    def page_idp_origin(self) -> str | None:
        """The IdP's origin, when the page signs in there (its token endpoint is called from the page)."""
        if self.verifier is None or self.verifier.settings.page_client_id is None:
            return None
        parts = urlsplit(self.verifier.settings.issuer)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def mode(self) -> str:
        if self.verifier is not None:
            return f"OIDC ({self.verifier.settings.issuer}) and integration tokens"
        if self.local:
            return "none (loopback only; every local user is admin)"
        return "integration tokens only"

    async def authenticate(self, request: Request) -> Principal:
        header = request.headers.get("authorization")
        if header is None:
            if self.local:
                return LOCAL_OPERATOR
            raise _unauthorized("no credentials: send Authorization: Bearer <token>")
        kind, _, token = header.partition(" ")
        token = token.strip()
        if kind.lower() != "bearer" or not token:
            raise _unauthorized("the Authorization header must be 'Bearer <token>'", invalid=True)
        internal = self._internal.get(token) if token.startswith("csi_") else None
        if internal is not None:
            return internal
        try:
            if token.startswith("cs_"):
                if self.tokens is None:
                    raise _unauthorized("integration tokens are not enabled here", invalid=True)
                return self.tokens.verify(token).principal()
            if self.verifier is None:
                raise _unauthorized(
                    "bearer JWTs are not accepted: no identity provider is configured (api.auth.oidc)",
                    invalid=True,
                )
            return await self.verifier.verify(token)
        except TokenError as error:
            log.info("credentials refused", extra={"reason": error.reason.value})
            raise _unauthorized(f"the token is refused: {error}", invalid=True) from None
        except OidcUnavailable as error:
            log.warning("the identity provider cannot be reached", extra={"error": str(error)})
            raise Problem(
                503, "Identity provider unavailable", "the IdP's signing keys cannot be fetched"
            ) from None


def _unauthorized(detail: str, *, invalid: bool = False) -> Problem:
    challenge = 'Bearer realm="carescore"' + (', error="invalid_token"' if invalid else "")
    return Problem(401, "Unauthorized", detail, headers={"WWW-Authenticate": challenge})


def get_auth(request: Request) -> Auth:
    auth: Auth = request.app.state.auth
    return auth


async def current_principal(request: Request) -> Principal:
    """The caller (once per request; kept on request.state for the audit log), within its rate
    limit: the principal's, or the client address's while no credentials are accepted."""
    known = getattr(request.state, "principal", None)
    if known is not None:
        return known  # type: ignore[no-any-return]
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    try:
        principal = await get_auth(request).authenticate(request)
    except Problem as refused:
        if limiter is not None and refused.status == 401:
            limiter.charge("address:" + (request.client.host if request.client else "-"), request.method)
        raise
    if limiter is not None:
        limiter.charge(f"{principal.issuer} {principal.subject}", request.method)
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def may(
    principal: Principal, permission: Permission, *, unit: str | None = None, target: str | None = None
) -> bool:
    """allowed() and the token's scope."""
    return allowed(principal, permission, unit) and scope_permits(principal.scope, permission, target)


def may_somewhere(principal: Principal, permission: Permission) -> bool:
    """Granted at all: everywhere, or for at least one of the principal's units."""
    if not scope_permits(principal.scope, permission):
        return False
    for name in principal.roles:
        try:
            scope = GRANTS[Role(name)].get(permission)
        except ValueError:
            continue
        if scope is Scope.ALL or (scope is Scope.OWN_UNITS and principal.units):
            return True
    return False


def forbidden(principal: Principal, detail: str) -> Problem:
    roles = ", ".join(sorted(principal.roles)) or "none"
    return Problem(403, "Forbidden", f"{detail} (roles: {roles})")


def require(permission: Permission, *, target: Callable[[Request], str | None] | None = None) -> Any:
    """The dependency of a route that needs `permission` (for a unit-scoped one, for some unit: the
    route checks the unit itself). target: what the request ingests into (fhir, feed:<name>), for
    token scopes."""

    async def dependency(request: Request, principal: PrincipalDep) -> Principal:
        wanted = target(request) if target else None
        granted = (
            may(principal, permission, target=wanted) if wanted else may_somewhere(principal, permission)
        )
        if not granted:
            what = f"{permission.value} on {wanted}" if wanted else permission.value
            raise forbidden(principal, f"this needs the permission {what}")
        return principal

    dependency.permission = permission  # type: ignore[attr-defined]
    return dependency


def require_unit(principal: Principal, permission: Permission, unit: str | None) -> None:
    """403 unless the principal holds `permission` for this unit."""
    if not may(principal, permission, unit=unit):
        units = ", ".join(sorted(principal.units)) or "none"
        raise forbidden(principal, f"{permission.value} for unit {unit or '(none)'}; your units: {units}")
