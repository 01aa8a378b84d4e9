"""What a full, failing, read-only or forbidden disk raises, told apart from a bug.

A command that meets one ends with the error in one line (carescore/cli.py); any other
exception is a bug and keeps its traceback. (The history keeps a failed write's windows for
any failure but a window it cannot take: engine/history.py SAMPLE_FAULTS.)
"""

from __future__ import annotations

import errno
import sqlite3

STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM})

SQLITE_STORAGE = ("disk is full", "disk I/O error", "readonly database", "database is locked")
"""SQLite's messages for the same (a full disk is "database or disk is full"; a lock another
connection held longer than the busy timeout is the disk's too: a backup, a shell)."""


def storage_failure(exc: BaseException) -> bool:
    """True for the disk's failure (worth writing again once it is fixed), not the data's."""
    if isinstance(exc, sqlite3.OperationalError):
        return any(s in str(exc) for s in SQLITE_STORAGE)
    return isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS
