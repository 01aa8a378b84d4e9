"""Original-mode acknowledgements (MSA-1 AA / AE / AR) with ERR segments.

The ACK swaps sender and receiver (MSH-3/4 <-> MSH-5/6), echoes the inbound control id in
MSA-2 and, for AE/AR, carries an ERR segment: ERR-2 where (ERL:
segment^sequence^field^repetition^component), ERR-3 the HL7 table 0357 code, ERR-4
severity, ERR-8 a message for people. ERR-1 (the pre-2.5 location field) is filled too, for
older receivers.
"""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime
from typing import Any

from connectors.hl7v2.parser import DEFAULT_ENCODING, Encoding, Message
from engine.codes import CONTROLS

ERROR_TEXT = {
    0: "Message accepted",
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    200: "Unsupported message type",
    201: "Unsupported event code",
    202: "Unsupported processing id",
    203: "Unsupported version id",
    207: "Application internal error",
}

_counter = itertools.count(1)
_last_stamp: list[Any] = [0, ""]


def _stamp() -> str:
    """Now as YYYYMMDDHHMMSS, formatted once a second (ACKs go out thousands a second)."""
    now = int(time.time())
    if now != _last_stamp[0]:
        _last_stamp[0] = now
        _last_stamp[1] = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d%H%M%S")
    return str(_last_stamp[1])


def _escape(text: str, enc: Encoding) -> str:
    """Our text in a field: delimiters escaped, control characters (a reason may quote what
    the sender wrote, unescaped) as spaces: a 0x1C or 0x0B in an ACK would end or restart
    its MLLP frame, a CR a segment."""
    if not text.isprintable():
        text = CONTROLS.sub(" ", text)
    esc = enc.escape
    if not esc:  # the sender declared no escape character: drop delimiters from our text
        for ch in (enc.field, enc.component, enc.subcomponent, enc.repetition):
            text = text.replace(ch, " ")
        return text
    out = text.replace(esc, f"{esc}E{esc}")
    for ch, code in (
        (enc.field, "F"),
        (enc.component, "S"),
        (enc.subcomponent, "T"),
        (enc.repetition, "R"),
    ):
        out = out.replace(ch, f"{esc}{code}{esc}")
    return out


def build_ack(
    msg: Message | None,
    code: str,
    *,
    text: str = "",
    error_code: int | None = None,
    segment: str | None = None,
    field: int | None = None,
    component: int | None = None,
    control_id: str | None = None,
    now: datetime | None = None,
    reply_type: str | None = None,
) -> str:
    """An ACK message (segments joined by CR) answering msg (None if MSH was unreadable)."""
    enc = msg.enc if msg is not None else DEFAULT_ENCODING
    f, c = enc.field, enc.component
    # the sender's own MSH-2, as it declared it (our parser accepted it, so theirs will)
    encoding_chars = msg.msh.raw(2) if msg is not None else "^~\\&"
    stamp = now.strftime("%Y%m%d%H%M%S") if now is not None else _stamp()
    if msg is not None:
        msh = msg.msh
        sender = (msh.raw(5), msh.raw(6))
        receiver = (msh.raw(3), msh.raw(4))
        # MSH-10 and MSH-9.2 echoed as sent (escapes kept): unescaped, a \X1C\ would end our frame
        inbound_id = msh.get(10, unescaped=False)
        processing = msh.raw(11) or "P"
        version = msh.raw(12) or "2.5"
        trigger = msh.get(9, 2, unescaped=False)
    else:
        sender = ("CARESCORE", "")
        receiver = ("", "")
        inbound_id = control_id or ""
        processing, version, trigger = "P", "2.5", ""
    ack_id = f"ACK{stamp}{next(_counter):06d}"
    msh_fields = [
        "MSH",
        encoding_chars,
        sender[0] or "CARESCORE",
        sender[1],
        receiver[0],
        receiver[1],
        stamp,
        "",
        reply_type.replace("^", c) if reply_type else (f"ACK{c}{trigger}{c}ACK" if trigger else "ACK"),
        ack_id,
        processing,
        version,
    ]
    segments = [f.join(msh_fields)]
    msa = ["MSA", code, inbound_id]
    if text:
        msa.append(_escape(text[:80], enc))
    segments.append(f.join(msa))
    if code != "AA":
        err_code = error_code if error_code is not None else 207
        location = c.join(  # ERL: segment^sequence^field^field repetition^component
            [
                segment or "",
                "1" if segment else "",
                str(field) if field else "",
                "1" if field and component else "",
                str(component) if component else "",
            ]
        ).rstrip(c)
        err1 = c.join([segment or "", "1" if segment else "", str(field) if field else ""]).rstrip(c)
        err = [
            "ERR",
            f"{err1}{c}{err_code}{enc.subcomponent}{_escape(ERROR_TEXT.get(err_code, 'Error'), enc)}"
            f"{enc.subcomponent}HL70357"
            if err1
            else "",
            location,
            f"{err_code}{c}{_escape(ERROR_TEXT.get(err_code, 'Error'), enc)}{c}HL70357",
            "E",
            "",
            "",
            "",
            _escape(text, enc),
        ]
        segments.append(f.join(err))
    return "\r".join(segments) + "\r"
