"""MLLP (Minimal Lower Layer Protocol) over TCP: <VT> message <FS><CR>, one ACK per message.

Each connection is read in order and answered in order. Bytes outside a frame are
skipped and counted; a frame longer than `max_message_bytes` is answered with AR and
discarded up to its end; a connection idle longer than `idle_timeout` is closed; a frame
cut off by a closed connection is logged and kept as a dead letter (it was never ACKed,
so the sender will resend it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from connectors.hl7v2.ack import build_ack
from connectors.hl7v2.parser import HL7ParseError, parse
from connectors.hl7v2.receiver import decode
from connectors.metrics import HL7_ACK_SECONDS, MLLP_CONNECTIONS, MLLP_FRAMING_ERRORS

log = logging.getLogger(__name__)

START = b"\x0b"
END = b"\x1c\r"
FS = b"\x1c"

FrameHandler = Callable[[bytes], "str | Awaitable[str]"]
HEAD_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Frame:
    kind: Literal["message", "oversize", "abandoned"]
    body: bytes
    """The message; for oversize and abandoned frames only their first bytes."""


class FrameDecoder:
    """Sans-IO MLLP framing: feed bytes, get frames. Never holds more than the size limit."""

    def __init__(self, max_message_bytes: int = 1024 * 1024):
        self.max = max_message_bytes
        self.head = min(HEAD_BYTES, max_message_bytes)  # what is kept of a frame too big to keep
        self.buf = bytearray()
        self.in_frame = False
        self.oversize_head: bytes | None = None
        self.junk_bytes = 0

    def feed(self, data: bytes) -> list[Frame]:
        out: list[Frame] = []
        buf = self.buf
        buf += data
        while buf:
            if not self.in_frame:
                start = buf.find(START)
                if start < 0:
                    self.junk_bytes += len(buf.strip(b"\r\n\x00 \x1c"))
                    buf.clear()
                    break
                self.junk_bytes += len(bytes(buf[:start]).strip(b"\r\n\x00 \x1c"))
                del buf[: start + 1]
                self.in_frame = True
                self.oversize_head = None
            end = buf.find(FS)
            restart = buf.find(START)
            if restart >= 0 and (end < 0 or restart < end):
                # A new frame began before this one ended: the sender gave this one up.
                out.append(Frame("abandoned", self.oversize_head or bytes(buf[: min(restart, self.head)])))
                del buf[:restart]
                self.in_frame = False
                continue
            if end < 0:
                if self.oversize_head is not None or len(buf) > self.max:
                    if self.oversize_head is None:
                        self.oversize_head = bytes(buf[: self.head])
                    buf.clear()
                break
            body = bytes(buf[:end])
            del buf[: end + 2 if buf[end + 1 : end + 2] == b"\r" else end + 1]
            self.in_frame = False
            if self.oversize_head is not None or len(body) > self.max:
                out.append(Frame("oversize", self.oversize_head or body[: self.head]))
                self.oversize_head = None
            else:
                out.append(Frame("message", body))
        return out

    def pending(self) -> bytes | None:
        """The start of an unfinished frame, if the stream stopped inside one."""
        if not self.in_frame:
            return None
        return self.oversize_head or bytes(self.buf[: self.head])


def frame(message: str | bytes) -> bytes:
    data = message.encode("utf-8") if isinstance(message, str) else message
    return START + data + END


class _Connection(asyncio.Protocol):
    """One sender. Frames are handled as they arrive (a sender that does not wait for each
    ACK gets its messages stored together, in one group commit) and ACKs go back strictly
    in arrival order. Handling starts in arrival order, so events reach the log in order.

    asyncio protocols rather than streams: no per-read task or timer, which is most of the
    cost of a small message at thousands per second."""

    def __init__(self, server: MLLPServer):
        self.server = server
        self.decoder = FrameDecoder(server.max_message_bytes)
        self.replies: deque[tuple[asyncio.Future[str | None] | str | None, float]] = deque()
        self.transport: asyncio.Transport | None = None
        self.acker: asyncio.Task[None] | None = None
        self.last_activity = time.monotonic()
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections.add(self)
        MLLP_CONNECTIONS.inc()

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        junk_before = self.decoder.junk_bytes
        frames = self.decoder.feed(data)
        if self.decoder.junk_bytes > junk_before:
            MLLP_FRAMING_ERRORS.labels("junk").inc()
            log.info(
                "mllp: bytes outside a frame skipped", extra={"bytes": self.decoder.junk_bytes - junk_before}
            )
        if not frames:
            return
        loop = asyncio.get_running_loop()
        for item in frames:
            started = time.perf_counter()
            reply: asyncio.Future[str | None] | str | None
            if item.kind == "message":
                try:
                    answer = self.server.handler(item.body)
                except Exception:
                    log.exception("mllp: handling a message failed; closing the connection unanswered")
                    self.close()
                    return
                reply = answer if isinstance(answer, str) else asyncio.ensure_future(answer)  # type: ignore[assignment]
            else:
                reply = loop.create_future()
                if item.kind == "oversize":
                    MLLP_FRAMING_ERRORS.labels("oversize").inc()
                    reply.set_result(self.server.oversize_reply(item.body))
                else:
                    MLLP_FRAMING_ERRORS.labels("abandoned").inc()
                    self.server.keep(item.body, "frame abandoned: a new frame started before its end")
                    reply.set_result(None)  # nothing to acknowledge: the sender has moved on
            self.replies.append((reply, started))
        if len(self.replies) > 500 and not self.paused and self.transport is not None:
            self.transport.pause_reading()  # far ahead of its ACKs: let TCP push back
            self.paused = True
        if self.acker is None or self.acker.done():
            self.acker = loop.create_task(self._acknowledge())

    async def _acknowledge(self) -> None:
        while self.replies:
            reply, started = self.replies[0]
            try:
                text = reply if isinstance(reply, str) else await reply  # type: ignore[misc]
            except Exception:
                log.exception("mllp: handling a message failed; closing the connection unanswered")
                self.replies.clear()
                self.close()
                return
            self.replies.popleft()
            if text is None:
                continue
            if self.transport is None or self.transport.is_closing():
                return
            self.transport.write(frame(text))
            HL7_ACK_SECONDS.observe(time.perf_counter() - started)
            if self.paused and len(self.replies) < 100:
                self.transport.resume_reading()
                self.paused = False

    def idle_for(self, now: float) -> float:
        return now - self.last_activity if not self.replies else 0.0

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.server.unfinished(self.decoder, "connection closed inside a frame")
        self.transport = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class MLLPServer:
    def __init__(
        self,
        handler: FrameHandler,
        host: str = "127.0.0.1",
        port: int = 2575,
        *,
        max_message_bytes: int = 1024 * 1024,
        idle_timeout: float = 300.0,
        ssl_context: ssl.SSLContext | None = None,
        on_unusable: Callable[[bytes, str], None] | None = None,
    ):
        self.handler = handler
        self.host = host
        self.port = port
        self.max_message_bytes = max_message_bytes
        self.idle_timeout = idle_timeout
        self.ssl_context = ssl_context
        self.on_unusable = on_unusable
        self.connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._reaper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self.host, self.port, ssl=self.ssl_context
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._reaper = loop.create_task(self._close_idle())
        log.info(
            "mllp listening",
            extra={"host": self.host, "port": self.port, "tls": self.ssl_context is not None},
        )

    async def _close_idle(self) -> None:
        period = max(0.05, min(self.idle_timeout / 4, 5.0))
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for conn in list(self.connections):
                if conn.idle_for(now) > self.idle_timeout:
                    self.unfinished(conn.decoder, "connection idle past the timeout inside a frame")
                    conn.decoder = FrameDecoder(self.max_message_bytes)
                    log.info("mllp connection idle, closing", extra={"idle_timeout": self.idle_timeout})
                    conn.close()

    async def stop(self) -> None:
        if self._server is None:
            return
        if self._reaper is not None:
            self._reaper.cancel()
        self._server.close()
        workers = [c.acker for c in self.connections if c.acker is not None and not c.acker.done()]
        if workers:
            await asyncio.wait(workers, timeout=5)  # answer what is in hand before closing
        for conn in list(self.connections):
            conn.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    def oversize_reply(self, head: bytes) -> str:
        reason = f"message larger than the {self.max_message_bytes} byte limit"
        self.keep(head, reason)
        try:
            msg = parse(decode(head).split("\r", 1)[0].split("\n", 1)[0] + "\r")
        except HL7ParseError:
            msg = None
        log.warning("mllp: oversize message rejected", extra={"limit": self.max_message_bytes})
        return build_ack(msg, "AR", text=reason, error_code=207)

    def unfinished(self, decoder: FrameDecoder, reason: str) -> None:
        pending = decoder.pending()
        if pending:
            MLLP_FRAMING_ERRORS.labels("unterminated").inc()
            log.warning("mllp: %s; never acknowledged", reason)
            self.keep(pending, reason)

    def keep(self, data: bytes, reason: str) -> None:
        if self.on_unusable is not None:
            try:
                self.on_unusable(data, reason)
            except Exception:
                log.exception("could not keep unusable MLLP data")
