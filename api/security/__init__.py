"""Who is calling: OpenID Connect bearer tokens verified against the IdP's keys (oidc.py), and what
each carescore role may do, per unit where it matters (roles.py)."""

from api.security.oidc import (
    OidcSettings,
    OidcUnavailable,
    OidcVerifier,
    Principal,
    TokenError,
    TokenErrorReason,
)
from api.security.roles import Permission, Role, Scope, allowed

__all__ = [
    "OidcSettings",
    "OidcUnavailable",
    "OidcVerifier",
    "Permission",
    "Principal",
    "Role",
    "Scope",
    "TokenError",
    "TokenErrorReason",
    "allowed",
]
