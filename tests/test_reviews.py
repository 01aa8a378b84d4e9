"""Issue 16 item 6, the monthly review, through real MLLP and real HTTP, as JSON, HTML and PDF.

Two months of 4W inpatient stays go in over the MLLP listener as ADT A01/A03 with their past
event times (the site's time zone is UTC here); then slow STAT labs fire a real lab_tat_stat
alert on the ICU now. The review is read over HTTP; the PDF is rendered to PNG with pdfium and
its text read with pypdf.

Hand-worked values (unit 4W, 30 staffed beds, every admission and discharge at 08:00):
- average_length_of_stay (mean midnights per discharge, min_samples 5; target 5, warning 6,
  critical 8, lower is better):
  month M:   stays of 4, 10, 6, 8, 7 midnights -> 35 / 5 = 7.0 days: warning (7 >= 6), and it
             fell short of the target (7 > 5)
  month M-1: stays of 3, 4, 5, 4, 4 midnights -> 20 / 5 = 4.0 days: ok; change +3.0
- bed_occupancy (occupied bed-time / staffed bed-time x 100; target 85, lower is better):
  month M:   35 patient-days = 840 bed-hours over 30 beds x 24 h x days(M)
             (October: 840 / 22,320 x 100 = 3.763 %): ok, not short of its target
  month M-1: 20 patient-days = 480 bed-hours over 30 x 24 x days(M-1)
             (September: 480 / 21,600 x 100 = 2.222 %)
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import io
import os
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pypdfium2
import pytest
from pypdf import PdfReader

from carescore.serve import Service
from connectors.hl7v2.client import MLLPClient, ack_code
from engine.config import Settings
from tests.test_api_auth import fire_stat_alerts
from tests.test_e2e_embedded import wait_for

NOW = datetime.now(UTC)
_index = NOW.year * 12 + NOW.month - 1 - 2  # two months back: closed, and well inside max_age
MONTH = datetime(_index // 12, _index % 12 + 1, 1, tzinfo=UTC)
_prev = _index - 1
PREVIOUS = datetime(_prev // 12, _prev % 12 + 1, 1, tzinfo=UTC)
M, M_PREV = MONTH.strftime("%Y-%m"), PREVIOUS.strftime("%Y-%m")

# (visit, admitted day, discharged day) of the month; midnights = discharge day - admission day
STAYS_MONTH = [("V1", 16, 20), ("V2", 11, 21), ("V3", 16, 22), ("V4", 15, 23), ("V5", 17, 24)]
STAYS_PREVIOUS = [("S1", 2, 5), ("S2", 3, 7), ("S3", 4, 9), ("S4", 6, 10), ("S5", 8, 12)]


def adt(trigger: str, when: datetime, visit: str, unit: str = "4W") -> str:
    """ADT as an interface engine sends it: EVN-2 the recorded time, PV1-2 class I (inpatient),
    PV1-3 the point of care, PV1-19 the visit number."""
    stamp = when.strftime("%Y%m%d%H%M%S")
    return "\r".join(
        [
            f"MSH|^~\\&|EMR|DEMO|CARESCORE|DEMO|{stamp}||ADT^{trigger}^ADT_A01|{visit}-{trigger}|P|2.5.1",
            f"EVN|{trigger}|{stamp}",
            f"PID|1||MRN-{visit}^^^DEMO^MR||Doe^Jane",
            f"PV1|1|I|{unit}^1^{visit[-1]}^DEMO||||||||||||||||{visit}^^^DEMO^VN",
        ]
    )


def messages() -> list[str]:
    """Both months' stays, in event-time order."""
    timed: list[tuple[datetime, str]] = []
    for first, stays in ((PREVIOUS, STAYS_PREVIOUS), (MONTH, STAYS_MONTH)):
        for visit, admitted, discharged in stays:
            a = first.replace(day=admitted, hour=8)
            d = first.replace(day=discharged, hour=8)
            timed += [(a, adt("A01", a, visit)), (d, adt("A03", d, visit))]
    return [text for _, text in sorted(timed, key=lambda t: t[0])]


