"""Wiring: one object that owns the database, archive, rules, SMTP server and worker.

``Relay`` is what ``relay serve`` runs and what tests start in their own event
loop (``await relay.start()`` binds port 0 when asked and reports the real port).
Making one installs the campaigns into the layers below (``relay.campaigns.
install``): every process that runs a relay migrates and records deliveries.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import ssl

from prometheus_client import REGISTRY

from relay import campaigns, console
from relay.api.server import ApiServer
from relay.campaigns.dispatch import Dispatcher
from relay.campaigns.render import Renderer
from relay.campaigns.unsubscribe import UnsubscribeEndpoint
from relay.core.config import RelayConfig
from relay.core.tls import server_context
from relay.core.yamlload import ConfigError
from relay.delivery.dkim_sign import Signer, ensure_key
from relay.delivery.outbound import OutboundWorker, Transport, make_transport
from relay.filters import RuleSet, load_rules
from relay.inbound.limits import ConnectionGate
from relay.inbound.server import InboundHandler, smtp_factory
from relay.ops.endpoint import Endpoint
from relay.ops.retention import PurgeTask
from relay.pipeline.accept import Pipeline
from relay.storage.archive import Archive
from relay.storage.db import Database
from relay.webhooks.sender import WebhookSender

log = logging.getLogger("relay.app")


class Relay:
    def __init__(
        self,
        config: RelayConfig,
        *,
        transport: Transport | None = None,
        reuse_port: bool = False,
        serve_metrics: bool = True,
        serve_unsubscribe: bool = True,
        serve_api: bool = True,
    ) -> None:
        campaigns.install()  # before anything migrates or records a delivery
        self.config = config
        self.reuse_port = reuse_port
        """Bind with SO_REUSEPORT, so that sibling worker processes share the port."""
        self.serve_metrics = serve_metrics and config.metrics.address is not None
        """Serve /metrics and /healthz (a worker of ``--workers N`` leaves it to
        the supervisor, which adds up all workers' metrics)."""
        self.endpoint: Endpoint | None = None
        self.serve_unsubscribe = (
            serve_unsubscribe and config.campaigns.unsubscribe.listen is not None
        )
        """Serve the campaigns' unsubscribe links (under ``--workers N`` the
        supervisor does, once for all workers)."""
        self.unsubscribe: UnsubscribeEndpoint | None = None
        self.serve_api = serve_api and config.api.address is not None
        """Serve the HTTP API on ``api.listen`` (under ``--workers N`` the supervisor does)."""
        self.api: ApiServer | None = None
        self.dispatcher: Dispatcher | None = None
        self.webhooks: WebhookSender | None = None
        """Sends webhook events (``webhooks.dispatch``): every relay process runs one."""
        self._webhook_task: asyncio.Task[None] | None = None
        self._dispatch_task: asyncio.Task[None] | None = None
        self.db = Database(config.database)
        self.archive = Archive(config.archive.path)
        self.pipeline = Pipeline(config, self.db, self.archive, rules=self._load_rules())
        self._transport = transport
        self.worker: OutboundWorker | None = None
        self.server: asyncio.Server | None = None
        self.handler: InboundHandler | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self._purge: PurgeTask | None = None
        """The daily archive purge, when ``archive.retention_days`` is set."""

    def _load_rules(self) -> RuleSet:
        """Raises ConfigError, a missing file included: a mistyped path must not
        quietly switch filtering off."""
        return load_rules(self.config.filters.rules)

    def reload_rules(self) -> bool:
        """Swap in the rules file's current content; keeps the old rules if it is bad."""
        try:
            rules = self._load_rules()
        except ConfigError as exc:
            log.error("rules not reloaded, keeping the previous ones:\n%s", exc)
            return False
        self.pipeline.rules = rules
        log.info("reloaded %d filter rules", len(rules.rules))
        return True

    def signer(self) -> Signer | None:
        dk = self.config.dkim
        if not dk.enabled:
            return None
        ensure_key(dk.private_key, dk.selector, self.config.marketplace.domain)
        return Signer.load(
            domain=self.config.marketplace.domain,
            selector=dk.selector,
            private_key=dk.private_key,
            ed25519_key=dk.ed25519_key,
        )

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        """Migrate, start the delivery worker, then listen."""
        await asyncio.to_thread(self.db.migrate)
        await asyncio.to_thread(self.archive.check_writable)
        if self.serve_metrics:
            self.endpoint = Endpoint(self.config, self.db, REGISTRY)
            await asyncio.to_thread(self.endpoint.start)
        api = self.config.api.address
        if self.serve_api and api is not None:
            self.api = await asyncio.to_thread(
                ApiServer, self.config, self.db, *api, extend=console.install
            )
            self.api.start()
        signer = await asyncio.to_thread(self.signer)
        self.worker = OutboundWorker(
            config=self.config,
            db=self.db,
            archive=self.archive,
            transport=self._transport or make_transport(self.config),
            signer=signer,
        )
        self._worker_task = asyncio.create_task(self.worker.run())
        await self._start_campaigns(self.worker)
        if self.config.webhooks.dispatch:
            self.webhooks = WebhookSender(self.config.webhooks, self.db)
            self._webhook_task = asyncio.create_task(self.webhooks.run())
        self.handler = handler = InboundHandler(
            self.pipeline, self.db, on_accepted=self.worker.wake
        )
        smtp = self.config.smtp
        tls_context = await asyncio.to_thread(server_context, smtp)
        loop = asyncio.get_running_loop()
        try:
            self.server = await self._listen(loop, handler, tls_context)
        except OSError as exc:
            # asyncio's text names a Python tuple; say it as --workers N does.
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise OSError(f"cannot listen on {smtp.host}:{smtp.port}: {reason}") from None
        log.info(
            "listening on %s:%d as %s%s",
            smtp.host,
            self.port,
            smtp.hostname,
            " (STARTTLS offered)" if tls_context else "",
        )
        self._purge = PurgeTask.start_if_enabled(self.db, self.archive, self.config.archive)

    async def _listen(
        self,
        loop: asyncio.AbstractEventLoop,
        handler: InboundHandler,
        tls_context: ssl.SSLContext | None,
    ) -> asyncio.Server:
        smtp = self.config.smtp
        return await loop.create_server(
            smtp_factory(
                handler,
                hostname=smtp.hostname,
                max_size=smtp.max_message_size,
                data_timeout=smtp.data_timeout,
                tls_context=tls_context,
                require_tls=smtp.require_tls,
                session_timeout=smtp.session_timeout,
                gate=ConnectionGate.from_limits(self.config.limits),
            ),
            host=smtp.host,
            port=smtp.port,
            reuse_port=self.reuse_port or None,
        )

    async def _start_campaigns(self, worker: OutboundWorker) -> None:
        """The unsubscribe endpoint, then the campaign dispatcher."""
        config = self.config
        address = config.campaigns.unsubscribe.address
        if self.serve_unsubscribe and address is not None:
            self.unsubscribe = UnsubscribeEndpoint(self.db, *address)
            await asyncio.to_thread(self.unsubscribe.start)
            config = config.with_unsubscribe_url(self.unsubscribe.base_url)
        if config.campaigns.dispatch:
            self.dispatcher = Dispatcher(
                config,
                self.db,
                self.archive,
                renderer=await asyncio.to_thread(Renderer, config),  # reads the templates
                on_queued=worker.wake,
            )
            self._dispatch_task = asyncio.create_task(self.dispatcher.run())

    async def stop(self) -> None:
        """Stop accepting, let in-flight sessions and deliveries finish, then close."""
        if self.server is not None:
            self.server.close()  # no new connections
            assert self.handler is not None
            if not await self.handler.drain(30):
                log.warning("some messages were still being processed at shutdown")
            await asyncio.sleep(0.05)  # let the last replies reach their clients
        if self.dispatcher is not None:
            self.dispatcher.stop()
        if self._dispatch_task is not None:
            await self._dispatch_task  # a pass in progress finishes its batch first
        if self.webhooks is not None:
            self.webhooks.stop()
        if self._webhook_task is not None:
            await self._webhook_task  # attempts in flight finish and are recorded
        if self.unsubscribe is not None:
            await asyncio.to_thread(self.unsubscribe.stop)
        if self.api is not None:
            await asyncio.to_thread(self.api.stop)
        if self.worker is not None:
            self.worker.stop()
        if self._worker_task is not None:
            await self._worker_task
        if self.endpoint is not None:
            await asyncio.to_thread(self.endpoint.stop)
        if self._purge is not None:
            await self._purge.stop()  # lets a run finish its batch: it needs the database
        await asyncio.to_thread(self.db.dispose)

    async def serve_forever(self) -> None:
        """Run until SIGTERM or SIGINT; SIGHUP reloads the filter rules."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload_rules)
        await self.start()
        settle_heap()
        await stop.wait()
        log.info("stopping")
        await self.stop()


def settle_heap() -> None:
    """Move everything alive after start-up out of the garbage collector's sight.

    The modules, configuration, compiled patterns and caches made at start live
    as long as the process; a full collection walked all of them again, holding
    the interpreter for 50-80 ms while SMTP sessions waited.  ``gc.freeze``
    puts them in the permanent generation, so collections only walk what
    messages allocate.  Reference counting still frees everything as before.
    """
    gc.collect()
    gc.freeze()
