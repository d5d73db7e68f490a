"""One inbound message, from bytes to committed rows: the stages in their order.

Reads and CPU work come first, in short read transactions; then the archive
files are written and fsynced, and last one write transaction inserts the
message, its hits and its deliveries and commits before the SMTP server answers
250.  Everything here is synchronous and runs in a worker thread
(``Pipeline.accept`` is called through ``asyncio.to_thread``): parsing, regexes
and SQL never run on the event loop.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from relay.core import metrics
from relay.core.config import RelayConfig
from relay.filters import RuleSet
from relay.message.parse import check_header, parse
from relay.pipeline import authn, decide, filtering, record, sender
from relay.pipeline import recipients as rcpt
from relay.pipeline.verdicts import Outcome
from relay.storage import directory
from relay.storage.archive import Archive
from relay.storage.db import Database


@dataclass
class Pipeline:
    """What the stages need: the configuration, the database, the archive and the
    filter rules (a reload swaps ``rules``; a message in progress keeps its own)."""

    config: RelayConfig
    db: Database
    archive: Archive
    rules: RuleSet = field(default_factory=RuleSet)
    _filter_pool: concurrent.futures.ThreadPoolExecutor = field(
        init=False,
        default_factory=lambda: concurrent.futures.ThreadPoolExecutor(
            max_workers=2, thread_name_prefix="relay-filters"
        ),
    )

    @cached_property
    def authenticator(self) -> authn.Authenticator:
        return authn.Authenticator(self.config.auth)

    def accept(
        self,
        envelope_from: str,
        recipients: Sequence[str],
        raw: bytes,
        *,
        client_ip: str | None = None,
        helo: str = "",
        known: Mapping[str, directory.Route] | None = None,
        trace_id: str | None = None,
    ) -> list[Outcome]:
        """Process and durably commit one message; raises Refused or StorageUnavailable.

        ``known`` holds the routes found at RCPT time (``relay.inbound.envelope``), by
        recipient address, so that they are not looked up a second time.
        """
        cfg, domain, rules = self.config, self.config.marketplace.domain, self.rules
        # parse
        check_header(raw, max_bytes=cfg.limits.max_header_bytes, max_headers=cfg.limits.max_headers)
        parsed = parse(raw, hostname=cfg.smtp.hostname, max_hops=cfg.smtp.max_hops)
        # recipients, and the From they may be written from: refused before any lookup
        found = rcpt.classify(recipients, domain=domain)
        claimed = sender.from_addresses(parsed.message) if found.tokens else []
        routes = rcpt.routes(
            self.db, found, recipients, known or {}, envelope_from=envelope_from, domain=domain
        )
        sender.check(claimed, routes)
        # authenticate: adds the Authentication-Results header to what every copy is made of
        stamped = raw
        if routes and cfg.auth.policy != "none":
            stamped = authn.authenticate(
                self.authenticator,
                raw,
                claimed=claimed,
                ip=client_ip,
                helo=helo,
                mail_from=envelope_from,
                hostname=cfg.smtp.hostname,
                trace_id=trace_id,
            )
        # filter each recipient's copy
        copies = filtering.copies(stamped, parsed, len(routes), same=stamped is raw)
        with metrics.timed("filter"):
            verdicts = filtering.run(
                self._filter_pool,
                rules,
                list(zip(routes, copies, strict=True)),
                timeout=cfg.filters.timeout,
            )
        # archive as received; decide, rewrite and archive each copy (reads only);
        # the copies' directory fsyncs are made once, before the commit
        with self.archive.batch():
            received_path = self.archive.store(stamped, "received")
            with self.db.session() as reads:
                plans = [
                    decide.plan(reads, route, copy, verdict, config=cfg, archive=self.archive)
                    for route, copy, verdict in zip(routes, copies, verdicts, strict=True)
                ]
        # record: the one write transaction
        outcomes = self.db.write(
            record.record,
            config=cfg,
            archive=self.archive,
            envelope_from=envelope_from,
            received_path=received_path,
            parsed=parsed,
            bounces=found.bounces,
            plans=plans,
            trace_id=trace_id,
        )
        record.count(outcomes)
        return outcomes
