"""Issue 16 item 5, saved scorecard views (backend): the built-in views in kpi_defs/views/
checked like the KPIs (file:line:field), the store on SQLite and on a real PostgreSQL, the REST
routes and GET /api/v1/scorecard?view= through real HTTP, and who may change what with real
Keycloak tokens (viewer, ops, admin)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
import pytest

from alerts.db import open_database
from alerts.views_store import ViewStore
from carescore.serve import Service
from engine.config import REPO_ROOT
from engine.definitions import load_catalogue
from engine.yamlconf import ConfigError
from tests import test_api_auth
from tests.test_api_auth import base, bearer

if TYPE_CHECKING:
    from tests.keycloak import Keycloak

pytest_plugins = ("tests.keycloak",)
oidc_settings = test_api_auth.oidc_settings  # the fixtures of a carescore signing in at Keycloak
oidc_service = test_api_auth.oidc_service

NURSING = [  # kpi_defs/views/defaults.yaml, the nursing view's KPIs in their order
    "patient_to_nurse_ratio",
    "nurse_ratio_minutes_out",
    "nursing_hours_per_patient_day",
    "nurse_call_response_p90",
    "nurse_call_within_target",
    "falls_per_1000_patient_days",
    "falls_with_injury_per_1000_patient_days",
    "pressure_injuries_per_1000_patient_days",
    "cauti_per_1000_catheter_days",
    "clabsi_per_1000_line_days",
    "hcahps_nurse_communication",
    "hcahps_responsiveness",
    "nurse_overtime_pct",
    "first_year_rn_turnover",
    "certified_nurses_pct",
]


def test_the_built_in_views_load_for_each_audience() -> None:
    views = load_catalogue(REPO_ROOT / "kpi_defs").views
    assert list(views) == ["executive", "nursing", "ed", "finance", "quality"]
    assert views["nursing"].kpis == NURSING
    assert [p.value for p in views["finance"].perspectives] == ["financial"] and views["finance"].kpis == []


def test_an_unknown_kpi_in_a_view_names_file_line_and_field(tmp_path: Path) -> None:
    defs = tmp_path / "kpi_defs"
    shutil.copytree(REPO_ROOT / "kpi_defs", defs)
    bad = defs / "views" / "local.yaml"
    bad.write_text(
        "views:\n"  # line 1
        "  - id: ward\n"  # 2
        "    name: Ward\n"  # 3
        "    perspectives: [patient]\n"  # 4
        "    kpis:\n"  # 5
        "      - falls_per_1000_patient_days\n"  # 6
        "      - fals_per_1000_patient_days\n"  # 7: a typo
        "      - bed_occupancy\n"  # 8: internal process, not in the view's perspectives
        "    layout: {kind: tiles}\n"  # 9: not a layout
    )
    with pytest.raises(ConfigError) as caught:
        load_catalogue(defs)
    problems = caught.value.problems
    assert any(p.startswith(f"{bad}:9: views.0.layout.kind:") for p in problems), problems
    (bad.parent / "local.yaml").write_text(bad.read_text().replace("{kind: tiles}", "{kind: table}"))
    with pytest.raises(ConfigError) as caught:
        load_catalogue(defs)
    assert caught.value.problems == [
        f"{bad}:7: views.0.kpis.1: unknown KPI 'fals_per_1000_patient_days'",
        f"{bad}:8: views.0.kpis.2: KPI 'bed_occupancy' is in the internal_process perspective, "
        "not in the view's",
    ]


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ViewStore]:
    if request.param == "sqlite":
        db = open_database(tmp_path / "alerts.sqlite")
    else:
        url: str = request.getfixturevalue("postgres_url")
        name = f"t{uuid.uuid4().hex[:12]}"
        with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        db = open_database(url.rsplit("/", 1)[0] + f"/{name}")
    try:
        yield ViewStore(db)
    finally:
        db.close()


def test_the_store_keeps_owners_shared_views_and_landing(store: ViewStore) -> None:
    mine = store.add("alice", False, {"name": "Mine", "kpis": ["bed_occupancy"]})
    shared = store.add("admin", True, {"name": "Everyone's"})
    store.add("bob", False, {"name": "Bob's"})
    assert [v["id"] for v in store.visible("alice")] == [mine["id"], shared["id"]]
    assert len(store.visible("alice", everyone=True)) == 3
    assert mine["spec"] == {"name": "Mine", "kpis": ["bed_occupancy"]} and mine["shared"] is False
    changed = store.replace(mine["id"], False, {"name": "Mine, renamed"})
    assert changed is not None and changed["spec"]["name"] == "Mine, renamed"
    assert store.landing("alice") is None
    store.set_landing("alice", shared["id"])
    store.set_landing("alice", mine["id"])  # a second choice replaces the first
    assert store.landing("alice") == mine["id"]
    assert store.delete(mine["id"]) and not store.delete(mine["id"])
    assert store.landing("alice") is None and store.get(mine["id"]) is None  # no dangling landing


async def test_views_over_http_and_the_scorecard_filtered_by_one(service: Service) -> None:
    """Local mode: the caller is the local operator (an admin)."""
    async with httpx.AsyncClient(base_url=base(service), timeout=30) as api:
        listed = (await api.get("/api/v1/views")).json()
        assert [v["id"] for v in listed["views"]] == ["executive", "nursing", "ed", "finance", "quality"]
        assert listed["landing"] is None and all(v["builtin"] for v in listed["views"])

        nursing = (await api.get("/api/v1/scorecard", params={"view": "nursing"})).json()
        shown = [k["id"] for p in nursing["perspectives"] for k in p["kpis"]]
        # the scorecard orders KPIs by perspective (financial, patient, internal, learning), then
        # in catalogue order: the nursing view's 15 KPIs, each once
        assert sorted(shown) == sorted(NURSING) and nursing["view"]["id"] == "nursing"
        finance = (await api.get("/api/v1/scorecard", params={"view": "finance"})).json()
        assert [p["id"] for p in finance["perspectives"]] == ["financial"]

        body: dict[str, Any] = {
            "name": "ICU huddle",
            "kpis": ["patient_to_nurse_ratio", "bed_occupancy"],
            "places": [{"unit": "ICU"}],
            "layout": {"kind": "table"},
        }
        created = await api.post("/api/v1/views", json=body)
        assert created.status_code == 201, created.text
        view = created.json()
        assert view["owner"] == "local" and view["shared"] is False and view["builtin"] is False
        icu = (await api.get("/api/v1/scorecard", params={"view": view["id"]})).json()
        assert icu["group"] == {"facility": "DEMO", "department": "critical_care", "unit": "ICU"}
        assert [k["id"] for p in icu["perspectives"] for k in p["kpis"]] == [
            "bed_occupancy",
            "patient_to_nurse_ratio",
        ]  # catalogue order (files sorted by name)
        at_4w = (await api.get("/api/v1/scorecard", params={"view": view["id"], "unit": "4W"})).json()
        assert at_4w["group"]["unit"] == "4W"  # a place asked for wins over the view's

        wrong = await api.post(
            "/api/v1/views", json={"name": "x", "kpis": ["bed_occupancy", "nope"], "places": [{"unit": "9Z"}]}
        )
        assert wrong.status_code == 422
        assert "kpis.1: unknown KPI 'nope'" in wrong.json()["detail"]
        assert "places.0.unit: unknown unit '9Z'" in wrong.json()["detail"]

        renamed = await api.put(f"/api/v1/views/{view['id']}", json={**body, "name": "ICU safety huddle"})
        assert renamed.status_code == 200 and renamed.json()["name"] == "ICU safety huddle"
        assert (await api.put("/api/v1/views/nursing", json=body)).status_code == 403  # built-in
        assert (await api.put(f"/api/v1/views/{view['id']}/landing")).json() == {"landing": view["id"]}
        listed = (await api.get("/api/v1/views")).json()
        assert listed["landing"] == view["id"]
        assert [v["id"] for v in listed["views"] if v["landing"]] == [view["id"]]

        assert (await api.delete(f"/api/v1/views/{view['id']}")).status_code == 204
        assert (await api.get(f"/api/v1/views/{view['id']}")).status_code == 404
        assert (await api.get("/api/v1/scorecard", params={"view": view["id"]})).status_code == 404
        assert (await api.get("/api/v1/views")).json()["landing"] is None


@pytest.mark.keycloak
async def test_owners_change_their_own_views_and_admins_the_shared_ones(
    oidc_service: Service, keycloak: Keycloak
) -> None:
    viewer, ops, admin = (
        bearer(keycloak.password_grant(u)["access_token"]) for u in ("viewer", "ops", "admin")
    )
    body = {"name": "My unit", "kpis": ["bed_occupancy"], "places": [{"unit": "4W"}]}
    async with httpx.AsyncClient(base_url=base(oidc_service), timeout=30) as api:
        own = await api.post("/api/v1/views", json=body, headers=viewer)
        assert own.status_code == 201, own.text
        mine = own.json()["id"]
        refused = await api.post("/api/v1/views", json={**body, "shared": True}, headers=viewer)
        assert refused.status_code == 403 and "admin" in refused.json()["detail"]
        # another's private view: not seen, so not found, and not changed
        assert (await api.get(f"/api/v1/views/{mine}", headers=ops)).status_code == 404
        assert (await api.put(f"/api/v1/views/{mine}", json=body, headers=ops)).status_code == 404
        assert (await api.delete(f"/api/v1/views/{mine}", headers=admin)).status_code == 404
        assert mine not in [v["id"] for v in (await api.get("/api/v1/views", headers=ops)).json()["views"]]

        shared = await api.post(
            "/api/v1/views", json={**body, "name": "Med-surg", "shared": True}, headers=admin
        )
        assert shared.status_code == 201 and shared.json()["shared"] is True
        sid = shared.json()["id"]
        seen = (await api.get("/api/v1/views", headers=viewer)).json()["views"]
        assert {mine, sid} <= {v["id"] for v in seen}
        assert (await api.put(f"/api/v1/views/{sid}", json=body, headers=viewer)).status_code == 403
        assert (await api.delete(f"/api/v1/views/{sid}", headers=ops)).status_code == 403
        # anyone who sees a view may land on it; the landing view is each person's own
        assert (await api.put(f"/api/v1/views/{sid}/landing", headers=viewer)).status_code == 200
        assert (await api.get("/api/v1/views", headers=viewer)).json()["landing"] == sid
        assert (await api.get("/api/v1/views", headers=ops)).json()["landing"] is None
        updated = await api.put(
            f"/api/v1/views/{sid}", json={**body, "name": "Med-surg", "shared": True}, headers=admin
        )
        assert updated.status_code == 200
        assert (await api.put(f"/api/v1/views/{mine}", json={**body, "name": "Mine"}, headers=viewer)).json()[
            "name"
        ] == "Mine"
        assert (await api.delete(f"/api/v1/views/{sid}", headers=admin)).status_code == 204
        assert (await api.get("/api/v1/views", headers=viewer)).json()["landing"] is None
