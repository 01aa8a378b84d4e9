"""MLLP with real data: the MIMIC-IV demo replayed stop-and-wait by 8 senders against a running
`carescore run`, beside the two limits that are not carescore's: the harness and the disk.

1. carescore. bench/mimic_feed.py writes the MIMIC-IV demo as HL7 v2 (every message
   MLLP-framed, split over 8 sender files by patient, each patient's messages in order on one
   connection) and a carescore.yaml (MIMIC careunits as places, demo off, a fresh data folder,
   fsync on, so AA comes only after the events are fsync'd to the event log). The server is
   started exactly as a user starts it (`carescore run --config carescore.yaml`). The 8 senders
   start at once and send stop-and-wait (one message in flight per connection, what most
   interface engines do), each recording, per message, the time from writing the frame to
   reading its ACK. Reported: messages, messages/s over the whole replay (first send to last
   ACK), ACK latency p50/p99/max, ACKs that are not AA, and from /metrics at the end the longest
   event-loop stall (carescore/loopwatch.py): while the loop is blocked, every connection
   waits for its ACK.
2. Harness ceiling. The same senders and files against an ACK-only MLLP server (asyncio, its
   own process, no parsing beyond MSH-10): what 8 stop-and-wait connections can reach on this
   machine at all, since senders and server share its two cores. carescore's rate is reported
   as a fraction of it.
3. fsync floor. Appends of 4 KB, each followed by os.fsync, on the filesystem of the data
   folder: at least 2,000, and for as long as the replay took (its max and the stalls over
   20 ms are the disk's own, which every ACK waits for). Stop-and-wait with an fsync per
   message, one after another, could not go faster than 1/p50; with group commit the 8
   messages in flight can share one fsync: 8/p50.

The senders are bench/mllpload (Go, built here with `go build`), so the load generator takes
little of the two cores; without a Go toolchain the same senders run as Python processes
(asyncio), and the section says which. The Go sender reports only how many ACKs were not AA;
their codes and reasons are read from the server (carescore_hl7_messages_total by ack code,
and the dead letters).

    .venv/bin/python bench/mimic_mllp.py             # writes its section of BENCHMARKS.md
    .venv/bin/python bench/mimic_mllp.py --no-write  # prints the figures only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.mimic_feed import Feed, write_feed
from bench.mllp_e2e import GO_SENDER, build_go_sender, free_port
from bench.report import cpu_seconds, write_section

SENDERS = 8
WINDOW = 1  # stop-and-wait
ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 180.0  # carescore up and ready
SENDER_TIMEOUT = 900.0  # the whole replay
STOP_TIMEOUT = 60.0  # SIGTERM, then SIGKILL
CATCH_UP_TIMEOUT = 300.0  # after the last ACK, until every passed window is closed
FEEDS = ("specimen", "test")  # bench/mimic_feed.py: one lab order per specimen, or per test
FSYNC_ROUNDS = 2000
FSYNC_BYTES = 4096
TARGET_RATE = 5000.0  # messages/s, whole replay
TARGET_P99_MS = 20.0
TARGET_MAX_MS = 200.0


@dataclass
class Replay:
    expected: int  # frames in the sender files
    elapsed: float  # first send to last ACK, seconds
    latencies: list[float]  # seconds, sorted, one per ACK received
    not_aa: int
    failures: list[str] = field(default_factory=list)  # senders that stopped early, and why
    samples: list[str] = field(default_factory=list)  # non-AA ACK texts (Python senders only)
    ended: float = 0.0  # wall clock (time.time()) at the last ACK: the last sender done

    @property
    def messages(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.messages / self.elapsed if self.elapsed > 0 else 0.0

    def ms(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        if q >= 1.0:
            return self.latencies[-1] * 1000
        if q == 0.5:
            return statistics.median(self.latencies) * 1000
        return self.latencies[min(int(len(self.latencies) * q), len(self.latencies) - 1)] * 1000


# -- senders -------------------------------------------------------------------------------------


def split_frames(raw: bytes) -> list[bytes]:
    return [part + b"\x1c\r" for part in raw.split(b"\x1c\r") if part]


def go_senders(port: int, files: list[Path], work: Path, children: list[subprocess.Popen[bytes]]) -> Replay:
    start = work / "start"
    start.unlink(missing_ok=True)
    expected = sum(len(split_frames(f.read_bytes())) for f in files)
    procs = []
    for path in files:
        cmd = [str(GO_SENDER), "-addr", f"127.0.0.1:{port}", "-in", str(path), "-window", str(WINDOW)]
        proc = subprocess.Popen([*cmd, "-start", str(start)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        children.append(proc)
        procs.append(proc)
    time.sleep(2)  # files read, connected, waiting for the start file

    def collect(proc: subprocess.Popen[bytes]) -> tuple[int | None, bytes, bytes, float]:
        try:
            out, err = proc.communicate(timeout=SENDER_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            err += b"\nbench: sender timed out"
        return proc.returncode, out, err, time.perf_counter()

    began = time.perf_counter()
    start.touch()
    pool = ThreadPoolExecutor(len(procs))
    try:
        results = list(pool.map(collect, procs))
    finally:
        pool.shutdown(wait=False)  # on an interrupt, replay() kills the senders: no waiting here
    elapsed = max(done for *_, done in results) - began
    ended = time.time() - (time.perf_counter() - (began + elapsed))
    latencies: list[float] = []
    not_aa = 0
    failures = []
    for i, (code, out, err, _) in enumerate(results):
        if code != 0:
            failures.append(f"sender {i}: exit {code}: {err.decode(errors='replace').strip()[-300:]}")
            continue
        result = json.loads(out)
        latencies.extend(us / 1e6 for us in result["latency_us"])
        not_aa += result["not_aa"]
    return Replay(expected, elapsed, sorted(latencies), not_aa, failures, ended=ended)


async def _stop_and_wait(port: int, frames: list[bytes], start: Any) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await asyncio.get_running_loop().run_in_executor(None, start.wait)
    latencies: list[float] = []
    not_aa = 0
    samples: list[str] = []
    error = ""
    try:
        for frame in frames:
            sent = time.perf_counter()
            writer.write(frame)
            await writer.drain()
            ack = await reader.readuntil(b"\x1c\r")
            latencies.append(time.perf_counter() - sent)
            if b"MSA|AA" not in ack:
                not_aa += 1
                if len(samples) < 3:
                    samples.append(ack.strip(b"\x0b\x1c\r").decode(errors="replace"))
    except (OSError, asyncio.IncompleteReadError) as exc:
        error = f"after {len(latencies)} ACKs: {exc!r}"
    writer.close()
    return {"latencies": latencies, "not_aa": not_aa, "samples": samples, "error": error}


def python_sender(port: int, path: str, start: Any, out: Any) -> None:
    frames = split_frames(Path(path).read_bytes())
    out.put(asyncio.run(_stop_and_wait(port, frames, start)))


def python_senders(port: int, files: list[Path], children: list[Any]) -> Replay:
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    expected = sum(len(split_frames(f.read_bytes())) for f in files)
    procs = [ctx.Process(target=python_sender, args=(port, str(f), start, out)) for f in files]
    for p in procs:
        p.start()
        children.append(p)
    time.sleep(3)  # files read and connected before the clock starts
    began = time.perf_counter()
    start.set()
    results = [out.get(timeout=SENDER_TIMEOUT) for _ in procs]
    elapsed = time.perf_counter() - began
    ended = time.time()
    for p in procs:
        p.join(timeout=10)
    latencies = sorted(x for r in results for x in r["latencies"])
    return Replay(
        expected,
        elapsed,
        latencies,
        sum(r["not_aa"] for r in results),
        [r["error"] for r in results if r["error"]],
        [s for r in results for s in r["samples"]][:5],
        ended,
    )


def replay(port: int, feed: Feed, work: Path, use_go: bool) -> Replay:
    children: list[Any] = []
    try:
        if use_go:
            return go_senders(port, feed.senders, work, children)
        return python_senders(port, feed.senders, children)
    finally:
        for child in children:  # only left running if something above failed
            if isinstance(child, subprocess.Popen):
                if child.poll() is None:
                    child.kill()
                    child.wait()
            elif child.is_alive():
                child.kill()
                child.join()


# -- the ACK-only server (harness ceiling) -------------------------------------------------------


def ack_for(message: bytes) -> bytes:
    """A minimal AA for a frame's content: MSH-10 copied into MSH-10 and MSA-2, nothing parsed."""
    control = b""
    at = message.find(b"MSH")
    if at >= 0:
        end = message.find(b"\r", at)
        fields = message[at : end if end >= 0 else len(message)].split(message[at + 3 : at + 4] or b"|")
        control = fields[9] if len(fields) > 9 else b""
    now = time.strftime("%Y%m%d%H%M%S").encode()
    return (
        b"\x0bMSH|^~\\&|ACK|BENCH|||" + now + b"||ACK|" + control + b"|P|2.5\rMSA|AA|" + control + b"\r\x1c\r"
    )


