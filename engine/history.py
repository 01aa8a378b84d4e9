"""Closed windows, kept: the KPI history behind /kpis/{id}/history and the trend.

Stored as runs (engine/operators/runs.py, Runs): one row per KPI, place and stretch of
consecutive windows with the same result, so history costs what the data costs: a row where
a place had data and its result changed, none for windows with no data and none for a step
that changed nothing. Rows: for each KPI and each place (unit, department, facility) with
data, at most one per window in which a pane with data enters or leaves the window, plus one
per change of a level (census, staffing); at most one per closed window. A query answers
window by window: each run is expanded on the KPI's pane clock.

Replaying the event log after a restart closes the same windows again; the primary key
makes that an overwrite with the same values (a run that grew replaces its row). A history
file from before runs (table `samples`, one row per window) is converted when opened.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.samples import Group, Sample, Window, ts_to_dt
from engine.sqlite import SQLiteFile
from engine.windows import PaneClock

SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    kpi TEXT NOT NULL,
    facility TEXT NOT NULL,
    department TEXT NOT NULL,
    unit TEXT NOT NULL,
    UNIQUE (kpi, facility, department, unit)
);
CREATE TABLE IF NOT EXISTS runs (
    series INTEGER NOT NULL REFERENCES series (id),
    window_end INTEGER NOT NULL,   -- epoch seconds (UTC), the first window of the run
    window_start INTEGER NOT NULL,
    until INTEGER NOT NULL,        -- the end of the run's last window (= window_end: one window)
    value REAL,
    numerator REAL,
    denominator REAL,
    n INTEGER NOT NULL,
    status TEXT NOT NULL,
    as_of REAL NOT NULL,
    PRIMARY KEY (series, window_end, window_start)
) WITHOUT ROWID;
"""
# A row costs about 47 bytes, B-tree included (MIMIC replay: 16.1 MB, 344,202 rows): place and
# KPI are one integer, times are integers, and WITHOUT ROWID keeps the rows in the primary
# key's tree (no second copy).

log = logging.getLogger(__name__)

COLUMNS = (
    "s.kpi, s.facility, s.department, s.unit, r.window_start, r.window_end, r.value, r.numerator, "
    "r.denominator, r.n, r.status, r.as_of, r.until"
)
SeriesKey = tuple[str, str, str, str]
INSERT = "INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?)"


def _row_key(s: Sample) -> tuple[object, ...]:
    """A run's row: its primary key (a run that grew is handed in again under it)."""
    group = s.group
    return (s.kpi, group.facility, group.department or "", group.unit or "", s.window.end, s.window.start)


def _epoch(value: datetime) -> int | float:
    ts = value.timestamp()
    return int(ts) if ts.is_integer() else ts


def _iso_epoch(column: str) -> str:
    """SQL turning an old history's ISO 8601 text into epoch seconds."""
    return f"CAST(strftime('%s', {column}) AS INTEGER)"


FAILED_KEPT = 200_000
"""Windows a failed write keeps for the next (a disk full for long: the newest are kept; the
others are counted in `held` until a restart closes them again, and no snapshot is published
in this process meanwhile)."""

RETRY_EVERY = 30.0
"""Seconds between writes while writes fail (retry(); add_later() only queues meanwhile)."""

SAMPLE_FAULTS = (
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
    TypeError,
    ValueError,
    AttributeError,
    KeyError,
    OverflowError,
)
"""What a window the store cannot take raises (a bug upstream: a missing count, a value
SQLite cannot bind): that window is dropped, if others in the same write could be stored
(_store). Anything else (a full, failing, locked or read-only disk, a damaged file, memory),
or every window failing alike (a bug in the code), keeps the windows for the next write."""


