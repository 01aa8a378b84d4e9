"""Tabular feeds over REST and the watched folder: documented schemas, sample files, row
errors with line numbers while good rows are kept, idempotent resends, KPIs moving."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from carescore.serve import Service
from connectors.feeds.docs import render_markdown
from connectors.feeds.schemas import FEEDS
from engine.config import REPO_ROOT
from tests.test_content_types import FEED

EXAMPLES = REPO_ROOT / "deploy" / "examples" / "feeds"
CONTENT = {".csv": "text/csv", ".json": "application/json", ".ndjson": "application/x-ndjson"}


async def upload(
    svc: Service, feed: str, body: bytes | str, content_type: str = "text/csv"
) -> httpx.Response:
    data = body.encode() if isinstance(body, str) else body
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{svc.api_port}") as client:
        return await client.post(
            f"/api/v1/feeds/{feed}", content=data, headers={"Content-Type": content_type}
        )


def feed_events(svc: Service) -> list[dict[str, Any]]:
    return [r for r in svc.runtime.log.raw_records() if r["source"] == "feed"]


def iso(hours_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(hours=hours_ago)).isoformat(timespec="seconds")


@pytest.mark.parametrize("sample", sorted(p.name for p in EXAMPLES.iterdir()))
async def test_every_sample_file_is_taken_whole(service: Service, sample: str) -> None:
    path = EXAMPLES / sample
    feed = path.stem
    response = await upload(service, feed, path.read_bytes(), CONTENT[path.suffix])
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["rejected"] == 0, result["errors"]
    assert result["rows"] == result["accepted"] > 0
    assert result["events"] == len(feed_events(service)) >= result["rows"]
    again = (await upload(service, feed, path.read_bytes(), CONTENT[path.suffix])).json()
    assert (again["accepted"], again["duplicates"], again["events"]) == (0, result["rows"], 0)


def test_every_feed_has_a_sample_and_the_docs_match_the_schemas() -> None:
    for feed in FEEDS:
        assert list(EXAMPLES.glob(f"{feed}.*")), f"no sample file for the {feed} feed"
    assert (REPO_ROOT / "docs" / "feeds.md").read_text() == render_markdown(), "run `make docs`"


async def test_bad_rows_are_reported_by_line_and_field_and_good_rows_kept(service: Service) -> None:
    body = "\n".join(
        [
            "staff_id,role,unit,shift_start,shift_end,worked_hours,overtime_hours",
            f"E1,rn,4W,{iso(13)},{iso(1)},12,1",  # line 2: good
            f"E2,rn,4W,{iso(13)},{iso(1)},twelve,",  # line 3: not a number
            f"E3,rn,NOWHERE,{iso(13)},{iso(1)},,",  # line 4: unknown unit
            f"E4,rn,ICU,{iso(-2)},,,",  # line 5: in the future
            f"E5,cna,ICU,{iso(3)},{iso(5)},,",  # line 6: ends before it starts
            "E6,rn,ICU",  # line 7: short row
            f"E7,lpn,3E,{iso(2)},,,",  # line 8: good (on shift now)
        ]
    )
    response = await upload(service, "staffing", body)
    assert response.status_code == 200
    result = response.json()
    assert (result["rows"], result["accepted"], result["rejected"]) == (7, 2, 5)
    errors = {e["line"]: e for e in result["errors"]}
    assert sorted(errors) == [3, 4, 5, 6, 7]
    assert errors[3]["field"] == "worked_hours" and "number" in errors[3]["message"]
    assert errors[4]["field"] == "unit" and "NOWHERE" in errors[4]["message"] and "4W" in errors[4]["message"]
    assert errors[5]["field"] == "shift_start" and "future" in errors[5]["message"]
    assert errors[6]["field"] == "shift_end"
    assert errors[7]["field"] is None and "cells" in errors[7]["message"]
    # good rows stored: E1's shift start, end and hours; E7's start
    kinds = sorted((e["staff_id"], e["type"]) for e in feed_events(service))
    assert kinds == [
        ("E1", "staffing.hours"),
        ("E1", "staffing.shift_end"),
        ("E1", "staffing.shift_start"),
        ("E7", "staffing.shift_start"),
    ]
    hours = next(e for e in feed_events(service) if e["type"] == "staffing.hours")
    assert (hours["worked_hours"], hours["overtime_hours"], hours["licensed"]) == (12.0, 1.0, True)
    # each bad row is a dead letter holding a CSV that can be sent again on its own
    letters = service.runtime.dead_letters.query(source="feed")
    assert [d.source for d in letters] == ["feed:staffing"] * 5
    assert [e["dead_letter"] for e in result["errors"]] == [d.id for d in letters]
    assert letters[0].raw.decode().splitlines()[0].startswith("staff_id,role")
    assert letters[0].reason.startswith("line 3: worked_hours:")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.api_port}") as client:
        metrics = (await client.get("/metrics")).text
    assert 'carescore_feed_rows_total{feed="staffing",outcome="rejected"}' in metrics
    assert 'carescore_dead_letters_stored{source="feed:staffing"} 5.0' in metrics


async def test_a_number_that_is_not_finite_is_a_row_error_not_an_amount(service: Service) -> None:
    """A ledger line of 'nan' or 'inf' (a spreadsheet's #NUM! exported, an overflow) would make
    every cost sum it joins NaN, and the event log and snapshots (JSON) cannot hold it."""
    body = "\n".join(
        [
            "time,unit,category,amount,currency",
            f"{iso(30)},4W,supplies,120.50,USD",  # line 2: good
            f"{iso(30)},4W,supplies,nan,USD",  # line 3
            f"{iso(30)},4W,supplies,inf,USD",  # line 4
            f"{iso(30)},4W,supplies,-Infinity,USD",  # line 5
            f"{iso(30)},4W,supplies,1e999,USD",  # line 6: overflows to inf
        ]
    )
    result = (await upload(service, "finance", body)).json()
    assert (result["rows"], result["accepted"], result["rejected"]) == (5, 1, 4), result["errors"]
    errors = {e["line"]: e for e in result["errors"]}
    assert sorted(errors) == [3, 4, 5, 6]
    assert all(e["field"] == "amount" and "finite" in e["message"] for e in errors.values())
    amounts = [e["amount"] for e in feed_events(service) if e["type"].startswith("finance")]
    assert amounts == [120.5]


async def test_a_shift_sent_at_clock_in_and_at_clock_out_is_counted_once(service: Service) -> None:
    start, end = iso(9), iso(1)
    header = "staff_id,role,unit,shift_start,shift_end"
    first = (await upload(service, "staffing", f"{header}\nE9,rn,ICU,{start},\n")).json()
    assert first["accepted"] == 1
    on_shift = service.runtime.engine.staff.on_shift
    assert "E9" in on_shift
    second = (await upload(service, "staffing", f"{header}\nE9,rn,ICU,{start},{end}\n")).json()
    assert (second["accepted"], second["events"]) == (1, 2)  # end and hours; the start was stored
    assert "E9" not in service.runtime.engine.staff.on_shift
    assert [e["type"] for e in feed_events(service)].count("staffing.shift_start") == 1


async def test_json_rows_report_the_line_they_start_on(service: Service) -> None:
    body = (
        "[\n"
        f'  {{"event": "clabsi", "time": "{iso(30)}", "unit": "ICU"}},\n'
        f'  {{"event": "central_line_days", "time": "{iso(30)}",\n'
        '   "unit": "ICU"},\n'
        f'  {{"event": "catheter_days", "time": "{iso(30)}", "unit": "4W", "days": 3, "colour": "red"}}\n'
        "]\n"
    )
    result = (await upload(service, "quality", body, "application/json")).json()
    assert (result["accepted"], result["rejected"]) == (1, 2)
    assert [(e["line"], e["field"]) for e in result["errors"]] == [(3, None), (5, "colour")]
    assert "days is required" in result["errors"][0]["message"]
    clabsi = feed_events(service)[0]
    assert (clabsi["type"], clabsi["device"]) == ("quality.clabsi", "central_line")


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (
            "staff_id,role,unit,shift_begin\nE1,rn,4W,2026-01-01T07:00\n",
            "text/csv",
            "unknown column(s) shift_begin",
        ),
        ("staff_id,role,unit\nE1,rn,4W\n", "text/csv", "missing required column(s) shift_start"),
        (b"staff_id,role\n\xff\xfe", "text/csv", "not UTF-8"),
        ('{"staff_id": 1}', "application/json", "array of row objects"),
        ('[{"staff_id": "E1"},', "application/json", "not valid JSON"),
    ],
)
async def test_unreadable_files_are_refused_whole_with_the_reason(
    service: Service, body: str | bytes, content_type: str, expected: str
) -> None:
    response = await upload(service, "staffing", body, content_type)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert expected in response.json()["detail"]
    assert feed_events(service) == []


async def test_a_file_of_only_bad_rows_is_a_problem_and_unknown_feeds_are_404(service: Service) -> None:
    response = await upload(service, "finance", f"time,unit,category,amount\n{iso(2)},4W,lunch,12\n")
    assert response.status_code == 422
    problem = response.json()
    assert problem["title"] == "No usable rows"
    assert problem["errors"][0]["line"] == 2 and problem["errors"][0]["field"] == "category"
    missing = await upload(service, "payroll", "a,b\n1,2\n")
    assert missing.status_code == 404


async def test_feed_schemas_are_published_in_the_openapi(service: Service) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.api_port}") as client:
        spec = (await client.get("/openapi.json")).json()
        listing = (await client.get("/api/v1/feeds")).json()
    for feed, model in FEEDS.items():
        body = spec["paths"][f"/api/v1/feeds/{feed}"]["post"]["requestBody"]
        assert set(body["content"]) == FEED  # the types read; any other is a 415 (test_content_types)
        properties = body["content"]["application/json"]["schema"]["items"]["properties"]
        assert set(properties) == set(model.model_fields)
    assert [f["feed"] for f in listing["feeds"]] == list(FEEDS)


async def test_uploads_over_the_limit_are_refused(settings_for: Any) -> None:
    svc = Service(settings_for(feeds={"max_upload_bytes": 2048}))
    await svc.start()
    try:
        response = await upload(svc, "finance", "time,unit,category,amount\n" + "x" * 4096)
        assert response.status_code == 413
        assert "max_upload_bytes" in response.json()["detail"]
    finally:
        await svc.stop()


async def test_the_watched_folder_takes_files_and_leaves_a_result(settings_for: Any, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    svc = Service(settings_for(feeds={"inbox": inbox, "poll": 0.1}))
    await svc.start()
    try:
        assert (inbox / "staffing").is_dir() and (inbox / "done").is_dir()
        (inbox / "finance" / "ledger.csv.part").write_text("partial")  # still being written: ignored
        (inbox / "finance" / "ledger.csv").write_text(
            f"time,unit,category,amount\n{iso(5)},4W,supplies,100\n{iso(5)},4W,supplies,oops\n"
        )
        (inbox / "experience-ward.csv").write_text(f"kind,time,unit,score\nsurvey,{iso(3)},3E,10\n")
        (inbox / "hr").joinpath("broken.csv").write_bytes(b"event,time\n\xff\n")
        for _ in range(100):
            if len(list((inbox / "done").glob("*.result.json"))) == 2 and list((inbox / "failed").iterdir()):
                break
            await asyncio.sleep(0.1)
        results = {
            p.name.split("-", 1)[1]: json.loads(p.read_text()) for p in (inbox / "done").glob("*.json")
        }
        assert results["ledger.csv.result.json"]["accepted"] == 1
        assert results["ledger.csv.result.json"]["errors"][0]["line"] == 3
        assert results["experience-ward.csv.result.json"]["accepted"] == 1
        failed = [p.name for p in (inbox / "failed").iterdir()]
        assert any(n.endswith("broken.csv") for n in failed) and any(
            n.endswith(".result.json") for n in failed
        )
        assert (inbox / "finance" / "ledger.csv.part").exists()
        assert not (inbox / "finance" / "ledger.csv").exists()
        kinds = sorted(e["type"] for e in feed_events(svc))
        assert kinds == ["experience.survey", "finance.cost"]
    finally:
        await svc.stop()


async def test_feeds_move_the_kpis_that_read_them(settings_for: Any) -> None:
    """HCAHPS top box and overtime from uploaded rows reach the live KPI values."""
    svc = Service(settings_for())
    await svc.start()
    try:
        surveys = "kind,time,unit,survey_id,question,answer\n" + "".join(
            f"survey,{iso(1 + i / 10)},4W,S{i},Q18,{score}\nsurvey,{iso(1 + i / 10)},4W,S{i},Q10,Yes\n"
            for i, score in enumerate([10, 9, 6, 10])
        )
        assert (await upload(svc, "experience", surveys)).json()["accepted"] == 8
        overtime = f"staff_id,role,unit,shift_start,shift_end,overtime_hours\nE1,rn,4W,{iso(13)},{iso(1)},3\n"
        assert (await upload(svc, "staffing", overtime)).json()["accepted"] == 1
        svc.runtime.tick()
        board = svc.runtime.board
        unit = ("DEMO", "medicine", "4W")
        top_box = next(s for s in board.for_kpi("hcahps_overall_rating") if s.group.key == unit)
        share = next(s for s in board.for_kpi("nurse_overtime_pct") if s.group.key == unit)
        assert top_box.value == pytest.approx(75.0)  # 3 of 4 surveys rate 9-10; screeners count nowhere
        assert top_box.n == 4  # surveys, not rows
        assert share.value == pytest.approx(25.0)  # 3 of 12 hours
    finally:
        await svc.stop()