class AckOnly(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer.extend(data)
        while (end := self.buffer.find(b"\x1c\r")) >= 0:
            message = bytes(self.buffer[:end])
            del self.buffer[: end + 2]
            assert self.transport is not None
            self.transport.write(ack_for(message))


def ack_server(port: int, ready: Any) -> None:
    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(AckOnly, "127.0.0.1", port)
        ready.set()
        await server.serve_forever()

    asyncio.run(serve())


def harness_ceiling(feed: Feed, work: Path, use_go: bool) -> Replay:
    port = free_port()
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    server = ctx.Process(target=ack_server, args=(port, ready), daemon=True)
    server.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("the ACK-only server did not start")
        return replay(port, feed, work, use_go)
    finally:
        server.terminate()  # SIGTERM
        server.join(10)
        if server.is_alive():
            server.kill()
            server.join()


# -- carescore -----------------------------------------------------------------------------------


def carescore_command() -> str:
    beside = Path(sys.executable).parent / "carescore"  # the venv's console script
    found = str(beside) if beside.exists() else shutil.which("carescore")
    if found is None:
        raise SystemExit("no `carescore` command: `make install` first")
    return found


def get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def wait_ready(server: subprocess.Popen[bytes], api: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if server.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"carescore exited with {server.returncode} during start-up:\n{tail}")
        try:
            if get(f"http://127.0.0.1:{api}/readyz")[0] == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"carescore not ready after {START_TIMEOUT:.0f} s")
        time.sleep(0.2)


