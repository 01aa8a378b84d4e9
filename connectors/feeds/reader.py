"""Feed files to rows, each with the line it starts on: CSV (header on line 1), a JSON
array of objects, or NDJSON (one object per line).

A file that cannot be read at all (not UTF-8, not CSV/JSON, unknown or missing columns,
nested too deeply) raises FeedFileError; a single bad row does not stop the others. Reading
is linear in the file's size: uploads of tens of megabytes are read on a worker thread
(connectors/feeds/ingest.py), and a quadratic step there would hold it for hours.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

Format = Literal["csv", "json", "ndjson"]
FORMATS: dict[str, Format] = {
    "text/csv": "csv",
    "application/csv": "csv",
    "application/json": "json",
    "application/x-ndjson": "ndjson",
    "application/ndjson": "ndjson",
    "application/jsonl": "ndjson",
}
EXTENSIONS: dict[str, Format] = {".csv": "csv", ".json": "json", ".ndjson": "ndjson", ".jsonl": "ndjson"}
# Python's JSON decoder recurses once per level; past the interpreter's recursion limit it raises
# RecursionError, which is a fact about the input here, not a bug: it becomes a file or row error.
NESTED = "nested too deeply (a row is one object of plain values)"


class FeedFileError(ValueError):
    """The file as a whole is unusable; nothing in it was stored."""


@dataclass(frozen=True)
class RawRow:
    line: int
    values: dict[str, Any] | None  # None: the row itself could not be read
    raw: str
    error: str | None = None


def detect(content_type: str | None, filename: str | None, body: bytes) -> Format:
    """The format from the Content-Type, else the file extension, else the first byte."""
    if content_type:
        found = FORMATS.get(content_type.split(";")[0].strip().lower())
        if found:
            return found
    if filename:
        for ext, fmt in EXTENSIONS.items():
            if filename.lower().endswith(ext):
                return fmt
    head = _first_byte(body)
    if head == b"[":
        return "json"
    if head == b"{":
        return "ndjson"
    return "csv"


def _first_byte(body: bytes, step: int = 4096) -> bytes:
    """The first non-blank byte; looks at the head only (body.lstrip() would copy 50 MB)."""
    for start in range(0, len(body), step):
        head = body[start : start + step].lstrip()[:1]
        if head:
            return head
    return b""


def read_rows(body: bytes, fmt: Format, known: set[str], required: set[str]) -> Iterator[RawRow]:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FeedFileError(f"not UTF-8 (byte {exc.start}); export the file as UTF-8") from exc
    if fmt == "csv":
        return _csv_rows(text, known, required)
    if fmt == "ndjson":
        return _ndjson_rows(text)
    return _json_rows(text)


def _csv_rows(text: str, known: set[str], required: set[str]) -> Iterator[RawRow]:
    lines = text.splitlines(keepends=True)
    reader = csv.reader(lines)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise FeedFileError("empty file: a CSV feed needs a header line") from None
    except csv.Error as exc:
        raise FeedFileError(f"line 1: {exc}") from exc
    unknown = [h for h in header if h and h not in known]
    if unknown:
        raise FeedFileError(
            f"line 1: unknown column(s) {', '.join(unknown)}; the columns are {', '.join(sorted(known))}"
        )
    missing = sorted(required - set(header))
    if missing:
        raise FeedFileError(f"line 1: missing required column(s) {', '.join(missing)}")
    if len(set(header)) != len(header):
        raise FeedFileError("line 1: a column name appears twice")
    return _csv_body(reader, lines, header)


def _csv_body(reader: Any, lines: list[str], header: list[str]) -> Iterator[RawRow]:
    head_line = lines[0].rstrip("\r\n")
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield RawRow(start, None, "".join(lines[start - 1 : reader.line_num]), f"unreadable CSV: {exc}")
            continue
        raw = head_line + "\n" + "".join(lines[start - 1 : reader.line_num])
        if not any(c.strip() for c in cells):
            continue  # blank line
        if len(cells) != len(header):
            yield RawRow(start, None, raw, f"{len(cells)} cells where the header has {len(header)} columns")
            continue
        yield RawRow(start, {h: c for h, c in zip(header, cells, strict=True) if c.strip() != ""}, raw)


def _ndjson_rows(text: str) -> Iterator[RawRow]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        yield _object_row(number, line)


def _object_row(number: int, raw: str) -> RawRow:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        return RawRow(number, None, raw, f"not JSON: {exc.msg}")
    except RecursionError:
        return RawRow(number, None, raw, f"not JSON: {NESTED}")
    if not isinstance(value, dict):
        return RawRow(number, None, raw, "each row must be a JSON object")
    return RawRow(number, {k: v for k, v in value.items() if v is not None and v != ""}, raw)


def _json_rows(text: str) -> Iterator[RawRow]:
    """A JSON array, read element by element so each row knows its line."""
    decoder = json.JSONDecoder()
    pos = _skip(text, 0)
    if text[pos : pos + 1] != "[":
        raise FeedFileError("a JSON feed is an array of row objects (or send NDJSON, one object per line)")
    try:  # the whole file is checked before any row is stored; objects are dropped as they are read
        json.loads(text, object_pairs_hook=_discard)
    except json.JSONDecodeError as exc:
        raise FeedFileError(f"line {exc.lineno}: not valid JSON: {exc.msg}") from exc
    except RecursionError:
        raise FeedFileError(f"not valid JSON: {NESTED}") from None
    return _elements(text, decoder, _skip(text, pos + 1))


def _discard(pairs: list[tuple[str, Any]]) -> None:
    """The validity check keeps no row: a 50 MB array would otherwise be built twice."""
    return None


def _elements(text: str, decoder: json.JSONDecoder, pos: int) -> Iterator[RawRow]:
    """Each element with the line it starts on; lines are counted from the previous element
    on, not from the start of the text each time (that made reading quadratic)."""
    line, counted = 1, 0
    while pos < len(text) and text[pos] != "]":
        line += text.count("\n", counted, pos)
        counted = pos
        try:
            value, end = decoder.raw_decode(text, pos)
        except RecursionError:  # the check above passed at a shallower stack: keep the rest whole
            yield RawRow(line, None, text[pos:], f"{NESTED}; the rows from here on were not read")
            return
        raw = text[pos:end]
        if isinstance(value, dict):
            yield RawRow(line, {k: v for k, v in value.items() if v is not None and v != ""}, raw)
        else:
            yield RawRow(line, None, raw, "each row must be a JSON object")
        pos = _skip(text, end)
        if text[pos : pos + 1] == ",":
            pos = _skip(text, pos + 1)


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos
