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
from pathlib import Path

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


if __name__ == "__main__":
    sys.exit(main())
