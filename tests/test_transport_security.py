"""TLS on every listener that leaves the machine, security headers, Host checks, /docs off.

Certificates come from the deploy's own script (deploy/compose/make-certs.sh: a private CA and a
server certificate made by openssl); the clients are real TLS clients (httpx, the MLLP client)
that verify against that CA."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from carescore.serve import Service
from connectors.hl7v2 import messages as m
from connectors.hl7v2.client import MLLPClient, ack_code
from connectors.hl7v2.parser import parse
from engine.config import REPO_ROOT, Settings, load_settings
from engine.places import Places
from engine.yamlconf import ConfigError
from tests.conftest import DEMO_PLACES
from tests.test_hl7_connector import NOW, PATIENT, visit

MAKE_CERTS = REPO_ROOT / "deploy" / "compose" / "make-certs.sh"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    subprocess.run([MAKE_CERTS, folder, "localhost"], check=True, capture_output=True)
    key, csr, crt = folder / "client.key", folder / "client.csr", folder / "client.crt"
    request = ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=lab-interface", "-keyout"]
    subprocess.run([*request, key, "-out", csr], check=True, capture_output=True)
    sign = [
        "openssl",
        "x509",
        "-req",
        "-CAcreateserial",
        "-days",
        "1",
        "-in",
    ]  # by the same CA: an interface's
    ca = ["-CA", folder / "ca.crt", "-CAkey", folder / "ca.key"]
    subprocess.run([*sign, csr, *ca, "-out", crt], check=True, capture_output=True)
    return folder


def _trusting(pki: Path) -> ssl.SSLContext:
    """A client that trusts only the deploy's CA."""
    return ssl.create_default_context(cafile=str(pki / "ca.crt"))


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "carescore.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("section", ["api", "mllp"])
def test_a_network_bind_without_tls_refuses_to_start_naming_file_line_and_field(
    tmp_path: Path, section: str
) -> None:
    path = _write(tmp_path, f"timezone: UTC\n{section}:\n  host: 0.0.0.0\n  port: 9999\n")
    with pytest.raises(ConfigError) as refused:
        load_settings(path)
    text = str(refused.value)
    assert f"{path}:2" in text  # the line of the section
    assert f"{section}.tls is not set" in text and "0.0.0.0" in text


def test_loopback_or_an_explicit_proxy_statement_may_go_without_tls(tmp_path: Path) -> None:
    assert load_settings(_write(tmp_path, "api:\n  host: 127.0.0.1\nmllp:\n  host: ::1\n")).api.tls is None
    behind_proxy = (
        "api:\n  host: 0.0.0.0\n  plaintext_outside_loopback: true\n"
        "  auth:\n    oidc:\n      issuer: https://idp.example/realms/x\n      audience: a\n"
        "mllp:\n  enabled: false\n"
    )
    assert load_settings(_write(tmp_path, behind_proxy)).api.host == "0.0.0.0"


def test_tls_files_that_do_not_exist_are_named(tmp_path: Path) -> None:
    path = _write(tmp_path, "api:\n  tls:\n    cert: nope.crt\n    key: nope.key\n")
    with pytest.raises(ConfigError, match=r"api\.tls\.cert: .*nope\.crt does not exist"):
        load_settings(path)


async def test_https_api_with_verified_certificate_and_security_headers(
    settings_for: Callable[..., Settings], pki: Path
) -> None:
    tls = {"cert": pki / "server.crt", "key": pki / "server.key"}
    svc = Service(settings_for(api={"port": 0, "tls": tls}, mllp={"port": 0, "tls": tls}))
    await svc.start()
    try:
        url = f"https://localhost:{svc.api_port}"
        async with httpx.AsyncClient(verify=_trusting(pki)) as client:
            page = await client.get(f"{url}/")
            assert page.status_code == 200
            headers = page.headers
            assert "frame-ancestors 'none'" in headers["content-security-policy"]
            assert "script-src 'self'" in headers["content-security-policy"]
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["strict-transport-security"].startswith("max-age=")
            assert (await client.get(f"{url}/docs")).status_code == 404  # off unless api.docs
        with pytest.raises(httpx.ConnectError):  # an unknown CA is refused by a verifying client
            async with httpx.AsyncClient() as client:
                await client.get(f"{url}/healthz")
        with pytest.raises(httpx.HTTPError):  # plain HTTP to the TLS port gets no answer
            async with httpx.AsyncClient() as client:
                await client.get(f"http://127.0.0.1:{svc.api_port}/healthz", timeout=3)
        async with MLLPClient("localhost", svc.mllp.port, ssl_context=_trusting(pki)) as mllp:
            assert ack_code(await mllp.send(m.adt("A01", NOW, visit(), admit=NOW))) == "AA"
    finally:
        await svc.stop()


async def test_api_client_certificates_when_a_client_ca_is_set(
    settings_for: Callable[..., Settings], pki: Path
) -> None:
    tls = {"cert": pki / "server.crt", "key": pki / "server.key", "client_ca": pki / "ca.crt"}
    svc = Service(settings_for(api={"port": 0, "tls": tls}))
    await svc.start()
    try:
        url = f"https://localhost:{svc.api_port}/healthz"
        with_cert = _trusting(pki)
        with_cert.load_cert_chain(pki / "client.crt", pki / "client.key")
        async with httpx.AsyncClient(verify=with_cert) as client:
            assert (await client.get(url)).status_code == 200
        with pytest.raises(httpx.HTTPError):  # no client certificate: the handshake fails
            async with httpx.AsyncClient(verify=_trusting(pki)) as client:
                await client.get(url, timeout=5)
    finally:
        await svc.stop()


