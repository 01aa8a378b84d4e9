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

FrameHandler = Callable[[bytes], Awaitable[str]]
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
                out.append(Frame("abandoned", self.oversize_head or bytes(buf[:restart][:HEAD_BYTES])))
                del buf[:restart]
                self.in_frame = False
                continue
            if end < 0:
                if self.oversize_head is not None or len(buf) > self.max:
                    if self.oversize_head is None:
                        self.oversize_head = bytes(buf[:HEAD_BYTES])
                    buf.clear()
                break
            body = bytes(buf[:end])
            del buf[: end + 2 if buf[end + 1 : end + 2] == b"\r" else end + 1]
            self.in_frame = False
            if self.oversize_head is not None or len(body) > self.max:
                out.append(Frame("oversize", self.oversize_head or body[:HEAD_BYTES]))
                self.oversize_head = None
            else:
                out.append(Frame("message", body))
        return out

    def pending(self) -> bytes | None:
        """The start of an unfinished frame, if the stream stopped inside one."""
        if not self.in_frame:
            return None
        return self.oversize_head or bytes(self.buf[:HEAD_BYTES])


def frame(message: str | bytes) -> bytes:
    data = message.encode("utf-8") if isinstance(message, str) else message
    return START + data + END


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
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, ssl=self.ssl_context, limit=2**20
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("mllp listening", extra={"host": self.host, "port": self.port})

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        MLLP_CONNECTIONS.inc()
        decoder = FrameDecoder(self.max_message_bytes)
        try:
            await self._read_frames(decoder, reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("mllp connection failed")
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_frames(
        self, decoder: FrameDecoder, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), self.idle_timeout)
            except TimeoutError:
                self._unfinished(decoder, "connection idle past the timeout inside a frame")
                log.info("mllp connection idle, closing", extra={"idle_timeout": self.idle_timeout})
                return
            if not chunk:
                self._unfinished(decoder, "connection closed inside a frame")
                return
            junk_before = decoder.junk_bytes
            frames = decoder.feed(chunk)
            if decoder.junk_bytes > junk_before:
                MLLP_FRAMING_ERRORS.labels("junk").inc()
                log.info(
                    "mllp: bytes outside a frame skipped",
                    extra={"bytes": decoder.junk_bytes - junk_before},
                )
            for item in frames:
                started = time.perf_counter()
                if item.kind == "message":
                    reply = await self.handler(item.body)
                elif item.kind == "oversize":
                    MLLP_FRAMING_ERRORS.labels("oversize").inc()
                    reply = self._oversize_reply(item.body)
                else:
                    MLLP_FRAMING_ERRORS.labels("abandoned").inc()
                    self._keep(item.body, "frame abandoned: a new frame started before its end")
                    continue  # nothing to acknowledge: the sender has moved on
                writer.write(frame(reply))
                await writer.drain()
                HL7_ACK_SECONDS.observe(time.perf_counter() - started)

    def _oversize_reply(self, head: bytes) -> str:
        reason = f"message larger than the {self.max_message_bytes} byte limit"
        self._keep(head, reason)
        try:
            msg = parse(decode(head).split("\r", 1)[0].split("\n", 1)[0] + "\r")
        except HL7ParseError:
            msg = None
        log.warning("mllp: oversize message rejected", extra={"limit": self.max_message_bytes})
        return build_ack(msg, "AR", text=reason, error_code=207)

    def _unfinished(self, decoder: FrameDecoder, reason: str) -> None:
        pending = decoder.pending()
        if pending:
            MLLP_FRAMING_ERRORS.labels("unterminated").inc()
            log.warning("mllp: %s; never acknowledged", reason)
            self._keep(pending, reason)

    def _keep(self, data: bytes, reason: str) -> None:
        if self.on_unusable is not None:
            try:
                self.on_unusable(data, reason)
            except Exception:
                log.exception("could not keep unusable MLLP data")
