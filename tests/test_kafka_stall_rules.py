"""When a worker sends its consumer back for records aiokafka returned to Faust and Faust's
stream then dropped (carescore/transports/kafka/worker.py dropped_behind, send_back_to), case
by case. Offsets as Kafka counts them: aiokafka's position is the next offset it returns; the
engine's offset is the last record it took. The broker-level proof is tests/test_kafka_stall.py."""

from __future__ import annotations

from typing import cast

import pytest

from carescore.transports.kafka.worker import Partition, dropped_behind, send_back_to
from engine.core import Engine


def engine_at(offset: int, *, gap_from: int = -1, sent_back_from: tuple[int, int] | None = None) -> Partition:
    # the rules read only where the engine stands, never the engine itself
    return Partition(cast(Engine, None), offset=offset, gap_from=gap_from, sent_back_from=sent_back_from)


def test_records_returned_past_the_engine() -> None:
    # the engine has 0..16; aiokafka returned up to 19 (its next is 20)
    assert dropped_behind(engine_at(16), position=20)
    # one record: 17 returned, the engine has 16
    assert dropped_behind(engine_at(16), position=18)


@pytest.mark.parametrize(
    ("offset", "position", "why"),
    [
        (16, 17, "the engine has everything returned: 17 is the next to come"),
        (16, 12, "sent back below the engine (to Faust's commit): 12..16 come again"),
        (16, None, "aiokafka has no position (being reset or revoked)"),
    ],
)
def test_nothing_is_dropped(offset: int, position: int | None, why: str) -> None:
    assert not dropped_behind(engine_at(offset), position=position), why


def test_a_gap_being_filled_is_left_to_the_gap_check_and_a_filled_one_is_not() -> None:
    # skipped() went back for 17 (18 arrived first): it retries that itself
    assert not dropped_behind(engine_at(16, gap_from=17), position=20)
    # the gap filled (the engine reached 20), then 21..23 were returned and dropped
    assert dropped_behind(engine_at(20, gap_from=17), position=24)


def test_not_sent_back_again_from_the_same_place() -> None:
    # sent back from position 20 with the engine at 16; aiokafka is at 20 again and the engine
    # has not moved: 17..19 could not be fetched (expired), going back again changes nothing
    assert not dropped_behind(engine_at(16, sent_back_from=(20, 16)), position=20)
    # records came since: the engine is at 19, and 20..22 were returned and dropped
    assert dropped_behind(engine_at(19, sent_back_from=(20, 16)), position=23)


@pytest.mark.parametrize(
    ("committed", "expected", "why"),
    [
        (None, 17, "nothing committed: the record after the engine's"),
        (12, 12, "committed behind the engine: 12..16 come again and count as in its checkpoint"),
        (30, 17, "Faust committed past the engine (it acknowledges what it drops): the engine's next"),
    ],
)
def test_the_consumer_goes_back_no_further_than_faust_committed(
    committed: int | None, expected: int, why: str
) -> None:
    assert send_back_to(engine_at(16), committed) == expected, why
