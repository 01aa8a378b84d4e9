"""The scorecard page in a real browser: Debian's Chromium driven by Playwright against a real
carescore (MLLP in, REST and the page out). What a ward manager does: pick a unit, see a value
move when a message arrives, open a KPI's history chart, acknowledge an alert, by keyboard too,
on a tablet. Screenshots go to test-artifacts/ (CARESCORE_TEST_ARTIFACTS to put them elsewhere)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest

from carescore.serve import Service
from engine.config import Settings
from tests.browser import WAIT, drawn, expect, opened, send, shot
from tests.test_e2e_embedded import admit, now, stat_pair, wait_for

pytest_plugins = ("tests.browser",)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]


async def test_picking_a_unit_and_an_admission_moves_its_occupancy(browser: Any, running: Service) -> None:
    page = await opened(browser, running)
    place = page.get_by_role("combobox", name="Place")
    # the options are the configured places (carescore/defaults.yaml), units under departments
    await expect(place.locator("option")).to_have_count(1 + 3 + 4)  # DEMO, 3 departments, 4 units
    await place.select_option(label="—— 4 West Med-Surg")
    occupancy = page.locator('[data-kpi="bed_occupancy"] .value')
    await expect(occupancy).to_have_text("0.0%")  # 4W is empty: 0 patients / 30 staffed beds
    await send(running, admit("V01", "4W", now() - timedelta(minutes=5)))
    # one patient in 4W's 30 staffed beds: 1 / 30 x 100 = 3.33 %, shown with one decimal
    await expect(occupancy).to_have_text("3.3%", timeout=WAIT)
    await expect(page.get_by_text("as of", exact=False)).to_be_visible()
    # the facility holds the same patient over its inpatient beds, the ED's 16 not counted (the
    # standard of bed_occupancy.yaml): 12 + 30 + 20 = 62 beds, 1 / 62 x 100 = 1.61 %
    await place.select_option(label="Demo General Hospital")
    await expect(occupancy).to_have_text("1.6%", timeout=WAIT)
    await page.screenshot(path=shot("scorecard-unit"), full_page=True)
    assert page.errors == []


async def test_history_chart_draws_values_target_and_threshold_bands(browser: Any, running: Service) -> None:
    # three patients admitted to 4W three hours ago: every closed hour since is 3 / 30 = 10 %; one
    # admitted to 3E a minute ago moves the HL7 watermark to now, closing the past hours
    three_hours_ago = now() - timedelta(hours=3)
    await send(running, *(admit(f"V1{i}", "4W", three_hours_ago) for i in range(3)))
    await send(running, admit("V20", "3E", now() - timedelta(minutes=1)))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.api_port}") as client:

        async def history() -> list[dict[str, Any]]:
            params = {"unit": "4W", "level": "unit", "limit": 500}
            answer = await client.get("/api/v1/kpis/bed_occupancy/history", params=params)
            closed = [w for w in answer.json()["windows"] if w["value"] is not None]
            # admitted at hh:mm three hours ago: that hour in part, then at least one full hour
            # (two, unless the last one is still in its 5 min grace)
            return closed if len(closed) >= 2 else []

        page = await opened(browser, running)
        await page.get_by_role("combobox", name="Place").select_option(label="—— 4 West Med-Surg")
        occupancy = page.locator('[data-kpi="bed_occupancy"] .value')
        await expect(occupancy).to_have_text("10.0%", timeout=WAIT)
        windows = await wait_for(history)
    full_hours = [w["value"] for w in windows[1:]]  # the first hour holds part of an hour's stay
    assert full_hours == [pytest.approx(10.0)] * len(full_hours)

    await page.get_by_role("button", name="History of Bed occupancy").click()
    dialog = page.get_by_role("dialog", name="History: Bed occupancy")
    await expect(dialog).to_be_visible()
    await expect(dialog.locator("canvas")).to_be_visible(timeout=WAIT)  # its history is fetched first
    await drawn(page)
    chart = await page.evaluate(
        """() => {
        const u = window.carescoreHistory.state.chart;
        return { labels: u.series.map((s) => s.label), data: u.data.map((d) => Array.from(d)),
                 y: [u.scales.y.min, u.scales.y.max], axes: u.axes.length };
    }"""
    )
    # the closed windows then the live value (10 %); the levels of bed_occupancy.yaml as lines
    assert chart["labels"][1:] == ["value (%)", "target", "warning", "critical"]
    assert chart["data"][1] == [pytest.approx(w["value"]) for w in windows] + [pytest.approx(10.0)]
    assert set(chart["data"][2]) == {85} and set(chart["data"][3]) == {95} and set(chart["data"][4]) == {100}
    assert chart["axes"] == 2
    # every value in view with a margin, never below 0 (percentages are not negative), up past
    # the critical line (100 + 10 % of the span). The low end is 0 only when the margin reaches
    # it: a first (partial) hour near 10 % put it at 0.47 once in CI, 0.60 and 0.45 before
    assert 0 <= chart["y"][0] < min(w["value"] for w in windows) and chart["y"][1] > 100

    # the bands are painted: warning (95 to 100) amber, critical (from 100) red, ok (below 95) bare
    colours = await page.evaluate(
        """() => {
        const u = window.carescoreHistory.state.chart, x = u.bbox.left + 3;
        const at = (v) => Array.from(u.ctx.getImageData(x, Math.round(u.valToPos(v, "y", true)), 1, 1).data);
        return { warning: at(97.5), critical: at((100 + u.scales.y.max) / 2), ok: at(50) };
    }"""
    )

    # history.js's band colours at alpha 0.2 (51 of 255); the canvas stores premultiplied colour, so
    # a channel read back is within a few units of what was painted
    def near(rgba: list[int], rgb: tuple[int, int, int]) -> bool:
        return all(abs(a - b) <= 4 for a, b in zip(rgba[:3], rgb, strict=True)) and rgba[3] == 51

    assert near(colours["warning"], (183, 121, 31)), colours
    assert near(colours["critical"], (197, 48, 48)), colours
    assert colours["ok"][3] == 0, colours
    await dialog.screenshot(path=shot("history-chart"))
    await page.get_by_role("button", name="Close").click()
    await expect(dialog).to_be_hidden()
    assert page.errors == []


async def test_acknowledging_an_alert_by_keyboard_takes_it_off_the_list(
    browser: Any, running: Service
) -> None:
    page = await opened(browser, running)
    start = now() - timedelta(minutes=110)
    # STAT troponins resulted after 85, 95, 105 and 100 min on ICU: p90 > 75 min, critical
    await send(
        running,
        *(m for i, tat in enumerate([85, 95, 105, 100]) for m in stat_pair(f"S{i}", "ICU", start, tat)),
    )
    to_ack = page.get_by_role("list", name="Alerts to acknowledge")
    alert = to_ack.get_by_role("listitem").filter(has_text="ICU")
    await expect(alert).to_have_count(1, timeout=WAIT)
    button = alert.get_by_role("button", name="Acknowledge:")
    await expect(button).to_be_visible()

    # keyboard only: Tab from the top reaches the place selector, then the alert's button
    reached: list[str] = []
    for _ in range(10):
        await page.keyboard.press("Tab")
        reached.append(await page.evaluate("document.activeElement.id || document.activeElement.className"))
        if reached[-1] == "ack":
            break
    assert "group" in reached and reached[-1] == "ack", reached
    assert reached.index("group") < reached.index("ack")
    # the page re-renders every 5 s: the focus stays on that alert's button through a refresh
    shown = await page.locator("#asof").text_content()
    await expect(page.locator("#asof")).not_to_have_text(shown or "", timeout=WAIT)
    await expect(button).to_be_focused()
    notes: list[str] = []

    async def answer(dialog: Any) -> None:
        notes.append(dialog.message)
        await dialog.accept("seen, calling the lab")

    page.once("dialog", answer)
    await page.keyboard.press("Enter")
    await expect(to_ack.get_by_role("listitem")).to_have_text(["none"], timeout=WAIT)
    assert notes and notes[0].startswith("Acknowledge this alert")
    await page.get_by_text("Acknowledged, still firing (1)").click()
    acked = page.get_by_role("list", name="Acknowledged alerts").get_by_role("listitem")
    await expect(acked).to_have_count(1)
    await expect(acked).to_contain_text("acknowledged by")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.api_port}") as client:
        (firing,) = (await client.get("/api/v1/alerts", params={"state": "firing"})).json()["alerts"]
        audit = (await client.get(f"/api/v1/alerts/{firing['id']}")).json()["audit"]
    assert firing["acked_by"] and any("seen, calling the lab" in str(entry) for entry in audit)

    # Enter on a KPI's History button opens its chart; Escape closes it (a native modal dialog)
    await page.get_by_role("button", name="History of Bed occupancy").focus()
    await page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="History: Bed occupancy")
    await expect(dialog).to_be_visible()
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    assert page.errors == []


@pytest.mark.timeout(300)
async def test_tablet_layout_has_no_horizontal_overflow(
    browser: Any, settings_for: Callable[..., Settings]
) -> None:
    """The demo hospital fills every perspective (the README's screenshot is taken here)."""
    svc = Service(settings_for(demo={"enabled": True, "backfill": "2h"}))
    await svc.start()
    try:
        page = await opened(browser, svc, viewport={"width": 768, "height": 1024})
        occupancy = page.locator('[data-kpi="bed_occupancy"] .value')
        await expect(occupancy).not_to_have_text("—", timeout=60_000)
        await expect(page.locator("section.perspective")).to_have_count(4)
        overflow = await page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
        assert overflow[0] <= overflow[1] == 768, overflow
        await page.screenshot(path=shot("scorecard-tablet"))  # the first screen: docs/img/scorecard.png
        await page.get_by_role("button", name="History of Bed occupancy").click()
        dialog = page.get_by_role("dialog", name="History: Bed occupancy")
        await expect(dialog.locator("canvas")).to_be_visible(timeout=WAIT)  # its history is fetched first
        box = await dialog.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 768, box
        await page.screenshot(path=shot("scorecard-tablet-history"))
        assert page.errors == []
    finally:
        await svc.stop()
