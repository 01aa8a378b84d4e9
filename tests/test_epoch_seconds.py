"""An event's `ts` is POSIX time: seconds since 1970-01-01T00:00:00Z of the instant its
event_time names, whatever offset or zone it was written in. Every expected value below is
worked out by hand from the written time, not by the code under test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from engine.event_decoder import parse_event, parse_events
from engine.events import epoch_seconds

# 2026-03-08 is 20,520 days after 1970-01-01 (56 years, 14 of them leap years: 56*365 + 14 =
# 20,454 days to 2026-01-01, then 31 + 28 + 7 = 66 more): 20,520 * 86,400 = 1,772,928,000.
MARCH_8_2026 = 1_772_928_000


def event(when: str) -> bytes:
    return (
        b'{"type":"lab.order","event_time":"'
        + when.encode()
        + b'","received_time":"'
        + when.encode()
        + b'","source":"hl7v2","source_id":"s1","facility":"F","order_id":"o1"}'
    )


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        # midnight UTC, with a fraction of a second
        ("2026-03-08T00:00:00.250000+00:00", MARCH_8_2026 + 0.25),
        ("2026-03-08T00:00:00Z", MARCH_8_2026),
        # 05:30 in India is midnight UTC
        ("2026-03-08T05:30:00+05:30", MARCH_8_2026),
        # 16:00 the day before at -08:00 is midnight UTC
        ("2026-03-07T16:00:00-08:00", MARCH_8_2026),
        # before the epoch: 1969-12-31T23:00:00Z is one hour before it
        ("1969-12-31T23:00:00+00:00", -3600.0),
    ],
)
def test_a_read_back_event_counts_the_instant_its_offset_names(written: str, expected: float) -> None:
    assert parse_event(event(written)).ts == expected
    [batched] = parse_events(b"[" + event(written) + b"]")
    assert batched.ts == expected


def test_a_zone_with_daylight_saving_is_asked_for_its_offset_on_each_side_of_the_change() -> None:
    # New York went from EST (-05:00) to EDT (-04:00) at 02:00 local on 2026-03-08.
    # 01:00 EST is 06:00Z; 04:00 EDT is 08:00Z: two hours apart, not three.
    zone = ZoneInfo("America/New_York")
    before = datetime(2026, 3, 8, 1, 0, tzinfo=zone)
    after = datetime(2026, 3, 8, 4, 0, tzinfo=zone)
    assert epoch_seconds(before) == MARCH_8_2026 + 6 * 3600
    assert epoch_seconds(after) == MARCH_8_2026 + 8 * 3600


def test_fixed_offsets_of_the_standard_library_too() -> None:
    assert epoch_seconds(datetime(2026, 3, 8, tzinfo=UTC)) == MARCH_8_2026
    plus_two = timezone(timedelta(hours=2))
    assert epoch_seconds(datetime(2026, 3, 8, 2, 0, 0, 1, tzinfo=plus_two)) == MARCH_8_2026 + 1e-6
