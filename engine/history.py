"""Closed windows, kept: the KPI history behind /kpis/{id}/history and the trend.

Replaying the event log after a restart closes the same windows again; the primary key
makes that an overwrite with the same values, not a duplicate.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.samples import Group, Sample, Window

SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    kpi TEXT NOT NULL,
    facility TEXT NOT NULL,
    department TEXT NOT NULL DEFAULT '',
    unit TEXT NOT NULL DEFAULT '',
    window_start TEXT NOT NULL,
    window_end TEXT NOT NULL,
    value REAL,
    numerator REAL,
    denominator REAL,
    n INTEGER NOT NULL,
    status TEXT NOT NULL,
    as_of TEXT NOT NULL,
    PRIMARY KEY (kpi, facility, department, unit, window_end, window_start)
);
"""


class History:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def add(self, samples: list[Sample]) -> None:
        rows = [
            (
                s.kpi,
                s.group.facility,
                s.group.department or "",
                s.group.unit or "",
                s.window.start.isoformat(),
                s.window.end.isoformat(),
                s.value,
                s.numerator,
                s.denominator,
                s.n,
                s.status,
                s.as_of.isoformat(),
            )
            for s in samples
            if s.final
        ]
        if not rows:
            return
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO samples VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            self._db.execute("COMMIT")

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
        sql = "SELECT * FROM samples WHERE kpi = ?"
        args: list[Any] = [kpi]
        for column, value in (("facility", facility), ("department", department), ("unit", unit)):
            if value is not None:
                sql += f" AND {column} = ?"
                args.append(value)
        if level == "facility":
            sql += " AND department = '' AND unit = ''"
        elif level == "department":
            sql += " AND department != '' AND unit = ''"
        elif level == "unit":
            sql += " AND unit != ''"
        if start is not None:
            sql += " AND window_start >= ?"
            args.append(start.astimezone(UTC).isoformat())
        if end is not None:
            sql += " AND window_end <= ?"
            args.append(end.astimezone(UTC).isoformat())
        sql += " ORDER BY window_end DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [
            Sample(
                kpi=r[0],
                group=Group(facility=r[1], department=r[2] or None, unit=r[3] or None),
                window=Window(start=datetime.fromisoformat(r[4]), end=datetime.fromisoformat(r[5])),
                value=r[6],
                numerator=r[7],
                denominator=r[8],
                n=r[9],
                status=r[10],
                as_of=datetime.fromisoformat(r[11]),
                final=True,
            )
            for r in reversed(rows)
        ]

    def close(self) -> None:
        with self._lock:
            self._db.close()
