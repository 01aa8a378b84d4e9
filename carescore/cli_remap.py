"""`carescore remap`: its arguments and the command (carescore/transports/kafka/remap.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import datetime, tzinfo
from typing import Any

from carescore.settings import DEFAULT_CONFIG, settings_from
from engine.durations import parse_duration
from engine.logs import setup_logging


def _moment(text: str, zone: tzinfo) -> datetime:
    """An ISO 8601 time; without an offset, in the hospital's time zone."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)


def cmd_remap(args: argparse.Namespace) -> int:
    from carescore.transports.kafka.remap import remap

    settings = settings_from(args.config)
    setup_logging("WARNING")
    if settings.runtime.kind != "kafka":
        print("error: remap reads the raw topics of runtime.kind: kafka", file=sys.stderr)
        return 2
    start, end = _moment(args.start, settings.zone), _moment(args.end, settings.zone)
    if end <= start:
        print("error: --to must be after --from", file=sys.stderr)
        return 2
    lookback = parse_duration(args.lookback) if args.lookback else settings.runtime.kafka.raw.retention
    try:
        report = asyncio.run(remap(settings, args.source, start, end, lookback))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.as_dict(), indent=2), flush=True)
    return 0


def add_remap(sub: Any) -> None:
    remap = sub.add_parser(
        "remap",
        help="map raw inbound messages of a time range again and publish the events that adds (Kafka)",
    )
    remap.add_argument("--source", required=True, choices=["hl7", "fhir", "feeds"], help="which raw topic")
    remap.add_argument("--from", dest="start", required=True, metavar="ISO", help="received at or after")
    remap.add_argument("--to", dest="end", required=True, metavar="ISO", help="received before")
    remap.add_argument(
        "--lookback",
        metavar="DURATION",
        help="how far before --from the events topic is read for ids already published "
        "(default runtime.kafka.raw.retention)",
    )
    remap.add_argument("--config", help=f"settings file (default {DEFAULT_CONFIG})")
    remap.set_defaults(func=cmd_remap)