@pytest.fixture
async def hospital(
    settings_for: Callable[..., Settings], kpi_dir: Callable[..., Path]
) -> AsyncIterator[tuple[Service, httpx.AsyncClient, dict[str, str]]]:
    """carescore with the packaged KPIs (lab_tat_stat alerting after 1 s on 3 results, so an
    alert fires within the test), fed both months over MLLP and an ICU alert now."""
    svc = Service(settings_for(kpi_defs=kpi_dir({"lab_tat_stat": {"for": "1s", "min_samples": 3}})))
    await svc.start()
    try:
        async with MLLPClient("127.0.0.1", svc.mllp.port) as client:
            for text in messages():
                assert ack_code(await client.send(text)) == "AA"
        alerts = await fire_stat_alerts(svc, "ICU")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{svc.api_port}", timeout=60) as api:
            yield svc, api, alerts
    finally:
        await svc.stop()


def kpi_of(review: dict[str, Any], kpi_id: str) -> dict[str, Any]:
    return next(k for p in review["perspectives"] for k in p["kpis"] if k["id"] == kpi_id)


async def review_json(api: httpx.AsyncClient, month: str, **place: str) -> dict[str, Any]:
    answer = await api.get(f"/api/v1/reviews/{month}", params=place)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    return answer.json()  # type: ignore[no-any-return]


async def test_review_json_has_the_months_values_by_hand(
    hospital: tuple[Service, httpx.AsyncClient, dict[str, str]],
) -> None:
    _, api, _ = hospital

    async def fed() -> dict[str, Any] | None:  # the event log has every stay of both months
        review = await review_json(api, M, unit="4W")
        los = kpi_of(review, "average_length_of_stay")
        return review if los["n"] == 5 and los["previous"]["value"] is not None else None

    review = await wait_for(fed, 30)
    assert review["group"] == {"facility": "DEMO", "department": "medicine", "unit": "4W"}
    assert (review["month"], review["previous_month"], review["level"]) == (M, M_PREV, "unit")
    los = kpi_of(review, "average_length_of_stay")
    assert los["value"] == pytest.approx(7.0) and los["status"] == "warning" and los["short"]
    assert los["previous"] == {"value": pytest.approx(4.0), "status": "ok"}
    assert los["change"] == pytest.approx(3.0) and los["target"] == 5
    occupancy = kpi_of(review, "bed_occupancy")
    hours_m = 30 * 24 * calendar.monthrange(MONTH.year, MONTH.month)[1]
    hours_prev = 30 * 24 * calendar.monthrange(PREVIOUS.year, PREVIOUS.month)[1]
    assert occupancy["value"] == pytest.approx(840 / hours_m * 100, rel=1e-6)
    assert occupancy["previous"]["value"] == pytest.approx(480 / hours_prev * 100, rel=1e-6)
    assert occupancy["status"] == "ok" and not occupancy["short"]

    # grouped by perspective, each KPI once, with the objectives measured by them
    ids = [k["id"] for p in review["perspectives"] for k in p["kpis"]]
    assert len(ids) == len(set(ids)) and {"average_length_of_stay", "bed_occupancy"} <= set(ids)
    internal = next(p for p in review["perspectives"] if p["id"] == "internal_process")
    assert "average_length_of_stay" in [k["id"] for k in internal["kpis"]]
    # the shortfalls: ALOS with six months of trend, the last two the month's and the previous
    short = {s["id"]: s for s in review["shortfalls"]}
    assert "average_length_of_stay" in short and "bed_occupancy" not in short
    trend = short["average_length_of_stay"]["trend"]
    assert [p["month"] for p in trend][-2:] == [M_PREV, M] and len(trend) == 6
    assert [p["value"] for p in trend] == [None, None, None, None, pytest.approx(4.0), pytest.approx(7.0)]
    assert review["alerts"] == []  # no alert began in that month (the ICU one began now)


async def test_alerts_that_began_in_the_month_at_the_place(
    hospital: tuple[Service, httpx.AsyncClient, dict[str, str]],
) -> None:
    _, api, fired = hospital
    alert = (await api.get(f"/api/v1/alerts/{fired['ICU']}")).json()
    month = alert["started_at"][:7]  # the month the breach began (UTC site)
    icu = await review_json(api, month, unit="ICU")
    assert fired["ICU"] in [a["id"] for a in icu["alerts"]]

    # the cascade: the ICU's own objective (unit type icu) is in the ICU's review only
    def objective_ids(review: dict[str, Any]) -> set[str]:
        return {o["id"] for p in review["perspectives"] for o in p["objectives"]}

    assert "safe_icu_staffing" in objective_ids(icu) and "skilled_nursing_workforce" in objective_ids(icu)
    facility = await review_json(api, month)
    assert fired["ICU"] in [a["id"] for a in facility["alerts"]]
    assert "safe_icu_staffing" not in objective_ids(facility)
    assert fired["ICU"] not in [a["id"] for a in (await review_json(api, month, unit="4W"))["alerts"]]
    before = datetime.fromisoformat(alert["started_at"]).replace(day=1) - timedelta(days=1)
    assert fired["ICU"] not in [a["id"] for a in (await review_json(api, before.strftime("%Y-%m")))["alerts"]]


