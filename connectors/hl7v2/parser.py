"""A lean HL7 v2 parser for the fields we map.

Library parsers build a full object tree for every message (python-hl7 ~4,000 msg/s,
hl7apy ~200 msg/s here); we need a handful of fields at tens of thousands of messages a
second. This parser splits segments and fields once, and components, repetitions,
subcomponents and escapes only when a field is read. It honours the encoding characters
declared in MSH-1/MSH-2, so messages using other delimiters parse the same.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SEGMENT_SPLIT = re.compile(r"\r\n|\r|\n")
_HEX = re.compile(r"^[0-9A-Fa-f]+$")


class HL7ParseError(ValueError):
    """The message cannot be read at all (AR): no usable MSH or encoding characters."""

    def __init__(self, reason: str, segment: str = "MSH", field: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.segment = segment
        self.field = field


@dataclass(frozen=True, slots=True)
class Encoding:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str | None = None


DEFAULT_ENCODING = Encoding()


def unescape(value: str, enc: Encoding) -> str:
    """Resolve HL7 escape sequences (\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\Xhh..\\ \\.br\\)."""
    esc = enc.escape
    if not esc or esc not in value:
        return value
    out: list[str] = []
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if ch != esc:
            out.append(ch)
            i += 1
            continue
        end = value.find(esc, i + 1)
        if end < 0:  # a lone escape character: keep it as text
            out.append(value[i:])
            break
        code = value[i + 1 : end]
        if code == "F":
            out.append(enc.field)
        elif code == "S":
            out.append(enc.component)
        elif code == "T":
            out.append(enc.subcomponent)
        elif code == "R":
            out.append(enc.repetition)
        elif code == "E":
            out.append(esc)
        elif code == "P" and enc.truncation:
            out.append(enc.truncation)
        elif code.startswith("X") and len(code) > 1 and len(code) % 2 == 1 and _HEX.match(code[1:]):
            try:
                out.append(bytes.fromhex(code[1:]).decode("latin-1"))
            except ValueError:
                out.append(value[i : end + 1])
        elif code in (".br", ".sp"):
            out.append("\n")
        elif code in ("H", "N") or code.startswith((".", "C", "M", "Z")):
            pass  # highlighting, formatting and charset switches carry no data for us
        else:
            out.append(value[i : end + 1])
        i = end + 1
    return "".join(out)


class Segment:
    """One segment; field(n) follows HL7 numbering (MSH-1 is the field separator)."""

    __slots__ = ("enc", "fields", "name")

    def __init__(self, name: str, fields: list[str], enc: Encoding):
        self.name = name
        self.fields = fields
        self.enc = enc

    def raw(self, n: int) -> str:
        fields = self.fields
        return fields[n] if n < len(fields) else ""

    def repetitions(self, n: int) -> list[str]:
        raw = self.raw(n)
        if self.name == "MSH" and n in (1, 2):
            return [raw]
        return raw.split(self.enc.repetition) if raw else []

    def get(self, n: int, comp: int = 1, sub: int = 1, rep: int = 0) -> str:
        """Field n, component comp, subcomponent sub of repetition rep; '' when absent."""
        raw = self.raw(n)
        if not raw:
            return ""
        enc = self.enc
        if self.name == "MSH" and n in (1, 2):
            return raw
        if enc.repetition in raw:
            reps = raw.split(enc.repetition)
            if rep >= len(reps):
                return ""
            raw = reps[rep]
        elif rep > 0:
            return ""
        if enc.component in raw:
            comps = raw.split(enc.component)
            raw = comps[comp - 1] if comp <= len(comps) else ""
        elif comp > 1:
            return ""
        if enc.subcomponent in raw:
            subs = raw.split(enc.subcomponent)
            raw = subs[sub - 1] if sub <= len(subs) else ""
        elif sub > 1:
            return ""
        if enc.escape and enc.escape in raw:
            return unescape(raw, enc)
        return raw

    def __repr__(self) -> str:
        return f"Segment({self.enc.field.join(self.fields)!r})"


class Message:
    """A parsed message: segments in order, plus quick access by segment name."""

    __slots__ = ("enc", "raw", "segments")

    def __init__(self, raw: str, segments: list[Segment], enc: Encoding):
        self.raw = raw
        self.segments = segments
        self.enc = enc

    @property
    def msh(self) -> Segment:
        return self.segments[0]

    def first(self, name: str) -> Segment | None:
        for seg in self.segments:
            if seg.name == name:
                return seg
        return None

    def all(self, name: str) -> list[Segment]:
        return [seg for seg in self.segments if seg.name == name]

    def after(self, start: Segment, name: str, stop: tuple[str, ...] = ()) -> Segment | None:
        """The first `name` segment after `start`, before any segment named in stop."""
        seen = False
        for seg in self.segments:
            if seg is start:
                seen = True
                continue
            if not seen:
                continue
            if seg.name == name:
                return seg
            if seg.name in stop:
                return None
        return None

    # MSH conveniences
    @property
    def message_type(self) -> str:
        return self.msh.get(9, 1)

    @property
    def trigger(self) -> str:
        return self.msh.get(9, 2)

    @property
    def control_id(self) -> str:
        return self.msh.get(10)

    @property
    def version(self) -> str:
        return self.msh.get(12, 1)

    @property
    def sending_facility(self) -> str:
        return self.msh.get(4, 1)


def parse(raw: str) -> Message:
    """Parse one message; raises HL7ParseError when there is no readable MSH."""
    text = raw.lstrip("\ufeff\r\n\t \x0b")
    if not text.startswith("MSH"):
        raise HL7ParseError("message does not start with an MSH segment")
    if len(text) < 8:
        raise HL7ParseError("MSH segment is too short to hold its encoding characters")
    fsep = text[3]
    if fsep.isalnum() or fsep in "\r\n ":
        raise HL7ParseError(f"MSH-1 field separator {fsep!r} is not a delimiter", field=1)
    end_enc = text.find(fsep, 4)
    if end_enc < 0:
        end_enc = len(text)
    enc_chars = text[4:end_enc]
    if len(enc_chars) < 2 or len(enc_chars) > 5:
        raise HL7ParseError(
            f"MSH-2 encoding characters {enc_chars!r} must be 4 characters such as ^~\\&", field=2
        )
    padded = enc_chars + "\x00" * (5 - len(enc_chars))
    comp, rep, esc, sub, trunc = (padded[i] for i in range(5))
    if len(set(enc_chars) | {fsep}) != len(enc_chars) + 1:
        raise HL7ParseError("MSH-1/MSH-2 delimiters must all differ", field=2)
    enc = Encoding(
        field=fsep,
        component=comp,
        repetition=rep if rep != "\x00" else "~",
        escape=esc if esc != "\x00" else "",
        subcomponent=sub if sub != "\x00" else "&",
        truncation=trunc if trunc != "\x00" else None,
    )
    segments: list[Segment] = []
    for line in SEGMENT_SPLIT.split(text):
        if not line.strip():
            continue
        parts = line.split(fsep)
        name = parts[0].strip()
        if name == "MSH" and not segments:
            fields = ["MSH", fsep, *parts[1:]]
            # parts[1] is MSH-2 (encoding characters); shift so field(n) is MSH-n.
            segments.append(Segment("MSH", fields, enc))
            continue
        segments.append(Segment(name, parts, enc))
    if not segments[0].get(9, 1):
        raise HL7ParseError("MSH-9 message type is empty", field=9)
    return Message(text, segments, enc)


BATCH_HEADERS = ("FHS", "BHS")


def is_batch(raw: str) -> bool:
    return raw.lstrip("\ufeff\r\n\t \x0b").startswith(BATCH_HEADERS)


def split_batch(raw: str) -> list[str]:
    """The messages of an FHS/BHS batch, each starting at its MSH; trailers dropped."""
    messages: list[list[str]] = []
    for line in SEGMENT_SPLIT.split(raw.lstrip("\ufeff")):
        name = line[:3]
        if name in ("FHS", "BHS", "BTS", "FTS") or not line.strip():
            continue
        if name == "MSH" or not messages:
            messages.append([])
        messages[-1].append(line)
    return ["\r".join(m) + "\r" for m in messages]
