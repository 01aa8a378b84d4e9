"""History stores what the data costs: runs of equal windows, one row each, answered window by
window (engine/history.py). Expected windows are worked out by hand from the window definition."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from engine.core import Engine
from engine.history import History
from engine.places import Places
from engine.samples import Group, Sample, Window, computed, lasting
from tests.helpers import T0, at, enc, ts
from tests.test_engine_operators import ev, kpi

DAY = 24 * 60


@pytest.fixture(autouse=True)
def write_again_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A write after a failed one is tried at once (in service: RETRY_EVERY seconds later)."""
    monkeypatch.setattr("engine.history.RETRY_EVERY", 0.0)


def minutes(value: object) -> float:
    return (value - T0).total_seconds() / 60  # type: ignore[operator]


def stored(history: History) -> int:
    return history.rows()


def sliding(tmp_path: Path, places: Places) -> tuple[Engine, History]:
    """A count over 60 minutes stepping by 5, no grace, and its history."""
    engine = Engine(kpi({"kind": "sliding", "size": "60m", "step": "5m", "grace": "0s"}), places)
    return engine, History(tmp_path / "h.sqlite", engine.pane_clocks())


def test_a_sliding_window_is_one_row_per_change_and_answers_every_window(
    tmp_path: Path, places: Places
) -> None:
    # a count over 60 minutes stepping by 5: one complaint at 08:10 (minute 10) is in every
    # window whose [start, end) holds minute 10: ends 15, 20, ..., 70 (12 windows, count 1 each);
    # the next complaint, at minute 500, moves the watermark far past them
    engine, history = sliding(tmp_path, places)
    engine.process(ev("experience.complaint", 10))
    engine.process(ev("experience.complaint", 500))
    history.add(engine.advance(ts(500)))
    windows = history.query("k", unit="4W")
    assert [(minutes(w.window.start), minutes(w.window.end), w.value) for w in windows] == [
        (end - 60, end, 1.0) for end in range(15, 75, 5)
    ]
    assert stored(history) <= 3  # one run for unit, department and facility each (not 36 rows)
    # a range inside the run: windows starting at or after 07:15 and ending by 08:40 are those
    # ending 15 .. 40 (a window ending at 15 starts at -45)
    inside = history.query("k", unit="4W", start=at(-45), end=at(40))
    assert [minutes(w.window.end) for w in inside] == [15, 20, 25, 30, 35, 40]
    # windows starting at or after 08:00: those ending at 60, 65, 70
    later = history.query("k", unit="4W", start=at(0))
    assert [minutes(w.window.end) for w in later] == [60, 65, 70]
    assert [w.value for w in history.query("k", unit="4W", limit=2)] == [1.0, 1.0]
    assert [minutes(w.window.end) for w in history.query("k", unit="4W", limit=2)] == [65, 70]


def test_a_level_held_through_a_quiet_month_is_one_row(tmp_path: Path, places: Places) -> None:
    # bed occupancy (shipped KPI: hourly tumbling windows, census / staffed beds x 100): one
    # inpatient admitted to 4W (30 staffed beds in the demo places) at 08:00 and nothing else for
    # 30 days. Every hour has the same census, 1 of 30 beds: 100 / 30 = 3.33 % in ~720 windows
    from engine.config import REPO_ROOT
    from engine.definitions import load_catalogue

    catalogue = load_catalogue(REPO_ROOT / "kpi_defs")
    engine = Engine(catalogue, places)
    history = History(tmp_path / "h.sqlite", engine.pane_clocks())
    engine.process(enc("encounter.admit", 0, "E1", unit="4W", patient_class="inpatient"))
    engine.process(ev("experience.complaint", 30 * DAY, unit="3E"))  # only moves the clock on
    history.add(engine.advance(ts(30 * DAY)))
    windows = history.query("bed_occupancy", unit="4W", limit=100_000)
    hours = [minutes(w.window.end) / 60 for w in windows]
    assert len(windows) >= 700 and hours == list(range(int(hours[0]), int(hours[0]) + len(hours)))
    assert {round(w.value or 0, 6) for w in windows} == {round(100 / 30, 6)}
    rows = sqlite3.connect(tmp_path / "h.sqlite").execute(
        "SELECT count(*) FROM runs JOIN series s ON s.id = runs.series"
        " WHERE s.kpi = 'bed_occupancy' AND s.unit = '4W'"
    )
    assert rows.fetchone()[0] <= 2  # the run, and at most the partial first hour
    middle = history.query("bed_occupancy", unit="4W", start=at(10 * DAY), end=at(10 * DAY + 180))
    assert [(minutes(w.window.start), minutes(w.window.end)) for w in middle] == [
        (10 * DAY + 60 * h, 10 * DAY + 60 * (h + 1)) for h in range(3)
    ]