def stop(server: subprocess.Popen[bytes]) -> str:
    if server.poll() is not None:
        return f"had already exited ({server.returncode})"
    began = time.monotonic()
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=STOP_TIMEOUT)
        return f"stopped {time.monotonic() - began:.1f} s after SIGTERM (exit {server.returncode})"
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
        return f"did not stop within {STOP_TIMEOUT:.0f} s of SIGTERM: killed"


SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")


def scrape(api: int) -> dict[str, Any]:
    """From /metrics: the longest loop stall, loop lags over 100 ms, ACKs by code (not AA)."""
    status, text = get(f"http://127.0.0.1:{api}/metrics", timeout=60)
    found: dict[str, Any] = {"stall_max": None, "lag_over_100ms": None, "acks": {}}
    lag_count = lag_under = None
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m is None:
            continue
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        if name == "carescore_event_loop_stall_max_seconds":
            found["stall_max"] = value
        elif name == "carescore_event_loop_lag_seconds_count":
            lag_count = value
        elif name == "carescore_event_loop_lag_seconds_bucket" and 'le="0.1"' in labels:
            lag_under = value
        elif name in ("carescore_events_processed", "carescore_events_processed_total"):
            found["events"] = value
        elif name == "carescore_hl7_messages_total":
            ack = re.search(r'ack="([^"]*)"', labels)
            kind = re.search(r'message_type="([^"]*)"', labels)
            key = (ack.group(1) if ack else "?", kind.group(1) if kind else "?")
            found["acks"][key] = found["acks"].get(key, 0) + value
    if lag_count is not None and lag_under is not None:
        found["lag_over_100ms"] = int(lag_count - lag_under)
    found["status"] = status
    return found


def caught_up(server: subprocess.Popen[bytes], log: Path, last_ack: float) -> tuple[float, float] | None:
    """Seconds from the last ACK until the windows the replay's watermarks passed were all
    closed (the server's "windows caught up" line, written when a tick that took over a second
    has closed them), and carescore's CPU seconds at that moment. The log is read, not
    /metrics: a request is work that closing gives way to. None: no such line in
    CATCH_UP_TIMEOUT (closed within a second's tick, or not this version)."""
    began = time.perf_counter()
    while time.perf_counter() - began < CATCH_UP_TIMEOUT:
        for line in log.read_text(errors="replace").splitlines():
            if '"windows caught up"' not in line:
                continue
            try:
                at = datetime.fromisoformat(json.loads(line)["time"]).timestamp()
            except (ValueError, KeyError, TypeError):  # a line cut short or interleaved
                continue
            if at >= last_ack - 1.0:  # a burst's closing, not one from before the replay's end
                return max(0.0, at - last_ack), cpu_seconds(server.pid)
        time.sleep(0.1)
    return None