class History:
    """clocks: each KPI's pane clock (how a run's windows follow each other); a KPI without
    one is answered row by row.

    Windows reach the file on the history's own thread, in order. A write that fails keeps
    its windows for the next write (but for windows the store cannot take: SAMPLE_FAULTS),
    because the engine closes a window once: `settled(mark())` tells a snapshot whether every
    window closed before it is on disk, so that a snapshot is never published past a window
    the history lacks (the next start would not close it again)."""

    def __init__(self, path: Path, clocks: Mapping[str, PaneClock] | None = None):
        self.clocks = dict(clocks or {})
        # FULL: a write is on disk before a snapshot past its windows is (one fsync a write)
        self._file = SQLiteFile(path, synchronous="FULL")
        self._file.script(SCHEMA)
        self._series: dict[SeriesKey, int] = self._load_series()
        if self._file.query("SELECT name FROM sqlite_master WHERE name = 'samples'"):
            self._migrate()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="history")
        self._written: Future[None] | None = None
        self._pending: list[Sample] = []  # handed to add_later(), not yet taken by a write
        self._pending_lock = threading.Lock()
        self._draining = False  # a write that will take _pending is queued
        self._failed: list[Sample] = []  # a failed write's windows, written again with the next
        self._lost = 0  # held windows beyond FAILED_KEPT, gone from memory: only a restart has them
        self._handed = 0  # add_later() calls so far (a mark)
        self._settled = 0  # of those, the ones whose windows are stored (or dropped as a bug's)
        self._tried = 0.0  # time.monotonic() of the last write
        self.write_errors = 0
        self.missed_closings = 0  # missed()
        self.last_error: str | None = None

    def add_later(self, samples: list[Sample]) -> None:
        """add() on the history's own thread, in order: a runtime's event loop does not wait
        for the disk (a failure is logged and counted there, and its windows are written with
        the next write: _drain).
        Batches handed in while a write is queued go into that write: one transaction
        however many ticks it covers, so the writer does not fall behind the closing."""
        if not samples:
            return
        with self._pending_lock:
            self._pending.extend(samples)
            self._handed += 1
            if self._draining:
                return
            if self._failed and time.monotonic() - self._tried < RETRY_EVERY:
                return  # failing: written with the held ones by retry() or settle(), not every tick
            self._draining = True
        self._submit_drain()

    def _submit_drain(self) -> None:
        try:
            self._written = self._writer.submit(self._drain)
        except RuntimeError:  # closed: a late tick at a stop; what it closed is replayed at the next start
            with self._pending_lock:
                self._draining = False
            raise

    def add_now(self, samples: list[Sample]) -> None:
        """add_later(), then wait for it (imports, a start's replay): a failure is kept the
        same way, not raised, so an import goes on and its stop publishes no snapshot."""
        self.add_later(samples)
        self.flush()

    def retry(self) -> None:
        """Write the held windows (and what came since) if no write has been tried for
        RETRY_EVERY seconds: a tick calls it. While writes fail, add_later() only queues, so
        a full disk or a locked file is tried every RETRY_EVERY, not at every closing."""
        if not self._failed or time.monotonic() - self._tried < RETRY_EVERY:
            return
        with self._pending_lock:
            if self._draining:
                return
            self._draining = True
        self._submit_drain()

    def _drain(self) -> None:
        """One write of what is pending, after what the last failed write held: the engine has
        closed those windows and will not close them again, so a failure (a full disk) keeps
        them for the next write, and no snapshot is published past them meanwhile (settled).
        `_failed` stays as it is until the write's outcome is known (held, on /metrics)."""
        with self._pending_lock:
            pending, self._pending = self._pending, []
            self._draining = False
            upto = self._handed
        batch = self._failed + pending
        self._tried = time.monotonic()
        try:
            dropped = self._store(batch)
        except Exception as exc:
            self.write_errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            rows = list({_row_key(s): s for s in batch}.values())  # a run that grew: its last version
            kept = rows[-FAILED_KEPT:]
            self._lost += len(rows) - len(kept)
            self._failed = kept
            log.error(
                "history write failed; its windows kept for the next",
                extra={"samples": len(batch), "held": self.held, "error": self.last_error},
            )
            return
        if dropped:
            self.write_errors += 1
        self._failed = []
        self._settled = upto

    def _store(self, batch: list[Sample]) -> int:
        """add(batch). If a window in it is one the store cannot take (SAMPLE_FAULTS), the
        batch is written again window by window in one transaction and those windows are
        dropped, logged; the others, held ones included, are stored. When none could be stored
        (every window bad, or a bug in the code rather than in a window) the failure is raised,
        and the batch is kept like a full disk's. Returns how many were dropped."""
        try:
            self.add(batch)
            return 0
        except SAMPLE_FAULTS:
            pass
        bad, why = self.add_each(batch)
        if bad:
            self.last_error = why
            log.error(
                "history: windows the store cannot take, dropped",
                extra={"dropped": len(bad), "kpis": sorted({s.kpi for s in bad}), "error": why},
            )
        return len(bad)

    def missed(self, why: str) -> None:
        """A closing that raised (a bug): what it had closed never reached add_later(), and
        only a replay from the last snapshot closes it again, so no snapshot is published in
        this process from now on (missed_closings, on /metrics). Called on the runtime's loop
        only (the writer thread has its own counts)."""
        self.missed_closings += 1
        self.last_error = why

    @property
    def held(self) -> int:
        """Windows a failed write holds for the next one (and those beyond FAILED_KEPT it had
        to let go of, which only a restart closes again)."""
        return len(self._failed) + self._lost

    def mark(self) -> int:
        """Where the windows handed in so far end (for settled())."""
        with self._pending_lock:
            return self._handed

    def settled(self, mark: int) -> bool:
        """Every window handed in before `mark` is in the file: a snapshot taken at `mark` may
        replace the last one."""
        return self._settled >= mark and not self._failed and not self._lost and not self.missed_closings

    def flush(self) -> None:
        """Wait for the writes handed to add_later()."""
        if self._written is not None:
            self._written.result()

    def settle(self) -> bool:
        """At a stop: wait for the writes, then write the held windows once more; settled()."""
        self.flush()
        if self._failed:
            self._writer.submit(self._drain).result()
        return self.settled(self.mark())

    def query_later(self, kpi: str, **where: Any) -> Future[list[Sample]]:
        """query() on the history's own thread, after every write handed to add_later()
        before it: an answer holds every window the engine has closed (the board and the
        history agree), and the caller's event loop does not wait for the disk."""
        return self._writer.submit(self.query, kpi, **where)

    def queries_later(self, kpis: list[str], **where: Any) -> Future[dict[str, list[Sample]]]:
        """query_later() for several KPIs at one place, in one turn of the history's thread."""
        return self._writer.submit(lambda: {kpi: self.query(kpi, **where) for kpi in kpis})

    def _migrate(self) -> None:
        """A history written before runs (table samples, ISO text, one row per window)."""
        columns = {row[1] for row in self._file.query("PRAGMA table_info(samples)")}
        until = _iso_epoch("o.until") if "until" in columns else "NULL"
        with self._file.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO series (kpi, facility, department, unit) "
                "SELECT DISTINCT kpi, facility, department, unit FROM samples"
            )
            db.execute(
                "INSERT OR REPLACE INTO runs SELECT s.id, "
                f"{_iso_epoch('o.window_end')}, {_iso_epoch('o.window_start')}, "
                f"coalesce({until}, {_iso_epoch('o.window_end')}), o.value, o.numerator, o.denominator, o.n, "
                f"o.status, {_iso_epoch('o.as_of')} FROM samples o JOIN series s USING "
                "(kpi, facility, department, unit)"
            )
            db.execute("DROP TABLE samples")
        self._series = self._load_series()

    def _load_series(self) -> dict[SeriesKey, int]:
        rows = self._file.query("SELECT id, kpi, facility, department, unit FROM series")
        return {(k, f, d, u): i for i, k, f, d, u in rows}

    def _series_id(self, key: SeriesKey) -> int:
        found = self._series.get(key)
        if found is None:
            cur = self._file.db.execute(
                "INSERT INTO series (kpi, facility, department, unit) VALUES (?,?,?,?)", key
            )
            found = self._series[key] = int(cur.lastrowid or 0)
        return found

    def add(self, samples: list[Sample]) -> None:
        final = [s for s in samples if s.final]
        if final:
            self._locked_write(lambda db: db.executemany(INSERT, [self._row(s) for s in final]))

    def add_each(self, samples: list[Sample]) -> tuple[list[Sample], str | None]:
        """add(), a window at a time in one transaction: the windows that raise SAMPLE_FAULTS
        are left out and returned with the first's error; if every window raises, nothing is
        written and that error is raised."""
        final = [s for s in samples if s.final]
        bad: list[Sample] = []
        first: Exception | None = None

        def each(db: sqlite3.Connection) -> None:
            nonlocal first
            for sample in final:
                try:
                    db.execute(INSERT, self._row(sample))
                except SAMPLE_FAULTS as exc:
                    bad.append(sample)
                    first = first or exc
            if first is not None and len(bad) == len(final):
                raise first

        if final:
            self._locked_write(each)
        return bad, None if first is None else f"{type(first).__name__}: {first}"

    def _locked_write(self, write: Callable[[sqlite3.Connection], object]) -> None:
        with self._file.lock:
            given = len(self._series)
            try:
                with self._file.transaction() as db:
                    write(db)
            except BaseException:
                for key in list(self._series)[given:]:  # their rows were rolled back with the batch
                    del self._series[key]
                raise

    def _row(self, s: Sample) -> tuple[Any, ...]:
        return (
            self._series_id((s.kpi, s.group.facility, s.group.department or "", s.group.unit or "")),
            _epoch(s.window.end),
            _epoch(s.window.start),
            _epoch(s.until if s.until is not None else s.window.end),
            s.value,
            s.numerator,
            s.denominator,
            s.n,
            s.status,
            s.as_of.timestamp(),
        )

    def series(self) -> list[SeriesKey]:
        """Every (KPI, facility, department, unit) with stored windows ("" for a roll-up's level)."""
        with self._file.lock:
            return sorted(self._series)

    def rows(self) -> int:
        """Stored rows (runs), for the storage figures."""
        return int(self._file.query("SELECT count(*) FROM runs")[0][0])

    def query(
        self,
        kpi: str,
        *,
        facility: str | None = None,
        department: str | None = None,
        unit: str | None = None,
        level: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int = 1000,
    ) -> list[Sample]:
        """The latest `limit` closed windows (oldest first) whose start is at or after `start`
        and whose end is at or before `end`, window by window."""
        sql = f"SELECT {COLUMNS} FROM runs r JOIN series s ON s.id = r.series WHERE s.kpi = ?"
        args: list[Any] = [kpi]
        for column, value in (("facility", facility), ("department", department), ("unit", unit)):
            if value is not None:
                sql += f" AND s.{column} = ?"
                args.append(value)
        if level == "facility":
            sql += " AND s.department = '' AND s.unit = ''"
        elif level == "department":
            sql += " AND s.department != '' AND s.unit = ''"
        elif level == "unit":
            sql += " AND s.unit != ''"
        if start is not None:
            sql += " AND r.until > ?"  # a run whose last window ends after `start` may hold one
            args.append(start.timestamp())
        if end is not None:
            sql += " AND r.window_end <= ?"
            args.append(end.timestamp())
        # every run holds a window ending at its last end (clipped to `end`): the `limit` runs
        # that end last hold the `limit` latest windows
        if end is not None:
            sql += " ORDER BY min(r.until, ?) DESC LIMIT ?"
            args += [end.timestamp(), limit]
        else:
            sql += " ORDER BY r.until DESC LIMIT ?"
            args.append(limit)
        rows = self._file.query(sql, args)
        windows: dict[tuple[str, str, str, str], Sample] = {}
        for r in rows:
            for sample in self._expand(r, start, end, limit):
                g = sample.group
                windows[(g.facility, g.department or "", g.unit or "", sample.window.end.isoformat())] = (
                    sample
                )
        out = sorted(
            windows.values(),
            key=lambda s: (s.window.end, s.group.facility, s.group.department or "", s.group.unit or ""),
        )
        return out[-limit:]

    def _expand(
        self, r: tuple[Any, ...], start: datetime | None, end: datetime | None, limit: int
    ) -> list[Sample]:
        """A run's windows in [start, end], its latest `limit` of them."""
        first = Sample(
            kpi=r[0],
            group=Group(facility=r[1], department=r[2] or None, unit=r[3] or None),
            window=Window(start=ts_to_dt(r[4]), end=ts_to_dt(r[5])),
            value=r[6],
            numerator=r[7],
            denominator=r[8],
            n=r[9],
            status=r[10],
            as_of=ts_to_dt(r[11]),
            final=True,
            until=ts_to_dt(r[12]) if r[12] != r[5] else None,
        )
        return windows_of(first, self.clocks.get(first.kpi), start, end, limit)

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._file.close()


def windows_of(
    run: Sample,
    clock: PaneClock | None,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int | None = None,
) -> list[Sample]:
    """A run's windows (each ending one pane after the last) in [start, end], the latest
    `limit` of them, latest first. Without a clock, the run's first window only."""
    if clock is None or run.until is None or run.until == run.window.end:
        windows = [run.model_copy(update={"until": None})] if run.until is not None else [run]
    else:
        index = clock.index(run.window.end.timestamp())
        last = clock.index(run.until.timestamp())
        if end is not None:
            last = min(last, clock.index(end.timestamp()))
        windows = []
        for i in range(last, index - 1, -1):  # latest first: stop at `limit` or at `start`
            begins = run.window.start if clock.cumulative else ts_to_dt(clock.start(i - clock.k))
            if start is not None and begins < start:
                break
            window = Window(start=begins, end=ts_to_dt(clock.start(i)))
            windows.append(run.model_copy(update={"window": window, "until": None}))
            if limit is not None and len(windows) >= limit:
                break
    return [
        w
        for w in windows
        if (start is None or w.window.start >= start) and (end is None or w.window.end <= end)
    ]
