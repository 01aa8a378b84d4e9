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


def _clean(part: str, enc: Encoding) -> str:
    part = part.partition(enc.subcomponent)[0]
    if enc.escape and enc.escape in part:
        part = unescape(part, enc)
    return part


class Segment:
    """One segment; field(n) follows HL7 numbering (MSH-1 is the field separator).

    Fields are split on first use: most segments of a real message are never read."""

    __slots__ = ("_fields", "enc", "line", "name")

    def __init__(self, name: str, line: str, enc: Encoding, fields: list[str] | None = None):
        self.name = name
        self.line = line
        self.enc = enc
        self._fields = fields

    @property
    def fields(self) -> list[str]:
        fields = self._fields
        if fields is None:
            fields = self._fields = self.line.split(self.enc.field)
        return fields

    def raw(self, n: int) -> str:
        fields = self.fields
        return fields[n] if n < len(fields) else ""

    def repetitions(self, n: int) -> list[str]:
        raw = self.raw(n)
        if self.name == "MSH" and n in (1, 2):
            return [raw]
        return raw.split(self.enc.repetition) if raw else []

    def get(self, n: int, comp: int = 1, sub: int = 1, rep: int = 0, unescaped: bool = True) -> str:
        """Field n, component comp, subcomponent sub of repetition rep; '' when absent.
        Escape sequences are resolved unless unescaped=False."""
        fields = self._fields
        if fields is None:
            fields = self._fields = self.line.split(self.enc.field)
        if n >= len(fields):
            return ""
        raw = fields[n]
        if not raw:
            return ""
        if n < 3 and self.name == "MSH":
            return raw
        enc = self.enc
        if rep == 0 and comp == 1 and sub == 1:  # the common case, in three C calls
            raw = raw.partition(enc.repetition)[0].partition(enc.component)[0].partition(enc.subcomponent)[0]
            if unescaped and enc.escape and enc.escape in raw:
                return unescape(raw, enc)
            return raw
        if rep == 0:
            raw = raw.partition(enc.repetition)[0]
        else:
            reps = raw.split(enc.repetition)
            if rep >= len(reps):
                return ""
            raw = reps[rep]
        if comp == 1:
            raw = raw.partition(enc.component)[0]
        else:
            comps = raw.split(enc.component)
            if comp > len(comps):
                return ""
            raw = comps[comp - 1]
        if sub == 1:
            raw = raw.partition(enc.subcomponent)[0]
        else:
            subs = raw.split(enc.subcomponent)
            if sub > len(subs):
                return ""
            raw = subs[sub - 1]
        if unescaped and enc.escape and enc.escape in raw:
            return unescape(raw, enc)
        return raw

    def first(self, n: int) -> str:
        """get(n): field n's first component of its first repetition, unescaped. The call
        mapping makes most, kept to the fewest steps."""
        fields = self._fields
        if fields is None:
            fields = self._fields = self.line.split(self.enc.field)
        try:
            raw = fields[n]
        except IndexError:
            return ""
        if not raw:
            return raw
        enc = self.enc
        raw = raw.partition(enc.repetition)[0].partition(enc.component)[0].partition(enc.subcomponent)[0]
        if enc.escape and enc.escape in raw:
            return unescape(raw, enc)
        return raw

    def components(self, n: int, size: int) -> list[str]:
        """The first `size` components of field n (first repetition, first subcomponents),
        '' where absent: one split for code that reads several parts of a field."""
        raw = self.get_raw_first(n)
        if not raw:
            return [""] * size
        enc = self.enc
        parts = raw.split(enc.component, size)[:size]
        if len(parts) < size:
            parts += [""] * (size - len(parts))
        if enc.subcomponent in raw or (enc.escape and enc.escape in raw):
            parts = [_clean(p, enc) for p in parts]
        return parts

    def get_raw_first(self, n: int) -> str:
        fields = self._fields
        if fields is None:
            fields = self._fields = self.line.split(self.enc.field)
        if n >= len(fields):
            return ""
        return fields[n].partition(self.enc.repetition)[0]

    def __repr__(self) -> str:
        return f"Segment({self.line!r})"


class HeaderSegment(Segment):
    """MSH: fields 1 and 2 are the delimiters themselves, read as they are."""

    __slots__ = ()

    def first(self, n: int) -> str:
        if n < 3:
            return self.raw(n)
        return super().first(n)


