"""Junk over real sockets against a running `carescore run`: every connection ends in the
ACKs its complete frames are owed, or in a connection the server closed, within the idle
timeout; the server stays up and says in its log what it skipped, refused or closed."""

from __future__ import annotations

import random
import socket
import threading
import time
from dataclasses import dataclass, field

from connectors.hl7v2.mllp import FrameDecoder

PIECES = [b"\x0b", b"\x1c", b"\r", b"\x1c\r", b"\n", b"\x00", b"junk", b"MSH|^~\\&|", b"x" * 3000]


@dataclass
class SocketReport:
    connections: int = 0
    frames_sent: int = 0
    acks: int = 0
    closed_by_server: int = 0
    owed_but_closed: int = 0
    hung: int = 0
    idle_closed: int = 0
    idle_not_closed: int = 0
    bytes_sent: int = 0
    kinds: dict[str, int] = field(default_factory=dict)


def stream(rng: random.Random, seeds: list[bytes]) -> bytes:
    parts: list[bytes] = []
    for _ in range(rng.randint(1, 12)):
        roll = rng.random()
        if roll < 0.45:
            message = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(0, 6)):
                pos = rng.randrange(len(message))
                message[pos] = rng.choice(b"|^~\\&\r\n\x0b\x1cAZ09 ")
            parts.append(b"\x0b" + bytes(message) + b"\x1c\r")
        elif roll < 0.9:
            parts.append(rng.choice(PIECES))
        else:
            parts.append(rng.randbytes(rng.randint(1, 200)))
    return b"".join(parts)


def owed(data: bytes, max_bytes: int) -> tuple[int, dict[str, int]]:
    """ACKs the server owes for this stream: one per complete frame (messages and oversize
    ones); abandoned frames and a frame left open are owed nothing."""
    frames = FrameDecoder(max_bytes).feed(data)
    kinds: dict[str, int] = {}
    for f in frames:
        kinds[f.kind] = kinds.get(f.kind, 0) + 1
    return sum(1 for f in frames if f.kind in ("message", "oversize")), kinds


def one(
    port: int, data: bytes, max_bytes: int, idle: float, rng: random.Random, report: SocketReport
) -> None:
    expected, kinds = owed(data, max_bytes)
    for k, v in kinds.items():
        report.kinds[k] = report.kinds.get(k, 0) + v
    report.connections += 1
    report.frames_sent += expected
    report.bytes_sent += len(data)
    with socket.create_connection(("127.0.0.1", port), timeout=idle + 5) as sock:
        pos = 0
        while pos < len(data):  # cut anywhere, as TCP may
            step = rng.randint(1, 700)
            sock.sendall(data[pos : pos + step])
            pos += step
        deadline = time.monotonic() + idle + 5
        got = b""
        closed = False
        while got.count(b"\x1c\r") < expected:
            if time.monotonic() > deadline:
                report.hung += 1
                return
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                report.hung += 1
                return
            if not chunk:
                closed = True
                break
            got += chunk
        report.acks += got.count(b"\x1c\r")
        if closed:
            report.closed_by_server += 1
            if got.count(b"\x1c\r") < expected:
                report.owed_but_closed += 1


def left_open(port: int, data: bytes, idle: float, report: SocketReport) -> None:
    """A sender that stops inside a frame and goes quiet: the server must close it."""
    with socket.create_connection(("127.0.0.1", port), timeout=idle * 4) as sock:
        sock.sendall(data + b"\x0bMSH|^~\\&|HALF")
        deadline = time.monotonic() + idle * 4
        while time.monotonic() < deadline:
            try:
                if not sock.recv(65536):
                    report.idle_closed += 1
                    return
            except TimeoutError:
                break
        report.idle_not_closed += 1


def run(
    port: int, seeds: list[bytes], connections: int, max_bytes: int, idle: float, seed: int = 1
) -> SocketReport:
    rng = random.Random(seed)
    report = SocketReport()
    quiet = [
        threading.Thread(target=left_open, args=(port, stream(rng, seeds), idle, report))
        for _ in range(max(1, connections // 40))
    ]
    for t in quiet:
        t.start()
    for _ in range(connections):
        one(port, stream(rng, seeds), max_bytes, idle, rng, report)
    for t in quiet:
        t.join()
    return report
