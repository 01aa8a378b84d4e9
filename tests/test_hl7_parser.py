from __future__ import annotations

import pytest

from connectors.hl7v2.dtm import parse_dtm
from connectors.hl7v2.parser import HL7ParseError, is_batch, parse, split_batch, unescape

ADT = (
    "MSH|^~\\&|EPIC|GHH|CARESCORE|GHH|20260105083000+0100||ADT^A01^ADT_A01|CTRL1|P|2.5.1\r"
    "EVN|A01|20260105082900+0100\r"
    "PID|1||MRN1^^^GHH^MR~SSN9^^^USSSA^SS||Doe^Jane\r"
    "PV1|1|I|4W^401^B^GHH||||||||||||||||V100^^^GHH^VN\r"
)


def test_fields_follow_hl7_numbering() -> None:
    msg = parse(ADT)
    assert msg.msh.raw(1) == "|"
    assert msg.msh.raw(2) == "^~\\&"
    assert msg.message_type == "ADT" and msg.trigger == "A01"
    assert msg.control_id == "CTRL1"
    assert msg.version == "2.5.1"
    pv1 = msg.first("PV1")
    assert pv1 is not None
    assert pv1.get(3, 1) == "4W" and pv1.get(3, 3) == "B" and pv1.get(3, 4) == "GHH"
    assert pv1.get(19, 1) == "V100"


def test_repetitions_components_and_absent_values() -> None:
    pid = parse(ADT).first("PID")
    assert pid is not None
    assert pid.get(3, 1, rep=0) == "MRN1"
    assert pid.get(3, 1, rep=1) == "SSN9"
    assert pid.get(3, 1, rep=2) == ""
    assert pid.get(5, 2) == "Jane"
    assert pid.get(5, 9) == ""
    assert pid.get(40) == ""


def test_other_encoding_characters_are_honoured() -> None:
    text = ADT.replace("|", "#").replace("^", "$").replace("MSH#$~\\&", "MSH#$~\\&")
    msg = parse(text)
    pv1 = msg.first("PV1")
    assert pv1 is not None and pv1.get(3, 1) == "4W" and pv1.get(3, 3) == "B"
    assert msg.trigger == "A01"


def test_escapes_are_resolved() -> None:
    msg = parse(ADT.replace("Doe^Jane", "O\\S\\Brien\\F\\x\\E\\y\\T\\z\\R\\w^Jane"))
    pid = msg.first("PID")
    assert pid is not None
    assert pid.get(5, 1) == "O^Brien|x\\y&z~w"
    enc = msg.enc
    assert unescape("caf\\XE9\\", enc) == "café"
    assert unescape("line\\.br\\two", enc) == "line\ntwo"
    assert unescape("lone\\", enc) == "lone\\"


def test_line_endings_and_bom_are_tolerated() -> None:
    msg = parse("\ufeff" + ADT.replace("\r", "\r\n"))
    assert [s.name for s in msg.segments] == ["MSH", "EVN", "PID", "PV1"]


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("", None),
        ("PID|1||x", None),
        ("MSH|", None),
        ("MSHA^~\\&|x", 1),
        ("MSH||x|y", 2),
        ("MSH|^~\\&|A|B|C|D|20260101||", 9),
    ],
)
def test_unreadable_headers_raise(text: str, field: int | None) -> None:
    with pytest.raises(HL7ParseError) as err:
        parse(text)
    assert err.value.field == field


def test_batches_split_into_messages() -> None:
    batch = "FHS|^~\\&\rBHS|^~\\&\r" + ADT + ADT.replace("CTRL1", "CTRL2") + "BTS|2\rFTS|1\r"
    assert is_batch(batch)
    parts = split_batch(batch)
    assert [parse(p).control_id for p in parts] == ["CTRL1", "CTRL2"]


def test_dtm_offsets_precision_and_defaults() -> None:
    from datetime import UTC, datetime, timedelta, timezone
    from zoneinfo import ZoneInfo

    assert parse_dtm("20260105083000+0100") == datetime(2026, 1, 5, 7, 30, tzinfo=UTC)
    assert parse_dtm("202601050830") == datetime(2026, 1, 5, 8, 30, tzinfo=UTC)
    assert parse_dtm("2026") == datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_dtm("20260105083000.25-0500").astimezone(timezone(timedelta(hours=-5))).microsecond == 250000
    local = parse_dtm("20260705120000", ZoneInfo("Europe/Berlin"))
    assert local.astimezone(UTC).hour == 10
    for bad in ("2026-01-05", "20260230", "20260105+01", "February 4 2024"):
        with pytest.raises(ValueError):
            parse_dtm(bad)
