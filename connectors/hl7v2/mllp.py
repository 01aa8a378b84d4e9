"""MLLP (Minimal Lower Layer Protocol) over TCP: <VT> message <FS><CR>, one ACK per message.

Each connection is read in order and answered in order. Bytes outside a frame are
skipped and counted; a frame longer than `max_message_bytes` is answered with AR and
discarded up to its end; a connection idle longer than `idle_timeout` is closed; a frame
cut off by a closed connection is logged and kept as a dead letter (it was never ACKed,
so the sender will resend it).

Hostile or broken peers cannot hold the listener: beyond `max_connections` open connections a
new one is closed at once (counted; one warning per burst, not one per connection); a frame
still incomplete `frame_timeout` after its first byte is cut off, so a sender dripping a byte
a second cannot keep a connection forever (the idle timer alone restarts on every byte); and
a handler that raises answers that one frame AE 207 instead of dropping the connection.

With `handler_for`, each connection gets its own handler from the client certificate the TLS
handshake verified (the facilities it may send for: connectors/hl7v2/senders.py).
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
from typing import Any, Literal

from connectors.hl7v2.ack import build_ack
from connectors.hl7v2.parser import Message, parse
from connectors.hl7v2.receiver import HL7_INTERNAL_ERRORS, INTERNAL_ERROR_TEXT, decode
from connectors.metrics import HL7_ACK_SECONDS, MLLP_CONNECTIONS, MLLP_FRAMING_ERRORS, MLLP_REFUSED

log = logging.getLogger(__name__)

REFUSAL_LOG_EVERY = 60.0
"""Seconds between two warnings about refused connections (a flood logs a line a minute)."""

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
        # (reply, when its frame was complete, the frame: to answer and keep it if handling fails)
        self.replies: deque[tuple[asyncio.Future[str | None] | str | None, float, bytes]] = deque()
        self.transport: asyncio.Transport | None = None
        self.acker: asyncio.Task[None] | None = None
        self.last_activity = time.monotonic()
        self.frame_started: float | None = None  # first byte of the frame being read
        self.paused = False
        self.refused = False
        self.handle: FrameHandler = server.handler

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if len(self.server.connections) >= self.server.max_connections:
            self.refused = True
            self.server.refused()
            transport.abort()  # before reading a byte: the sender retries later
            return
        self.server.connections.add(self)
        MLLP_CONNECTIONS.inc()
        if self.server.handler_for is not None:  # the handler of who the client certificate names
            self.handle = self.server.handler_for(transport.get_extra_info("peercert"))

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        self.server.reads += 1
        now = self.last_activity = time.monotonic()
        decoder = self.decoder
        junk_before = decoder.junk_bytes
        frames = decoder.feed(data)
        if not decoder.in_frame:
            self.frame_started = None
        elif frames or self.frame_started is None:
            self.frame_started = now  # a frame began in this chunk (after any it completed)
        if decoder.junk_bytes > junk_before:
            MLLP_FRAMING_ERRORS.labels("junk").inc()
            log.info("mllp: bytes outside a frame skipped", extra={"bytes": decoder.junk_bytes - junk_before})
        if not frames:
            return
        loop = asyncio.get_running_loop()
        for item in frames:
            started = time.perf_counter()
            reply: asyncio.Future[str | None] | str | None
            if item.kind == "message":
                try:
                    answer = self.handle(item.body)
                except Exception as exc:
                    answer = self.server.internal_error(item.body, exc)
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
            # the frame is kept only while a future ACK could still fail (a str cannot)
            self.replies.append((reply, started, b"" if isinstance(reply, str) else item.body))
        if len(self.replies) > 500 and not self.paused and self.transport is not None:
            self.transport.pause_reading()  # far ahead of its ACKs: let TCP push back
            self.paused = True
        if self.acker is None or self.acker.done():
            self.acker = loop.create_task(self._acknowledge())

    async def _acknowledge(self) -> None:
        while self.replies:
            reply, started, body = self.replies[0]
            try:
                text = reply if isinstance(reply, str) else await reply  # type: ignore[misc]
            except Exception as exc:
                text = self.server.internal_error(body, exc)
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
                if self.frame_started is not None:
                    self.frame_started = time.monotonic()  # our pause, not the sender's delay

    def idle_for(self, now: float) -> float:
        return now - self.last_activity if not self.replies else 0.0

    def frame_age(self, now: float) -> float:
        """How long the frame being read has been arriving (0 between frames, or while we
        hold the sender back: then the wait is ours)."""
        started = self.frame_started
        return now - started if started is not None and not self.paused else 0.0

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.refused:
            return
        self.server.connections.discard(self)
        self.server.unfinished(self.decoder, "connection closed inside a frame")

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
        frame_timeout: float = 30.0,
        max_connections: int = 256,
        ssl_context: ssl.SSLContext | None = None,
        on_unusable: Callable[[bytes, str], None] | None = None,
        handler_for: Callable[[dict[str, Any] | None], FrameHandler] | None = None,
    ):
        self.handler = handler
        self.handler_for = handler_for
        self.host = host
        self.port = port
        self.max_message_bytes = max_message_bytes
        self.idle_timeout = idle_timeout
        self.frame_timeout = frame_timeout
        self.max_connections = max_connections
        self.ssl_context = ssl_context
        self.on_unusable = on_unusable
        self.reads = 0  # chunks read from senders: a sign of work (a runtime's closing gives way)
        self.connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._refused_unlogged = 0  # refusals since the last warning
        self._refusal_logged_at = -float("inf")

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
        """Close connections idle past idle_timeout and cut frames older than frame_timeout;
        summarise refusals a warning did not mention yet."""
        period = max(0.05, min(self.idle_timeout / 4, self.frame_timeout / 4, 5.0))
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for conn in list(self.connections):
                try:
                    self._reap(conn, now)
                except Exception:  # one connection's trouble must not end the timeouts for all
                    log.exception("mllp: closing a timed-out connection failed")
            if self._refused_unlogged and now - self._refusal_logged_at >= REFUSAL_LOG_EVERY:
                self._log_refusals(now)

    def _reap(self, conn: _Connection, now: float) -> None:
        """Close a connection past its frame or idle timeout (its partial frame kept)."""
        if conn.frame_age(now) > self.frame_timeout:
            self.unfinished(
                conn.decoder,
                f"frame incomplete {self.frame_timeout:g} s after its first byte (frame_timeout)",
                kind="frame_timeout",
            )
            conn.decoder = FrameDecoder(self.max_message_bytes)
            conn.close()
        elif conn.idle_for(now) > self.idle_timeout:
            self.unfinished(conn.decoder, "connection idle past the timeout inside a frame")
            conn.decoder = FrameDecoder(self.max_message_bytes)
            log.info("mllp connection idle, closing", extra={"idle_timeout": self.idle_timeout})
            conn.close()

    def refused(self) -> None:
        """A connection beyond max_connections was closed: count it; warn at once for the
        first of a burst, then at most every REFUSAL_LOG_EVERY seconds with the count."""
        MLLP_REFUSED.inc()
        self._refused_unlogged += 1
        now = time.monotonic()
        if now - self._refusal_logged_at >= REFUSAL_LOG_EVERY:
            self._log_refusals(now)

    def _log_refusals(self, now: float) -> None:
        log.warning(
            "mllp: %d connection(s) refused: %d already open (mllp.max_connections); further "
            "refusals are counted in carescore_mllp_connections_refused_total and logged at most "
            "once every %g s",
            self._refused_unlogged,
            len(self.connections),
            REFUSAL_LOG_EVERY,
            extra={"refused": self._refused_unlogged, "max_connections": self.max_connections},
        )
        self._refused_unlogged = 0
        self._refusal_logged_at = now

    def internal_error(self, body: bytes, exc: BaseException) -> str:
        """AE 207 for a frame whose handler raised (a bug): the frame is kept, the connection
        and the frames after it carry on."""
        HL7_INTERNAL_ERRORS.labels("mllp").inc()
        log.error("mllp: handling a message failed; answered AE 207 and kept", exc_info=exc)
        self.keep(body, f"internal error ({type(exc).__name__}) handling the message; replay once fixed")
        return build_ack(_header_of(body), "AE", text=INTERNAL_ERROR_TEXT, error_code=207)

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
        log.warning("mllp: oversize message rejected", extra={"limit": self.max_message_bytes})
        return build_ack(_header_of(head), "AR", text=reason, error_code=207)

    def unfinished(self, decoder: FrameDecoder, reason: str, kind: str = "unterminated") -> None:
        """Keep the start of a frame that will never end (it was never acknowledged)."""
        pending = decoder.pending()
        if pending:
            MLLP_FRAMING_ERRORS.labels(kind).inc()
            log.warning("mllp: %s; never acknowledged", reason)
            self.keep(pending, reason)

    def keep(self, data: bytes, reason: str) -> None:
        if self.on_unusable is not None:
            try:
                self.on_unusable(data, reason)
            except Exception:
                log.exception("could not keep unusable MLLP data")


def _header_of(data: bytes) -> Message | None:
    """The MSH of a frame (to address an ACK), or None when there is none to read."""
    try:
        return parse(decode(data[:HEAD_BYTES]).split("\r", 1)[0].split("\n", 1)[0] + "\r")
    except Exception:  # HL7ParseError, or anything a hostile header provokes: no MSH then
        return None
