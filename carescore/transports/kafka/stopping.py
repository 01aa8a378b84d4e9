"""How a `carescore worker` stops: within a deadline, whether or not the broker answers."""

from __future__ import annotations

import logging
import os
import signal
import threading

import faust

log = logging.getLogger(__name__)

STOP_DEADLINE = 15.0  # seconds from SIGTERM/SIGINT to exit, broker or no broker
STOPPED_HARD = 3  # the exit status when the deadline ended it


class BoundedStopWorker(faust.Worker):
    """faust.Worker whose stop on SIGTERM or SIGINT takes at most STOP_DEADLINE seconds.

    Faust's graceful stop waits for the broker (offset commits, the producer's flush): with
    the broker down a worker ignored SIGTERM for minutes, spinning on reconnects. Past the
    deadline the process exits at once. Nothing is lost by that: records are acknowledged
    only after a durable checkpoint holds them, so whoever owns the partition next redoes
    exactly what came after it."""

    def _schedule_shutdown(self, sig: signal.Signals) -> None:
        if not self._signal_stop_time:
            timer = threading.Timer(STOP_DEADLINE, _exit_now, args=(sig.name,))
            timer.daemon = True
            timer.start()
        super()._schedule_shutdown(sig)


def _exit_now(why: str) -> None:
    log.error(
        "worker not stopped %.0f s after %s (is the broker reachable?): exiting now; the events "
        "after each partition's last checkpoint are redone by its next owner",
        STOP_DEADLINE,
        why,
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(STOPPED_HARD)
