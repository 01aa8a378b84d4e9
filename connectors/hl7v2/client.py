"""A small MLLP client: send a message, wait for its ACK (used by the demo and replay)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from connectors.hl7v2.mllp import END, START, frame


class MLLPClient:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 2575,
        *,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ):
        self.host = host
        self.port = port
        self.timeout = timeout
        self.ssl_context = ssl_context
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, ssl=self.ssl_context), self.timeout
        )

    async def send(self, message: str | bytes) -> str:
        """Send one message and return its ACK (reconnecting once if the link dropped)."""
        for attempt in (1, 2):
            if self._writer is None or self._writer.is_closing():
                await self.connect()
            assert self._reader is not None and self._writer is not None
            try:
                self._writer.write(frame(message))
                await self._writer.drain()
                data = await asyncio.wait_for(self._reader.readuntil(END), self.timeout)
            except (ConnectionError, asyncio.IncompleteReadError):
                await self.close()
                if attempt == 2:
                    raise
                continue
            start = data.find(START)
            return data[start + 1 : -len(END)].decode("utf-8", "replace")
        raise ConnectionError("unreachable")

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None

    async def __aenter__(self) -> MLLPClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def ack_code(ack: str) -> str:
    """MSA-1 of an ACK ('' when there is none)."""
    for segment in ack.replace("\n", "\r").split("\r"):
        if segment.startswith("MSA"):
            fields = segment.split(segment[3] if len(segment) > 3 else "|")
            return fields[1] if len(fields) > 1 else ""
    return ""
