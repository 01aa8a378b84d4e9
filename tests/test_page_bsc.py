"""Issue 16 on the page, in a real browser (Debian's Chromium driven by Playwright) against a real
carescore fed over MLLP: the strategy map, the saved views and the landing view, an alert turned
into an action followed to closure with its markers on the KPI's chart, the analysis, the league
table, the compliance table and the monthly review link. Every expectation is the API's own answer
over real HTTP or a value worked by hand. Screenshots go to test-artifacts/ (the README's)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from carescore.serve import Service
from engine.config import Settings
from tests.browser import WAIT, drawn, expect, opened, send, shot
from tests.test_e2e_embedded import admit, now, stat_pair, wait_for
from tests.test_forecast import ICU, RISING, WINDOW_KPI, history_has, send_labs

pytest_plugins = ("tests.browser",)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]


def client(svc: Service) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{svc.api_port}")


async def late_stat_results(svc: Service) -> None:
    # STAT troponins on ICU resulted after 85, 95, 105 and 100 min: p90 > 75 min, a critical alert
    start = now() - timedelta(minutes=110)
    await send(
        svc, *(m for i, tat in enumerate([85, 95, 105, 100]) for m in stat_pair(f"S{i}", "ICU", start, tat))
    )


async def test_strategy_map_draws_each_objective_with_the_apis_status(browser: Any, running: Service) -> None:
    await late_stat_results(running)
    await send(running, admit("V01", "4W", now() - timedelta(minutes=5)))
    async with client(running) as http:

        async def rated() -> dict[str, Any]:
            body = (await http.get("/api/v1/objectives")).json()
            statuses = {o["id"]: o["status"] for o in body["objectives"]}
            # the STAT results rate timely_diagnostics, the admission patient_flow (bed occupancy)
            return body if "no_data" not in (statuses["timely_diagnostics"], statuses["patient_flow"]) else {}

        body = await wait_for(rated)
    page = await opened(browser, running)
    strategy = page.get_by_role("group", name="Strategy map")
    nodes = strategy.locator("g.objective")
    # the twelve objectives of kpi_defs/objectives/strategy.yaml, one node each
    assert len(body["objectives"]) == 12
    await expect(nodes).to_have_count(12, timeout=WAIT)
    for o in body["objectives"]:
        node = strategy.locator(f'g[data-objective="{o["id"]}"]')
        await expect(node).to_have_class(f"objective {o['status']}")
        await expect(node).to_have_attribute("aria-label", f"{o['name']}: {o['status'].replace('_', ' ')}")
    # an arrow per drives edge, from cause to effect
    arrows = await strategy.locator("line.drives").evaluate_all(
        "(ls) => ls.map((l) => [l.dataset.from, l.dataset.to])"
    )
    assert sorted(arrows) == sorted([e["from"], e["to"]] for e in body["edges"])
    # perspectives as rows: financial on top, learning & growth at the bottom (SVG y grows down)
    tops = await strategy.locator("g.objective rect").evaluate_all(
        "(rs) => Object.fromEntries(rs.map((r) => [r.parentNode.dataset.objective, +r.getAttribute('y')]))"
    )
    assert (
        tops["operating_margin"] < tops["patient_experience"] < tops["patient_flow"] < tops["retain_nurses"]
    )
    await strategy.scroll_into_view_if_needed()
    await strategy.screenshot(path=shot("strategy-map"))
    assert page.errors == []


async def test_nursing_view_shows_its_kpis_and_stays_the_landing_view(browser: Any, running: Service) -> None:
    page = await opened(browser, running)
    picker = page.get_by_role("combobox", name="View")
    # "All KPIs" then the five built-in views of kpi_defs/views/defaults.yaml
    await expect(picker.locator("option")).to_have_text(
        ["All KPIs", "Executive", "Nursing", "Emergency department", "Finance", "Quality and safety"]
    )
    await expect(page.locator("#perspectives [data-kpi]")).to_have_count(52, timeout=WAIT)  # every KPI
    await picker.select_option(label="Nursing")
    async with client(running) as http:
        card = (await http.get("/api/v1/scorecard", params={"view": "nursing"})).json()
        wanted = [k["id"] for p in card["perspectives"] for k in p["kpis"]]
        assert len(wanted) == 15  # the nursing view's 15 KPIs (tests/test_saved_views.py NURSING)
        await expect(page.locator("#perspectives [data-kpi]")).to_have_count(len(wanted), timeout=WAIT)
        shown = await page.locator("#perspectives [data-kpi]").evaluate_all(
            "(ks) => ks.map((k) => k.dataset.kpi)"
        )
        assert shown == wanted
        await page.screenshot(path=shot("nursing-view"), full_page=False)

        await page.get_by_role("button", name="Make this my landing view").click()
        await expect(page.get_by_role("button", name="Landing view saved")).to_be_visible(timeout=WAIT)
        assert (await http.get("/api/v1/views")).json()["landing"] == "nursing"
    await page.reload()
    await expect(page.get_by_role("combobox", name="View")).to_have_value("nursing")
    await expect(page.locator("#perspectives [data-kpi]")).to_have_count(15, timeout=WAIT)
    assert page.errors == []


async def test_an_alert_becomes_an_action_followed_to_closure(browser: Any, running: Service) -> None:
    page = await opened(browser, running)
    await late_stat_results(running)
    alert = (
        page.get_by_role("list", name="Alerts to acknowledge").get_by_role("listitem").filter(has_text="ICU")
    )
    await expect(alert).to_have_count(1, timeout=WAIT)
    alert_id = await alert.get_attribute("data-alert")
    await alert.get_by_role("button", name="Create action:").click()
    form = page.get_by_role("dialog", name="Create action")
    await expect(form).to_be_visible(timeout=WAIT)
    await expect(form).to_contain_text("From the alert:")
    due = (date.today() + timedelta(days=7)).isoformat()
    await form.get_by_label("Title").fill("Call the lab about STAT troponin delays")
    await form.get_by_label("Owner").fill("charge-icu")
    await form.get_by_label("Due").fill(due)
    await page.screenshot(path=shot("action-from-alert-form"))
    await form.get_by_role("button", name="Create").click()
    await expect(form).to_be_hidden()

    actions = page.get_by_role("list", name="Open actions").get_by_role("listitem")
    await expect(actions).to_have_count(1, timeout=WAIT)
    await expect(actions).to_contain_text("Call the lab about STAT troponin delays")
    # the API took the alert's KPI and place (the form sends only the alert id)
    async with client(running) as http:
        (action,) = (await http.get("/api/v1/actions")).json()["actions"]
    assert (action["alert_id"], action["kpi"], action["unit"], action["status"]) == (
        alert_id,
        "lab_tat_stat",
        "ICU",
        "open",
    )
    assert action["owner"] == "charge-icu" and action["due"] == due
    await expect(actions).to_contain_text(f"lab_tat_stat at ICU · owner charge-icu · due {due}")
    await page.locator("#actions").screenshot(path=shot("action-from-alert"))

    # at ICU, the KPI's chart has the action's opened marker
    await page.get_by_role("combobox", name="Place").select_option(label="—— Intensive Care Unit")
    history = page.get_by_role("button", name="History of STAT lab turnaround (p90)")
    dialog = page.get_by_role("dialog", name="History: STAT lab turnaround (p90)")

    async def markers() -> list[list[Any]]:
        await history.click()
        await expect(dialog.locator("canvas")).to_be_visible(timeout=WAIT)
        # four results, no closed window yet: too short to forecast (24 needed), and the page says so
        await expect(dialog).to_contain_text("No forecast: a forecast needs at least 24 closed windows")
        found = await page.evaluate(
            """() => {
            const h = window.carescoreHistory.state, u = h.chart;
            return h.markers.map((m) => {
                const x = u.valToPos(Date.parse(m.at) / 1000, "x");
                return [m.event, m.action_id, x >= 0 && x <= u.bbox.width / devicePixelRatio];
            });
        }"""
        )
        await page.get_by_role("button", name="Close").click()
        return found

    # each marker is the action's and falls inside the plot (drawn, not off the x range)
    assert await markers() == [["opened", action["id"], True]]

    status = page.get_by_role("combobox", name="Status of Call the lab about STAT troponin delays")
    await status.select_option("done")
    await expect(page.get_by_role("list", name="Open actions").get_by_role("listitem")).to_have_text(
        ["none"], timeout=WAIT
    )
    async with client(running) as http:
        done = (await http.get(f"/api/v1/actions/{action['id']}")).json()
    assert done["status"] == "done" and done["closed_at"]
    assert await markers() == [["opened", action["id"], True], ["closed (done)", action["id"], True]]
    assert page.errors == []


async def test_analysis_league_table_compliance_and_review_link(browser: Any, running: Service) -> None:
    # this month: 4W holds 3 patients, 3E one, ICU and ED none: bed occupancy per unit differs
    t = now() - timedelta(minutes=30)
    await send(running, *(admit(f"V1{i}", "4W", t) for i in range(3)), admit("V20", "3E", t))
    page = await opened(browser, running)
    await page.get_by_role("combobox", name="Place").select_option(label="—— 4 West Med-Surg")
    await expect(page.locator('[data-kpi="bed_occupancy"] .value')).to_have_text(
        "10.0%", timeout=WAIT
    )  # 3 / 30
    month = await page.get_by_label("Month", exact=True).input_value()
    await page.get_by_role("button", name="History of Bed occupancy").click()
    dialog = page.get_by_role("dialog", name="History: Bed occupancy")
    league = dialog.get_by_role("table", name="League table")
    await expect(league.locator("tr[data-unit]").first).to_be_visible(timeout=WAIT)
    async with client(running) as http:
        api = (await http.get("/api/v1/compare/bed_occupancy", params={"period": month, "by": "unit"})).json()
        shown = await league.locator("tr[data-unit]").evaluate_all(
            "(rs) => rs.map((r) => Array.from(r.cells).map((c) => c.textContent))"
        )
        want = [
            [
                str(r["rank"]) if r["rank"] else "—",
                r["group"]["unit"],
                "—" if r["value"] is None else f"{r['value']:.1f}",
            ]
            for r in api["rows"]
        ]
        assert [row[:3] for row in shown] == want
        # lower is better: 3E (fewer patients per bed) ranks above 4W
        units = [r["group"]["unit"] for r in api["rows"] if r["value"] is not None]
        assert units.index("3E") < units.index("4W")

        # the analysis written in the dialog is the API's current one for 4W and the month
        await dialog.get_by_label("What happened").fill("Occupancy stayed low on 4W")
        await dialog.get_by_label("Why").fill("Elective surgery paused")
        await dialog.get_by_label("What next").fill("Reopen beds in 3E first")
        await dialog.get_by_role("button", name="Save analysis").click()
        await expect(dialog.locator("#analysis-note")).to_have_text("saved")
        stored = (
            await http.get(f"/api/v1/kpis/bed_occupancy/analysis/{month}", params={"unit": "4W"})
        ).json()
        current = stored["current"]
        assert (current["happened"], current["why"], current["next"]) == (
            "Occupancy stayed low on 4W",
            "Elective surgery paused",
            "Reopen beds in 3E first",
        )
        await page.get_by_role("button", name="Close").click()

        # compliance: one row per KPI and place of the API's answer
        compliance = (await http.get("/api/v1/compliance", params={"period": month, "by": "unit"})).json()
        rows = [(k["id"], p["group"]["unit"]) for k in compliance["kpis"] for p in k["places"]]
        table = page.get_by_role("table", name="Compliance")
        await expect(table.locator("tr[data-kpi]")).to_have_count(len(rows), timeout=WAIT)
        got = await table.locator("tr[data-kpi]").evaluate_all(
            "(rs) => rs.map((r) => [r.dataset.kpi, r.dataset.unit])"
        )
        assert [tuple(r) for r in got] == rows

        # the review link is the month's review of 4W, served as HTML naming the unit
        link = page.get_by_role("link", name=f"Monthly review {month}, 4W", exact=True)
        href = await link.get_attribute("href")
        assert href == f"/api/v1/reviews/{month}?facility=DEMO&department=medicine&unit=4W&format=html", href
        review = await http.get(href)
        assert review.status_code == 200 and review.headers["content-type"].startswith("text/html")
        assert f"Monthly review {month}: DEMO / medicine / 4W" in review.text
        pdf = await http.get(
            str(await page.get_by_role("link", name=f"Monthly review {month}, 4W, PDF").get_attribute("href"))
        )
        assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert page.errors == []
    await link.click()
    await page.wait_for_url(f"**/api/v1/reviews/{month}?*")
    await page.screenshot(path=shot("monthly-review-html"))


async def test_history_chart_draws_the_forecast_after_the_last_point(
    browser: Any, settings_for: Callable[..., Settings], kpi_dir: Callable[..., Path]
) -> None:
    """tests/test_forecast.py's rising STAT series on ICU (one 5-minute window each, 20 + i min for
    window i; 36 closed windows, enough for the 24 a forecast needs) seen on the page's chart."""
    svc = Service(settings_for(kpi_defs=kpi_dir(WINDOW_KPI), engine={"idle_timeout": "1h"}))
    await svc.start()
    try:
        await send_labs(svc, RISING, "P")
        async with client(svc) as http:
            windows = await history_has(http, 36)
            page = await opened(browser, svc)
            await page.get_by_role("combobox", name="Place").select_option(label="—— Intensive Care Unit")
            await page.get_by_role("button", name="History of STAT lab turnaround (p90)").click()
            dialog = page.get_by_role("dialog", name="History: STAT lab turnaround (p90)")
            await expect(dialog.locator("canvas")).to_be_visible(timeout=WAIT)
            await expect(dialog).to_contain_text("with its 80 % interval", timeout=WAIT)
            api = (
                await http.get("/api/v1/kpis/lab_tat_stat/forecast", params={**ICU, "horizon": "2h"})
            ).json()
        await drawn(page)
        chart = await page.evaluate(
            """() => {
            const u = window.carescoreHistory.state.chart;
            return { labels: u.series.map((s) => s.label), data: u.data.map((d) => Array.from(d)) };
        }"""
        )
        labels = chart["labels"]
        mean, upper, lower = (
            chart["data"][labels.index(name)] for name in ("forecast", "80 % upper", "80 % lower")
        )
        values = chart["data"][1]
        # the closed windows (20..55) and the live one (56), each x without a forecast point
        assert [v for v in values if v is not None][: len(windows)] == [
            pytest.approx(w["value"]) for w in windows
        ]
        # the forecast's 24 points (2 h of 5-minute windows), each where the chart has no value
        assert len(api["points"]) == 24
        assert [v for v in mean if v is not None] == [pytest.approx(p["mean"]) for p in api["points"]]
        assert [v for v in upper if v is not None] == [pytest.approx(p["upper80"]) for p in api["points"]]
        assert [v for v in lower if v is not None] == [pytest.approx(p["lower80"]) for p in api["points"]]
        assert all(v is None for m, v in zip(mean, values, strict=True) if m is not None)
        # all after the last closed window
        xs = chart["data"][0]
        first = next(i for i, m in enumerate(mean) if m is not None)
        assert xs[first] > max(xs[i] for i, v in enumerate(values[: len(windows)]) if v is not None)
        # a rising series: the mean goes on above the last closed value, 55 min
        assert mean[-1] > 55
        await dialog.screenshot(path=shot("history-forecast"))
        assert page.errors == []
    finally:
        await svc.stop()
