"""Delivery channels. Each has `name` and `async send(payload, idempotency_key)`, raising
DeliveryError when the receiver did not take the notification."""

from __future__ import annotations

from typing import Any, Protocol


class DeliveryError(RuntimeError):
    def __init__(self, message: str, *, retry: bool = True):
        super().__init__(message)
        self.retry = retry


class Channel(Protocol):
    name: str

    async def send(self, payload: dict[str, Any], idempotency_key: str) -> None: ...
