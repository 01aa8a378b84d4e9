"""Filling a small real filesystem (the `small_disk` fixture in conftest.py): disk faults for real."""

from __future__ import annotations

import os
from pathlib import Path


def fill(path: Path, leave: int) -> Path:
    """A ballast file taking all but `leave` bytes of the filesystem."""
    ballast = path / "ballast"
    stat = os.statvfs(path)
    free = stat.f_bavail * stat.f_frsize - leave
    with open(ballast, "wb") as fh:
        chunk = b"\0" * (1 << 20)
        while free > 0:
            try:
                free -= fh.write(chunk[: min(len(chunk), free)])
            except OSError:
                break
    return ballast