def test_a_history_from_before_runs_is_converted(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE samples (kpi TEXT NOT NULL, facility TEXT NOT NULL, department TEXT NOT NULL,"
        " unit TEXT NOT NULL, window_start TEXT NOT NULL, window_end TEXT NOT NULL, value REAL,"
        " numerator REAL, denominator REAL, n INTEGER NOT NULL, status TEXT NOT NULL, as_of TEXT NOT NULL,"
        " PRIMARY KEY (kpi, facility, department, unit, window_end, window_start));"
    )
    for h in range(3):
        start, end = T0 + timedelta(hours=h), T0 + timedelta(hours=h + 1)
        old.execute(
            "INSERT INTO samples VALUES ('k', 'DEMO', 'medicine', '4W', ?, ?, ?, NULL, NULL, 1, 'ok', ?)",
            (start.isoformat(), end.isoformat(), float(h), end.isoformat()),
        )
    old.commit()
    old.close()
    history = History(path)
    windows = history.query("k", unit="4W")
    assert [(w.window.start, w.window.end, w.value) for w in windows] == [
        (T0 + timedelta(hours=h), T0 + timedelta(hours=h + 1), float(h)) for h in range(3)
    ]
    assert history.rows() == 3


def test_a_query_answers_every_window_handed_in_before_it_and_writes_do_not_queue_up(
    tmp_path: Path, places: Places
) -> None:
    # a count over 60 minutes stepping by 5, one complaint in each hour 0..99: the windows are
    # handed to the history one hour at a time, while the disk is busy (its lock held here, as
    # a long write holds it). Windows ending 15..70 after the complaint at minute 10 hold it, and so
    # on for each hour: 12 windows of count 1 per hour.
    engine, history = sliding(tmp_path, places)
    writes = 0
    add = history.add

    def counted(samples: list) -> None:  # type: ignore[type-arg]
        nonlocal writes
        writes += 1
        add(samples)

    history.add = counted  # type: ignore[method-assign]
    with history._file.lock:  # the writer thread waits for the disk
        for hour in range(100):
            engine.process(ev("experience.complaint", 60 * hour + 10))
            history.add_later(engine.advance(ts(60 * hour + 75)))  # past the window ending at 70
        answer = history.query_later("k", unit="4W", limit=10_000)
        assert not answer.done()
    windows = answer.result(timeout=60)
    # 100 hours x 12 windows, every one of them, though none was written when it was asked
    assert len(windows) == 1200 and {w.value for w in windows} == {1.0}
    # one write took what came while the disk was busy (the first may have begun before)
    assert writes <= 2, writes
    history.close()


def test_samples_built_without_validation_are_the_samples_validation_builds() -> None:
    """Closing windows builds samples unvalidated (engine/samples.py computed, lasting): they
    must equal, and serialise as, what pydantic's validation makes of the same values, ints
    turned into floats included; a count that is not a whole number is still refused."""
    group = Group(facility="F", department="D", unit="U")
    window = Window(start=at(0), end=at(60))
    values = dict(kpi="k", group=group, window=window, value=3, numerator=3, denominator=None, n=3)
    made = computed(**values, status="warning", as_of=at(61), final=True)  # type: ignore[arg-type]
    validated = Sample(**values, status="warning", as_of=at(61), final=True)  # type: ignore[arg-type]
    assert made == validated and made.model_dump_json() == validated.model_dump_json()
    assert type(made.value) is float and type(made.numerator) is float
    run = lasting(made, at(120))
    assert run == validated.model_copy(update={"until": at(120)}) and made.until is None
    assert run.model_dump_json() == validated.model_copy(update={"until": at(120)}).model_dump_json()
    with pytest.raises(ValidationError):
        computed("k", group, window, 1.0, None, None, 2.5, "ok", at(61), True)  # type: ignore[arg-type]


def test_windows_a_failed_history_write_held_are_written_with_the_next(
    tmp_path: Path, places: Places
) -> None:
    # a count over 60 minutes stepping by 5, complaints at minute 10 of each hour: 12 windows
    # per hour holding that hour's (as above). After hour 2 the file is held to the pages it has (SQLite's own
    # "database or disk is full", as on a full disk) until a write fails; then it may grow again,
    # and the next hour's write carries the failed one's windows: every hour's 12 are stored.
    # Before, the failed windows were logged and gone (the engine does not close them again).
    engine, history = sliding(tmp_path, places)

    def hour(n: int) -> None:  # one complaint in even hours, two in odd: a new run each hour
        for _ in range(1 + n % 2):
            engine.process(ev("experience.complaint", 60 * n + 10))
        history.add_later(engine.advance(ts(60 * n + 75)))  # past the window ending at 70
        history.flush()

    def pragma(sql: str) -> int:
        with history._file.lock:
            return int(history._file.db.execute(sql).fetchone()[0])

    for n in range(2):
        hour(n)
    pragma(f"PRAGMA max_page_count = {pragma('PRAGMA page_count')}")

    def kept() -> int:
        return len(history.query("k", unit="4W", limit=100_000))

    n = 2
    while kept() == 12 * n:  # until an hour's windows are not stored
        hour(n)
        n += 1
        assert n < 2000, "the history never filled"
    pragma("PRAGMA max_page_count = 1073741823")
    hour(n)
    windows = history.query("k", unit="4W", limit=100_000)
    assert [w.value for w in windows] == [1.0 + h % 2 for h in range(n + 1) for _ in range(12)]
    assert history.write_errors == 1
    history.close()


def test_a_window_the_store_cannot_take_is_dropped_not_kept_in_front_of_every_write(
    tmp_path: Path, places: Places
) -> None:
    # windows whose count is missing (a bug upstream; the runs table needs n): a write of only
    # such windows cannot tell them from a bug in the code, so it is kept (held, no snapshot);
    # the next write carries them with the next hour's good windows, which are stored, and the
    # bad ones are dropped there. Kept for ever, they would fail every write after them.
    engine, history = sliding(tmp_path, places)
    engine.process(ev("experience.complaint", 10))
    bad = [s.model_copy(update={"n": None}) for s in engine.advance(ts(75))]
    history.add_now(bad)
    assert history.write_errors == 1 and history.held == len(bad)
    engine.process(ev("experience.complaint", 70))
    history.add_now(engine.advance(ts(135)))
    assert history.write_errors == 2 and history.held == 0 and history.settled(history.mark())
    stored = history.query("k", unit="4W", limit=1000)  # the next hour's windows, written
    assert len(stored) >= 12 and {w.value for w in stored} == {1.0}
    engine.process(ev("experience.complaint", 130))
    history.add_now(engine.advance(ts(195)))
    assert history.write_errors == 2  # no write fails again
    history.close()


def hold_to_pages(history: History, full: bool) -> None:
    """SQLite's own "database or disk is full" once a write needs a page more (full), or not."""
    with history._file.lock:
        pages = history._file.db.execute("PRAGMA page_count").fetchone()[0]
        history._file.db.execute(f"PRAGMA max_page_count = {pages if full else 1073741823}")


def sliding_history(tmp_path: Path, places: Places) -> tuple[Engine, History, int]:
    """A count over 60 minutes stepping by 5, one complaint at minute 10 of even hours and two
    of odd ones (12 windows an hour, a new run each hour, as above), the file held to its pages
    from hour 2 until an hour's windows are held by a failed write: that hour is returned."""
    engine, history = sliding(tmp_path, places)
    n = 0
    while history.held == 0:
        if n == 2:
            hold_to_pages(history, full=True)
        for _ in range(1 + n % 2):
            engine.process(ev("experience.complaint", 60 * n + 10))
        history.add_now(engine.advance(ts(60 * n + 75)))  # past the window ending at 70
        n += 1
        assert n < 2000, "the history never filled"
    assert history.write_errors == 1  # hour n's windows held (as runs: held counts those)
    assert not history.settled(history.mark())
    return engine, history, n - 1


def test_a_bad_window_beside_held_ones_is_dropped_alone(tmp_path: Path, places: Places) -> None:
    # hour n's 12 windows are held by a failed write; then the disk has room, and the next
    # write carries them with hour n+1's windows and one window without its
    # count (a bug upstream). That one is dropped; the 24 others are stored, and the history
    # is settled (a snapshot may be published). Before, the bad window made the whole write
    # fail, and every window in it, the held ones too, was dropped and taken as settled.
    engine, history, n = sliding_history(tmp_path, places)
    hold_to_pages(history, full=False)
    for _ in range(1 + (n + 1) % 2):
        engine.process(ev("experience.complaint", 60 * (n + 1) + 10))
    closed = engine.advance(ts(60 * (n + 1) + 75))
    closed.append(closed[0].model_copy(update={"n": None}))
    history.add_now(closed)
    windows = history.query("k", unit="4W", limit=100_000)
    assert [w.value for w in windows] == [1.0 + h % 2 for h in range(n + 2) for _ in range(12)]
    assert history.held == 0 and history.settled(history.mark())
    assert history.write_errors == 2  # the full disk, then the bad window
    history.close()


def test_held_windows_are_written_again_when_no_window_closes(
    tmp_path: Path, places: Places, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the disk has room again but no window closes for a while (a quiet night): retry() writes
    # the held windows once RETRY_EVERY seconds have passed since the last write (here 0).
    monkeypatch.setattr("engine.history.RETRY_EVERY", 0.0)
    _, history, n = sliding_history(tmp_path, places)
    held = history.held
    history.retry()
    history.flush()
    assert history.held == held and history.write_errors == 2  # still full: tried, held
    hold_to_pages(history, full=False)
    history.retry()
    history.flush()
    assert history.held == 0 and history.settled(history.mark())
    windows = history.query("k", unit="4W", limit=100_000)
    assert [w.value for w in windows] == [1.0 + h % 2 for h in range(n + 1) for _ in range(12)]
    history.close()


def test_held_windows_beyond_the_bound_keep_snapshots_back_until_a_restart(
    tmp_path: Path, places: Places, monkeypatch: pytest.MonkeyPatch
) -> None:
    # at most FAILED_KEPT closed windows (runs) stay in memory (here 1): of hour n's, the older
    # are let go. Written later, the newest is stored, but the others would only be closed
    # again by a restart's replay: held still counts them (on /metrics), and no snapshot may
    # be published in this process.
    monkeypatch.setattr("engine.history.FAILED_KEPT", 1)
    monkeypatch.setattr("engine.history.RETRY_EVERY", 0.0)
    _, history, n = sliding_history(tmp_path, places)
    held = history.held
    assert held > 1
    hold_to_pages(history, full=False)
    history.retry()
    history.flush()
    assert len(history.query("k", unit="4W", limit=100_000)) > 12 * n  # the newest is stored
    assert history.held == held - 1 and not history.settled(history.mark())
    history.close()


def test_while_writes_fail_closings_queue_for_the_retry_not_a_write_each(
    tmp_path: Path, places: Places, monkeypatch: pytest.MonkeyPatch
) -> None:
    # in service a failed write is tried again RETRY_EVERY seconds later: the closings between
    # queue behind it (a full disk or a locked file is not hit at every tick); the retry
    # writes the held windows and the queued ones together.
    engine, history, n = sliding_history(tmp_path, places)
    monkeypatch.setattr("engine.history.RETRY_EVERY", 3600.0)
    hold_to_pages(history, full=False)
    for h in (n + 1, n + 2):
        for _ in range(1 + h % 2):
            engine.process(ev("experience.complaint", 60 * h + 10))
        history.add_now(engine.advance(ts(60 * h + 75)))
    assert history.write_errors == 1 and not history.settled(history.mark())  # not tried again
    assert len(history.query("k", unit="4W", limit=100_000)) == 12 * n
    monkeypatch.setattr("engine.history.RETRY_EVERY", 0.0)
    history.retry()
    history.flush()
    windows = history.query("k", unit="4W", limit=100_000)
    assert [w.value for w in windows] == [1.0 + h % 2 for h in range(n + 3) for _ in range(12)]
    assert history.held == 0 and history.settled(history.mark())
    history.close()
