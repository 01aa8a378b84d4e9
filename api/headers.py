"""Security headers on every response, and the Host header checked.

The scorecard page loads only its own script and stylesheet and talks only to this origin, so
the policy allows nothing else: no inline script, no framing (clickjacking an acknowledge
button), no MIME sniffing of uploads echoed back, no referrer leaking unit names to other
sites. HSTS only when served over TLS (a browser would otherwise pin a plain-HTTP dev server).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
HSTS = (b"strict-transport-security", b"max-age=31536000")


class SecurityHeaders:
    """connect_src: another origin the page may call (the IdP's, for the token exchange)."""

    def __init__(self, app: ASGIApp, *, tls: bool = False, connect_src: str | None = None):
        self.app = app
        headers = list(HEADERS)
        if connect_src:
            csp = CSP.replace("connect-src 'self'", f"connect-src 'self' {connect_src}")
            headers[0] = (b"content-security-policy", csp.encode())
        self.headers = headers + ([HSTS] if tls else [])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    h for h in self.headers if h[0] not in present
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)
