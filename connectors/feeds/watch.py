"""The watched folder: drop a feed file in, find it taken, with a result next to it.

    inbox/staffing/roster-0700.csv        a file for the staffing feed (folder per feed), or
    inbox/staffing-roster-0700.csv        at the top, named after its feed
    inbox/done/<stamp>-roster-0700.csv    afterwards, with <...>.result.json (counts, row errors)
    inbox/failed/<stamp>-...              files that could not be read at all, with the reason

A file is taken once its size and modification time have not changed for one poll, so a
file still being copied is left alone; names starting with '.' or ending in .tmp/.part
are ignored (write under such a name, then rename).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

from connectors.feeds.ingest import FeedIngest
from connectors.feeds.reader import EXTENSIONS, FeedFileError, detect
from connectors.feeds.schemas import FEEDS

log = logging.getLogger(__name__)

IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload")


class FeedWatcher:
    def __init__(self, ingest: FeedIngest, folder: Path, poll: float = 2.0):
        self.ingest = ingest
        self.folder = folder
        self.poll = poll
        self._seen: dict[Path, tuple[int, int]] = {}
        self._warned: set[Path] = set()

    def prepare(self) -> None:
        for name in (*FEEDS, "done", "failed"):
            (self.folder / name).mkdir(parents=True, exist_ok=True)

    async def run(self) -> None:
        self.prepare()
        while True:
            await self.scan()
            await asyncio.sleep(self.poll)

    async def scan(self) -> int:
        """Take every file that is ready; returns how many were taken."""
        taken = 0
        current: dict[Path, tuple[int, int]] = {}
        for path, feed in self._candidates():
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            signature = (stat.st_size, stat.st_mtime_ns)
            current[path] = signature
            if self._seen.get(path) != signature:
                continue  # new or still growing: look again next poll
            await self._take(path, feed)
            current.pop(path, None)
            taken += 1
        self._seen = current
        return taken

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
        name = path.name
        return (
            path.is_file()
            and not name.startswith(".")
            and not name.lower().endswith(IGNORED_SUFFIXES)
            and any(name.lower().endswith(ext) for ext in EXTENSIONS)
        )

    async def _take(self, path: Path, feed: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        body = path.read_bytes()
        try:
            result = await self.ingest.ingest(feed, body, detect(None, path.name, body), path.name)
        except FeedFileError as exc:
            target = self.folder / "failed" / f"{stamp}-{path.name}"
            os.replace(path, target)
            report = {"feed": feed, "file": path.name, "error": str(exc)}
            target.with_name(target.name + ".result.json").write_text(json.dumps(report, indent=2) + "\n")
            log.error("inbox file unreadable", extra={"file": path.name, "feed": feed, "error": str(exc)})
            return
        target = self.folder / "done" / f"{stamp}-{path.name}"
        os.replace(path, target)
        target.with_name(target.name + ".result.json").write_text(
            json.dumps(result.as_dict(), indent=2) + "\n"
        )
