"""The carescore command.

carescore run [--config FILE]               the embedded runtime (API, MLLP, demo)
carescore import fhir|hl7|mimic PATH...     backfill into the data folder (server stopped)
carescore import feed FEED FILE...          staffing, hr, finance, experience, quality files
carescore deadletter list|replay            what was rejected; send it again after a fix
carescore kpi check [DIR]                   validate KPI definitions
carescore config check [FILE]               validate a carescore.yaml
carescore token create|list|revoke          integration tokens for the API
carescore remap --source S --from T --to T  map a range of a raw topic again (Kafka runtime)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

from carescore.cli_remap import add_remap
from carescore.settings import DEFAULT_CONFIG, settings_from
from carescore.shell import DataDirBusy
from engine.config import Settings, packaged_kpi_defs
from engine.definitions import Catalogue, _documents, load_catalogue
from engine.diskfaults import storage_failure
from engine.logs import setup_logging
from engine.yamlconf import ConfigError, load_yaml


def _settings(args: argparse.Namespace) -> Settings:
    return settings_from(args.config)


def cmd_worker(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.metrics is not None:
        settings.runtime.kafka.worker_metrics = args.metrics
    setup_logging(settings.log_level)
    from carescore.transports.kafka.worker import run_worker

    run_worker(settings)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    setup_logging(settings.log_level)
    from carescore.serve import Service

    asyncio.run(Service(settings).run())
    return 0


def cmd_import_mimic(args: argparse.Namespace) -> int:
    from carescore.offline import import_mimic
    from connectors.feeds.mimic import MimicExtractError

    settings = _settings(args)
    setup_logging("WARNING")
    try:
        problem = import_mimic(settings, Path(args.directory))
    except MimicExtractError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return _unstored(problem)


def _unstored(problem: str | None) -> int:
    """A stop whose history lacks windows (carescore.offline.unstored): said, and exit 1."""
    if problem is None:
        return 0
    print(f"error: {problem}", file=sys.stderr)
    return 1


def _offline(args: argparse.Namespace, work: Any) -> tuple[Any, str | None]:
    """Run one offline job (an import, a replay) over the data folder: its result, and what
    the history could not store (carescore.offline.unstored)."""
    from carescore.offline import Offline

    settings = _settings(args)
    setup_logging("WARNING")

    async def go() -> tuple[Any, str | None]:
        offline = Offline(settings)
        try:
            result = await work(offline)
        except BaseException:
            with contextlib.suppress(Exception):  # the error that stopped the job is the one raised
                _unstored(await offline.close())
            raise
        return result, await offline.close()

    return asyncio.run(go())


def _finish(done: tuple[Any, str | None]) -> int:
    summary, problem = done
    print(summary.render(), flush=True)
    return max(1 if summary.counts["rejected"] else 0, _unstored(problem))


def cmd_import_fhir(args: argparse.Namespace) -> int:
    return _finish(_offline(args, lambda o: o.import_fhir([Path(p) for p in args.paths])))


def cmd_import_hl7(args: argparse.Namespace) -> int:
    return _finish(_offline(args, lambda o: o.import_hl7([Path(p) for p in args.paths])))


def cmd_import_feed(args: argparse.Namespace) -> int:
    from connectors.feeds.schemas import FEEDS

    if args.feed not in FEEDS:
        print(f"error: unknown feed {args.feed!r}; the feeds are {', '.join(FEEDS)}", file=sys.stderr)
        return 2
    return _finish(_offline(args, lambda o: o.import_feed(args.feed, [Path(p) for p in args.paths])))


def cmd_deadletter_list(args: argparse.Namespace) -> int:
    from connectors.deadletters import DeadLetterStore

    settings = _settings(args)
    store = DeadLetterStore(
        settings.data_dir / "deadletters.sqlite",
        max_rows=settings.dead_letters.max_rows,
        retention=settings.dead_letters.retention,
    )
    letters = store.query(source=args.source, limit=args.limit, pending_only=not args.all)
    for d in letters:
        state = f"replayed {d.replayed_time}" if d.replayed_time else "pending"
        print(f"{d.id:>7}  {d.received_time[:19]}  {d.source:16s} {state:9.9s}  {d.reason[:120]}")
    counts = ", ".join(f"{k} {v}" for k, v in sorted(store.count().items())) or "none"
    print(f"{len(letters)} shown; stored by source: {counts}")
    store.close()
    return 0


def cmd_deadletter_replay(args: argparse.Namespace) -> int:
    """In-process on the data folder, or through the running carescore's API."""
    ids = [int(i) for i in args.ids]
    problem = None
    try:
        done, problem = _offline(args, lambda o: o.replay(ids, args.source, args.all))
        results = [r.as_dict() for r in done]
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    except DataDirBusy:
        results = _replay_remote(args, ids)
    for r in results:
        print(
            f"{r['id']:>7}  {r['source']:16s} {'taken' if r['taken'] else 'REJECTED':9s} {r['result'][:160]}"
        )
    taken = sum(r["taken"] for r in results)
    print(f"{len(results)} replayed: {taken} taken, {len(results) - taken} still rejected")
    return max(0 if taken == len(results) else 1, _unstored(problem))


