"""The one checkpoint format: the embedded snapshot file and a Kafka worker's changelog
entry are the same bytes, zlib'd JSON of

    {"fingerprint": ..., "at": <where in the input it stands>, "engine": <Engine.snapshot()>,
     "seen": [recent keys], "extra": {...}}

A checkpoint taken under other KPI definitions, another state version or another site time
zone (day panes are the site's days) has another fingerprint and is not restored: the state is
rebuilt from the input instead.
"""

from __future__ import annotations

import hashlib
import logging
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from engine.core import STATE_VERSION
from engine.definitions import Catalogue

log = logging.getLogger(__name__)


def catalogue_fingerprint(catalogue: Catalogue, timezone: str = "UTC") -> str:
    """What a checkpoint's state depends on: the state version, the KPIs and the time zone."""
    blob = orjson.dumps(
        [STATE_VERSION, timezone, *(k.model_dump(mode="json", by_alias=True) for k in catalogue)],
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class Checkpoint:
    fingerprint: str
    at: Any  # a log position (embedded) or a partition offset (Kafka worker)
    engine: dict[str, Any]
    seen: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        state = {
            "fingerprint": self.fingerprint,
            "at": self.at,
            "engine": self.engine,
            "seen": self.seen,
            "extra": self.extra,
            "written_at": time.time(),
        }
        return zlib.compress(orjson.dumps(state), 1)

    @classmethod
    def decode(cls, blob: bytes, fingerprint: str) -> Checkpoint | None:
        """The checkpoint in `blob`, or None (logged) if it is unreadable or was taken under
        another fingerprint."""
        try:
            state = orjson.loads(zlib.decompress(blob))
            found = cls(state["fingerprint"], state["at"], state["engine"], state["seen"], state["extra"])
        except (zlib.error, orjson.JSONDecodeError, KeyError, TypeError) as exc:
            log.warning("checkpoint unreadable: the state is rebuilt", extra={"error": str(exc)})
            return None
        if found.fingerprint != fingerprint:
            log.info("KPI definitions or time zone changed since the checkpoint: the state is rebuilt")
            return None
        return found
