"""The Kafka runtime: `carescore worker` processes end to end (canonical events on the
events topic -> engine -> KPI samples on the samples topic), against a bare aiokafka
consumer reading the same topic in the same run.

A broker of its own (deploy/kafka/kafka.sh, on free ports) gets EVENTS canonical events
from 8 hospitals of 3 units (bench/workload.py, times moved to end a minute ago; each
hospital's key lands in its own one of the 8 partitions), produced before any reader starts,
into two topics: one event per record, and BATCH events of a hospital per record (as the
gateway's group commit writes them under load). On each, one after the other:
- a bare AIOKafkaConsumer reads all records (no group, no parsing): the rate at which a
  Python consumer can take records off this broker at all;
- a Faust agent that only counts and acknowledges records: Faust's own ceiling;
- one worker (a real `carescore worker` process, default settings: checkpoint every 20,000
  events, acks after the checkpoint), and on the batched topic also two and four workers in
  one group;
and one embedded engine (`carescore run`'s) over the same events, the baseline the issue
holds a worker to; and the worker's own work on the batched records in this process, without
Kafka or Faust (`worker_alone`), which shows what Faust and the Kafka clients add.
One worker on the batched topic, the row the issue's 0.5 is about, runs ROUNDS times, each
right after an embedded engine of its own: runs on this shared machine moved by a third
between minutes (18,870 to 36,538 events/s for the same worker within an hour, 2026-12-02),
so the verdict is the median of those paired ratios, each taken while the machine was the
same, and every ratio to the embedded engine in the report is to the median round's run.
A worker's rate comes from its /metrics (carescore_worker_events_total), polled every
0.25 s: the topic's events not yet processed when the first worker starts processing, over
the time from then until the last one is processed. Start-up is not counted; checkpoints,
acks, publishing samples and, with several workers, the rebalances as the others join (and the
events after the last checkpoint that the new owner of a partition does again) are.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import murmur2
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.mllp_e2e import free_port
from bench.report import cpu_seconds, write_section
from bench.workload import hospital, stream
from carescore.gctune import GC_THRESHOLDS
from carescore.transports import live_engine
from carescore.transports.kafka.records import read_record
from carescore.transports.kafka.topics import ensure_topics, events_topic
from carescore.transports.kafka.worker import (
    Partition,
    _backlog_clock,
    fold,
    samples_due,
    snapshot_text,
)
from engine.checkpoint import catalogue_fingerprint
from engine.config import REPO_ROOT, KafkaSettings, Settings
from engine.definitions import load_catalogue
from engine.event_decoder import parse_events
from engine.events import dump_event

EVENTS = 400_000
BATCH = 50
PARTITIONS = 8
KAFKA_SH = REPO_ROOT / "deploy" / "kafka" / "kafka.sh"
IDS = ("source_id", "encounter_id", "order_id", "call_id", "patient_id")


def facilities() -> tuple[str, ...]:
    """Eight hospital ids whose keys go to eight different partitions."""
    chosen: dict[int, str] = {}
    for i in range(1000):
        name = f"H{i:03d}"
        chosen.setdefault((murmur2(name.encode()) & 0x7FFFFFFF) % PARTITIONS, name)
        if len(chosen) == PARTITIONS:
            break
    return tuple(chosen[p] for p in sorted(chosen))


def records(names: tuple[str, ...]) -> list[tuple[bytes, bytes, float]]:
    """(key, value, event time): each hospital its own stream, ids made its own, by time.
    Times are moved so the stream ends a minute ago, as a live feed's would: a stream of
    last January would look like sources silent for months, whose windows the idle
    watermark closes up to now on every tick."""
    out = []
    per = EVENTS // len(names)
    for seed, name in enumerate(names, start=1):
        events = stream(per, hospital(3, (name,)), seed=seed, spacing=0.05 * len(names))
        shift = timedelta(seconds=time.time() - 60 - events[-1].ts)
        for e in events:
            d = orjson.loads(dump_event(e))
            for k in IDS:
                if k in d:
                    d[k] = f"{name}:{d[k]}"
            d["event_time"] = (e.event_time + shift).isoformat()
            d["received_time"] = (e.received_time + shift).isoformat()
            out.append((name.encode(), orjson.dumps(d), e.ts + shift.total_seconds()))
    out.sort(key=lambda r: r[2])
    return out


def batched(rows: list[tuple[bytes, bytes, float]], per_record: int) -> list[tuple[bytes, bytes]]:
    """Records of up to `per_record` consecutive events of one hospital (a JSON array), as
    the gateway's group commit writes them under load; per_record=1: one event per record."""
    if per_record == 1:
        return [(k, v) for k, v, _ in rows]
    out: list[tuple[bytes, bytes]] = []
    runs: dict[bytes, list[bytes]] = {}
    for key, value, _ in rows:
        run = runs.setdefault(key, [])
        run.append(value)
        if len(run) == per_record:
            out.append((key, b"[" + b",".join(runs.pop(key)) + b"]"))
    out += [(k, b"[" + b",".join(run) + b"]") for k, run in runs.items()]
    return out


