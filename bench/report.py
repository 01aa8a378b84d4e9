"""Machine description and BENCHMARKS.md sections (replaced in place, one per benchmark)."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILE = ROOT / "BENCHMARKS.md"
HEADER = """# Benchmarks

Measured by `make bench` (scripts in `bench/`), on the machine named in each section.
Numbers are what that run measured, not targets; tests never assert timings.
"""


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    # code changed since that commit (BENCHMARKS.md aside, which `make bench` itself rewrites)
    changed = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", ".", ":!BENCHMARKS.md"], cwd=ROOT)
    build = "Debian's build" if str(sys.base_prefix) == "/usr" else f"built under {sys.base_prefix}"
    return (
        f"{cpu}, {os.cpu_count()} cores{mem}; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()} ({build}); commit {commit.stdout.strip() or 'unknown'}"
        f"{' with uncommitted changes' if changed.returncode == 1 else ''}; "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}"
    )


def write_section(name: str, body: str) -> None:
    """Replace (or add) the section between this benchmark's markers."""
    text = FILE.read_text() if FILE.exists() else HEADER
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{begin}\n{body.strip()}\n\nMachine: {machine()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = (
        pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    )
    FILE.write_text(text)
    print(block)


def publish(name: str, text: str, write: bool = True) -> None:
    """Print a benchmark's section, and write it into BENCHMARKS.md unless told not to."""
    print(text)
    if write:
        write_section(name, text)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its waited-for children, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