async def test_plain_loopback_api_has_headers_but_no_hsts_docs_on_request_and_host_checks(
    settings_for: Callable[..., Settings],
) -> None:
    svc = Service(settings_for(api={"port": 0, "docs": True, "trusted_hosts": ["127.0.0.1", "localhost"]}))
    await svc.start()
    try:
        base = f"http://127.0.0.1:{svc.api_port}"
        async with httpx.AsyncClient() as client:
            kpis = await client.get(f"{base}/api/v1/kpis")
            assert kpis.status_code == 200 and kpis.headers["x-frame-options"] == "DENY"
            assert "strict-transport-security" not in kpis.headers  # not over plain HTTP
            assert (await client.get(f"{base}/docs")).status_code == 200
            forged = await client.get(f"{base}/api/v1/kpis", headers={"host": "evil.example"})
            assert forged.status_code == 400
    finally:
        await svc.stop()


# -- MLLP client certificates tied to facilities ----------------------------------------------
def _two_sites() -> dict[str, Any]:
    """The demo's DEMO, and EAST with one ward (4E)."""
    east = {"id": "EAST", "departments": [{"id": "medicine", "units": [{"id": "4E", "beds": 20}]}]}
    return {**DEMO_PLACES, "facilities": [*DEMO_PLACES["facilities"], east]}


def _at(site: str, unit: str, msh4: str, pl_facility: str = "") -> str:
    """An A01 whose MSH-4 is msh4 and whose PV1-3 is unit^1^1^pl_facility."""
    where = m.Visit(PATIENT, "I", m.Location(unit, "1", "1", pl_facility), f"V-{site}", msh4)
    return m.adt("A01", NOW, where, admit=NOW)


def test_client_facilities_are_validated_against_places_and_need_a_client_ca(
    tmp_path: Path, pki: Path
) -> None:
    tls = f"  tls:\n    cert: {pki / 'server.crt'}\n    key: {pki / 'server.key'}\n"
    entry = "  client_facilities:\n    - certificate: lab-interface\n      facilities: [DEMO, NOWHERE]\n"
    with pytest.raises(ConfigError, match=r"client_ca"):
        load_settings(_write(tmp_path, "mllp:\n" + tls + entry))
    places = "places:\n  facilities:\n    - id: DEMO\n"  # lines 1-3; mllp from line 4
    path = _write(tmp_path, places + "mllp:\n" + tls + f"    client_ca: {pki / 'ca.crt'}\n" + entry)
    with pytest.raises(ConfigError) as unknown:
        load_settings(path)
    where = f"{path}:11: mllp.client_facilities.0.facilities"  # the line of `facilities:`
    assert f"{where}: unknown facility NOWHERE" in str(unknown.value)


async def test_a_client_certificate_sends_only_for_its_facilities(
    settings_for: Callable[..., Settings], pki: Path
) -> None:
    """lab-interface (the certificate's CN) may send for EAST only. What counts is the facility
    the events resolve to: PV1-3.4 when the location names one, else MSH-4 (HL7 PL.4 is the
    location's facility; places maps both to our ids)."""
    tls = {"cert": pki / "server.crt", "key": pki / "server.key", "client_ca": pki / "ca.crt"}
    mllp = {
        "port": 0,
        "tls": tls,
        "client_facilities": [{"certificate": "lab-interface", "facilities": ["EAST"]}],
    }
    svc = Service(settings_for(mllp=mllp, places=Places.model_validate(_two_sites())))
    await svc.start()
    refused = REGISTRY.get_sample_value("carescore_hl7_facility_refused_total") or 0.0
    letters = len(svc.runtime.dead_letters.query())
    try:
        client_tls = _trusting(pki)
        client_tls.load_cert_chain(pki / "client.crt", pki / "client.key")
        async with MLLPClient("localhost", svc.mllp.port, ssl_context=client_tls) as client:
            own = await client.send(_at("own", "4E", "EAST", "EAST"))
            other = await client.send(_at("other", "4W", "DEMO", "DEMO"))
            # MSH-4 says EAST, the location says DEMO: the events would be DEMO's
            disguised = await client.send(_at("disguised", "4W", "EAST", "DEMO"))
            # no facility in the location: MSH-4 decides, and names DEMO
            by_header = await client.send(_at("header", "4W", "DEMO"))
        assert ack_code(own) == "AA"
        for reply, where in (
            (other, ("PV1", "3", "4")),
            (disguised, ("PV1", "3", "4")),
            (by_header, ("MSH", "4", "")),
        ):
            assert ack_code(reply) == "AR", reply
            err = parse(reply).first("ERR")
            assert err is not None
            # ERR-2 (ERL): segment^sequence^field^repetition^component
            assert (err.get(2, 1), err.get(2, 3), err.get(2, 5)) == where
            assert "facility DEMO" in err.get(8) and "'lab-interface'" in err.get(8)
        assert REGISTRY.get_sample_value("carescore_hl7_facility_refused_total") == refused + 3
        kept = svc.runtime.dead_letters.query()
        assert len(kept) == letters + 3 and all("lab-interface" in d.reason for d in kept[-3:])
        # without a client certificate the handshake itself fails
        with pytest.raises((ssl.SSLError, OSError, asyncio.IncompleteReadError)):
            async with MLLPClient("localhost", svc.mllp.port, ssl_context=_trusting(pki)) as client:
                await client.send(_at("own", "4E", "EAST", "EAST"))
    finally:
        await svc.stop()
