"""`make fuzz`: the fuzz targets for minutes rather than seconds, then junk over sockets
against a real `carescore run`. Writes var/fuzz/report.md; exits non-zero on any finding.

    FUZZ_SECONDS   seconds of atheris per target (default 60)
    FUZZ_EXAMPLES  hypothesis examples per property (default 20000)
    FUZZ_SOCKETS   connections of socket junk (default 400)
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.fuzz import sockets  # noqa: E402
from tests.fuzz.targets import TARGETS  # noqa: E402

OUT = ROOT / "var" / "fuzz"
CORPUS = ROOT.parent / "shared" / "testdata" / "hl7v2"


def seeds() -> list[bytes]:
    from tests.test_fuzz import SEEDS

    found = [s.encode() for s in SEEDS]
    if CORPUS.is_dir():  # read in place; libFuzzer only ever writes to its own work folder
        found += [p.read_bytes() for p in sorted(CORPUS.rglob("*.hl7"))]
    return [s for s in found if s.strip()]


def atheris_runs(seconds: int, work: Path) -> list[str]:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return ["atheris: not installed (pip install atheris): skipped, hypothesis and sockets only"]
    lines = []
    for name in TARGETS:
        corpus = work / name
        corpus.mkdir(parents=True, exist_ok=True)
        for i, seed in enumerate(seeds()):
            data = b"\x0b" + seed + b"\x1c\r" if name == "mllp_stream" else seed
            (corpus / f"seed{i:04d}").write_bytes(data)
        started = time.monotonic()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.fuzz.atheris_main",
                name,
                f"-max_total_time={seconds}",
                f"-artifact_prefix={OUT}/crash-{name}-",
                "-timeout=10",
                "-rss_limit_mb=2048",
                str(corpus),
            ],
            cwd=ROOT,
            # Python, not the compiled parser (engine/native.py): atheris instruments bytecode,
            # so compiled modules would give libFuzzer no coverage to steer by
            env={**os.environ, "CARESCORE_PURE_PYTHON": "1"},
            capture_output=True,
            text=True,
        )
        done = re.findall(r"#(\d+)\s+DONE\s+cov: (\d+) ft: (\d+)", proc.stderr)
        runs, cov = (f"{int(done[-1][0]):,}", done[-1][1]) if done else ("?", "?")
        status = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}; see {OUT})"
        size = len(list(corpus.iterdir()))
        lines.append(
            f"atheris {name}: {status}; {runs} inputs in "
            f"{time.monotonic() - started:.0f} s, coverage {cov} edges, corpus {size} inputs"
        )
        if proc.returncode != 0:
            (OUT / f"atheris-{name}.log").write_text(proc.stderr[-20000:])
    return lines


def hypothesis_run(examples: int) -> tuple[str, bool]:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_fuzz.py"],
        cwd=ROOT,
        env={**os.environ, "FUZZ_EXAMPLES": str(examples)},
        capture_output=True,
        text=True,
    )
    ok = proc.returncode == 0
    if not ok:
        (OUT / "hypothesis.log").write_text(proc.stdout[-20000:])
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    return (
        f"hypothesis: {examples:,} examples x 3 properties: {tail} ({time.monotonic() - started:.0f} s)",
        ok,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def socket_run(connections: int, work: Path) -> tuple[list[str], bool]:
    api, mllp, max_bytes, idle = free_port(), free_port(), 8192, 2.0
    config = work / "carescore.yaml"
    config.write_text(
        f"data_dir: {work / 'data'}\ndemo: {{enabled: false}}\napi: {{port: {api}}}\n"
        f"mllp: {{port: {mllp}, max_message_bytes: {max_bytes}, idle_timeout: {idle}s}}\n"
    )
    log = work / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "carescore.cli", "run", "--config", str(config)],
            cwd=ROOT,
            stdout=out,
            stderr=out,
        )
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", mllp), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        started = time.monotonic()
        report = sockets.run(mllp, seeds(), connections, max_bytes, idle)
        time.sleep(idle * 2)  # let the idle reaper close what was left open
        import httpx

        healthy = httpx.get(f"http://127.0.0.1:{api}/healthz", timeout=10).status_code == 200
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
    text = log.read_text()
    logged = {
        "bytes outside a frame": text.count("bytes outside a frame skipped"),
        "oversize refused": text.count("oversize"),
        "idle connections closed": text.count("mllp connection idle, closing"),
        "cut-off frames kept": text.count("inside a frame"),
        "tracebacks": text.count("Traceback"),
    }
    ok = (
        healthy
        and report.hung == 0
        and report.owed_but_closed == 0
        and report.idle_not_closed == 0
        and logged["tracebacks"] == 0
    )
    lines = [
        f"sockets: {'ok' if ok else 'FAILED'}; {report.connections} connections, "
        f"{report.bytes_sent:,} bytes, {report.frames_sent} complete frames owed an ACK, "
        f"{report.acks} ACKs received, {report.hung} hung, {report.owed_but_closed} closed before "
        f"their ACKs, frames by kind {report.kinds}, {report.idle_closed} quiet senders left inside "
        f"a frame closed by the server ({report.idle_not_closed} not), "
        f"server healthy afterwards: {healthy} ({time.monotonic() - started:.0f} s)",
        "server log lines: " + ", ".join(f"{k} {v}" for k, v in logged.items()),
    ]
    return lines, ok


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    seconds = int(os.environ.get("FUZZ_SECONDS", "60"))
    examples = int(os.environ.get("FUZZ_EXAMPLES", "20000"))
    connections = int(os.environ.get("FUZZ_SOCKETS", "400"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        lines = atheris_runs(seconds, work / "corpus")
        ok = all("FAILED" not in line for line in lines)
        line, hyp_ok = hypothesis_run(examples)
        lines.append(line)
        sock_lines, sock_ok = socket_run(connections, work)
        lines += sock_lines
    ok = ok and hyp_ok and sock_ok
    report = "\n".join(
        [
            f"# Fuzz run {datetime.now(UTC):%Y-%m-%d %H:%M UTC}: {'no findings' if ok else 'FINDINGS'}",
            "",
            *[f"- {line}" for line in lines],
            "",
        ]
    )
    (OUT / "report.md").write_text(report)
    print(report)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
