"""The monthly review (api/review.py) as printable HTML and as PDF, with ReportLab.

ReportLab draws each shortfall's trend chart once (reportlab.graphics): the same Drawing goes
into the PDF as vector graphics and into the HTML as SVG (renderSVG), so the two cannot
disagree; it is a pure-Python wheel (no Cairo/Pango system libraries as WeasyPrint needs, far
lighter than matplotlib). The HTML carries its own print stylesheet, allowed by its hash in the
response's Content-Security-Policy; charts are data: images (img-src data: is allowed).
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
from typing import Any

from reportlab.graphics import renderSVG
from reportlab.graphics.charts.linecharts import HorizontalLineChart
from reportlab.graphics.shapes import Drawing, String
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import Flowable, KeepTogether, Paragraph, SimpleDocTemplate, Table, TableStyle

CSS = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; width: 100%; margin-bottom: 1em; }
th, td { border: 1px solid #bbb; padding: 3px 6px; text-align: left; font-size: 0.9em; }
.ok { color: #2e7d32; } .warning { color: #ef6c00; }
.critical { color: #c62828; } .no_data { color: #757575; }
.shortfall { break-inside: avoid; page-break-inside: avoid; }
@media print { body { margin: 0; } h2 { break-before: auto; break-after: avoid; } }
@page { size: A4; margin: 15mm; }
"""
CSP = (
    "default-src 'none'; style-src 'sha256-"
    + base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
    + "'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""The HTML review's own policy: its inline stylesheet (by hash) and its data: charts, nothing else."""

SECTIONS = (
    "Scorecard",
    "Fell short of target",
    "Alerts fired in the month",
    "Actions opened and closed in the month",
    "Analysis",
)


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def place_name(review: dict[str, Any]) -> str:
    g = review["group"]
    return " / ".join(p for p in (g["facility"], g["department"], g["unit"]) if p)


def trend_chart(item: dict[str, Any]) -> Drawing:
    """The KPI's monthly values (a gap where a month has no data) and its target as a line."""
    drawing = Drawing(170 * mm, 55 * mm)
    chart = HorizontalLineChart()
    chart.x, chart.y, chart.width, chart.height = 15 * mm, 10 * mm, 150 * mm, 38 * mm
    values = [p["value"] for p in item["trend"]]
    data = [tuple(values)]
    if item["target"] is not None:
        data.append(tuple(item["target"] for _ in values))
    chart.data = data
    chart.categoryAxis.categoryNames = [p["month"] for p in item["trend"]]
    chart.categoryAxis.labels.fontSize = 7
    chart.valueAxis.labels.fontSize = 7
    known = [v for series in data for v in series if v is not None]
    chart.valueAxis.valueMin = min(0.0, *known)
    chart.valueAxis.valueMax = max(known) * 1.15 if known and max(known) > 0 else 1.0
    chart.lines[0].strokeColor = colors.HexColor("#1565c0")
    chart.lines[0].strokeWidth = 2
    if len(data) > 1:
        chart.lines[1].strokeColor = colors.HexColor("#c62828")
        chart.lines[1].strokeDashArray = (4, 3)
    drawing.add(chart)
    legend = f"{item['name']} ({item['unit']}): blue value, dashed red target"
    drawing.add(String(15 * mm, 51 * mm, legend, fontSize=8))
    return drawing


def _svg_uri(drawing: Drawing) -> str:
    svg = renderSVG.drawToString(drawing)
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


def _row(item: dict[str, Any]) -> list[str]:
    prev = item["previous"]
    return [
        item["name"],
        fmt(item["value"]) if item["value"] is None else f"{fmt(item['value'])} {item['unit']}",
        fmt(prev["value"]),
        fmt(item["change"]),
        fmt(item["target"]),
        item["status"],
        "yes" if item["short"] else "",
    ]


HEAD = ["KPI", "Month", "Previous month", "Change", "Target", "Status", "Fell short"]
ALERT_HEAD = ["Began (UTC)", "KPI", "Place", "Severity", "State", "Summary"]


def _alert_row(a: dict[str, Any]) -> list[str]:
    place = a["unit"] or a["department"] or a["facility"]
    return [a["started_at"][:16].replace("T", " "), a["kpi"], place, a["severity"], a["state"], a["summary"]]


ACTION_HEAD = ["When (UTC)", "Event", "Action", "KPI", "Place", "Owner", "Status now"]


def _action_rows(review: dict[str, Any]) -> list[list[str]]:
    """Opened and closed in one table, in time order."""
    marks = sorted(review["actions"]["opened"] + review["actions"]["closed"], key=lambda m: m["at"])
    return [
        [
            m["at"][:16].replace("T", " "),
            m["event"],
            m["title"],
            m["kpi"],
            m["unit"] or m["department"] or m["facility"],
            m["owner"],
            m["status"],
        ]
        for m in marks
    ]


def _analysis_lines(a: dict[str, Any]) -> list[str]:
    return [
        f"{a['name']} (version {a['version']}, {a['author']}, {a['at'][:10]})",
        f"What happened: {a['happened']}",
        f"Why: {a['why']}",
        f"What next: {a['next']}",
    ]


def _objectives_line(persp: dict[str, Any]) -> str:
    return "; ".join(f"{o['name']} ({o['status']}): {', '.join(o['kpis'])}" for o in persp["objectives"])


def to_html(review: dict[str, Any]) -> str:
    e = html.escape
    title = f"Monthly review {review['month']}: {place_name(review)}"
    out = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title>",
        f"<style>{CSS}</style></head><body><h1>{e(title)}</h1>",
        f"<p>Compared with {e(review['previous_month'])}; computed from the event log; "
        f"generated {e(review['generated_at'][:19])} UTC.</p>",
        f"<h2>{SECTIONS[0]}</h2>",
    ]
    for persp in review["perspectives"]:
        out.append(
            f"<h3>{e(persp['title'])} <span class='{persp['status']}'>({e(persp['status'])})</span></h3>"
        )
        if persp["objectives"]:
            out.append(f"<p>Objectives: {e(_objectives_line(persp))}</p>")
        out.append("<table><tr>" + "".join(f"<th>{h}</th>" for h in HEAD) + "</tr>")
        for item in persp["kpis"]:
            cells = _row(item)
            cells_html = "".join(
                f"<td class='{item['status']}'>{e(c)}</td>" if i == 5 else f"<td>{e(c)}</td>"
                for i, c in enumerate(cells)
            )
            out.append(f"<tr>{cells_html}</tr>")
        out.append("</table>")
    out.append(f"<h2>{SECTIONS[1]}</h2>")
    if not review["shortfalls"]:
        out.append("<p>No KPI fell short of its target this month.</p>")
    for item in review["shortfalls"]:
        out.append(
            f"<div class='shortfall'><h3>{e(item['name'])}</h3><p>{fmt(item['value'])} {e(item['unit'])} "
            f"against a target of {fmt(item['target'])} ({e(item['status'])}); previous month "
            f"{fmt(item['previous']['value'])}.</p>"
            f"<img alt='{e(item['name'])} by month' src='{_svg_uri(trend_chart(item))}'></div>"
        )
    out.append(f"<h2>{SECTIONS[2]}</h2>")
    if not review["alerts"]:
        out.append("<p>No alert began in the month.</p>")
    else:
        out.append("<table><tr>" + "".join(f"<th>{h}</th>" for h in ALERT_HEAD) + "</tr>")
        out += [
            "<tr>" + "".join(f"<td>{e(c)}</td>" for c in _alert_row(a)) + "</tr>" for a in review["alerts"]
        ]
        out.append("</table>")
    out.append(f"<h2>{SECTIONS[3]}</h2>")
    if rows := _action_rows(review):
        out.append("<table><tr>" + "".join(f"<th>{h}</th>" for h in ACTION_HEAD) + "</tr>")
        out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows]
        out.append("</table>")
    else:
        out.append("<p>No action was opened or closed in the month.</p>")
    out.append(f"<h2>{SECTIONS[4]}</h2>")
    if not review["analyses"]:
        out.append("<p>No analysis was written for the month.</p>")
    for a in review["analyses"]:
        head, *lines = _analysis_lines(a)
        out.append(f"<h3>{e(head)}</h3>" + "".join(f"<p>{e(line)}</p>" for line in lines))
    out.append("</body></html>")
    return "\n".join(out)


