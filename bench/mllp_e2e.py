"""MLLP end to end: 8 sender processes against a running `carescore run`, AA only after
the events are fsync'd to the event log (group commit).

The server is started exactly as a user starts it (`carescore run`, demo off, its own data
folder, fsync on). Each sender is a separate OS process with its own connection; it keeps
up to WINDOW messages in flight (MLLP allows pipelining: ACKs come back in order per
connection) and records, per message, the time from writing the frame to reading its ACK.
Messages: the demo hospital's ADT/ORM/ORU traffic, each sender with its own control ids.
Also measured: the same with WINDOW=1 (stop-and-wait, what most interface engines do).

The senders are bench/mllpload (Go, built here with `go build`), so the load generator
takes little of the two cores the server runs on; without a Go toolchain the same senders
run as Python processes (asyncio), and the section says which.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import write_section

SENDERS = 8
PER_SENDER = 4000
ROOT = Path(__file__).resolve().parent.parent
GO_SENDER = ROOT / "bench" / ".bin" / "mllpload"


def build_go_sender() -> bool:
    go = shutil.which("go")
    if go is None:
        return False
    built = subprocess.run(
        [go, "build", "-o", str(GO_SENDER), "."], cwd=ROOT / "bench" / "mllpload", capture_output=True
    )
    return built.returncode == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def messages(sender: int, count: int) -> list[bytes]:
    """The demo hospital run 40 times faster over the last two hours: event times are
    recent, so windows close at the pace they would in production."""
    import yaml

    from demo.hospital import DemoHospital
    from engine.places import Places

    config = yaml.safe_load((ROOT / "carescore" / "defaults.yaml").read_text())
    hospital = DemoHospital(Places.model_validate(config["places"]), seed=sender, rate=40.0)
    now = time.time()
    hospital.seed_history(now - 2 * 3600, 0)
    kinds = ("ADT^", "ORM^", "ORU^R01")
    recent = [t for ts, t in hospital.due(now) if ts > now - 2 * 3600]
    texts = [t for t in recent if t.split("|", 9)[8].startswith(kinds)]
    out = []
    for i in range(count):
        text = texts[(sender * 997 + i) % len(texts)]
        head, rest = text.split("\r", 1)
        fields = head.split("|")
        fields[9] = f"B{sender}-{i:07d}"  # MSH-10: unique per sender and message
        out.append(b"\x0b" + ("|".join(fields) + "\r" + rest).encode() + b"\x1c\r")
    return out


async def _send(port: int, frames: list[bytes], window: int) -> tuple[list[float], int]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent_at: list[float] = []
    latencies: list[float] = []
    not_aa = 0
    slots = asyncio.Semaphore(window)

    async def read_acks() -> None:
        nonlocal not_aa
        buffer = b""
        while len(latencies) < len(frames):
            chunk = await reader.read(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            buffer += chunk
            while b"\x1c\r" in buffer:
                frame, buffer = buffer.split(b"\x1c\r", 1)
                latencies.append(time.perf_counter() - sent_at[len(latencies)])
                if b"MSA|AA" not in frame:
                    not_aa += 1
                slots.release()

    acks = asyncio.create_task(read_acks())
    for frame in frames:
        await slots.acquire()
        sent_at.append(time.perf_counter())
        writer.write(frame)
        await writer.drain()
    await acks
    writer.close()
    return latencies, not_aa


def sender(port: int, index: int, window: int, start: object, out: object) -> None:
    frames = messages(index, PER_SENDER)
    start.wait()  # type: ignore[attr-defined]
    latencies, not_aa = asyncio.run(_send(port, frames, window))
    out.put((latencies, not_aa))  # type: ignore[attr-defined]


def go_senders(port: int, window: int, folder: Path) -> tuple[list[list[float]], int, float]:
    start = folder / "start"
    procs = []
    for i in range(SENDERS):
        frames = folder / f"sender{i}.mllp"
        frames.write_bytes(b"".join(messages(i, PER_SENDER)))
        cmd = [str(GO_SENDER), "-addr", f"127.0.0.1:{port}", "-in", str(frames), "-window", str(window)]
        procs.append(subprocess.Popen([*cmd, "-start", str(start)], stdout=subprocess.PIPE))
    time.sleep(2)  # connected and waiting
    began = time.perf_counter()
    start.touch()
    outputs = [json.loads(p.communicate(timeout=600)[0]) for p in procs]
    elapsed = time.perf_counter() - began
    latencies = [[us / 1e6 for us in out["latency_us"]] for out in outputs]
    return latencies, sum(out["not_aa"] for out in outputs), elapsed


def python_senders(port: int, window: int) -> tuple[list[list[float]], int, float]:
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=sender, args=(port, i, window, start, out)) for i in range(SENDERS)]
    for p in procs:
        p.start()
    time.sleep(3)  # senders build their messages before the clock starts
    began = time.perf_counter()
    start.set()
    results = [out.get(timeout=600) for _ in procs]
    elapsed = time.perf_counter() - began
    for p in procs:
        p.join()
    return [lat for lat, _ in results], sum(n for _, n in results), elapsed


def run(window: int, use_go: bool) -> dict[str, float]:
    api, mllp = free_port(), free_port()
    with tempfile.TemporaryDirectory() as data:
        env = {
            **os.environ,
            "CARESCORE_DEMO": "0",
            "CARESCORE_API_PORT": str(api),
            "CARESCORE_MLLP_PORT": str(mllp),
            "CARESCORE_DATA_DIR": data,
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "carescore.cli", "run"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    socket.create_connection(("127.0.0.1", mllp), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise RuntimeError("carescore did not start") from None
                    time.sleep(0.2)
            if use_go:
                per_sender, not_aa, elapsed = go_senders(mllp, window, Path(data))
            else:
                per_sender, not_aa, elapsed = python_senders(mllp, window)
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=60)
    latencies = sorted(x for lat in per_sender for x in lat)
    total = len(latencies)
    return {
        "messages": total,
        "rate": total / elapsed,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[int(total * 0.99)] * 1000,
        "max": latencies[-1] * 1000,
        "not_aa": not_aa,
    }


def main() -> None:
    use_go = build_go_sender()
    rows = []
    for window in (8, 1):
        r = run(window, use_go)
        rows.append(
            f"| {SENDERS} | {window} | {r['messages']:,.0f} | {r['rate']:,.0f} | {r['p50']:.1f} | "
            f"{r['p99']:.1f} | {r['max']:.0f} | {r['not_aa']:.0f} |"
        )
    body = "\n".join(
        [
            "## MLLP end to end (AA after fsync)",
            "",
            f"`carescore run` (demo off, fsync on) and {SENDERS} sender processes "
            f"({'bench/mllpload, Go' if use_go else 'Python asyncio: no Go toolchain here'}), "
            f"{PER_SENDER:,} ADT/ORM/ORU messages each; ACK latency from writing a frame to reading "
            f"its ACK. Measured {datetime.now(UTC):%Y-%m-%d}.",
            "",
            "| senders | in flight | messages | messages/s | ACK p50 ms | ACK p99 ms | max ms | not AA |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
            "Target (issue 4): >= 10,000 messages/s with ACK p99 < 50 ms, 8 concurrent senders. "
            "Senders and server share the machine's cores.",
        ]
    )
    write_section("mllp-e2e", body)


if __name__ == "__main__":
    main()
