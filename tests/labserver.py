"""A real `carescore run` for fault tests: started as a user starts it, killed for real, and
the STAT lab order/result pairs those tests send (each pair one observation of lab_tat_stat,
keyed by its order id)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

ROOT = Path(__file__).resolve().parent.parent
FACILITY = "CRASH"
SB, EB, CR = b"\x0b", b"\x1c", b"\x0d"


def hl7_time(moment: datetime) -> str:
    return moment.strftime("%Y%m%d%H%M%S") + "+0000"


def order(pair: str, at: datetime, facility: str = FACILITY, unit: str = "ICUL") -> str:
    """ORM^O01 new STAT order: ORC-9 order time, TQ1-9 priority S, PV1-3 the unit."""
    t = hl7_time(at)
    return "\r".join(
        [
            f"MSH|^~\\&|EPIC|{facility}|CARESCORE|{facility}|{t}||ORM^O01^ORM_O01|O{pair}|P|2.5.1",
            f"PID|1||P{pair}^^^{facility}^MR||Doe^Pat||19600101|F",
            f"PV1|1|I|{unit}^1^01^{facility}||||9901^Diaz^Omar|||CCM||||7|||9901^Diaz^Omar|IN|V{pair}",
            f"ORC|NW|L{pair}^EPIC|||||||{t}",
            f"TQ1|1||||||{t}||S",
            f"OBR|1|L{pair}^EPIC||2823-3^Potassium^LN",
        ]
    )


def result(pair: str, ordered: datetime, at: datetime, facility: str = FACILITY, unit: str = "ICUL") -> str:
    """ORU^R01 final result (OBR-25 F), OBR-22 the report time."""
    t, o = hl7_time(at), hl7_time(ordered)
    return "\r".join(
        [
            f"MSH|^~\\&|LIS|{facility}|CARESCORE|{facility}|{t}||ORU^R01^ORU_R01|R{pair}|P|2.5.1",
            f"PID|1||P{pair}^^^{facility}^MR||Doe^Pat||19600101|F",
            f"PV1|1|I|{unit}^1^01^{facility}||||9901^Diaz^Omar|||CCM||||7|||9901^Diaz^Omar|IN|V{pair}",
            f"ORC|RE|L{pair}^EPIC|S{pair}^LIS",
            f"OBR|1|L{pair}^EPIC|S{pair}^LIS|2823-3^Potassium^LN|||{o}|||||||{o}||9901^Diaz^Omar||||||{t}||CH|F",
            f"TQ1|1||||||{o}||S",
            f"OBX|1|NM|2823-3^Potassium^LN||4.1|mmol/L|3.5-5.1|N|||F|||{o}",
        ]
    )


def control_id(message: str) -> str:
    return message.split("|", 10)[9]


def exchange(sock: socket.socket, message: str) -> str:
    """One frame out, its ACK back (the whole ACK message)."""
    sock.sendall(SB + message.encode() + EB + CR)
    data = b""
    while not data.endswith(EB + CR):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("closed before the ACK")
        data += chunk
    return data.strip(SB + EB + CR).decode()


class Server:
    def __init__(self, config: Path, api_port: int, log: Path):
        self.config, self.api_port, self.log = config, api_port, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "carescore.cli", "run", "--config", str(self.config)],
            cwd=ROOT,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"carescore exited with {self.proc.returncode}: {self.log}"
            try:
                if httpx.get(self.url("/readyz"), timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"carescore did not start: {self.log}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.api_port}{path}"


def write_config(folder: Path, mllp: int, api: int, data: Path | None = None) -> Path:
    config = {
        "data_dir": str(data or folder / "data"),
        "places": {
            "default_facility": FACILITY,
            "facilities": [
                {
                    "id": FACILITY,
                    "departments": [
                        {"id": "critical_care", "units": [{"id": "ICUL", "type": "icu", "beds": 12}]}
                    ],
                }
            ],
        },
        "mllp": {"port": mllp},
        "api": {"port": api},
        "demo": {"enabled": False},
        "feeds": {"watch": False},
        "engine": {"tick": 0.1, "snapshot_every": 0.2, "fsync": True},
    }
    path = folder / "carescore.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def wait_for(what: str, check: Any, timeout: float = 60.0, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: last {got!r}")
        time.sleep(every)


def logged(data: Path) -> dict[str, int]:
    """Events in the event log by type, read straight from its segments: a batch stored twice
    or a refused batch that reached disk shows here even where a KPI would not (lab_tat_stat
    keeps the first order and result of an order id, so its n cannot see a duplicate)."""
    counts: dict[str, int] = {}
    for segment in sorted((data / "events").glob("events-*.ndjson")):
        for line in segment.read_bytes().splitlines():
            kind = orjson.loads(line)["type"]
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def report_n(server: Server, kpi: str, start: datetime, end: datetime) -> int:
    """The facility's `n` in the period report (computed from the event log with polars)."""
    report = httpx.get(
        server.url(f"/api/v1/reports/{kpi}"),
        params={"from": start.isoformat(), "to": end.isoformat(), "by": "facility"},
        timeout=60,
    ).json()
    (row,) = [r for r in report["rows"] if r["group"]["facility"] == FACILITY]
    return int(row["n"])


def facility_n(server: Server, kpi: str) -> int | None:
    body = httpx.get(server.url(f"/api/v1/kpis/{kpi}"), params={"facility": FACILITY}, timeout=10).json()
    for value in body["values"]:
        if value["group"] == {"facility": FACILITY, "department": None, "unit": None}:
            return int(value["n"])
    return None
