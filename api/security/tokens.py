"""Integration tokens: long-lived credentials for machines (an interface engine posting FHIR, the
back office uploading one feed, Prometheus scraping /metrics), issued and revoked with
`carescore token create|list|revoke`.

A token is `cs_<id>_<secret>` (the secret: 32 random bytes, base64url). Only the SHA-256 of the
whole token is stored (tokens.sqlite in the data folder), and it is compared in constant time; the
token itself is shown once, when it is created. 256 random bits need no slow hash: nothing short of
the token itself matches its digest.

A token has one role and a scope that narrows what the role allows:

    fhir          ingest: POST /fhir only                       (role integration)
    feed:<name>   ingest: uploads to that one feed only          (role integration)
    all-ingest    ingest: FHIR and every feed                     (role integration)
    read          the role's read permissions only (KPIs, alerts, /metrics...)  (viewer, ops, admin)
    all           whatever the role allows                        (ops, admin)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from api.security.oidc import Principal, TokenError, TokenErrorReason
from api.security.roles import Permission, Role
from engine.sqlite import SQLiteFile

TOKEN_ISSUER = "carescore-token"
INGEST_SCOPES = ("fhir", "all-ingest")
TOKEN_ROLES = (Role.INTEGRATION, Role.VIEWER, Role.OPS, Role.ADMIN)
READ_PERMISSIONS = frozenset(
    {
        Permission.VIEW_PAGE,
        Permission.VIEW_KPIS,
        Permission.VIEW_HISTORY,
        Permission.VIEW_REPORTS,
        Permission.VIEW_STREAM,
        Permission.VIEW_ALERTS,
        Permission.VIEW_METRICS,
        Permission.VIEW_SMALL_CELLS,  # the role decides: a viewer's read token still has it hidden
    }
)
_FORMAT = re.compile(r"^cs_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_LAST_USED_EVERY = 60.0  # last_used is written at most this often per token

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    scope TEXT NOT NULL,
    digest BLOB NOT NULL,
    created REAL NOT NULL,
    expires REAL,
    last_used REAL,
    revoked REAL
);
"""


def default_scope(role: str) -> str:
    return {"integration": "all-ingest", "viewer": "read"}.get(role, "all")


def check_scope(role: str, scope: str, feeds: tuple[str, ...] | None = None) -> str:
    """The scope, if it fits the role (ValueError saying why not). feeds: the known feed names."""
    if role not in TOKEN_ROLES:
        names = ", ".join(r.value for r in TOKEN_ROLES)
        raise ValueError(f"role {role!r}: a token's role is one of {names} (clinicians sign in)")
    ingest = scope in INGEST_SCOPES or scope.startswith("feed:")
    if role == "integration":
        if not ingest:
            raise ValueError(
                f"scope {scope!r}: an integration token's scope is fhir, feed:<name> or all-ingest"
            )
        if scope.startswith("feed:") and feeds is not None and scope[5:] not in feeds:
            raise ValueError(f"scope {scope!r}: unknown feed; the feeds are {', '.join(feeds)}")
        return scope
    if scope == "read" or (scope == "all" and role != "viewer"):
        return scope
    raise ValueError(
        f"scope {scope!r}: a {role} token's scope is read" + ("" if role == "viewer" else " or all")
    )


def scope_permits(scope: str | None, permission: Permission, target: str | None = None) -> bool:
    """Does a token's scope let its role use `permission` (on `target`: fhir, feed:<name>)?
    None (an IdP token) and `all` narrow nothing."""
    if scope is None or scope == "all":
        return True
    if scope == "read":
        return permission in READ_PERMISSIONS
    if permission is not Permission.INGEST:
        return False
    return scope == "all-ingest" or target is None or scope == target


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class TokenInfo:
    id: str
    name: str
    role: str
    scope: str
    created: float
    expires: float | None
    last_used: float | None
    revoked: float | None

    def as_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def principal(self) -> Principal:
        return Principal(
            subject=f"token:{self.id}",
            name=self.name,
            roles=frozenset({self.role}),
            units=frozenset(),
            issuer=TOKEN_ISSUER,
            client_id=self.id,
            expires_at=self.expires if self.expires is not None else float("inf"),
            scope=self.scope,
        )


class TokenStore:
    """tokens.sqlite: create, list, revoke, and verify a presented token."""

    def __init__(self, path: Path, *, clock: Any = time.time):
        self.file = SQLiteFile(path)
        self.file.script(SCHEMA)
        self._clock = clock

    def close(self) -> None:
        self.file.close()

    def create(
        self, name: str, role: str, scope: str | None = None, expires_in: float | None = None
    ) -> tuple[TokenInfo, str]:
        """A new token: its record and the token itself (shown once, never stored)."""
        if not name.strip():
            raise ValueError("a token needs a name (who or what uses it)")
        scope = check_scope(role, scope or default_scope(role))
        token_id = secrets.token_hex(6)
        secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
        token = f"cs_{token_id}_{secret}"
        now = self._clock()
        expires = now + expires_in if expires_in else None
        self.file.execute(
            "INSERT INTO tokens (id, name, role, scope, digest, created, expires) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (token_id, name.strip(), role, scope, _digest(token), now, expires),
        )
        return TokenInfo(token_id, name.strip(), role, scope, now, expires, None, None), token

    def list(self) -> list[TokenInfo]:
        rows = self.file.query(
            "SELECT id, name, role, scope, created, expires, last_used, revoked FROM tokens ORDER BY created"
        )
        return [TokenInfo(*row) for row in rows]

    def get(self, token_id: str) -> TokenInfo | None:
        return next((t for t in self.list() if t.id == token_id), None)

    def revoke(self, token_id: str) -> bool:
        """True if the token was live and is now revoked."""
        changed = self.file.execute(
            "UPDATE tokens SET revoked = ? WHERE id = ? AND revoked IS NULL", (self._clock(), token_id)
        )
        return changed > 0

    def verify(self, token: str) -> TokenInfo:
        """The record of a valid token; TokenError otherwise (the reason never repeats the token)."""
        match = _FORMAT.match(token)
        if match is None:
            raise TokenError(TokenErrorReason.MALFORMED, "not a carescore token (cs_<id>_<secret>)")
        rows = self.file.query(
            "SELECT id, name, role, scope, created, expires, last_used, revoked, digest "
            "FROM tokens WHERE id = ?",
            (match.group(1),),
        )
        # the digest is compared even for an unknown id, so both take the same time
        stored = rows[0][8] if rows else b"\0" * 32
        if not hmac.compare_digest(stored, _digest(token)) or not rows:
            raise TokenError(TokenErrorReason.BAD_SIGNATURE, "unknown or wrong integration token")
        info = TokenInfo(*rows[0][:8])
        now = self._clock()
        if info.revoked is not None:
            raise TokenError(TokenErrorReason.INVALID_CLAIM, f"integration token {info.id} is revoked")
        if info.expires is not None and info.expires <= now:
            raise TokenError(TokenErrorReason.EXPIRED, f"integration token {info.id} has expired")
        if info.last_used is None or now - info.last_used > _LAST_USED_EVERY:
            self.file.execute("UPDATE tokens SET last_used = ? WHERE id = ?", (now, info.id))
        return info