async def test_review_html_is_printable_and_draws_the_trend(
    hospital: tuple[Service, httpx.AsyncClient, dict[str, str]],
) -> None:
    _, api, _ = hospital
    await wait_for(lambda: _los_n(api), 30)
    answer = await api.get(f"/api/v1/reviews/{M}", params={"unit": "4W"}, headers={"accept": "text/html"})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    page = answer.text
    for section in ("Scorecard", "Fell short of target", "Alerts fired in the month", "@media print"):
        assert section in page
    # CSP Level 2: an inline <style> runs only if its sha256, base64, is a style-src source
    style = re.search(r"<style>(.*?)</style>", page, re.S)
    assert style is not None
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    assert f"'sha256-{digest}'" in answer.headers["content-security-policy"]
    charts = re.findall(r"src='data:image/svg\+xml;base64,([^']+)'", page)
    assert len(charts) == len((await review_json(api, M, unit="4W"))["shortfalls"]) >= 1
    svg = base64.b64decode(charts[0]).decode()
    assert "<svg" in svg and M in svg and M_PREV in svg  # the months on the category axis
    same = await api.get(f"/api/v1/reviews/{M}", params={"unit": "4W", "format": "html"})
    assert same.headers["content-type"].startswith("text/html")


async def _los_n(api: httpx.AsyncClient) -> bool | None:
    review = await review_json(api, M, unit="4W")
    return True if kpi_of(review, "average_length_of_stay")["n"] == 5 else None


async def test_review_pdf_renders_with_its_sections_and_values(
    hospital: tuple[Service, httpx.AsyncClient, dict[str, str]],
) -> None:
    _, api, _ = hospital
    await wait_for(lambda: _los_n(api), 30)
    answer = await api.get(f"/api/v1/reviews/{M}", params={"unit": "4W", "format": "pdf"})
    if out := os.environ.get("CARESCORE_REVIEW_PDF"):  # keep it, e.g. for the README's picture
        Path(out).write_bytes(answer.content)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/pdf"
    assert answer.content.startswith(b"%PDF-")
    by_accept = await api.get(
        f"/api/v1/reviews/{M}", params={"unit": "4W"}, headers={"accept": "application/pdf"}
    )
    assert by_accept.headers["content-type"] == "application/pdf"

    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(answer.content)).pages)
    flat = " ".join(text.split())
    for expected in (
        f"Monthly review {M}: DEMO / medicine / 4W",
        "Scorecard",
        "Fell short of target",
        "Alerts fired in the month",
        "No alert began in the month.",
        # ALOS by hand: 7.00 days this month against a target of 5, 4.00 the month before
        "Average length of stay: 7.00 days against a target of 5.00 (warning); previous month 4.00.",
    ):
        assert expected in flat, expected
    occupancy = 840 / (30 * 24 * calendar.monthrange(MONTH.year, MONTH.month)[1]) * 100
    assert f"{occupancy:,.2f} %" in flat  # bed occupancy by hand, in the scorecard table

    pdf = pypdfium2.PdfDocument(answer.content)
    try:
        assert len(pdf) >= 2
        alos_pages = []
        for index in range(len(pdf)):
            page = pdf[index]
            image = page.render(scale=1).to_pil().convert("RGB")
            raw = image.tobytes()
            pixels = list(zip(raw[0::3], raw[1::3], raw[2::3], strict=True))
            inked = sum(1 for p in pixels if p != (255, 255, 255))
            assert inked > len(pixels) * 0.005, f"page {index + 1} is blank"
            # the trend line is drawn in #1565c0 (21, 101, 192): anti-aliased, so near it
            blue = any(abs(r - 21) < 40 and abs(g - 101) < 40 and abs(b - 192) < 40 for r, g, b in pixels)
            if "Average length of stay (days): blue value" in page.get_textpage().get_text_range():
                alos_pages.append(blue)
        assert alos_pages == [True]  # the ALOS trend chart's page, with its line drawn
    finally:
        pdf.close()


