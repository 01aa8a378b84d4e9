"""Properties the parser, the receiver and MLLP framing keep for any input (hypothesis).

The same targets run much longer under `make fuzz` (atheris, more hypothesis examples, junk
over real sockets); here they run a few hundred examples each, in every test run.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.hl7v2 import messages as m
from tests.fuzz.targets import hl7_message, hl7_parse, mllp_stream

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
fuzz = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

DELIMS = "|^~\\&\r\n"
PIECES = st.sampled_from(
    [
        "MSH",
        "|",
        "^",
        "~",
        "\\",
        "&",
        "\r",
        "\n",
        "PID",
        "PV1",
        "OBR",
        "ORC",
        "OBX",
        "EVN",
        "FT1",
        "PR1",
        "ADT",
        "A01",
        "ORU",
        "R01",
        "R40",
        "ORM",
        "O01",
        "DFT",
        "P03",
        "2.5.1",
        "2.3",
        "20260601120000",
        "+0000",
        "-2400",
        "\\X0D\\",
        "\\E\\",
        "\\F\\",
        "\x0b",
        "\x1c",
        "ICU",
        "4W",
        "S",
        "F",
        "I",
        "E",
        "",
        "1",
    ]
)


@st.composite
def hl7ish(draw: st.DrawFn) -> bytes:
    """Message-shaped text: a real message mutated, or pieces of HL7 glued together."""
    if draw(st.booleans()):
        base = draw(st.sampled_from(SEEDS))
        chars = list(base)
        for _ in range(draw(st.integers(0, 8))):
            op = draw(st.integers(0, 2))
            pos = draw(st.integers(0, max(len(chars) - 1, 0)))
            if op == 0 and chars:
                del chars[pos]
            elif op == 1:
                chars.insert(pos, draw(st.sampled_from(DELIMS + "X9 \x00é")))
            elif chars:
                chars[pos] = draw(st.sampled_from(DELIMS + "ZA0"))
        text = "".join(chars)
    else:
        text = "".join(draw(st.lists(PIECES, max_size=60)))
    encoding = draw(st.sampled_from(["utf-8", "latin-1"]))
    return text.encode(encoding, "replace")


def _seeds() -> list[str]:
    from datetime import UTC, datetime

    now = datetime(2026, 6, 1, 12, tzinfo=UTC)
    visit = m.Visit(
        m.Patient("MRN1", "Roe", "Ann", "19600101", "F"),
        "I",
        m.Location("ICU", "1", "A", "DEMO"),
        "V1",
        "DEMO",
    )
    return [
        m.adt("A01", now, visit, admit=now),
        m.adt("A02", now, visit, prior=m.Location("4W", "2", "B", "DEMO")),
        m.lab_order(now, visit, "O1", ("2823-3", "K"), "S"),
        m.lab_result(
            now,
            visit,
            "O1",
            ("2823-3", "K"),
            "S",
            ordered=now,
            collected=now,
            received=now,
            value="4.1",
            units="mmol/L",
        ),
        m.nurse_call(now, visit, "C1", "start"),
        m.procedure_charge(now, visit, ("36556", "CVC"), 1450.0),
    ]


SEEDS = _seeds()


@fuzz
@given(hl7ish() | st.binary(max_size=400))
def test_any_message_gets_an_ack_with_a_reason_and_a_dead_letter_when_rejected(data: bytes) -> None:
    hl7_message(data)


@fuzz
@given(hl7ish() | st.binary(max_size=400))
def test_the_parser_reads_or_refuses_never_crashes(data: bytes) -> None:
    hl7_parse(data)


FRAMING = st.lists(
    st.sampled_from([b"\x0b", b"\x1c", b"\r", b"\x1c\r", b"MSH|^~\\&|", b"x" * 700, b"junk", b"\n", b""]),
    max_size=40,
).map(b"".join)


@fuzz
@given(st.integers(0, 255), FRAMING | st.binary(max_size=3000))
def test_framing_does_not_depend_on_how_tcp_cuts_the_stream(cut: int, stream: bytes) -> None:
    mllp_stream(bytes([cut]) + stream)
