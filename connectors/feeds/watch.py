"""The watched folder: drop a feed file in, find it taken, with a result next to it.

    inbox/staffing/roster-0700.csv        a file for the staffing feed (folder per feed), or
    inbox/staffing-roster-0700.csv        at the top, named after its feed
    inbox/done/<stamp>-roster-0700.csv    afterwards, with <...>.result.json (counts, row errors)
    inbox/failed/<stamp>-...              files that could not be taken, with <...>.result.json
                                          saying why (unreadable, nested too deeply, a folder
                                          or pipe named like a feed file, an error of ours)

Files in done/ and failed/ hold what the feeds sent (PHI in some): they are deleted `retention`
seconds after they were filed there, checked every `purge_every` seconds.

A file is taken once its size and modification time have not changed for one poll, so a
file still being copied is left alone; names starting with '.' or ending in .tmp/.part
are ignored (write under such a name, then rename).

Whatever goes wrong with one file stays with that file: it is moved to failed/, logged at
ERROR (file name and reason, never its content) and counted, and the watcher goes on with the
next. Were the error to escape, the inbox task would die with it: the service with it, or,
restarted, the task would meet the same file first again and never reach the files after it.
A file that vanishes before it is read is skipped. Reading runs on a worker thread, parsing
too (FeedIngest): the event loop stays free for MLLP and HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectors.feeds.ingest import FeedIngest
from connectors.feeds.reader import EXTENSIONS, FeedFileError, detect
from connectors.feeds.schemas import FEEDS
from connectors.metrics import INBOX_FILES

log = logging.getLogger(__name__)

IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload")

Signature = tuple[int, int]  # size, modification time (ns)
UNREADABLE: Signature = (-1, -1)  # stat itself failed


class NotARegularFile(OSError):
    """A folder, pipe, socket or device named like a feed file: never opened for reading
    (a pipe would block the reader for good, a device would never end)."""


FILED = ("done", "failed")


class FeedWatcher:
    def __init__(
        self,
        ingest: FeedIngest,
        folder: Path,
        poll: float = 2.0,
        *,
        retention: float = 30 * 86400.0,
        purge_every: float = 3600.0,
    ):
        self.ingest = ingest
        self.folder = folder
        self.poll = poll
        self.retention = retention
        self.purge_every = purge_every
        self._purged = 0.0
        self._seen: dict[Path, Signature] = {}
        self._warned: set[Path] = set()
        self._stuck: dict[Path, Signature] = {}  # could not be moved away: not retaken unchanged

    def prepare(self) -> None:
        for name in (*FEEDS, *FILED):
            (self.folder / name).mkdir(parents=True, exist_ok=True)

    async def run(self) -> None:
        while True:
            try:
                self.prepare()
                await self.scan()
                if time.time() - self._purged >= self.purge_every:
                    self._purged = time.time()
                    await asyncio.to_thread(self.purge)
            except Exception as exc:  # the folder itself (removed, unreadable): try again next poll
                log.error("inbox scan failed; trying again", extra={"folder": str(self.folder), **_why(exc)})
            await asyncio.sleep(self.poll)

    async def scan(self) -> int:
        """Take every file that is ready; returns how many were dealt with (done or failed)."""
        taken = 0
        current: dict[Path, Signature] = {}
        for path, feed in self._candidates():
            try:
                info = path.stat()
            except FileNotFoundError:
                continue
            except OSError as exc:  # e.g. a symlink loop: fails as it is, once
                current[path] = UNREADABLE
                if self._stuck.get(path) != UNREADABLE:
                    self._fail(path, feed, exc, UNREADABLE)
                    taken += 1
                continue
            signature = (info.st_size, info.st_mtime_ns)
            current[path] = signature
            if self._seen.get(path) != signature or self._stuck.get(path) == signature:
                continue  # new or still growing: look again next poll; or left where it is
            if await self._take(path, feed, signature):
                taken += 1
        self._seen = current
        self._stuck = {p: s for p, s in self._stuck.items() if current.get(p) == s}
        return taken

    def purge(self, now: float | None = None) -> int:
        """Delete filed files (and their results) older than the retention; how many went."""
        cutoff = (time.time() if now is None else now) - self.retention
        gone = 0
        for name in FILED:
            for path in (self.folder / name).iterdir():
                try:
                    if path.is_file() and path.stat().st_mtime < cutoff:
                        path.unlink()
                        gone += 1
                except FileNotFoundError:
                    continue
        if gone:
            INBOX_FILES.labels("purged").inc(gone)
            log.info("inbox files past their retention deleted", extra={"files": gone})
        return gone

    def _candidates(self) -> list[tuple[Path, str]]:
        found: list[tuple[Path, str]] = []
        for feed in FEEDS:
            found += [(p, feed) for p in sorted((self.folder / feed).glob("*")) if self._usable(p)]
        for path in sorted(self.folder.glob("*")):
            if not self._usable(path):
                continue
            named = next((f for f in FEEDS if path.name.lower().startswith(f)), None)
            if named is not None:
                found.append((path, named))
            elif path not in self._warned:
                self._warned.add(path)
                log.warning(
                    "inbox file not taken: put it in a feed's folder or start its name with the feed",
                    extra={"file": path.name, "feeds": list(FEEDS)},
                )
        return found

    @staticmethod
    def _usable(path: Path) -> bool:
        """By name only: a folder or pipe named like a feed file is a candidate, and fails
        (to failed/, with the reason) instead of lying in the inbox unexplained."""
        name = path.name.lower()
        return (
            not name.startswith(".")
            and not name.endswith(IGNORED_SUFFIXES)
            and any(name.endswith(ext) for ext in EXTENSIONS)
        )

    async def _take(self, path: Path, feed: str, signature: Signature) -> bool:
        """Ingest one file, then move it to done/ (or failed/); False if it vanished first."""
        try:
            body = await asyncio.to_thread(read_regular, path)
        except FileNotFoundError:
            INBOX_FILES.labels("vanished").inc()
            log.warning("inbox file vanished before it was read; skipped", extra={"file": path.name})
            return False
        except Exception as exc:
            self._fail(path, feed, exc, signature)
            return True
        try:
            result = await self.ingest.ingest(feed, body, detect(None, path.name, body), path.name)
        except Exception as exc:
            self._fail(path, feed, exc, signature)
            return True
        INBOX_FILES.labels("taken").inc()
        self._file_away(path, "done", result.answer.as_dict(), signature)
        return True

    def _fail(self, path: Path, feed: str, exc: BaseException, signature: Signature) -> None:
        why = _why(exc)
        report: dict[str, Any] = {"feed": feed, "file": path.name, "error": why["reason"]}
        if not isinstance(exc, FeedFileError | OSError):  # ours: the details, kept with the data
            report["detail"] = "".join(traceback.format_exception(exc))
        INBOX_FILES.labels("failed").inc()
        moved = self._file_away(path, "failed", report, signature)
        log.error(
            "inbox file failed" + ("; moved to failed/" if moved else ""),
            extra={"file": path.name, "feed": feed, **why},
        )

    def _file_away(self, path: Path, folder: str, report: dict[str, Any], signature: Signature) -> bool:
        """Move the file to done/ or failed/ with its report next to it. If it cannot be
        moved, it is left and not taken again until it changes (no retaking every poll)."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        target = self.folder / folder / f"{stamp}-{path.name}"
        try:
            os.replace(path, target)
        except FileNotFoundError:
            log.warning("inbox file vanished before it was moved", extra={"file": path.name})
            return False
        except OSError as exc:
            self._stuck[path] = signature
            log.error(
                f"inbox file could not be moved to {folder}/; left in place until it changes",
                extra={"file": path.name, **_why(exc)},
            )
            return False
        with contextlib.suppress(OSError):
            os.utime(target)  # retention counts from filing, not from when the sender wrote it
        try:
            target.with_name(target.name + ".result.json").write_text(json.dumps(report, indent=2) + "\n")
        except OSError as exc:
            log.error("inbox result file could not be written", extra={"file": target.name, **_why(exc)})
        return True


def read_regular(path: Path) -> bytes:
    """The file's bytes; NotARegularFile without reading a byte. Opened non-blocking: a
    pipe with no writer would block even the open."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else "a pipe" if stat.S_ISFIFO(mode) else "a special file"
            raise NotARegularFile(f"not a regular file ({kind})")
        with open(fd, "rb", closefd=False) as handle:
            return handle.read()
    finally:
        os.close(fd)


def _why(exc: BaseException) -> dict[str, str]:
    """A reason fit for the log: no row content (a validation or key error may quote it)."""
    if isinstance(exc, FeedFileError | NotARegularFile):
        return {"reason": str(exc)}
    if isinstance(exc, OSError):
        return {"reason": exc.strerror or type(exc).__name__, "errno": str(exc.errno)}
    return {"reason": f"internal error ({type(exc).__name__}); details in the result file"}
