"""Issue 14, the page's sign-in in a real browser: Debian's Chromium (Playwright) opens the page of a
carescore that wants OpenID Connect, is sent to the real Keycloak's login form (tests/keycloak.py),
signs in, comes back with an authorization code exchanged with its PKCE verifier (signin.js) and
sees the scorecard; a viewer's acknowledgement is refused with the reason on the page; an expired
access token is renewed with the refresh token without leaving the page."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from carescore.serve import Service
from engine.config import Settings
from tests.browser import WAIT, expect, send, shot
from tests.test_e2e_embedded import now, stat_pair

if TYPE_CHECKING:
    from tests.keycloak import Keycloak

pytest_plugins = ("tests.browser", "tests.keycloak")
pytestmark = [pytest.mark.browser, pytest.mark.keycloak, pytest.mark.timeout(240)]


def page_service(settings_for: Callable[..., Settings], kpi_dir: Callable[..., Path], **oidc: Any) -> Service:
    # STAT turnaround alerts after 1 s and 3 results, as in test_page_browser
    kpis = kpi_dir({"lab_tat_stat": {"for": "1s", "min_samples": 3}})
    return Service(settings_for(kpi_defs=kpis, api={"port": 0, "auth": {"oidc": oidc}}))


@pytest.fixture
async def signed_in_page(
    settings_for: Callable[..., Settings], kpi_dir: Callable[..., Path], keycloak: Keycloak
) -> AsyncIterator[Callable[..., Any]]:
    """sign_in(browser, user, client) -> (service, page): a carescore whose page client is `client`,
    its page opened in Chromium and signed in as `user` through Keycloak's own login form."""
    services: list[Service] = []

    async def sign_in(browser: Any, user: str, client: str = "carescore-page") -> tuple[Service, Any]:
        from tests.keycloak import PASSWORDS

        oidc = {
            "issuer": keycloak.issuer(),
            "audience": "carescore-api",
            "page_client_id": client,
            "leeway": 0,
        }
        svc = page_service(settings_for, kpi_dir, **oidc)
        await svc.start()
        services.append(svc)
        page = await (await browser.new_context()).new_page()
        page.errors = []
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        await page.goto(f"http://127.0.0.1:{svc.api_port}/")
        # signin.js leaves for the IdP: Keycloak's login page, its form filled as a person would
        await page.wait_for_url(f"{keycloak.issuer()}/protocol/openid-connect/auth?*")
        await page.get_by_label("Username", exact=True).fill(user)
        await page.get_by_label("Password", exact=True).fill(PASSWORDS[user])
        await page.get_by_role("button", name="Sign In").click()
        # back on the page: the code is exchanged and leaves the address bar
        await page.wait_for_url(f"http://127.0.0.1:{svc.api_port}/")
        return svc, page

    try:
        yield sign_in
    finally:
        for svc in services:
            await svc.stop()


async def test_sign_in_through_keycloak_shows_the_scorecard(
    browser: Any, signed_in_page: Callable[..., Any], keycloak: Keycloak
) -> None:
    _, page = await signed_in_page(browser, "clinician-icu")
    await expect(page.locator("section.perspective")).to_have_count(4, timeout=WAIT)
    await expect(page.get_by_role("combobox", name="Place")).to_be_visible()
    stored = await page.evaluate("JSON.parse(sessionStorage.getItem('carescore.signin'))")
    # what the tab keeps: the tokens, no verifier or state once back; nothing in the address bar
    assert set(stored) == {"token", "refresh"} and stored["token"] and stored["refresh"]
    assert "code=" not in page.url
    # the API takes that token: the history of a KPI, asked with it, is answered
    await page.get_by_role("button", name="History of Bed occupancy").click()
    await expect(page.get_by_role("dialog", name="History: Bed occupancy").locator("canvas")).to_be_visible()
    await page.screenshot(path=shot("signed-in"))
    assert page.errors == []


async def test_a_viewer_cannot_acknowledge_and_is_told_why(
    browser: Any, signed_in_page: Callable[..., Any]
) -> None:
    svc, page = await signed_in_page(browser, "viewer")
    start = now() - timedelta(minutes=110)
    # STAT troponins resulted after 85, 95, 105, 100 min on ICU: p90 > 75 min, critical
    await send(
        svc, *(m for i, tat in enumerate([85, 95, 105, 100]) for m in stat_pair(f"S{i}", "ICU", start, tat))
    )
    to_ack = page.get_by_role("list", name="Alerts to acknowledge")
    alert = to_ack.get_by_role("listitem").filter(has_text="ICU")
    await expect(alert).to_have_count(1, timeout=WAIT)
    page.once("dialog", lambda dialog: dialog.accept(""))
    await alert.get_by_role("button", name="Acknowledge:").click()
    notice = page.get_by_role("alert")
    # the API's 403 problem (a viewer has no ack permission), on the page with its reason
    await expect(notice).to_contain_text("Not acknowledged (403 Forbidden)", timeout=WAIT)
    await expect(alert).to_have_count(1)  # still waiting for someone who may acknowledge it
    await page.screenshot(path=shot("viewer-refused"))
    assert page.errors == []


async def test_an_expired_access_token_is_refreshed_without_leaving_the_page(
    browser: Any, signed_in_page: Callable[..., Any], keycloak: Keycloak
) -> None:
    """carescore-page-short issues 4 s access tokens (deploy/keycloak/realms.py); the page polls
    every 5 s, so its next poll is refused (401, leeway 0) and signin.js renews the token with the
    refresh_token grant: the page stays, the scorecard keeps updating with the new token."""
    _, page = await signed_in_page(browser, "viewer", client="carescore-page-short")
    await expect(page.locator("section.perspective")).to_have_count(4, timeout=WAIT)
    first = await page.evaluate("JSON.parse(sessionStorage.getItem('carescore.signin')).token")
    grants: list[str] = []
    refused: list[int] = []

    def seen(request: Any) -> None:
        if request.url == keycloak.endpoint("token"):
            grants.append(request.post_data_json.get("grant_type", "") if request.post_data else "")

    page.on("request", seen)
    page.on("response", lambda r: refused.append(r.status) if r.status == 401 else None)
    left: list[str] = []
    page.on("framenavigated", lambda frame: left.append(frame.url))
    await page.wait_for_function(
        "(first) => JSON.parse(sessionStorage.getItem('carescore.signin')).token !== first",
        arg=first,
        timeout=WAIT,
    )
    # after the renewal the polls go on being answered: `as of` is written again with a later time
    before = await page.locator("#asof").text_content()
    await expect(page.locator("#asof")).not_to_have_text(before or "", timeout=WAIT)
    await expect(page.locator("#asof")).to_contain_text("as of")
    assert "refresh_token" in grants and "authorization_code" not in grants, grants
    assert refused, "the expired token was never refused: nothing proved the renewal was needed"
    assert left == [], f"the page was left (signed in again) instead of refreshed: {left}"
    assert page.errors == []