def _replay_remote(args: argparse.Namespace, ids: list[int]) -> list[dict[str, Any]]:
    import httpx

    settings = _settings(args)
    url = args.url or f"http://{settings.api.host}:{settings.api.port}"
    print(f"carescore is running on this data folder: replaying through {url}", file=sys.stderr)
    body = {"ids": ids, "source": args.source, "include_replayed": args.all}
    token = args.token or os.environ.get("CARESCORE_TOKEN")  # an ops or admin token, when the API wants one
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.post(f"{url}/api/v1/dead-letters/replay", json=body, headers=headers, timeout=600)
    if response.status_code != 200:
        raise SystemExit(f"error: {response.status_code} {response.text}")
    return list(response.json()["replayed"])


def _token_store(args: argparse.Namespace) -> Any:
    from api.security.tokens import TokenStore

    return TokenStore(_settings(args).data_dir / "tokens.sqlite")


def _when(moment: float | None) -> str:
    from datetime import UTC, datetime

    return "-" if moment is None else datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M")


def cmd_token_create(args: argparse.Namespace) -> int:
    from api.security.tokens import check_scope, default_scope
    from connectors.feeds.schemas import FEEDS
    from engine.durations import parse_duration

    try:
        scope = check_scope(args.role, args.scope or default_scope(args.role), tuple(FEEDS))
        expires = parse_duration(args.expires) if args.expires else None
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    store = _token_store(args)
    try:
        info, token = store.create(args.name, args.role, scope, expires)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    print(token)
    print(
        f"token {info.id} ({info.name}): role {info.role}, scope {info.scope}, expires {_when(info.expires)}"
        " - shown once; send it as 'Authorization: Bearer <token>'",
        file=sys.stderr,
    )
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    store = _token_store(args)
    tokens = store.list()
    store.close()
    print(
        f"{'id':12s}  {'name':24s} {'role':11s} {'scope':16s} {'created':16s}  {'expires':16s}  "
        f"{'last used':16s}  state"
    )
    for t in tokens:
        state = f"revoked {_when(t.revoked)}" if t.revoked else "live"
        print(
            f"{t.id:12s}  {t.name[:24]:24s} {t.role:11s} {t.scope[:16]:16s} {_when(t.created):16s}  "
            f"{_when(t.expires):16s}  {_when(t.last_used):16s}  {state}"
        )
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    store = _token_store(args)
    try:
        known = store.get(args.id)
        if known is None:
            print(f"error: no token {args.id!r} (carescore token list)", file=sys.stderr)
            return 2
        if not store.revoke(args.id):
            print(f"token {args.id} was already revoked", file=sys.stderr)
            return 0
    finally:
        store.close()
    print(f"token {args.id} ({known.name}) revoked")
    return 0


