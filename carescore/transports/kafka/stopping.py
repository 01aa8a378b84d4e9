"""The `carescore worker` process under Faust: it stops within a deadline, whether or not
the broker answers, and it logs as every carescore process does (JSON lines on stderr)."""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

import faust

from engine.logs import setup_logging

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

    def __init__(self, *args: Any, log_level: str = "INFO", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.carescore_log_level = log_level
        self.spinner = None  # a terminal spinner writes cursor codes into a service's log

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        """Faust's start replaces the root logger's handlers with its own coloured text at its
        own level (WARNING unless CARESCORE_FAUST_LOGLEVEL): carescore's records came out as
        text, and those at INFO (a partition taken, from which offset) not at all. The JSON
        handler goes back at the configured level; Faust, mode and aiokafka keep Faust's."""
        setup_logging(self.carescore_log_level)
        for name in ("faust", "mode", "aiokafka"):
            logging.getLogger(name).setLevel(level)

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