async def test_a_month_that_is_not_a_month_is_a_422(
    hospital: tuple[Service, httpx.AsyncClient, dict[str, str]],
) -> None:
    _, api, _ = hospital
    for bad in ("2026-13", "2026-1", "26-11", "2026-11-01"):
        answer = await api.get(f"/api/v1/reviews/{bad}")
        assert answer.status_code == 422, (bad, answer.text)
    assert (await api.get(f"/api/v1/reviews/{M}", params={"format": "docx"})).status_code == 422


async def test_actions_opened_and_closed_and_the_analysis_at_the_place(
    hospital: tuple[Service, httpx.AsyncClient, dict[str, str]],
) -> None:
    """An action from the ICU alert, opened and done now; an action at 4W opened now and left
    open; an analysis of 4W's length of stay for month M. Each review shows what belongs to its
    place and month: the facility holds its units' actions, a unit only its own; an analysis is
    of the place it was written for (4W's is not the facility's)."""
    _, api, fired = hospital
    due = (datetime.now(UTC) + timedelta(days=7)).date().isoformat()
    body = {"title": "Second phlebotomist 07-09", "alert_id": fired["ICU"], "owner": "nm-cc", "due": due}
    icu = (await api.post("/api/v1/actions", json=body)).json()
    done = await api.patch(f"/api/v1/actions/{icu['id']}", json={"status": "done"})
    assert done.status_code == 200, done.text
    ward = {"title": "Discharge before noon huddle", "kpi": "average_length_of_stay", "unit": "4W"}
    w4 = (await api.post("/api/v1/actions", json={**ward, "owner": "nm-4w", "due": due})).json()
    now_month = icu["created_at"][:7]  # the site's time zone is UTC here
    text = {"happened": "Five long stays", "why": "Awaiting rehab beds", "next": "Weekly bed huddle"}
    put = await api.put(f"/api/v1/kpis/average_length_of_stay/analysis/{M}", params={"unit": "4W"}, json=text)
    assert put.status_code == 200, put.text

    at_icu = (await review_json(api, now_month, unit="ICU"))["actions"]
    assert [(m["action_id"], m["event"]) for m in at_icu["opened"]] == [(icu["id"], "opened")]
    assert [(m["action_id"], m["event"], m["status"]) for m in at_icu["closed"]] == [
        (icu["id"], "closed (done)", "done")
    ]
    assert at_icu["opened"][0]["kpi"] == "lab_tat_stat" and at_icu["opened"][0]["owner"] == "nm-cc"
    at_4w = (await review_json(api, now_month, unit="4W"))["actions"]
    assert [m["action_id"] for m in at_4w["opened"]] == [w4["id"]] and at_4w["closed"] == []
    at_facility = (await review_json(api, now_month))["actions"]
    assert {m["action_id"] for m in at_facility["opened"]} == {icu["id"], w4["id"]}
    assert [m["action_id"] for m in at_facility["closed"]] == [icu["id"]]
    month_m = await review_json(api, M, unit="4W")  # two months back: no action then
    assert month_m["actions"] == {"opened": [], "closed": []}
    [analysis] = month_m["analyses"]
    assert (analysis["kpi"], analysis["name"], analysis["version"]) == (
        "average_length_of_stay",
        "Average length of stay",
        1,
    )
    assert (analysis["happened"], analysis["why"], analysis["next"]) == tuple(text.values())
    assert (await review_json(api, M))["analyses"] == []  # the facility's own: none written
    assert (await review_json(api, now_month, unit="4W"))["analyses"] == []  # another month

    # in the HTML and in the PDF's text
    page = (await api.get(f"/api/v1/reviews/{now_month}", params={"format": "html"})).text
    assert "Actions opened and closed in the month" in page and "Second phlebotomist 07-09" in page
    assert "closed (done)" in page and "Discharge before noon huddle" in page
    pdf = (await api.get(f"/api/v1/reviews/{M}", params={"unit": "4W", "format": "pdf"})).content
    flat = " ".join(" ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages).split())
    for expected in (
        "Actions opened and closed in the month",
        "No action was opened or closed in the month.",
        "Analysis",
        "What happened: Five long stays",
        "Why: Awaiting rehab beds",
        "What next: Weekly bed huddle",
    ):
        assert expected in flat, expected
    pdf = (await api.get(f"/api/v1/reviews/{now_month}", params={"unit": "ICU", "format": "pdf"})).content
    flat = " ".join(" ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages).split())
    assert "Second phlebotomist 07-09" in flat and "closed (done)" in flat
    assert "No analysis was written for the month." in flat