def dead_letters(command: str, config: Path) -> list[str]:
    listed = subprocess.run(
        [command, "deadletter", "list", "--config", str(config), "--all", "--limit", "10"],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return [line for line in listed.stdout.splitlines() if line.strip()]


def clean_env() -> dict[str, str]:
    """The environment without CARESCORE_* overrides: carescore.yaml decides everything."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CARESCORE_")}


def run_carescore(work: Path, use_go: bool, orders: str) -> tuple[Feed, Replay, dict[str, Any]]:
    api, mllp = free_port(), free_port()
    feed = write_feed(work / "feed", senders=SENDERS, mllp_port=mllp, api_port=api, orders=orders)
    command = carescore_command()
    log = work / "carescore.log"
    extra: dict[str, Any] = {}
    with log.open("wb") as out:
        server = subprocess.Popen(
            [command, "run", "--config", str(feed.config)],
            cwd=ROOT,
            env=clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_ready(server, api, log)
            cpu_before = cpu_seconds(server.pid)
            result = replay(mllp, feed, work, use_go)
            extra["cpu"] = cpu_seconds(server.pid) - cpu_before
            closed = caught_up(server, log, result.ended)
            if closed is not None:
                extra["caught_up"], extra["cpu_caught_up"] = closed[0], closed[1] - cpu_before
            try:
                extra.update(scrape(api))
            except OSError as exc:
                extra["scrape_error"] = repr(exc)
        finally:
            extra["shutdown"] = stop(server)
    if result.not_aa or result.failures or any(ack != "AA" for ack, _ in extra.get("acks", {})):
        extra["dead_letters"] = dead_letters(command, feed.config)
    errors = [
        line for line in log.read_text(errors="replace").splitlines() if re.search(r"ERROR|Traceback", line)
    ]
    extra["log_errors"] = errors[:5]
    return feed, result, extra


# -- fsync floor ---------------------------------------------------------------------------------


def fsync_floor(where: Path, seconds: float) -> dict[str, float]:
    """At least FSYNC_ROUNDS appends, and for at least `seconds` (as long as the replay took):
    this disk stalls a synced write for 100 ms or more only a few times in 20,000, and a short
    probe would not see what the replay's ACKs did."""
    folder = Path(tempfile.mkdtemp(prefix="fsync-", dir=where))
    try:
        block = os.urandom(FSYNC_BYTES)
        fd = os.open(folder / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        times: list[float] = []
        until = time.perf_counter() + seconds
        try:
            while len(times) < FSYNC_ROUNDS or time.perf_counter() < until:
                began = time.perf_counter()
                os.write(fd, block)
                os.fsync(fd)
                times.append(time.perf_counter() - began)
        finally:
            os.close(fd)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    times.sort()
    p50 = statistics.median(times)
    return {
        "rounds": len(times),
        "p50": p50 * 1000,
        "p99": times[int(len(times) * 0.99)] * 1000,
        "max": times[-1] * 1000,
        "over_20ms": sum(t > 0.020 for t in times),
        "serial": 1 / p50,
        "group": SENDERS / p50,
    }


def filesystem(path: Path) -> str:
    best, kind, device = "", "?", "?"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mount, fstype = line.split()[:3]
            if str(path.resolve()).startswith(mount.rstrip("/") + "/") and len(mount) >= len(best):
                best, kind, device = mount, fstype, dev
    except OSError:
        pass
    return f"{kind} on {device}, mounted at {best or '?'}"


# -- report --------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def row(feed: str, name: str, r: Replay) -> str:
    return (
        f"| {feed} | {name} | {r.messages:,} of {r.expected:,} | {r.elapsed:.1f} | {r.rate:,.0f} | "
        f"{r.ms(0.5):.2f} | {r.ms(0.99):.2f} | {r.ms(1.0):,.1f} | {r.not_aa:,} |"
    )


@dataclass
class FeedRun:
    feed: Feed
    ours: Replay
    extra: dict[str, Any]
    ceiling: Replay

    @property
    def events(self) -> float | None:
        return self.extra.get("events")

    def shape(self) -> str:
        per = f"{self.events / self.feed.messages:.1f}" if self.events else "?"
        return FEED_NAMES[self.feed.orders].format(per=per)


FEED_NAMES = {
    "specimen": "one lab order per specimen, its tests as OBX ({per} events a message)",
    "test": "one lab order per test ({per} events a message)",
}


def targets(run: FeedRun) -> list[str]:
    ours = run.ours
    p99, worst = ours.ms(0.99), ours.ms(1.0)
    all_aa = ours.not_aa == 0 and not ours.failures and ours.messages == ours.expected
    return [
        f"| >= {TARGET_RATE:,.0f} messages/s over the whole replay | {ours.rate:,.0f} | "
        f"{verdict(ours.rate >= TARGET_RATE)} |",
        f"| ACK p99 < {TARGET_P99_MS:.0f} ms | {p99:.2f} | {verdict(p99 < TARGET_P99_MS)} |",
        f"| ACK max < {TARGET_MAX_MS:.0f} ms | {worst:,.1f} | {verdict(worst < TARGET_MAX_MS)} |",
        f"| every message AA | {ours.messages - ours.not_aa:,} AA of {ours.expected:,} | {verdict(all_aa)} |",
    ]


def about(run: FeedRun) -> list[str]:
    """What is not in the table: the ratio, the loop's stall, CPU, catching up, non-AA."""
    ours, extra, ceiling = run.ours, run.extra, run.ceiling
    ratio = ours.rate / ceiling.rate if ceiling.rate else float("nan")
    stall = extra.get("stall_max")
    stall_text = f"{stall * 1000:,.0f} ms" if stall is not None else "not reported"
    lags = extra.get("lag_over_100ms")
    lines = [
        f"- {run.shape()}: {run.feed.messages:,} messages"
        + (f", {run.events:,.0f} events" if run.events else "")
        + f". carescore ÷ harness ceiling **{ratio:.2f}** ({ours.rate:,.0f} ÷ {ceiling.rate:,.0f} msg/s); "
        f"longest event-loop stall (`carescore_event_loop_stall_max_seconds`) **{stall_text}**"
        + (f", {lags:,} of the 50 ms loop timer's wake-ups over 100 ms late" if lags else "")
    ]
    cpu = extra.get("cpu")
    if cpu is not None and ours.messages:
        lines[-1] += (
            f"; carescore's CPU (all its threads, /proc) {cpu:.1f} s, {cpu / ours.messages * 1e6:,.0f} µs "
            f"a message, {cpu / ours.elapsed:.2f} of one core"
        )
    after, cpu_all = extra.get("caught_up"), extra.get("cpu_caught_up")
    if after is not None:
        lines[-1] += (
            f"; every window the replay passed closed {after:.1f} s after the last ACK (closing gives "
            f"way while messages come in): counted to then, {ours.messages / (ours.elapsed + after):,.0f} "
            f"messages/s"
        )
        if cpu_all is not None:
            lines[-1] += f" and {cpu_all / ours.messages * 1e6:,.0f} µs of CPU a message"
        lines[-1] += "."
    else:
        lines[-1] += '; no "windows caught up" after the last ACK (no tick of over a second closed any).'
    non_aa = {k: v for k, v in extra.get("acks", {}).items() if k[0] != "AA"}
    if non_aa:
        lines.append(
            "  Not AA, by the server's count: "
            + ", ".join(f"{ack} {kind}: {n:,.0f}" for (ack, kind), n in sorted(non_aa.items()))
            + "."
        )
    if ours.failures or ceiling.failures:
        lines.append(
            f"  Senders that stopped early: carescore {len(ours.failures)}, ceiling {len(ceiling.failures)}."
        )
    return lines


def render(runs: list[FeedRun], disk: dict[str, float], use_go: bool) -> str:
    first = runs[0].feed
    lines = [
        "## MLLP with the MIMIC-IV demo (stop-and-wait, AA after fsync)",
        "",
        f"The MIMIC-IV demo as HL7 v2 (bench/mimic_feed.py, event times {first.first:%Y-%m-%d} to "
        f"{first.last:%Y-%m-%d}), in two shapes of the same lab rows: one lab order (ORC/OBR) per "
        f"specimen with its tests as OBX segments, with about as many events a message as the issue's "
        f"replay (17,370 messages carrying 33,604 events, 1.9 a message), and one order per test "
        f"(about eight to a result message). The lab KPIs differ between the two (a turnaround per "
        f"specimen or per test); the messages and lab rows are the same. Each is split by patient "
        f"over {SENDERS} sender processes "
        f"({'bench/mllpload, Go' if use_go else 'Python asyncio: no Go toolchain here'}) that all "
        f"start at once and keep one message in flight each (stop-and-wait). `carescore run "
        f"--config` with the MIMIC careunits as places, demo off, a fresh data folder for each feed, "
        f"fsync on; the harness ceiling is the same senders against an ACK-only asyncio server in its "
        f"own process. messages/s: first send to last ACK; ACK latency: from writing a frame to "
        f"reading its ACK. Measured {datetime.now(UTC):%Y-%m-%d}.",
        "",
        "| feed | server | messages ACK'd | seconds | messages/s | ACK p50 ms | ACK p99 ms | max ms "
        "| not AA |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        lines.append(row(f"per {run.feed.orders}", "`carescore run`", run.ours))
        lines.append(row(f"per {run.feed.orders}", "ACK-only (harness ceiling)", run.ceiling))
    lines.append("")
    for run in runs:
        lines += about(run)
    lines += [
        "",
        f"fsync floor ({filesystem(first.folder)}, the data folder's filesystem): {disk['rounds']:,.0f} "
        f"appends of {FSYNC_BYTES // 1024} KB + os.fsync, one after another for as long as the longer "
        f"replay took, nothing else running: p50 {disk['p50']:.2f} ms, p99 {disk['p99']:.2f} ms, max "
        f"{disk['max']:,.1f} ms, {disk['over_20ms']:,.0f} over 20 ms (an ACK waits for its write: the "
        f"disk's own stalls reach the ACK's max whatever carescore does). Stop-and-wait with one fsync "
        f"per message, one after another, could not pass {disk['serial']:,.0f} msg/s (1/p50); with "
        f"group commit, the {SENDERS} messages in flight sharing one fsync, {disk['group']:,.0f} msg/s "
        f"({SENDERS}/p50).",
    ]
    for run in runs:
        lines += [
            "",
            f"Targets (issue), `carescore run`, {run.shape()}:",
            "",
            "| target | measured | |",
            "|---|---:|---|",
            *targets(run),
        ]
    lines += ["", "Senders and server share the machine's cores."]
    return "\n".join(lines)


def details(name: str, r: Replay, extra: dict[str, Any] | None = None) -> None:
    """What does not go into BENCHMARKS.md but matters when a run goes wrong."""
    for failure in r.failures:
        print(f"{name}: {failure}", file=sys.stderr)
    for sample in r.samples:
        print(f"{name}: not AA: {sample!r}", file=sys.stderr)
    if extra:
        print(f"{name}: {extra.get('shutdown')}", file=sys.stderr)
        if extra.get("scrape_error"):
            print(f"{name}: /metrics: {extra['scrape_error']}", file=sys.stderr)
        for line in extra.get("dead_letters", []):
            print(f"{name}: dead letter: {line}", file=sys.stderr)
        for line in extra.get("log_errors", []):
            print(f"{name}: log: {line[:300]}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--no-write", action="store_true", help="print the figures, leave BENCHMARKS.md")
    parser.add_argument(
        "--feeds", nargs="+", choices=FEEDS, default=list(FEEDS), help="which shapes of the feed to replay"
    )
    args = parser.parse_args()
    if not args.no_write and args.feeds != list(FEEDS):
        parser.error("BENCHMARKS.md takes both feeds: use --no-write with --feeds")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up (finally) when terminated
    use_go = build_go_sender()
    work = Path(tempfile.mkdtemp(prefix="carescore-mimic-mllp-"))
    try:
        runs = []
        for orders in args.feeds:
            feed, ours, extra = run_carescore(work / orders, use_go, orders)
            details(f"carescore, per {orders}", ours, extra)
            ceiling = harness_ceiling(feed, work / orders, use_go)
            details(f"ceiling, per {orders}", ceiling)
            runs.append(FeedRun(feed, ours, extra, ceiling))
        disk = fsync_floor(runs[0].feed.folder, max(run.ours.elapsed for run in runs))
        body = render(runs, disk, use_go)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.no_write:
        print(body)
    else:
        write_section("mimic-mllp", body)


if __name__ == "__main__":
    main()
