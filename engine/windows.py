"""Event-time windows built from panes.

Every window kind is a run of consecutive panes: tumbling windows are one pane of `size`,
hopping and sliding windows are `size/step` panes of `step`, cumulative windows are every
pane since the first. Windows therefore end on pane boundaries, and a window closes when
the watermark passes its end plus the grace period. Operators keep per-pane partial
aggregates, so a late event inside grace corrects its pane and every open window over it.

Panes live in site time where people count in days: a pane of whole days is a run of local
days (it starts at midnight in the site's time zone, and a day is 23 or 25 hours when the
clocks change), a pane of calendar months starts at local midnight on the 1st. Panes shorter
than a day (minutes, hours) are counted from the UTC epoch: pane i covers [i*pane, (i+1)*pane),
plain arithmetic on the hot path. Operators ask the clock `index(ts)` (the pane an instant is
in) and `start(i)` (the instant pane i begins); fixed clocks also expose `pane` (seconds, 0.0
for calendar clocks) so hot paths can do the division inline.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, tzinfo
from zoneinfo import ZoneInfo

from engine.definitions.window import WindowSpec, months_of

DAY = 86400.0
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
UTC_NAMES = frozenset({"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Etc/Universal", "Universal", "Etc/Zulu", "Zulu"})


def zone_of(zone: str | tzinfo | None) -> tzinfo:
    """A time zone from its IANA name (None: UTC)."""
    if zone is None:
        return UTC
    return ZoneInfo(zone) if isinstance(zone, str) else zone


def is_utc(zone: tzinfo | None) -> bool:
    return zone is None or zone is UTC or getattr(zone, "key", None) in UTC_NAMES


def local_day(ts: float, zone: tzinfo | None) -> int:
    """The date of instant ts in the zone, as days since 1970-01-01 (calendar-day counts:
    midnights between two instants, days between a discharge and a readmission)."""
    if is_utc(zone):
        return int(ts // DAY)
    return datetime.fromtimestamp(ts, zone).toordinal() - EPOCH_ORDINAL


class PaneClock:
    """Pane arithmetic for one window spec: pane i covers [start(i), start(i+1))."""

    __slots__ = ("cumulative", "grace", "k", "kind", "pane")

    def __init__(self, spec: WindowSpec, pane: float):
        self.kind = spec.kind
        self.cumulative = spec.kind == "cumulative"
        self.k = spec.panes
        self.grace = float(spec.grace)
        self.pane = pane  # seconds per pane for fixed panes (index = ts // pane); 0.0 calendar

    @staticmethod
    def of(spec: WindowSpec, zone: tzinfo | None = None) -> PaneClock:
        """The clock for a window in a site's time zone (None: UTC)."""
        hop = spec.hop
        months = months_of(hop)
        if months is not None:
            return CalendarClock(spec, zone or UTC, months=months)
        seconds = float(hop)
        if seconds % DAY == 0 and not is_utc(zone):
            return CalendarClock(spec, zone, days=round(seconds / DAY))  # type: ignore[arg-type]
        return FixedClock(spec, seconds)  # UTC days are fixed: 86,400 s each

    def index(self, ts: float) -> int:
        """The pane instant ts falls in."""
        raise NotImplementedError

    def start(self, index: int) -> float:
        """The instant pane `index` begins (epoch seconds)."""
        raise NotImplementedError

    def start_of(self, end_index: int, first_index: int) -> int:
        """First pane of the window that ends (exclusive) at pane end_index."""
        return first_index if self.cumulative else end_index - self.k

    def closable(self, end_index: int, watermark: float) -> bool:
        return self.start(end_index) + self.grace <= watermark

    def live_end(self, watermark: float) -> int:
        """End (exclusive) of the open window that contains the watermark."""
        return self.index(watermark) + 1

    def keep_from(self, closed_upto: int) -> int:
        """Oldest pane still needed once windows ending at or before closed_upto are out."""
        return closed_upto + 1 - max(self.k, 1)


class FixedClock(PaneClock):
    """Panes of a fixed number of seconds from the UTC epoch."""

    __slots__ = ()

    def index(self, ts: float) -> int:
        return int(ts // self.pane)

    def start(self, index: int) -> float:
        return index * self.pane

    def closable(self, end_index: int, watermark: float) -> bool:
        return end_index * self.pane + self.grace <= watermark


class CalendarClock(PaneClock):
    """Panes of local days or calendar months in a time zone.

    Pane i is the run of `days` local days (or `months` months) that starts with day
    i*days since 1970-01-01 (month i*months since January 1970); it begins at local midnight
    of its first day. A midnight the clocks skip begins at the first instant of the day; a
    midnight that happens twice, at its first. index() caches the pane it found last (events
    arrive in about time order) and start() every boundary it computed.
    """

    __slots__ = ("_current", "_hi", "_lo", "_starts", "days", "months", "zone")

    def __init__(self, spec: WindowSpec, zone: tzinfo, *, days: int = 0, months: int = 0):
        super().__init__(spec, 0.0)
        self.zone = zone
        self.days = days
        self.months = months
        self._starts: dict[int, float] = {}
        self._lo = self._hi = 0.0  # the pane index() found last: [lo, hi)
        self._current = 0

    def start(self, index: int) -> float:
        found = self._starts.get(index)
        if found is None:
            if len(self._starts) > 100_000:
                self._starts.clear()
            if self.months:
                year, month = divmod(index * self.months, 12)
                first = date(1970 + year, month + 1, 1)
            else:
                first = date.fromordinal(EPOCH_ORDINAL + index * self.days)
            found = datetime(first.year, first.month, first.day, tzinfo=self.zone).timestamp()
            self._starts[index] = found
        return found

    def index(self, ts: float) -> int:
        if self._lo <= ts < self._hi:
            return self._current
        local = datetime.fromtimestamp(ts, self.zone)
        if self.months:
            i = ((local.year - 1970) * 12 + local.month - 1) // self.months
        else:
            i = (local.toordinal() - EPOCH_ORDINAL) // self.days
        # the local date is a guess when a midnight is skipped or repeated: the boundaries decide
        while ts < self.start(i):
            i -= 1
        while ts >= self.start(i + 1):
            i += 1
        self._lo, self._hi, self._current = self.start(i), self.start(i + 1), i
        return i
