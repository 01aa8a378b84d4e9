"""Which process evaluates alerts and delivers notices when several share the alert store
(two or more Kafka gateways): the one holding a PostgreSQL session-level advisory lock.

The lock lives on a connection of its own. PostgreSQL releases it when that session ends
(the process died, the network dropped it, an operator terminated it), and another process
trying every second takes it. The holder checks its connection before each delivery batch
and on every round: a leader whose lock connection is gone stops at once, since another may
already lead. Nothing is home-made: PostgreSQL decides who holds the lock.

With SQLite the store belongs to one process (its data folder is locked): that process
leads alone (`SoleLeader`).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Protocol
from urllib.parse import urlsplit

from engine.secrets import MASK, redact_url

log = logging.getLogger(__name__)

# the advisory lock's key: one evaluator per alert database ("carescore alerts", 8 bytes)
LOCK_KEY = int.from_bytes(b"csalerts", "big") & 0x7FFF_FFFF_FFFF_FFFF

# the lock connection must notice a dead network within seconds, not TCP's minutes: a
# partitioned leader stops evaluating before another has run long without it
_CONNECT = {
    "autocommit": True,
    "connect_timeout": 3,
    "keepalives": 1,
    "keepalives_idle": 2,
    "keepalives_interval": 1,
    "keepalives_count": 3,
    "tcp_user_timeout": 3000,
}


class Leadership(Protocol):
    shared: bool  # False: this process is the store's only user and always leads

    def acquire(self) -> bool:
        """True when this process holds the lead now (taken now or held already)."""
        ...

    def held(self) -> bool:
        """Still the leader? Asks the lock's connection (the fence before each delivery)."""
        ...

    def release(self) -> None: ...


class SoleLeader:
    """SQLite: one process per store, so it leads for its whole life."""

    shared = False

    def acquire(self) -> bool:
        return True

    def held(self) -> bool:
        return True

    def release(self) -> None:
        pass


class AdvisoryLock:
    """`pg_try_advisory_lock` on a dedicated connection to the shared alert database."""

    shared = True

    def __init__(self, url: str, key: int = LOCK_KEY):
        self.url = url
        self.key = key
        self.holding = False
        self._conn: Any = None
        self._said_unreachable = False

    def acquire(self) -> bool:
        if self.holding:
            return self.held()
        import psycopg

        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self.url, **_CONNECT)  # type: ignore[arg-type]
            row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        except (psycopg.Error, OSError) as exc:
            self._drop()
            if not self._said_unreachable:  # once per outage: a follower retries every second
                self._said_unreachable = True
                log.warning("alert leadership: database unreachable (%s)", self._redacted(exc))
            return False
        self._said_unreachable = False
        self.holding = bool(row and row[0])
        return self.holding

    def held(self) -> bool:
        if not self.holding or self._conn is None:
            return False
        import psycopg

        try:
            self._conn.execute("SELECT 1")
        except (psycopg.Error, OSError) as exc:
            log.error("alert leadership lost: lock connection failed (%s)", self._redacted(exc))
            self._drop()
            return False
        return True

    def release(self) -> None:
        if self._conn is not None and self.holding:
            with contextlib.suppress(Exception):  # the session ends below, which releases it anyway
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
        self._drop()

    def _drop(self) -> None:
        self.holding = False
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _redacted(self, exc: BaseException) -> str:
        said = f"{redact_url(self.url)}: {type(exc).__name__}: {str(exc).strip()[:200]}"
        password = urlsplit(self.url).password
        return said.replace(password, MASK) if password else said


def leadership_for(target: object) -> Leadership:
    """The alert store's target: a postgresql:// URL is shared (leader election), else SQLite."""
    text = str(target)
    if text.startswith(("postgresql://", "postgres://")):
        return AdvisoryLock(text)
    return SoleLeader()