class Message:
    """A parsed message: segments in order, plus quick access by segment name."""

    __slots__ = ("_control_id", "_facility", "enc", "key", "message_type", "raw", "segments", "trigger")

    def __init__(self, raw: str, segments: list[Segment], enc: Encoding):
        self.raw = raw
        self.segments = segments
        self.enc = enc
        self.message_type, self.trigger = segments[0].components(9, 2)
        self._control_id: str | None = None
        self._facility: str | None = None
        self.key: str | None = None  # its idempotency key, once computed (connectors/hl7v2/base.py)

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
    def control_id(self) -> str:
        found = self._control_id
        if found is None:
            found = self._control_id = self.msh.first(10)
        return found

    @property
    def version(self) -> str:
        return self.msh.first(12)

    @property
    def sending_facility(self) -> str:
        found = self._facility
        if found is None:
            found = self._facility = self.msh.first(4)
        return found


def _encoding(fsep: str, enc_chars: str) -> Encoding:
    """Validate MSH-1/MSH-2 once per distinct pair; the answer is cached."""
    if fsep.isalnum() or fsep in "\r\n ":
        raise HL7ParseError(f"MSH-1 field separator {fsep!r} is not a delimiter", field=1)
    if len(enc_chars) < 2 or len(enc_chars) > 5:
        raise HL7ParseError(
            f"MSH-2 encoding characters {enc_chars!r} must be 4 characters such as ^~\\&", field=2
        )
    if any(ch.isalnum() or ch in "\r\n " for ch in enc_chars):
        raise HL7ParseError(
            f"MSH-2 encoding characters {enc_chars!r} must not be letters, digits or blanks", field=2
        )
    if len(set(enc_chars) | {fsep}) != len(enc_chars) + 1:
        raise HL7ParseError("MSH-1/MSH-2 delimiters must all differ", field=2)
    padded = enc_chars + "\x00" * (5 - len(enc_chars))
    comp, rep, esc, sub, trunc = (padded[i] for i in range(5))
    enc = Encoding(
        field=fsep,
        component=comp,
        repetition=rep if rep != "\x00" else "~",
        escape=esc if esc != "\x00" else "",
        subcomponent=sub if sub != "\x00" else "&",
        truncation=trunc if trunc != "\x00" else None,
    )
    used = [enc.field, enc.component, enc.repetition, enc.subcomponent] + ([enc.escape] if enc.escape else [])
    if len(set(used)) != len(used):  # a default filled in for a missing one clashes
        raise HL7ParseError(
            f"MSH-2 encoding characters {enc_chars!r} are incomplete and ambiguous; send all four (^~\\&)",
            field=2,
        )
    return enc


def parse(raw: str) -> Message:
    """Parse one message; raises HL7ParseError when there is no readable MSH."""
    text = raw if raw.startswith("MSH") else raw.lstrip("\ufeff\r\n\t \x0b")
    if not text.startswith("MSH"):
        raise HL7ParseError("message does not start with an MSH segment")
    if len(text) < 8:
        raise HL7ParseError("MSH segment is too short to hold its encoding characters")
    fsep = text[3]
    end_enc = text.find(fsep, 4)
    enc_chars = text[4:end_enc] if end_enc >= 0 else text[4:]
    enc = _ENCODINGS.get((fsep, enc_chars))
    if enc is None:
        enc = _ENCODINGS[(fsep, enc_chars)] = _encoding(fsep, enc_chars)
    segments: list[Segment] = []
    body = text.replace("\r\n", "\r").replace("\n", "\r") if "\n" in text else text
    lines = body.split("\r")
    lines[0] = lines[0].rstrip()
    parts = lines[0].split(fsep)
    # MSH-1 is the separator itself: shift so that field(n) is MSH-n.
    segments.append(HeaderSegment("MSH", lines[0], enc, ["MSH", fsep, *parts[1:]]))
    for line in lines[1:]:
        line = line.rstrip()  # trailing blanks are transport artefacts (python-hl7 drops them too)
        if not line:
            continue
        name = line[:3] if line[3:4] in (fsep, "") else line.split(fsep, 1)[0].strip()
        segments.append(Segment(name, line, enc))
    message = Message(text, segments, enc)
    if not message.message_type:
        raise HL7ParseError("MSH-9 message type is empty", field=9)
    return message


_ENCODINGS: dict[tuple[str, str], Encoding] = {}

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
