"""Pseudonyms for patient and encounter identifiers, and the privacy settings.

Connectors read identifiers (an MRN, a visit number) to build canonical events; the one
pipeline under them (connectors/pipeline.py) replaces those values with keyed HMAC-SHA256
pseudonyms before any event reaches a runtime, so the event log, Kafka topics, snapshots and
reports hold pseudonyms only. The same key gives the same pseudonym, so a readmission still
links to the first stay. Without the key a pseudonym can be neither reversed nor recomputed
from a guessed MRN (an unkeyed hash could: MRNs are short numbers, easily enumerated).
"""

from __future__ import annotations

import functools
import hmac
import logging
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from engine.durations import Duration
from engine.events import EventBase
from engine.yamlconf import ConfigError

log = logging.getLogger(__name__)

FIELDS: dict[str, str] = {
    "patient_id": "pt",
    "encounter_id": "enc",
    "other_encounter_id": "enc",  # swap/merge: the other encounter, same namespace
    "procedure_id": "proc",  # may be the sender's hash of patient, code and time
}
"""Canonical event fields holding identifiers, and the namespace each is pseudonymised in."""

KEY_FILE = "pseudonym.key"
MIN_KEY_BYTES = 32


class PrivacySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pseudonym_key_file: Path | None = Field(
        default=None,
        description="secret key of the identifier pseudonyms (at least 32 bytes); default "
        "<data_dir>/pseudonym.key, made (mode 0600, 32 random bytes) on first start when absent; "
        "gateways of one Kafka deployment need the same file",
    )
    small_cell_min: int = Field(
        default=11,
        ge=1,
        description="viewers see a patient-level KPI value computed from fewer patients than this as "
        "suppressed (CMS cell-size policy: no cell of 1 to 10); 1 shows every value",
    )
    purge_every: Duration = Field(
        default=3600.0,
        description="how often dead letters and inbox done/ and failed/ files past their retention "
        "are deleted",
    )


CACHED = 100_000
"""Identifiers whose pseudonym is remembered: a patient's messages come in runs (ADT, orders,
results), and an HMAC costs microseconds where the lookup costs a tenth of one."""


class Pseudonyms:
    """Identifier -> pseudonym, deterministic under one key."""

    __slots__ = ("_key", "of")

    def __init__(self, key: bytes):
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"a pseudonym key needs at least {MIN_KEY_BYTES} bytes, got {len(key)}")
        self._key = key
        self.of = functools.lru_cache(maxsize=CACHED)(self._of)

    def __repr__(self) -> str:  # never the key
        return "Pseudonyms(<key>)"

    def _of(self, namespace: str, value: str) -> str:
        """`namespace-` and 128 bits of HMAC-SHA256(key, namespace NUL value), as hex."""
        mac = hmac.digest(self._key, f"{namespace}\0{value}".encode("utf-8", "surrogateescape"), "sha256")
        return f"{namespace}-{mac[:16].hex()}"

    def apply(self, events: list[EventBase]) -> list[EventBase]:
        """The events with every identifier field replaced (the others untouched)."""
        out = events
        for i, event in enumerate(events):
            values = event.__dict__
            update: dict[str, Any] = {}
            for name, namespace in FIELDS.items():
                value = values.get(name)
                if value is not None:
                    update[name] = self.of(namespace, value)
            if update:
                if out is events:
                    out = list(events)
                out[i] = event.replacing(update)
        return out


def load_key(path: Path) -> bytes:
    """The key file's content (surrounding whitespace stripped); a new random key, written
    0600, when the file does not exist. A key others can read is used but logged."""
    try:
        key = path.read_bytes().strip()
    except FileNotFoundError:
        return _new_key(path)
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("the pseudonym key file can be read by others (chmod 600)", extra={"file": str(path)})
    return key


def _new_key(path: Path) -> bytes:
    """A new random key at `path`, whole or not at all: written and fsync'd under a private
    temporary name, then linked into place. A process killed while making it (at its first
    start) leaves no key rather than an empty file that every later start refuses as too short;
    of two processes making it at once, the second uses the first's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(MIN_KEY_BYTES).encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(key + b"\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)  # atomic, and refuses to replace a key another process made
        except FileExistsError:
            return path.read_bytes().strip()
    finally:
        tmp.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the new name survives a power cut too
    finally:
        os.close(directory)
    log.warning("made a new pseudonym key; back it up apart from the data", extra={"file": str(path)})
    return key


def pseudonyms_from(key_file: Path) -> Pseudonyms:
    """Pseudonyms under the key in this file (made when absent); a ConfigError naming the
    setting and the file when the key is too short or cannot be read."""
    try:
        return Pseudonyms(load_key(key_file))
    except (ValueError, OSError) as exc:
        raise ConfigError([f"privacy.pseudonym_key_file: {key_file}: {exc}"]) from exc
