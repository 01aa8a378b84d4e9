"""What a worker does when it is handed partitions, beyond what Faust does."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def seek_uncommitted_to_start(consumer: Any, topic: str) -> None:
    """Faust (0.15) fetches while a rebalance recovers tables, discards what it fetched, and
    then seeks each partition back to its committed offset, but aiokafka skips that seek for
    a partition without a committed offset (or with 0). Such a partition, taken over from a
    worker that had not yet checkpointed it, would silently lose everything fetched during
    recovery; with two workers starting a few seconds apart, whole partitions were lost.
    Here those partitions go back to their beginning instead."""
    if getattr(consumer, "_carescore_seek", False):
        return
    faust_seek = consumer.seek_to_committed

    async def seek_to_committed() -> dict[Any, Any]:
        committed = dict(await faust_seek())
        uncommitted = [tp for tp, at in committed.items() if tp.topic == topic and (not at or at <= 0)]
        if uncommitted:
            await consumer._thread.seek_to_beginning(*uncommitted)
            log.info(
                "events partitions %s have no committed offset: they start at their beginning",
                sorted(tp.partition for tp in uncommitted),
            )
        return committed

    consumer.seek_to_committed = seek_to_committed
    consumer._carescore_seek = True
