"""Webhook: POST the alert as JSON, signed with HMAC-SHA256 when a secret is set.

Headers: Idempotency-Key (same for every retry of one notification, so receivers can
de-duplicate), X-Carescore-Timestamp and X-Carescore-Signature: sha256=hex(HMAC(secret,
timestamp + "." + body)). A 2xx is delivered; 4xx other than 408/429 will not get better
by retrying; anything else is retried by the service with backoff.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from alerts.channels import DeliveryError
from engine.secrets import redact_url

# printable ASCII stays as it is (the keys carescore makes), anything else is %-escaped
_KEY_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "%" and not chr(c).isalnum())


def header_key(idempotency_key: str) -> str:
    """The key as a header value: keys hold staff ids (routes.yaml, the roster), and a CR/LF or a
    non-ASCII letter there must not make the request unsendable (httpx refuses both)."""
    return quote(idempotency_key, safe=_KEY_SAFE)


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class WebhookChannel:
    """`routed=False`: every alert change, one JSON per alert (integrations). `routed=True`:
    the notices routes.yaml sends to people with a pager id (a paging gateway)."""

    def __init__(
        self, name: str, url: str, *, secret: str | None = None, timeout: float = 5.0, routed: bool = False
    ):
        self.name = name
        self.routed = routed
        self.url = url
        self.shown = redact_url(url)  # for errors: they reach the logs and outbox.last_error (the API)
        self.secret = secret
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None

    async def send(self, payload: dict[str, Any], idempotency_key: str) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout)
        body = orjson.dumps(payload)
        stamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": header_key(idempotency_key),
            "X-Carescore-Timestamp": stamp,
            "User-Agent": "carescore-alerts",
        }
        if self.secret:
            headers["X-Carescore-Signature"] = signature(self.secret, stamp, body)
        try:
            response = await self._client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            said = str(exc).replace(self.url, self.shown)
            raise DeliveryError(f"{self.shown}: {type(exc).__name__}: {said}") from None
        if response.is_success:
            return
        retry = response.status_code >= 500 or response.status_code in (408, 429)
        raise DeliveryError(f"{self.shown}: HTTP {response.status_code}", retry=retry)

    def address(self, recipient: dict[str, Any]) -> str | None:
        return recipient.get("pager")

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
