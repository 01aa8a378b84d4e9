"""HL7 v2 parse + map to canonical events on one core, beside python-hl7 on the same messages.

Workload: 20,000 ADT (A01/A02/A03/A04), ORM^O01 and ORU^R01 messages from the demo
hospital's EMR, as they go over the wire (the issue's "realistic ADT/ORM/ORU traffic");
also the demo's full mix, where nurse calls (ORU^R40) are most messages. Each rate is the
median of 7 passes over all messages, in this process (one core). Reported side by side:

- carescore: parse (connectors/hl7v2/parser.py, the lean parser) and map to canonical
  events (connectors/hl7v2/mapping.py), what the MLLP receiver does per message;
- carescore parse only;
- python-hl7 `hl7.parse` (parse only, no mapping);
- bare `str.split` of segments and fields (the floor any parser pays).
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hl7
import yaml

from bench.report import write_section
from connectors.hl7v2.mapping import MapContext, map_message
from connectors.hl7v2.parser import parse
from demo.hospital import DemoHospital
from engine.config import REPO_ROOT
from engine.places import Places

MESSAGES = 20_000
PASSES = 7
CORE_TYPES = ("ADT^", "ORM^", "ORU^R01")


def workload(core_only: bool = False) -> tuple[list[str], Places]:
    places = Places.model_validate(
        yaml.safe_load((REPO_ROOT / "carescore/defaults.yaml").read_text())["places"]
    )
    now = datetime(2026, 6, 1, tzinfo=UTC).timestamp()
    hospital = DemoHospital(places, seed=42)
    hospital.seed_history(now, 12 * 3600)
    texts: list[str] = []
    until = now
    while len(texts) < MESSAGES:
        until += 6 * 3600
        texts += [
            text for _, text in hospital.due(until) if not core_only or _kind(text).startswith(CORE_TYPES)
        ]
    return texts[:MESSAGES], places


def _kind(text: str) -> str:
    return text.split("|", 9)[8]


def rate(work: Callable[[str], object], texts: list[str]) -> float:
    runs = []
    for _ in range(PASSES):
        started = time.perf_counter()
        for text in texts:
            work(text)
        runs.append(len(texts) / (time.perf_counter() - started))
    return statistics.median(runs)


def measure(texts: list[str], places: Places) -> tuple[dict[str, float], Counter[str], int]:
    mix = Counter(_kind(t).rsplit("^", 1)[0] for t in texts)
    context = MapContext(places).at(datetime.now(UTC))
    events = sum(len(map_message(parse(t), context)) for t in texts)
    gc.collect()
    gc.freeze()

    def ours(text: str) -> object:
        return map_message(parse(text), context)

    def bare(text: str) -> object:
        return [s.split("|") for s in text.split("\r")]

    try:
        return (
            {
                "carescore parse + map": rate(ours, texts),
                "carescore parse only": rate(parse, texts),
                "python-hl7 hl7.parse (parse only)": rate(hl7.parse, texts),
                "bare str.split": rate(bare, texts),
            },
            mix,
            events,
        )
    finally:
        gc.unfreeze()


def table(title: str, texts: list[str], places: Places) -> list[str]:
    results, mix, events = measure(texts, places)
    reference = results["python-hl7 hl7.parse (parse only)"]
    lines = [
        f"### {title}",
        "",
        f"{len(texts):,} messages ({', '.join(f'{k} {v:,}' for k, v in mix.most_common())}),"
        f" {events:,} canonical events.",
        "",
        "| path | messages/s | vs python-hl7 |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {value:,.0f} | {value / reference:.1f}x |" for name, value in results.items()]
    return [*lines, ""]


def main() -> None:
    core, places = workload(core_only=True)
    full, _ = workload()
    lines = ["## HL7 v2 parse + map (one core)", "", f"Median of {PASSES} passes.", ""]
    lines += table("ADT / ORM / ORU^R01 (the target workload)", core, places)
    lines += table("The demo hospital's whole mix (nurse calls, charges too)", full, places)
    lines += [
        "Target (issue 4): parse + map >= 50,000 messages/s on one core. "
        "The lean parser is held to python-hl7 value by value on every corpus message "
        "(tests/test_hl7_corpus.py).",
    ]
    write_section("hl7-parse", "\n".join(lines))


if __name__ == "__main__":
    main()
