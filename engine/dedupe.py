"""The one duplicate-detection window: keys seen lately, oldest forgotten first.

A sender that lost an ACK sends the same message again within minutes, so a bounded window
of recent keys is enough and memory stays flat on a feed that runs for years. Keys are
message keys at the door (`message_key_of`: what a connector publishes under, and what the
event log's events carry before their `#n` suffix) and event ids (`source_id`) in a Kafka
worker, where one message's events can span records.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def message_key_of(source_id: str) -> str:
    """The key of the message an event came from (its source_id without the `#n` suffix)."""
    return source_id.rsplit("#", 1)[0]


IMPORT_KEY = "import:"
"""What an import batch's key starts with."""


def batch_key(first_source_id: str, last_source_id: str) -> str:
    """An import batch's key: its first and last event (a batch imported again is a duplicate).
    A batch is one append of the event log, so a restart rebuilds it from the log."""
    return f"{IMPORT_KEY}{first_source_id}:{last_source_id}"


class RecentKeys:
    """An insertion-ordered set of at most `limit` keys; adding past the limit forgets the
    oldest `limit // 10` at once (one slice, not a pop per add)."""

    __slots__ = ("_keys", "limit")

    def __init__(self, limit: int, keys: Iterable[str] = ()):
        if limit < 10:
            raise ValueError("RecentKeys needs a limit of at least 10")
        self.limit = limit
        self._keys: dict[str, None] = dict.fromkeys(keys)
        self._trim()

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def add(self, key: str) -> None:
        self._keys[key] = None
        if len(self._keys) > self.limit:
            self._trim()

    def newest(self, count: int) -> list[str]:
        """The last `count` keys added, oldest first (what a checkpoint keeps)."""
        keys = list(self._keys)
        return keys[-count:] if count else []

    def _trim(self) -> None:
        excess = len(self._keys) - self.limit
        if excess > 0:
            drop = max(excess, self.limit // 10)
            for old in list(self._keys)[:drop]:
                del self._keys[old]
