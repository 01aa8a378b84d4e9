"""The MIMIC-IV demo as an HL7 v2 feed on disk, for the benchmarks that replay real data.

The messages come from tests/mimic_hl7.py (written by hand from the HL7 standard, every
patient's timeline moved so it ends within the last 25 days: the feed spans years and is
dense only in the last weeks, as a real backfill is). The data is read from
../shared/testdata/mimic-iv-demo, never copied. `write_feed` writes, into a folder:

- carescore.yaml: settings with the MIMIC careunits as `places`, demo off, fsync on;
- feed.hl7: every message MLLP-framed, in the order the hospital sends them;
- sender{i}.mllp: the same messages split over N senders by patient (PID-3), each patient's
  messages in order on one connection (an interface engine keeps a patient's order). The
  patients are dealt largest first to the sender with the fewest messages so far, so every
  sender has about the same share: with a split by hash, the largest share was 5,960 of
  25,853 messages (1.8 times the mean), and the replay's end was one sender still sending.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import mimic_hl7 as mh  # noqa: E402

TESTDATA = ROOT.parent / "shared" / "testdata" / "mimic-iv-demo"


@dataclass
class Feed:
    folder: Path
    config: Path
    feed: Path
    senders: list[Path]
    messages: int
    first: datetime
    last: datetime
    orders: str = "test"


def frame(text: str) -> bytes:
    return b"\x0b" + text.encode() + b"\x1c\r"


def patient_of(text: str) -> str:
    for segment in text.split("\r"):
        if segment.startswith("PID|"):
            return segment.split("|")[3].split("^")[0]
    return ""


def settings(data_dir: Path, **engine: Any) -> dict[str, Any]:
    return {
        "data_dir": str(data_dir),
        "places": mh.places_config(),
        "mllp": {"host": "127.0.0.1", "port": 0},
        "api": {"host": "127.0.0.1", "port": 0},
        "demo": {"enabled": False},
        "engine": {"fsync": True, **engine},
    }


def deal(sizes: Counter[str], senders: int) -> dict[str, int]:
    """Each patient's sender: largest patients first, each to the least loaded sender (ties
    by patient, so the split is the same on every run)."""
    load = [0] * senders
    share: dict[str, int] = {}
    for patient, size in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0])):
        sender = min(range(senders), key=load.__getitem__)
        share[patient] = sender
        load[sender] += size
    return share


def write_feed(
    folder: Path, senders: int = 8, mllp_port: int = 0, api_port: int = 0, orders: str = "test"
) -> Feed:
    if not TESTDATA.is_dir():
        raise SystemExit(f"{TESTDATA} is missing: the MIMIC-IV demo benchmarks need ../shared/testdata")
    folder.mkdir(parents=True, exist_ok=True)
    data = mh.load(TESTDATA, datetime.now(UTC).date())
    messages = mh.messages(data, orders)
    conf = settings(folder / "data")
    conf["mllp"]["port"] = mllp_port
    conf["api"]["port"] = api_port
    config = folder / "carescore.yaml"
    config.write_text(yaml.safe_dump(conf, sort_keys=False))
    feed = folder / "feed.hl7"
    feed.write_bytes(b"".join(frame(m.text) for m in messages))
    share = deal(Counter(patient_of(m.text) for m in messages), senders)
    parts: list[list[bytes]] = [[] for _ in range(senders)]
    for m in messages:
        parts[share[patient_of(m.text)]].append(frame(m.text))
    paths = []
    for i, part in enumerate(parts):
        path = folder / f"sender{i}.mllp"
        path.write_bytes(b"".join(part))
        paths.append(path)
    return Feed(folder, config, feed, paths, len(messages), messages[0].at, messages[-1].at, orders)
