"""Small-cell suppression: viewers see a patient-level value computed from fewer than k
patients (privacy.small_cell_min, default 11: CMS's cell-size policy forbids showing cells of
1 to 10) as suppressed; clinicians, ops and admins see it. Real tokens over real HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest

from carescore.serve import Service
from connectors.hl7v2.client import MLLPClient, ack_code
from engine.config import Settings, packaged_kpi_defs
from engine.definitions import load_catalogue
from engine.smallcells import patient_cells, too_small
from tests.test_e2e_embedded import now, stat_pair


def test_which_counts_are_patient_cells_for_the_shipped_kpis() -> None:
    kpis = load_catalogue(packaged_kpi_defs()).kpis
    # (n, numerator, denominator) = (5, 2, 40) for every KPI; by hand, what each counts in patients:
    cells = {k: patient_cells(kpis[k], 5, 2, 40) for k in kpis}
    assert cells["lab_tat_stat"] == [5]  # orders with a result: n
    assert cells["average_length_of_stay"] == [5]  # stays: n
    assert cells["hcahps_recommend"] == [5]  # survey answers: n
    assert cells["readmission_30d_rate"] == [2, 40]  # readmissions / index discharges
    assert cells["falls_per_1000_patient_days"] == [2]  # falls / patient days (a level, not patients)
    assert cells["ed_lwbs_rate"] == [2, 40]  # LWBS discharges / ED discharges: both count encounters
    for staff_or_money in ("nurse_overtime_pct", "engagement_score", "operating_margin", "bed_occupancy"):
        assert cells[staff_or_money] == [], staff_or_money
    readmission = kpis["readmission_30d_rate"]
    assert too_small(readmission, 0, 0, 11, 11) is False  # 0 readmissions of 11: no small cell
    assert too_small(readmission, 0, 10, 40, 11) is True  # 10 readmissions: a cell of 1..10
    assert too_small(readmission, 0, 11, 40, 11) is False


async def _lab_values(client: httpx.AsyncClient, token: str) -> dict[str | None, dict[str, Any]]:
    """lab_tat_stat's live values by unit, as this token's holder sees them."""
    response = await client.get("/api/v1/kpis/lab_tat_stat", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return {v["group"]["unit"]: v for v in response.json()["values"]}


async def test_viewers_see_few_patient_values_suppressed_others_see_them(
    settings_for: Callable[..., Settings],
) -> None:
    svc = Service(settings_for())
    await svc.start()
    tokens = svc.auth.tokens
    assert tokens is not None
    viewer = tokens.create("wall display", "viewer")[1]
    ops = tokens.create("bed manager", "ops")[1]
    try:
        start = now() - timedelta(minutes=50)
        async with MLLPClient("127.0.0.1", svc.mllp.port) as mllp:
            # 3 STAT orders on ED (n = 3: a cell of 1..10), 11 on 4W (n = 11: shown to all)
            for unit, count in (("ED", 3), ("4W", 11)):
                for i in range(count):
                    for message in stat_pair(f"{unit}{i}", unit, start + timedelta(minutes=i), 20):
                        assert ack_code(await mllp.send(message)) == "AA"
        base = f"http://127.0.0.1:{svc.api_port}"
        async with httpx.AsyncClient(base_url=base) as client:
            deadline = asyncio.get_running_loop().time() + 20
            while True:
                by_unit = await _lab_values(client, ops)
                if by_unit.get("ED", {}).get("n") == 3 and by_unit.get("4W", {}).get("n") == 11:
                    break
                assert asyncio.get_running_loop().time() < deadline, f"values not computed in time: {by_unit}"
                await asyncio.sleep(0.1)
            # every order took 20 minutes: the p90 is 20 wherever it is shown
            assert by_unit["ED"]["value"] == pytest.approx(20.0) and by_unit["ED"]["status"] != "suppressed"
            seen = await _lab_values(client, viewer)
            hidden = seen["ED"]
            assert (hidden["value"], hidden["numerator"], hidden["denominator"], hidden["n"]) == (None,) * 4
            assert hidden["status"] == "suppressed" and "fewer than 11 patients" in hidden["suppressed"]
            assert seen["4W"]["value"] == pytest.approx(20.0) and seen["4W"]["n"] == 11  # 11: no small cell

            card = await client.get(
                "/api/v1/scorecard",
                params={"facility": "DEMO", "department": "emergency", "unit": "ED"},
                headers={"Authorization": f"Bearer {viewer}"},
            )
            items = {i["id"]: i for p in card.json()["perspectives"] for i in p["kpis"]}
            assert items["lab_tat_stat"]["value"] is None and items["lab_tat_stat"]["status"] == "suppressed"
            card_ops = await client.get(
                "/api/v1/scorecard",
                params={"facility": "DEMO", "department": "emergency", "unit": "ED"},
                headers={"Authorization": f"Bearer {ops}"},
            )
            items = {i["id"]: i for p in card_ops.json()["perspectives"] for i in p["kpis"]}
            assert items["lab_tat_stat"]["value"] == pytest.approx(20.0)

            # the period report (FHIR MeasureReport, from the event log): ED's stratum without counts
            period = (
                f"{(start - timedelta(hours=1)).isoformat()}/{(now() + timedelta(minutes=5)).isoformat()}"
            )
            for token, counted in ((viewer, False), (ops, True)):
                report = await client.get(
                    "/api/v1/measure-reports/lab_tat_stat",
                    params={"period": period},
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert report.status_code == 200, report.text
                strata = {
                    st["value"]["text"]: st
                    for g in report.json()["group"]
                    for st in g["stratifier"][0]["stratum"]
                }
                ed = strata["ED"]
                assert ("measureScore" in ed) is counted
                assert all(("count" in p) is counted for p in ed["population"])
                assert strata["4W"]["population"][0]["count"] == 11  # 11 orders: shown to both
            # a slower order changes ED's p90, so the board publishes it on the stream again
            viewer_sees = await asyncio.wait_for(_streamed_ed(client, viewer, svc, 40), 30)
            assert viewer_sees["value"] is None and viewer_sees["n"] is None
            assert viewer_sees["status"] == "suppressed"
            ops_sees = await asyncio.wait_for(_streamed_ed(client, ops, svc, 60), 30)
            assert ops_sees["value"] is not None and ops_sees["n"] == 5  # 3 + the two sent here
    finally:
        await svc.stop()


async def _streamed_ed(client: httpx.AsyncClient, token: str, svc: Service, tat: float) -> Any:
    """The next lab_tat_stat value for ED on the SSE stream, after one more STAT order on ED
    taking `tat` minutes."""
    headers = {"Authorization": f"Bearer {token}"}
    async with client.stream("GET", "/api/v1/stream", headers=headers, timeout=30) as response:
        assert response.status_code == 200
        async with MLLPClient("127.0.0.1", svc.mllp.port) as mllp:
            for message in stat_pair(f"ED-{tat}", "ED", now() - timedelta(minutes=tat + 2), tat):
                assert ack_code(await mllp.send(message)) == "AA"
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = json.loads(line[6:])
            if data.get("kpi") == "lab_tat_stat" and data.get("group", {}).get("unit") == "ED":
                return data
    raise AssertionError("stream ended")
