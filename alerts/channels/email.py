"""Email over SMTP: plain text and HTML of the same notice, one message per recipient.

The Message-ID is made from the notice's idempotency key, so a retry after a lost reply
carries the same id and mail systems (and people) can tell it is the same notice. Every
header value is made one line first (alerts/render.py: a unit code from a feed may hold
CR/LF), and a recipient refused with a 4xx (greylisting, a full mailbox) is tried again,
one refused with a 5xx is not.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage
from typing import Any

from alerts.channels import DeliveryError
from alerts.render import one_line, subject, text, to_html


class EmailChannel:
    routed = True  # one notice per person, to their address

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        *,
        name: str = "email",
        starttls: bool = False,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
        base_url: str | None = None,
    ):
        self.name = name
        self.host, self.port, self.sender = host, port, sender
        self.starttls, self.username, self.password = starttls, username, password
        self.timeout = timeout
        self.base_url = base_url

    def address(self, recipient: dict[str, Any]) -> str | None:
        return recipient.get("email")

    def message(self, payload: dict[str, Any], idempotency_key: str) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = one_line(subject(payload))
        msg["From"] = one_line(self.sender)
        msg["To"] = one_line(payload["recipient"]["email"])
        safe = "".join(ch if ch.isascii() and ch.isalnum() else "." for ch in idempotency_key)
        msg["Message-ID"] = f"<{safe}@carescore>"
        msg["X-Carescore-Event"] = one_line(payload["event"])
        msg.set_content(text(payload, self.base_url))
        msg.add_alternative(to_html(payload, self.base_url), subtype="html")
        return msg

    def _send(self, msg: EmailMessage) -> None:
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.username:
                smtp.login(self.username, self.password or "")
            smtp.send_message(msg)

    async def send(self, payload: dict[str, Any], idempotency_key: str) -> None:
        msg = self.message(payload, idempotency_key)
        try:
            await asyncio.to_thread(self._send, msg)
        except smtplib.SMTPRecipientsRefused as exc:
            temporary = any(400 <= code < 500 for code, _ in exc.recipients.values())
            raise DeliveryError(
                f"{self.host}:{self.port} refused {msg['To']}: {exc}", retry=temporary
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"{self.host}:{self.port}: {type(exc).__name__}: {exc}") from exc