async def produce(bootstrap: str, topic: str, rows: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    try:
        pending = []
        for key, value in rows:
            pending.append(await producer.send(topic, value, key=key))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def bare_consumer(bootstrap: str, topic: str, records: int) -> float:
    """Seconds a plain AIOKafkaConsumer (no group, no parsing) takes to read the topic."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        seen, started = 0, 0.0
        while seen < records:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for recs in batch.values():
                if recs and not started:
                    started = time.perf_counter()
                seen += len(recs)
        return time.perf_counter() - started
    finally:
        await consumer.stop()


def bare_faust(bootstrap: str, topic: str, app_id: str, records: int) -> None:
    """A Faust agent that only counts and acknowledges records: Faust's own ceiling.
    Runs as its own process (`--bare-faust`); prints the seconds it took."""
    import faust

    datadir = tempfile.mkdtemp(prefix="carescore-bare-faust-")
    atexit.register(shutil.rmtree, datadir, True)
    app = faust.App(
        app_id,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        datadir=datadir,
        web_enabled=False,
        topic_partitions=PARTITIONS,
    )
    source = app.topic(topic, key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw")
    state = {"n": 0, "t0": 0.0}

    @app.agent(source)
    async def count(stream: Any) -> None:
        async for event in stream.noack().events():
            if not state["n"]:
                state["t0"] = time.perf_counter()
            state["n"] += 1
            event.ack()
            if state["n"] == records:
                print(f"SECONDS {time.perf_counter() - state['t0']}", flush=True)

    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


def run_bare_faust(bootstrap: str, topic: str, app_id: str, records: int, folder: Path) -> float:
    log = folder / f"{app_id}.log"
    cmd = [sys.executable, __file__, "--bare-faust", bootstrap, topic, app_id, str(records), "worker"]
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            for line in log.read_bytes().replace(b"\r", b"\n").splitlines():
                if b"SECONDS " in line:
                    return float(line.split(b"SECONDS ")[1].split()[0])
            time.sleep(0.5)
        raise RuntimeError(f"the bare Faust agent did not finish; see {log}")
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def embedded_engine(events: list[tuple[bytes, bytes, float]], places: object) -> float:
    """Events/s of one embedded engine (carescore run's) over the same events, parsed before
    timing (its connectors hand it objects), closing windows and computing live values once
    a second of wall time as the embedded runtime's tick does. Its clock is the latest
    arrival's (the worker's backlog clock), which a live feed's wall clock keeps up with: the
    stream is replayed here hours in seconds, and the wall clock would find every source
    quiet for hours at the first tick and drop most of what follows as late (it did, up to
    44,492 events of one KPI, before this clock)."""
    settings = Settings.model_validate({"places": places, "demo": {"enabled": False}})
    engine = live_engine(settings, load_catalogue(settings.kpi_defs))
    whole = Partition(engine)  # for its clock: see below
    parsed = [e for _, value, _ in events for e in parse_events(value)]
    gc.collect()
    gc.freeze()
    default = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        started = time.perf_counter()
        tick = started + 1.0
        for event in parsed:
            engine.process(event)
            if time.perf_counter() >= tick:
                now = _backlog_clock(whole, time.time())
                engine.advance(now)
                engine.live(now)
                tick = time.perf_counter() + 1.0
        now = _backlog_clock(whole, time.time())
        engine.advance(now)
        engine.live(now)
        return len(parsed) / (time.perf_counter() - started)
    finally:
        gc.set_threshold(*default)
        gc.unfreeze()


def decoding(rows: list[tuple[bytes, bytes]]) -> float:
    """Seconds per event a worker spends turning records back into validated events."""
    started = time.perf_counter()
    count = sum(len(parse_events(value)) for _, value in rows)
    return (time.perf_counter() - started) / count


def worker_alone(rows: list[tuple[bytes, bytes]], places: object) -> tuple[float, dict[str, float]]:
    """The worker's own work on the same records without Kafka or Faust, in this process:
    per record, decode with the time bounds (read_record), the source_id check and the engine
    (run_engine's loop); a checkpoint
    (snapshot_text, not sent) every 20,000 events of a partition; once a second every
    partition's samples_due on its backlog clock, as a worker reading a backlog ticks (windows
    closed, live values every LIVE_WHILE_BEHIND seconds, samples serialised, not sent).
    Events/s and seconds per event of each part."""
    settings = Settings.model_validate({"places": places, "demo": {"enabled": False}})
    catalogue = load_catalogue(settings.kpi_defs)
    fingerprint = catalogue_fingerprint(catalogue, settings.timezone)
    every = KafkaSettings.model_fields["snapshot_every"].default
    bounds = settings.engine.bounds()
    parts = {key: Partition(live_engine(settings, catalogue)) for key in {k for k, _ in rows}}
    spent = dict.fromkeys(("decode", "engine", "checkpoints", "tick"), 0.0)
    clock = time.perf_counter
    gc.collect()
    gc.freeze()
    default = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        started = clock()
        tick = started + 1.0
        count = 0
        for key, value in rows:
            part = parts[key]
            t0 = clock()
            batch = read_record(value, bounds, 0, count)  # decode and the time bounds, as run_engine
            t1 = clock()
            fold(part, batch)
            part.offset += 1
            part.since_checkpoint += len(batch)
            count += len(batch)
            t2 = clock()
            if part.since_checkpoint >= every:
                snapshot_text(part, fingerprint)
                part.since_checkpoint = 0
            t3 = clock()
            if t3 >= tick:
                now = time.time()
                for p in parts.values():
                    samples_due(p, _backlog_clock(p, now), caught_up=False)
                tick = clock() + 1.0
            t4 = clock()
            for part_name, took in zip(spent, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                spent[part_name] += took
        elapsed = clock() - started
    finally:
        gc.set_threshold(*default)
        gc.unfreeze()
    return count / elapsed, {k: v / count for k, v in spent.items()}


def metric(url: str, name: str, label: tuple[str, str] | None = None) -> float:
    try:
        text = httpx.get(url, timeout=2).text
    except httpx.HTTPError:
        return 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and (label is None or s.labels.get(label[0]) == label[1]):
                return s.value
    return 0.0


def run_workers(
    count: int, bootstrap: str, prefix: str, folder: Path, places: object, broker: int, tag: str = ""
) -> dict[str, Any]:
    """`count` workers in a new group over the filled topic (read from its start); their
    rate from /metrics."""
    config = folder / f"workers{count}{tag}.yaml"
    settings = {
        "data_dir": str(folder / f"data{count}{tag}"),
        "places": places,
        "demo": {"enabled": False},
        "runtime": {
            "kind": "kafka",
            "kafka": {
                "bootstrap": bootstrap,
                "partitions": PARTITIONS,
                "topic_prefix": prefix,
                "app_id": f"{prefix}-{count}w{tag}",
            },
        },
    }
    config.write_text(yaml.safe_dump(settings))
    urls, procs = [], []
    for i in range(count):
        port = free_port()
        urls.append(f"http://127.0.0.1:{port}/metrics")
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "carescore.cli",
                    "worker",
                    "--config",
                    str(config),
                    "--metrics",
                    f"127.0.0.1:{port}",
                ],
                cwd=REPO_ROOT,
                stdout=(folder / f"w{count}{tag}-{i}.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
        )
    processed = ("outcome", "processed")
    try:
        start_at = start_count = 0.0
        cpu_at: list[float] = []
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            counts = [metric(u, "carescore_worker_events_total", processed) for u in urls]
            now = time.perf_counter()
            if not start_at and any(c > 0 for c in counts):
                start_at, start_count = now, sum(counts)
                cpu_at = [cpu_seconds(p.pid) for p in procs] + [cpu_seconds(broker)]
            if sum(counts) >= EVENTS:
                break
            time.sleep(0.25)
        else:
            raise RuntimeError(f"{count} worker(s) did not finish; see {folder}")
        cpu = [
            (b - a) / (now - start_at)
            for a, b in zip(cpu_at, [cpu_seconds(p.pid) for p in procs] + [cpu_seconds(broker)], strict=True)
        ]
        samples = sum(metric(u, "carescore_worker_samples_total") for u in urls)
        checkpoints = sum(metric(u, "carescore_worker_checkpoints_total") for u in urls)
        split = [metric(u, "carescore_worker_events_total", processed) for u in urls]
        return {
            "rate": (EVENTS - start_count) / (now - start_at),
            "counted_from": start_count,
            "samples": samples,
            "checkpoints": checkpoints,
            "split": split,
            "cpu": cpu,  # cores used while measured: each worker, then the broker
        }
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)


WORKERS = (1, 2, 4)
ROUNDS = 3  # paired (embedded engine, one worker) rounds on the batched topic
OWN_WORK = "worker's own work without Kafka or Faust (no reader)"


async def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="carescore-kafka-bench-"))
    port, controller = free_port(), free_port()
    bootstrap = f"127.0.0.1:{port}"
    subprocess.run([str(KAFKA_SH), "start", str(folder / "broker"), str(port), str(controller)], check=True)
    broker = int((folder / "broker" / "pid").read_text())
    rows: dict[int, list[tuple[bytes, bytes]]] = {}
    results: dict[str, tuple[float, float]] = {}  # reader -> (events/s, records/s)
    notes: dict[str, str] = {}
    decode = 0.0
    alone: tuple[float, dict[str, float]] = (0.0, {})
    try:
        names = facilities()
        places = hospital(3, names).model_dump(mode="json", exclude_none=True)
        events = records(names)
        paired: list[tuple[float, float]] = []  # (embedded, one worker) events/s, by round
        run = uuid.uuid4().hex[:6]
        for per_record in (1, BATCH):
            prefix = f"bench{run}x{per_record}"
            kafka = KafkaSettings(bootstrap=bootstrap, partitions=PARTITIONS, topic_prefix=prefix)
            await ensure_topics(kafka)
            rows[per_record] = batched(events, per_record)
            await produce(bootstrap, events_topic(kafka), rows[per_record])
            n = len(rows[per_record])
            if per_record == BATCH:
                decode = decoding(rows[per_record])
                alone = worker_alone(rows[per_record], places)
            bare = min([await bare_consumer(bootstrap, events_topic(kafka), n) for _ in range(2)])
            results[f"bare aiokafka consumer, {per_record}/record"] = (len(events) / bare, n / bare)
            secs = run_bare_faust(bootstrap, events_topic(kafka), f"{prefix}-faust", n, folder)
            results[f"Faust agent counting records, {per_record}/record"] = (len(events) / secs, n / secs)
            for workers in WORKERS if per_record > 1 else (1,):
                if per_record == BATCH and workers == 1:
                    rounds = []
                    for r in range(ROUNDS):
                        baseline = embedded_engine(events, places)
                        rounds.append(run_workers(1, bootstrap, prefix, folder, places, broker, f"r{r}"))
                        paired.append((baseline, rounds[-1]["rate"]))
                    got = rounds[paired.index(_median_pair(paired))]
                else:
                    got = run_workers(workers, bootstrap, prefix, folder, places, broker)
                name = f"{workers} worker{'s' * (workers > 1)}, {per_record}/record"
                results[name] = (got["rate"], got["rate"] * n / len(events))
                *each, broker_cpu = got["cpu"]
                notes[name] = (
                    f"{got['checkpoints']:,.0f} checkpoints, {got['samples']:,.0f} KPI samples published; "
                    f"CPU (cores) workers {' + '.join(f'{c:.2f}' for c in each)}, broker {broker_cpu:.2f}"
                    + (
                        f"; events processed {' + '.join(f'{c:,.0f}' for c in got['split'])}"
                        " (a partition's new owner redoes the events after its last checkpoint)"
                        if workers > 1
                        else ""
                    )
                )
        own = f"{OWN_WORK}, {BATCH}/record"  # last: no reader, no bare consumer to compare with
        results[own] = (alone[0], alone[0] * len(rows[BATCH]) / len(events))
    finally:
        subprocess.run([str(KAFKA_SH), "stop", str(folder / "broker")], check=False)
    write_section("kafka-worker", report(events, rows, results, notes, paired, decode, alone[1]))


def _median_pair(paired: list[tuple[float, float]]) -> tuple[float, float]:
    """The round whose ratio (worker / embedded) is the median of the rounds'."""
    return sorted(paired, key=lambda pair: pair[1] / pair[0])[len(paired) // 2]


def report(
    events: list[tuple[bytes, bytes, float]],
    rows: dict[int, list[tuple[bytes, bytes]]],
    results: dict[str, tuple[float, float]],
    notes: dict[str, str],
    paired: list[tuple[float, float]],
    decode: float,
    alone: dict[str, float],
) -> str:
    size = sum(len(v) for _, v, _ in events) / len(events)
    embedded, worker = _median_pair(paired)  # every ratio below is to the median round's engine
    name = "embedded engine (same events, parsed before timing; the median round's run)"
    table = [f"| {name} | {embedded:,.0f} | - | - | 1.000 |"]
    for per_record in (1, BATCH):
        bare = results[f"bare aiokafka consumer, {per_record}/record"][0]
        for reader, (ev, rec) in results.items():
            if reader.endswith(f", {per_record}/record"):
                versus = "-" if reader.startswith(OWN_WORK) else f"{ev / bare:.3f}"
                table.append(f"| {reader} | {ev:,.0f} | {rec:,.0f} | {versus} | {ev / embedded:.3f} |")
    lines = "\n".join(table)
    own = results[f"{OWN_WORK}, {BATCH}/record"][0]
    one = worker / embedded
    rounds = "; ".join(f"{w:,.0f} / {e:,.0f} = {w / e:.2f}" for e, w in paired)
    listed = "\n".join(f"- {k}: {v}" for k, v in notes.items())
    left = 2e6 / embedded - 1e6 / own  # what 0.5 leaves Faust and the Kafka clients, per event
    if left >= 0:
        budget = (
            f"with the worker's own work at {1e6 / own:.1f}, that is {left:.1f} µs for Faust's delivery "
            f"and the Kafka clients, against the {1e6 / worker - 1e6 / own:.1f} measured."
        )
    else:
        budget = (
            f"the worker's own work alone, at {1e6 / own:.1f}, is {-left:.1f} µs over it, before "
            f"Faust's delivery and the Kafka clients ({1e6 / worker - 1e6 / own:.1f} measured)."
        )
    return f"""## Kafka runtime: Faust workers end to end (issue 17)

`python bench/kafka_worker.py` - {len(events):,} canonical events ({size:.0f} bytes of JSON
each) from 8 hospitals of 3 units, one hospital per partition of an {PARTITIONS}-partition
events topic on a local broker (deploy/kafka/kafka.sh: Kafka from Maven Central, Java 17),
produced before any reader starts, twice: one event per record ({len(rows[1]):,} records), and
runs of up to {BATCH} consecutive events of a hospital per record ({len(rows[BATCH]):,} records),
the shape the gateway's group commit writes under load (carescore/transports/kafka/sink.py).

A worker is a real `carescore worker` process with default settings (full KPI catalogue,
checkpoint every 20,000 events into the changelog table, records acknowledged after their
checkpoint, KPI samples to the samples topic); its rate is read from its /metrics, from the
moment the first worker is processing until the last event is processed (with more than one
worker this includes the rebalances as the others join). The embedded engine is one
`Engine` of `carescore run` over the same 400,000 events, closing windows and computing live
values once a second; both run with the collector settings `carescore run` and `carescore
worker` set (carescore/gctune.py). Ratios are to the bare aiokafka consumer reading the same topic and to
the embedded engine, all in the same run. CPU is each process's user + system time over the
measured interval (from /proc), in cores.

| reader | events/s | records/s | vs bare consumer | vs embedded engine |
|---|---:|---:|---:|---:|
{lines}

{listed}

One worker, {BATCH} events/record: **{one:.2f}** of the embedded engine (target 0.5), the median
of {len(paired)} rounds, each one worker run right after an embedded engine run (worker / embedded
events/s = ratio, in the order run): {rounds}. The embedded engine and 1 worker, {BATCH}/record
rows above are the median round's, and every ratio to the embedded engine here is to its run.

What limits it, per event at {BATCH} events/record, in the median round: the embedded engine takes
{1e6 / embedded:.1f} µs, one worker {1e6 / worker:.1f} µs. The worker's own work on the same
records, in one process without Kafka or Faust (bench's `worker_alone`: the worker's loop, its
checkpoints and ticks), takes {1e6 / own:.1f} µs ({own / embedded:.2f} of the embedded engine):
decoding {alone["decode"] * 1e6:.1f} (msgspec, pydantic for what it refuses: engine/event_decoder.py;
{decode * 1e6:.1f} µs in a loop that only decodes), engine {alone["engine"] * 1e6:.1f}, checkpoints
{alone["checkpoints"] * 1e6:.1f} (every
engine's whole state as zlib'd JSON every 20,000 events of a partition), ticks {alone["tick"] * 1e6:.1f}.
The remaining {1e6 / worker - 1e6 / own:.1f} µs are Faust's
delivery and the Kafka clients (fetching, the changelog and samples producers); the agent that
only counts records alone takes {1e6 / results[f"Faust agent counting records, {BATCH}/record"][0]:.1f} µs.
(`worker_alone` runs before the rounds, not beside them: on this shared machine that split
moves with the machine's pace between the two.)
0.5 of the embedded engine leaves {2e6 / embedded:.1f} µs per event: {budget}
Tried: derived fields (epoch time, place) set after validation instead of in pydantic's
model_post_init (in a loop that only decodes, 7.1 -> 6.0 µs per event, 2026-12-01; kept); a
decoder that trusts the gateway's records (orjson and unvalidated models): 5.5 against 7.8 µs per
event before that change, dropped, as it would take records off the topic unchecked; live values
of a partition still reading its backlog are computed every 10 s instead of every second (a
tenth of the worker's time in a model of its loop; kept); the epoch time of a UTC event by
subtracting the epoch in its own tzinfo object instead of timestamp() (0.86 -> 0.59 µs per
event in a loop, 2026-12-02; kept: under 1 % of a worker's time, below what one run can show);
events validated by msgspec structs generated from the pydantic models, pydantic deciding
only what msgspec refuses (engine/event_decoder.py, the answers held to pydantic's by
tests/test_event_decoder.py): 6-7.5 -> 2.9-3.5 µs per event in a loop that only decodes,
2026-12-02; kept (one worker's median 0.49 before, 0.53 in the first run after).

Faust hands each record to an agent through `Consumer._drain_messages`, which awaits
`wait_first(callback, suspend_flow)` - four asyncio tasks per record - so an agent that does
nothing but count tops out at the records/s above, whatever the record holds. Hence records
carry batches of events, and a worker's consumer hands over a record whose callback does not
wait without those tasks, giving the loop one turn instead (carescore/transports/kafka/delivery.py;
the counting agent above is stock Faust). The broker (JVM), the workers and this script share the machine's
{os.cpu_count()} cores: with two or four workers the processes compete for those cores (the
CPU figures above), so those rows are what this machine gives, not what workers on cores of
their own give.
"""


if __name__ == "__main__":
    if sys.argv[1:2] == ["--bare-faust"]:
        bootstrap, topic, app_id, records_, *rest = sys.argv[2:]
        sys.argv = [sys.argv[0], *rest]
        bare_faust(bootstrap, topic, app_id, int(records_))
    else:
        asyncio.run(main())
