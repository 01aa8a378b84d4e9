"""`carescore run`: the composition root of the embedded runtime.

One process, one asyncio loop: the engine and its tick, the MLLP listener, the HTTP API
(REST, /metrics, scorecard page), alert delivery and, unless disabled, the demo hospital.
SIGINT/SIGTERM stop everything in order and write a final snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import sys
import time
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import Depends, Request
from fastapi.responses import JSONResponse

from alerts.views_store import ViewStore
from api.app import create_app
from api.problems import problem
from api.security.audit import AuditLog
from api.security.auth import Auth, require
from api.security.oidc import OidcVerifier
from api.security.ratelimit import Limit, RateLimiter
from api.security.roles import Permission, Role
from api.security.tokens import TokenInfo, TokenStore
from carescore.gctune import tune_gc
from carescore.loopwatch import LoopWatch
from carescore.supervisor import Supervisor
from carescore.transports.embedded import EmbeddedRuntime
from connectors.feeds.http import UploadRefused, feeds_router
from connectors.feeds.watch import FeedWatcher
from connectors.fhir.http import fhir_router
from connectors.hl7v2.mllp import FrameHandler, MLLPServer
from connectors.hl7v2.senders import SenderFacilities
from connectors.intake import Intake
from connectors.replay import Replayer
from engine import native
from engine.config import Settings, unauthenticated_outside_loopback
from engine.config_listeners import RateLimitSettings, TLSSettings, is_loopback
from engine.yamlconf import ConfigError

log = logging.getLogger(__name__)

FIRST_ADMIN = "first start (demo admin)"
FIRST_ADMIN_LIFETIME = 7 * 86400.0


def server_tls(tls: TLSSettings | None) -> ssl.SSLContext | None:
    if tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert, tls.key)
    if tls.client_ca is not None:
        context.load_verify_locations(tls.client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _kafka_gateway(settings: Settings) -> Any:
    from carescore.transports.kafka.gateway import KafkaGateway

    return KafkaGateway(settings)


STOP_WAIT = 10.0  # seconds stop() waits for each cancelled component


def build_auth(settings: Settings) -> tuple[Auth, AuditLog]:
    """Who may call the API (IdP tokens, integration tokens, the local operator) and the audit log;
    ConfigError for an API reachable from the network with nobody signing in."""
    refused = unauthenticated_outside_loopback(settings)
    if refused:  # CARESCORE_DEMO=0 after the file was read
        raise ConfigError([f"api.host: {refused}"])
    auth_settings = settings.api.auth
    verifier = OidcVerifier(auth_settings.oidc) if auth_settings.oidc else None
    auth = Auth(
        verifier=verifier,
        tokens=TokenStore(settings.data_dir / "tokens.sqlite"),
        local=verifier is None,
        max_silence=auth_settings.max_silence,
    )
    audit = AuditLog(settings.data_dir / "audit.sqlite", retention=auth_settings.audit_retention)
    return auth, audit


def rate_limiter(settings: RateLimitSettings) -> RateLimiter | None:
    if not settings.enabled:
        return None
    ingest, reads = settings.ingest, settings.reads
    return RateLimiter(Limit(ingest.rate, ingest.burst), Limit(reads.rate, reads.burst))


def _ingest_target(request: Request) -> str | None:
    """What a feed upload writes to, for token scopes: feed:<name> (the list of feeds: none)."""
    if request.method != "POST":
        return None
    return "feed:" + request.url.path.rstrip("/").rsplit("/", 1)[-1]


async def _refused(_: Request, exc: UploadRefused) -> JSONResponse:
    """A feed upload refused, answered as the API answers every error."""
    return problem(exc.status, exc.title, exc.detail, **exc.extra)


class Service:
    """The running embedded carescore: start(), then stop() (or run() until a signal)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.auth, self.audit = build_auth(settings)  # first: a refused config opens nothing else
        self.runtime: Any = (
            EmbeddedRuntime(settings) if settings.runtime.kind == "embedded" else _kafka_gateway(settings)
        )
        self.intake = Intake(settings, self.runtime, self.runtime.dead_letters)
        self.receiver = self.intake.hl7
        self.mllp = MLLPServer(
            self.receiver.handle_frame,
            settings.mllp.host,
            settings.mllp.port,
            max_message_bytes=settings.mllp.max_message_bytes,
            idle_timeout=settings.mllp.idle_timeout,
            frame_timeout=settings.mllp.frame_timeout,
            max_connections=settings.mllp.max_connections,
            ssl_context=server_tls(settings.mllp.tls),
            on_unusable=self.intake.keep_unusable,
            handler_for=self._handler_for(settings),
        )
        replayer = Replayer(settings, self.runtime, self.runtime.dead_letters)
        api = settings.api
        self.app = create_app(
            self.runtime,  # type: ignore[arg-type]
            replayer,
            docs=api.docs,
            tls=api.tls is not None,
            trusted_hosts=api.trusted_hosts,
            auth=self.auth,
            audit_log=self.audit,
            views=ViewStore(self.runtime.alerts.store.db),  # saved views beside the alerts
            rate_limiter=rate_limiter(api.rate_limit),
        )
        self.fhir = self.intake.fhir
        fhir_ingest = require(Permission.INGEST, target=lambda _: "fhir")
        self.app.include_router(fhir_router(self.fhir), dependencies=[Depends(fhir_ingest)])
        self.app.include_router(
            feeds_router(self.intake.feeds, settings.feeds.max_upload_bytes),
            dependencies=[Depends(require(Permission.INGEST, target=_ingest_target))],
        )
        self.app.add_exception_handler(UploadRefused, _refused)  # type: ignore[arg-type]
        self.watcher = FeedWatcher(
            self.intake.feeds,
            settings.inbox,
            settings.feeds.poll,
            retention=settings.feeds.retention,
            purge_every=settings.privacy.purge_every,
        )
        tls = settings.api.tls
        config = uvicorn.Config(
            self.app,
            host=settings.api.host,
            port=settings.api.port,
            log_config=None,
            access_log=False,
            lifespan="off",
            ssl_certfile=tls.cert if tls else None,
            ssl_keyfile=tls.key if tls else None,
            ssl_ca_certs=str(tls.client_ca) if tls and tls.client_ca else None,
            ssl_cert_reqs=ssl.CERT_REQUIRED if tls and tls.client_ca else ssl.CERT_NONE,
        )
        self.scheme = "https" if tls else "http"
        self.http = uvicorn.Server(config)
        if isinstance(self.runtime, EmbeddedRuntime):  # closing windows gives way to all of it
            self.runtime.work_seen = self._work_seen
        self._tasks: list[asyncio.Task[Any]] = []
        self.loop_watch = LoopWatch()  # the longest event-loop stall, on /metrics
        self.supervisor = Supervisor(self.runtime.components)

    def _work_seen(self) -> int:
        """Appends, MLLP reads and HTTP requests so far: a sign that other work came in."""
        return self.runtime.log.appended_events + self.mllp.reads + self.http.server_state.total_requests

    def _handler_for(self, settings: Settings) -> Callable[[dict[str, Any] | None], FrameHandler] | None:
        """With mllp.client_facilities: each connection's frames checked against the facilities
        its verified client certificate may send for."""
        entries = settings.mllp.client_facilities
        if not entries:
            return None
        senders = SenderFacilities((e.certificate, e.facilities) for e in entries)
        return lambda cert: self.receiver.for_sender(senders.sender(cert))

    @property
    def api_port(self) -> int:
        servers = getattr(self.http, "servers", None) or []
        for server in servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return self.settings.api.port

    async def start(self) -> None:
        tune_gc()
        await self.runtime.start()  # the Kafka gateway: topics and the producer
        self.runtime.tick()
        if self.settings.mllp.enabled:
            await self.mllp.start()
        self._tasks.append(asyncio.create_task(self.http.serve(sockets=None), name="http"))
        while not self.http.started:
            if self._tasks[0].done():
                self._tasks[0].result()  # raises why the HTTP server could not start
                raise RuntimeError("HTTP server stopped during start-up")
            await asyncio.sleep(0.02)
        keep = self.supervisor.start
        self._tasks.append(keep("tick", self.runtime.run_ticks))
        for name, run in self.runtime.background().items():
            self._tasks.append(keep(name, run))
        self._tasks.append(keep("loopwatch", self.loop_watch.run))
        self._tasks.append(keep("alerts", self.runtime.run_alerts))
        if self.settings.forecasts.enabled:
            self._tasks.append(keep("forecasts", self.runtime.run_forecasts))
        if self.settings.feeds.watch:
            self.watcher.prepare()
            self._tasks.append(keep("inbox", self.watcher.run))
        if self.settings.demo.enabled and self.settings.mllp.enabled:
            from demo.run import run_demo

            demo = self.settings.demo
            # the demo's back office uploads feeds as an integration that lives in this process only
            uploads = self.auth.internal_token("demo hospital", Role.INTEGRATION, "all-ingest")
            self._tasks.append(
                keep(
                    "demo",
                    lambda: run_demo(
                        self.settings.places,
                        self.settings.mllp.host,
                        self.mllp.port,
                        f"{self.scheme}://{self.settings.api.host}:{self.api_port}",
                        self.settings.data_dir / "demo-state.json",
                        seed=demo.seed,
                        rate=demo.rate,
                        backfill=demo.backfill,
                        scenarios=demo.scenarios,
                        headers={"Authorization": f"Bearer {uploads}"},
                    ),
                )
            )
        self.runtime.ready = True
        log.info(
            "carescore running",
            extra={
                "api": f"{self.scheme}://{self.settings.api.host}:{self.api_port}",
                "mllp": f"{self.settings.mllp.host}:{self.mllp.port}" if self.settings.mllp.enabled else None,
                "demo": self.settings.demo.enabled,
                "data_dir": str(self.settings.data_dir),
            },
        )

    async def stop(self) -> None:
        self.runtime.ready = False
        for task in reversed(self._tasks):
            if task.get_name() == "http":
                continue
            task.cancel()
            # bounded: a CI run once waited here for good on a cancelled tick task that went
            # on ticking; a component that ignores its cancel must not hold the shutdown
            done, _ = await asyncio.wait({task}, timeout=STOP_WAIT)
            if not done:
                log.error("a component did not stop when cancelled", extra={"component": task.get_name()})
            elif not task.cancelled() and task.exception() is not None:
                log.error("a component failed while stopping", exc_info=task.exception())
        await self.mllp.stop()
        self.runtime.board.end_subscriptions()
        self.http.should_exit = True
        for task in self._tasks:
            if task.get_name() == "http":
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(task, 10)
        await self.runtime.close()
        if self.auth.verifier is not None:
            await self.auth.verifier.aclose()
        if self.auth.tokens is not None:
            self.auth.tokens.close()
        self.audit.close()
        log.info("carescore stopped")

    async def run(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        print(self.banner(self.first_admin_token()), file=sys.stderr, flush=True)
        failed = asyncio.create_task(self._watch())
        await asyncio.wait([asyncio.create_task(stop.wait()), failed], return_when=asyncio.FIRST_COMPLETED)
        failed.cancel()
        await self.stop()

    def first_admin_token(self) -> tuple[TokenInfo, str] | None:
        """The demo's one-time admin sign-in: on the first `carescore run` of a data folder with the
        demo, no IdP and the API on the loopback, an admin integration token for scripts, printed
        once in the banner (never logged; only its hash is kept) and expiring in a week. Requests
        without credentials are the local operator there anyway; the token keeps a script working
        once real sign-in is set up, until it expires or is revoked. Never in any other mode: a
        printed admin credential must not outlive a demo on a laptop."""
        tokens, settings = self.auth.tokens, self.settings
        demo_on_laptop = self.auth.local and settings.demo.enabled and is_loopback(settings.api.host)
        if not demo_on_laptop or tokens is None:
            return None
        if tokens.list():  # not the first start (a revoked or expired first token counts too)
            return None
        return tokens.create(FIRST_ADMIN, Role.ADMIN.value, expires_in=FIRST_ADMIN_LIFETIME)

    def banner(self, admin: tuple[TokenInfo, str] | None = None) -> str:
        base = f"{self.scheme}://{self.settings.api.host}:{self.api_port}"
        lines = [
            "",
            f"  carescore is running ({self.settings.runtime.kind} runtime)",
            f"    scorecard   {base}/",
            f"    REST API    {base}/api/v1/kpis   (OpenAPI: {base}/docs)",
            f"    metrics     {base}/metrics",
        ]
        if self.settings.mllp.enabled:
            lines.append(f"    HL7 MLLP    {self.settings.mllp.host}:{self.mllp.port}")
        lines.append(f"    FHIR        {base}/fhir")
        lines.append(
            f"    feeds       {base}/api/v1/feeds"
            + (f"  inbox {self.settings.inbox}" if self.settings.feeds.watch else "")
        )
        demo = "on: simulated hospital traffic" if self.settings.demo.enabled else "off"
        sign_in = self.auth.mode
        if self.auth.local and not is_loopback(self.settings.api.host):
            sign_in = "none (demo: every user is admin; simulated data only)"
        lines.append(f"    sign-in     {sign_in}")
        if admin is not None:
            info, token = admin
            until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(info.expires or 0))
            lines += [
                f"    admin token {token}",
                "                shown once; for scripts: Authorization: Bearer <token>",
                f"                valid until {until}; carescore token revoke {info.id} withdraws it",
            ]
        lines += [
            f"    demo        {demo}",
            f"    data        {self.settings.data_dir}",
            f"    engine      {native.reason if native.active else f'pure Python ({native.reason})'}",
            "  Ctrl-C stops it.",
            "",
        ]
        return "\n".join(lines)

    async def _watch(self) -> None:
        """Return if the HTTP server dies, so the process stops instead of limping on without
        its API; every other component is restarted by the supervisor."""
        http = self._tasks[0]
        await asyncio.wait([http])
        if not http.cancelled() and http.exception() is not None:
            log.error("HTTP server failed", extra={"component": "http", "error": repr(http.exception())})
        else:
            log.error("HTTP server stopped", extra={"component": "http"})
