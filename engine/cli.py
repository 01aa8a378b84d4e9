"""The carescore command.

carescore run [--config FILE]        the embedded runtime (API, MLLP, demo)
carescore kpi check [DIR]            validate KPI definitions
carescore config check [FILE]        validate a carescore.yaml
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

from engine.config import DEFAULT_CONFIG, load_settings
from engine.definitions import load_catalogue
from engine.logs import setup_logging
from engine.yamlconf import ConfigError


def _settings(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    settings = load_settings(Path(args.config) if args.config else None)
    demo = os.environ.get("CARESCORE_DEMO")
    if demo is not None:
        settings.demo.enabled = demo.strip().lower() not in ("0", "false", "no", "off", "")
    for env, attr in (("CARESCORE_API_PORT", "api"), ("CARESCORE_MLLP_PORT", "mllp")):
        if os.environ.get(env):
            getattr(settings, attr).port = int(os.environ[env])
    if os.environ.get("CARESCORE_DATA_DIR"):
        settings.data_dir = Path(os.environ["CARESCORE_DATA_DIR"]).resolve()
    return settings


def cmd_run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    setup_logging(settings.log_level)
    from engine.runtime.serve import Service

    asyncio.run(Service(settings).run())
    return 0


def cmd_import_mimic(args: argparse.Namespace) -> int:
    from connectors.feeds.mimic import mimic_events
    from engine.runtime.embedded import EmbeddedRuntime

    settings = _settings(args)
    setup_logging("WARNING")
    runtime = EmbeddedRuntime(settings)
    started = time.monotonic()
    batch: list[Any] = []
    stored = duplicates = 0
    try:
        for event in mimic_events(Path(args.directory)):
            batch.append(event)
            if len(batch) == 5000:
                stored, duplicates = _flush(runtime, batch, stored, duplicates)
                batch = []
                _progress(stored, duplicates, started)
        if batch:
            stored, duplicates = _flush(runtime, batch, stored, duplicates)
        _progress(stored, duplicates, started, final=True)
    finally:
        asyncio.run(runtime.close())
    return 0


def _flush(runtime: Any, batch: list[Any], stored: int, duplicates: int) -> tuple[int, int]:
    from engine.bus import Published

    key = f"import:{batch[0].source_id}:{batch[-1].source_id}"
    if runtime.ingest_now(key, batch) is Published.duplicate:
        return stored, duplicates + len(batch)
    return stored + len(batch), duplicates


def _progress(stored: int, duplicates: int, started: float, final: bool = False) -> None:
    elapsed = max(time.monotonic() - started, 1e-9)
    line = f"{stored:,} events stored, {duplicates:,} already there, {stored / elapsed:,.0f} events/s"
    print(("done: " if final else "") + line, file=sys.stderr if not final else sys.stdout, flush=True)


def cmd_kpi_check(args: argparse.Namespace) -> int:
    directory = Path(args.directory)
    catalogue = load_catalogue(directory)
    for kpi in catalogue:
        print(f"ok  {kpi.id:32s} {kpi.perspective.value:18s} {catalogue.files[kpi.id]}")
    print(f"{len(catalogue)} KPI definitions valid in {directory}")
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    settings = load_settings(Path(args.file))
    catalogue = load_catalogue(settings.kpi_defs)
    print(f"{args.file}: valid ({len(catalogue)} KPIs from {settings.kpi_defs}, data in {settings.data_dir})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="carescore", description="Real-time Balanced Scorecard for hospitals."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run carescore (embedded runtime)")
    run.add_argument("--config", help=f"settings file (default {DEFAULT_CONFIG})")
    run.set_defaults(func=cmd_run)

    kpi = sub.add_parser("kpi", help="KPI definitions")
    kpi_sub = kpi.add_subparsers(dest="kpi_command", required=True)
    check = kpi_sub.add_parser("check", help="validate a folder of KPI definitions")
    check.add_argument(
        "directory", nargs="?", default=str(Path(__file__).resolve().parent.parent / "kpi_defs")
    )
    check.set_defaults(func=cmd_kpi_check)

    imp = sub.add_parser("import", help="bulk imports into the event log (carescore must not be running)")
    imp_sub = imp.add_subparsers(dest="import_command", required=True)
    mimic = imp_sub.add_parser("mimic", help="MIMIC-IV hosp module (admissions, transfers, labevents)")
    mimic.add_argument("directory", help="folder with hosp/*.csv.gz")
    mimic.add_argument("--config", help=f"settings file (default {DEFAULT_CONFIG})")
    mimic.set_defaults(func=cmd_import_mimic)

    config = sub.add_parser("config", help="settings")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    ccheck = config_sub.add_parser("check", help="validate a carescore.yaml")
    ccheck.add_argument("file", nargs="?", default=str(DEFAULT_CONFIG))
    ccheck.set_defaults(func=cmd_config_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print("configuration error:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except RuntimeError as exc:
        if type(exc).__name__ != "DataDirBusy":
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