def _table(rows: list[list[str]], widths: list[float], style: Any) -> Table:
    cells = [[Paragraph(html.escape(c), style) for c in row] for row in rows]
    table = Table(cells, colWidths=widths, repeatRows=1)
    table.setStyle(
        TableStyle(
            [
                ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eeeeee")),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ]
        )
    )
    return table


def to_pdf(review: dict[str, Any]) -> bytes:
    styles = getSampleStyleSheet()
    small = styles["BodyText"].clone("small", fontSize=7.5, leading=9)
    title = f"Monthly review {review['month']}: {place_name(review)}"
    story: list[Flowable] = [
        Paragraph(html.escape(title), styles["Title"]),
        Paragraph(
            f"Compared with {review['previous_month']}; computed from the event log; generated "
            f"{review['generated_at'][:19]} UTC.",
            styles["BodyText"],
        ),
        Paragraph(SECTIONS[0], styles["Heading1"]),
    ]
    widths = [w * mm for w in (58, 24, 22, 18, 16, 18, 16)]
    for persp in review["perspectives"]:
        story.append(Paragraph(f"{persp['title']} ({persp['status']})", styles["Heading2"]))
        if persp["objectives"]:
            story.append(Paragraph(html.escape("Objectives: " + _objectives_line(persp)), small))
        story.append(_table([HEAD, *(_row(i) for i in persp["kpis"])], widths, small))
    story.append(Paragraph(SECTIONS[1], styles["Heading1"]))
    if not review["shortfalls"]:
        story.append(Paragraph("No KPI fell short of its target this month.", styles["BodyText"]))
    for item in review["shortfalls"]:
        text = (
            f"{item['name']}: {fmt(item['value'])} {item['unit']} against a target of "
            f"{fmt(item['target'])} ({item['status']}); previous month {fmt(item['previous']['value'])}."
        )
        story.append(KeepTogether([Paragraph(html.escape(text), styles["BodyText"]), trend_chart(item)]))
    story.append(Paragraph(SECTIONS[2], styles["Heading1"]))
    if not review["alerts"]:
        story.append(Paragraph("No alert began in the month.", styles["BodyText"]))
    else:
        alert_widths = [w * mm for w in (26, 34, 16, 16, 16, 62)]
        story.append(_table([ALERT_HEAD, *(_alert_row(a) for a in review["alerts"])], alert_widths, small))
    story.append(Paragraph(SECTIONS[3], styles["Heading1"]))
    if rows := _action_rows(review):
        action_widths = [w * mm for w in (24, 22, 46, 30, 16, 22, 20)]
        story.append(_table([ACTION_HEAD, *rows], action_widths, small))
    else:
        story.append(Paragraph("No action was opened or closed in the month.", styles["BodyText"]))
    story.append(Paragraph(SECTIONS[4], styles["Heading1"]))
    if not review["analyses"]:
        story.append(Paragraph("No analysis was written for the month.", styles["BodyText"]))
    for a in review["analyses"]:
        head, *lines = _analysis_lines(a)
        story.append(Paragraph(html.escape(head), styles["Heading3"]))
        story += [Paragraph(html.escape(line), styles["BodyText"]) for line in lines]
    buffer = io.BytesIO()
    doc = SimpleDocTemplate(buffer, pagesize=A4, leftMargin=12 * mm, rightMargin=12 * mm, title=title)
    doc.build(story)
    return buffer.getvalue()