def undocumented(catalogue: Catalogue) -> list[str]:
    """Every KPI must say which published definition it follows (`standard`) and what carescore
    computes differently (`deviations`, [] when nothing): a quality officer reads the scorecard
    against the standards. The engine runs without them; `kpi check` does not pass."""
    problems = []
    for kpi in catalogue:
        path = catalogue.files[kpi.id]
        data, lines = load_yaml(path)
        line = next((lines.get((*p, "id")) for p, doc in _documents(data) if doc.get("id") == kpi.id), None)
        where = f"{path}:{line}" if line else str(path)
        standard = kpi.standard
        if standard is None or not standard.text.strip() or not standard.source.strip():
            problems.append(
                f"{where}: standard: KPI {kpi.id!r} has no standard: add the published definition it "
                "follows, {text: <the standard's words, quoted briefly>, source: <publisher, document "
                "or measure id, year>}"
            )
        if kpi.deviations is None or not all(d.strip() for d in kpi.deviations):
            problems.append(
                f"{where}: deviations: KPI {kpi.id!r} has no deviations: list what carescore computes "
                "differently from the standard and why ([] when nothing)"
            )
    return problems


def cmd_kpi_check(args: argparse.Namespace) -> int:
    directory = Path(args.directory)
    catalogue = load_catalogue(directory)
    problems = undocumented(catalogue)
    if problems:
        raise ConfigError(problems)
    for kpi in catalogue:
        print(f"ok  {kpi.id:32s} {kpi.perspective.value:18s} {catalogue.files[kpi.id]}")
    print(f"{len(catalogue)} KPI definitions valid in {directory}")
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    settings = settings_from(args.file)
    catalogue = load_catalogue(settings.kpi_defs)
    where = args.file or DEFAULT_CONFIG
    print(f"{where}: valid ({len(catalogue)} KPIs from {settings.kpi_defs}, data in {settings.data_dir})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="carescore", description="Real-time Balanced Scorecard for hospitals."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run carescore (embedded runtime)")
    run.add_argument("--config", help=f"settings file (default {DEFAULT_CONFIG})")
    run.set_defaults(func=cmd_run)

    worker = sub.add_parser("worker", help="a Faust worker of the Kafka runtime (runtime.kind: kafka)")
    worker.add_argument("--config", help=f"settings file (default {DEFAULT_CONFIG})")
    worker.add_argument(
        "--metrics", metavar="HOST:PORT", help="serve /metrics here ('' for none; default from settings)"
    )
    worker.set_defaults(func=cmd_worker)

    add_remap(sub)

    kpi = sub.add_parser("kpi", help="KPI definitions")
    kpi_sub = kpi.add_subparsers(dest="kpi_command", required=True)
    check = kpi_sub.add_parser("check", help="validate a folder of KPI definitions")
    check.add_argument("directory", nargs="?", default=str(packaged_kpi_defs()))
    check.set_defaults(func=cmd_kpi_check)

    imp = sub.add_parser("import", help="bulk imports into the event log (carescore must not be running)")
    imp_sub = imp.add_subparsers(dest="import_command", required=True)
    mimic = imp_sub.add_parser("mimic", help="MIMIC-IV hosp module (admissions, transfers, labevents)")
    mimic.add_argument("directory", help="folder with hosp/*.csv.gz")
    mimic.add_argument("--config", help=f"settings file (default {DEFAULT_CONFIG})")
    mimic.set_defaults(func=cmd_import_mimic)

    for name, func, what in (
        ("fhir", cmd_import_fhir, "Bulk FHIR NDJSON files, or folders of them (one resource per line)"),
        ("hl7", cmd_import_hl7, "HL7 v2 files: messages one after another, batches, or MLLP-framed"),
    ):
        cmd = imp_sub.add_parser(name, help=what)
        cmd.add_argument("paths", nargs="+", help="files or folders")
        cmd.add_argument("--config", help=f"settings file (default {DEFAULT_CONFIG})")
        cmd.set_defaults(func=func)
    feed = imp_sub.add_parser("feed", help="feed files (CSV, JSON, NDJSON); schemas in docs/feeds.md")
    feed.add_argument("feed", help="staffing, hr, finance, experience or quality")
    feed.add_argument("paths", nargs="+", help="files")
    feed.add_argument("--config", help=f"settings file (default {DEFAULT_CONFIG})")
    feed.set_defaults(func=cmd_import_feed)

    dead = sub.add_parser("deadletter", help="inputs that were rejected, kept whole")
    dead_sub = dead.add_subparsers(dest="deadletter_command", required=True)
    dlist = dead_sub.add_parser("list", help="list dead letters (pending ones unless --all)")
    dlist.add_argument("--source", help="hl7v2, mllp, fhir, feed or feed:<name>")
    dlist.add_argument("--limit", type=int, default=100)
    dlist.add_argument("--all", action="store_true", help="include letters already replayed")
    dlist.add_argument("--config", help=f"settings file (default {DEFAULT_CONFIG})")
    dlist.set_defaults(func=cmd_deadletter_list)
    replay = dead_sub.add_parser(
        "replay", help="send dead letters through their connector again (every pending one, or IDS)"
    )
    replay.add_argument("ids", nargs="*", help="dead letter ids (default: every pending one)")
    replay.add_argument("--source", help="only this source: hl7v2, mllp, fhir, feed or feed:<name>")
    replay.add_argument("--all", action="store_true", help="also letters a replay already took")
    replay.add_argument("--url", help="API of the running carescore (default from the settings)")
    replay.add_argument(
        "--token", help="ops/admin token for that API (default $CARESCORE_TOKEN; none on a local API)"
    )
    replay.add_argument("--config", help=f"settings file (default {DEFAULT_CONFIG})")
    replay.set_defaults(func=cmd_deadletter_replay)

    token = sub.add_parser("token", help="integration tokens (machines calling the API)")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    tcreate = token_sub.add_parser("create", help="a new token, printed once")
    tcreate.add_argument("--name", required=True, help="who or what uses it, e.g. 'lab interface'")
    tcreate.add_argument("--role", required=True, choices=["integration", "viewer", "ops", "admin"])
    tcreate.add_argument(
        "--scope",
        help="fhir, feed:<name>, all-ingest (integration; default all-ingest), read (default for viewer) "
        "or all (ops, admin; their default)",
    )
    tcreate.add_argument("--expires", help="e.g. 90d, 12h (default: never)")
    tcreate.add_argument("--config", help=f"settings file (default {DEFAULT_CONFIG})")
    tcreate.set_defaults(func=cmd_token_create)
    tlist = token_sub.add_parser("list", help="every token (never the secrets)")
    tlist.add_argument("--config", help=f"settings file (default {DEFAULT_CONFIG})")
    tlist.set_defaults(func=cmd_token_list)
    trevoke = token_sub.add_parser("revoke", help="a token stops working at once")
    trevoke.add_argument("id", help="the token's id (carescore token list)")
    trevoke.add_argument("--config", help=f"settings file (default {DEFAULT_CONFIG})")
    trevoke.set_defaults(func=cmd_token_revoke)

    config = sub.add_parser("config", help="settings")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    ccheck = config_sub.add_parser("check", help="validate a carescore.yaml")
    ccheck.add_argument("file", nargs="?", help=f"settings file (default {DEFAULT_CONFIG})")
    ccheck.set_defaults(func=cmd_config_check)
    return parser


PRIVATE_UMASK = 0o077
"""Every file and folder carescore makes is its owner's only (0600 / 0700): the data folder
holds dead letters with PHI, pseudonymised events and the pseudonym key."""


def main(argv: list[str] | None = None) -> int:
    os.umask(PRIVATE_UMASK)
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
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DataDirBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (OSError, sqlite3.OperationalError) as exc:
        if not storage_failure(exc):
            raise  # a bug keeps its traceback
        print(f"error: {exc}", file=sys.stderr)
        if args.func is cmd_import_mimic:
            print(
                "the batches stored before it stay stored; run the same import again once this is "
                "fixed: it stores the rest, none of it twice",
                file=sys.stderr,
            )
        return 1


if __name__ == "__main__":
    sys.exit(main())
