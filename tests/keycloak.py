"""A real OpenID Connect provider for the tests: Keycloak started by deploy/keycloak/keycloak.sh for
the session on a free loopback port, with the test realms (deploy/keycloak/README.md), and stopped
at the end whatever the tests did. Use it with `pytest_plugins = ("tests.keycloak",)`.

Without a JDK 21+ (or Maven to fetch Keycloak) the tests that need it are skipped with the reason on
a developer's machine, and fail under CI (CI=true): CI must not go green without the IdP proofs."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.config import REPO_ROOT
from tests.alerting import free_port

KEYCLOAK_SH = REPO_ROOT / "deploy" / "keycloak" / "keycloak.sh"
TEST_SECRET = "carescore-tests-secret"  # public: deploy/keycloak/carescore-realm.json is a test realm
PASSWORDS = {
    "viewer": "viewer-pass",
    "clinician-icu": "clinician-pass",
    "clinician-med": "clinician-pass",
    "ops": "ops-pass",
    "admin": "admin-pass",
}


@dataclass(frozen=True)
class Keycloak:
    url: str  # http://127.0.0.1:PORT
    folder: Path

    def issuer(self, realm: str = "carescore") -> str:
        return f"{self.url}/realms/{realm}"

    def endpoint(self, name: str, realm: str = "carescore") -> str:
        return f"{self.issuer(realm)}/protocol/openid-connect/{name}"

    def token(self, realm: str = "carescore", **form: str) -> dict[str, Any]:
        """POST to the token endpoint; the JSON answer (asserting success)."""
        response = httpx.post(self.endpoint("token", realm), data=form, timeout=30)
        assert response.status_code == 200, f"token endpoint: {response.status_code} {response.text}"
        return dict(response.json())

    def password_grant(
        self,
        username: str,
        password: str | None = None,
        *,
        client: str = "carescore-tests",
        secret: str = TEST_SECRET,
        realm: str = "carescore",
    ) -> dict[str, Any]:
        return self.token(
            realm,
            grant_type="password",
            client_id=client,
            client_secret=secret,
            username=username,
            password=password or PASSWORDS[username],
            scope="openid",
        )

    def client_credentials(
        self, client: str = "carescore-tests", secret: str = TEST_SECRET
    ) -> dict[str, Any]:
        return self.token(grant_type="client_credentials", client_id=client, client_secret=secret)

    def refresh(
        self, refresh_token: str, client: str = "carescore-tests", secret: str = TEST_SECRET
    ) -> dict[str, Any]:
        return self.token(
            grant_type="refresh_token", client_id=client, client_secret=secret, refresh_token=refresh_token
        )


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI=true, so this is a failure, not a skip")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def keycloak(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keycloak]:
    """Keycloak on a free 127.0.0.1 port for the session (start: ~15-30 s; waits on the realm's
    discovery document, not on a fixed sleep)."""
    java = subprocess.run([str(KEYCLOAK_SH), "java"], capture_output=True, text=True)
    if java.returncode != 0:
        _unavailable(f"no JDK for Keycloak: {java.stderr.strip()}")
    fetched = (KEYCLOAK_SH.parent / "dist" / "keycloak" / ".complete").exists()
    if not fetched and shutil.which("mvn") is None:
        _unavailable("Keycloak is not fetched (make keycloak-fetch) and mvn is not there to fetch it")
    folder = tmp_path_factory.mktemp("keycloak")
    port = free_port()
    try:  # the start too: a start cut short (timeout, ^C) leaves a pid file for stop to use
        started = subprocess.run(
            [str(KEYCLOAK_SH), "start", str(folder), str(port)], capture_output=True, text=True, timeout=600
        )
        if started.returncode != 0:
            pytest.fail(f"Keycloak did not start: {started.stdout}{started.stderr}")
        yield Keycloak(url=f"http://127.0.0.1:{port}", folder=folder)
    finally:
        subprocess.run([str(KEYCLOAK_SH), "stop", str(folder)], capture_output=True, timeout=120)
