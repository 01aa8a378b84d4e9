"""Codes as they may be used: identifiers, unit and facility codes reach the engine, metric
labels, REST answers, email subjects and log lines, where a line break forges a line or a
header. One rule for every connector."""

from __future__ import annotations

import re

CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
"""C0, DEL, C1 and the Unicode line/paragraph separators."""


def clean_code(value: str) -> str:
    """Runs of control characters (sent raw, or decoded from an escape such as HL7's \\X0A\\)
    become one space, ends trimmed."""
    if value.isprintable():  # nearly always: one C call
        return value
    return CONTROLS.sub(" ", value).strip()
