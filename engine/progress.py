"""A one-line progress display for long imports: counts, rate, errors so far.

On a terminal the line is redrawn in place; into a file or pipe a line is written every
few seconds, so a CI log shows progress without thousands of lines.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(
        self, label: str, total: int | None = None, stream: TextIO | None = None, every: float = 2.0
    ):
        self.label = label
        self.total = total
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = 0.1 if self.tty else every
        self.started = time.monotonic()
        self._shown = 0.0
        self.done = 0
        self.counts: dict[str, int] = {}

    def advance(self, n: int = 1, **counts: int) -> None:
        self.done += n
        for key, value in counts.items():
            self.counts[key] = self.counts.get(key, 0) + value
        now = time.monotonic()
        if now - self._shown >= self.every:
            self._shown = now
            self._draw()

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        if self.total:
            filled = int(24 * min(self.done / self.total, 1.0))
            bar = f"[{'#' * filled}{'.' * (24 - filled)}] {self.done:,}/{self.total:,}"
        else:
            bar = f"{self.done:,}"
        counts = "  ".join(f"{k} {v:,}" for k, v in self.counts.items())
        return f"{self.label} {bar}  {self.done / elapsed:,.0f}/s  {counts}".rstrip()

    def _draw(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K" + self.line())
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def close(self) -> float:
        """Draw the final state; returns the elapsed seconds."""
        self._draw()
        if self.tty:
            self.stream.write("\n")
        return time.monotonic() - self.started
