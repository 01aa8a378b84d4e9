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
    routed: bool  # True: notices to people (routes.yaml); False: every alert change

    async def send(self, payload: dict[str, Any], idempotency_key: str) -> None: ...

    def address(self, recipient: dict[str, Any]) -> str | None:
        """Where this person is reached on this channel (None: not on this channel)."""
        ...
