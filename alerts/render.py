"""Notices as people read them: a subject, plain text and HTML. Places and KPI values only,
never a patient.

Unit codes and names come from feeds, and a feed can carry anything: the HL7 escape
\\X0D0A\\ decodes to CR/LF, which the email library refuses in a header (and which would
otherwise let a sender add headers). So every header value goes through `one_line`, and text
that cannot be encoded (lone surrogates) is replaced rather than failing the send."""

from __future__ import annotations

import html
import re
from typing import Any

from alerts.evaluator import fmt

HEADINGS = {
    "fired": "New",
    "escalated": "Escalated (not acknowledged)",
    "reminder": "Still firing, not acknowledged",
    "resolved": "Resolved",
}


# C0 and C1 controls (CR, LF, TAB, NUL, VT, NEL, ...) and the Unicode line/paragraph separators
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def encodable(value: str) -> str:
    """`value` with anything UTF-8 cannot carry (a lone surrogate) replaced by '?'."""
    return value.encode("utf-8", "replace").decode("utf-8")


def one_line(value: object) -> str:
    """A header value or a line of text: control characters become one space."""
    return encodable(_CONTROLS.sub(" ", str(value))).strip()


def where(alert: dict[str, Any]) -> str:
    return one_line(alert.get("unit") or alert.get("department") or alert.get("facility"))


def subject(notice: dict[str, Any]) -> str:
    alerts = notice["alerts"]
    worst = "CRITICAL" if any(a["severity"] == "critical" for a in alerts) else "WARNING"
    if notice["event"] == "resolved":
        worst = "RESOLVED"
    places = sorted({where(a) for a in alerts})
    if len(alerts) == 1:
        a = alerts[0]
        return one_line(f"[{worst}] {places[0]}: {a['kpi_name']} {fmt(a['value'])} {a['unit_of_measure']}")
    return one_line(f"[{worst}] {', '.join(places)}: {len(alerts)} alerts")


def line(a: dict[str, Any]) -> str:
    threshold = f" (threshold {fmt(a['threshold'])})" if a.get("threshold") is not None else ""
    value = f"{fmt(a['value'])} {a['unit_of_measure']}"
    return f"{a['severity'].upper():8s} {where(a)}: {a['kpi_name']} is {value}{threshold}"


def text(notice: dict[str, Any], base_url: str | None = None) -> str:
    lines = [f"{HEADINGS.get(notice['event'], notice['event'])}: {subject(notice)}", ""]
    lines += [line(a) for a in notice["alerts"]]
    lines.append("")
    if notice["event"] != "resolved":
        lines.append("Acknowledge on the scorecard page" + (f": {base_url}/" if base_url else "."))
    recipient = notice.get("recipient") or {}
    if recipient:
        lines.append(f"Sent to {recipient.get('name')} as {recipient.get('role')}.")
    return encodable("\n".join(lines) + "\n")


def to_html(notice: dict[str, Any], base_url: str | None = None) -> str:
    rows = "".join(
        f"<tr><td><b>{html.escape(a['severity'].upper())}</b></td><td>{html.escape(where(a))}</td>"
        f"<td>{html.escape(a['kpi_name'])}</td>"
        f"<td>{html.escape(fmt(a['value']))} {html.escape(a['unit_of_measure'])}</td>"
        f"<td>{html.escape(fmt(a.get('threshold')))}</td></tr>"
        for a in notice["alerts"]
    )
    link = (
        f'<p><a href="{html.escape(base_url)}/">Open the scorecard to acknowledge</a></p>' if base_url else ""
    )
    return encodable(
        f"<html><body><h3>{html.escape(HEADINGS.get(notice['event'], notice['event']))}: "
        f"{html.escape(subject(notice))}</h3><table border=1 cellpadding=4>"
        "<tr><th>severity</th><th>where</th><th>KPI</th><th>value</th><th>threshold</th></tr>"
        f"{rows}</table>{link}</body></html>"
    )
