"""What the relay counts, for Prometheus (``metrics.listen`` serves it over HTTP).

The metrics are prometheus-client objects in its default registry, counted where
the thing happens: after the commit that makes it true (a message is received
only once its rows are committed, delivered only once the outcome is recorded).
Every metric has labels, so no value exists before its first use: that lets
``relay serve --workers N`` switch prometheus-client into its multiprocess mode
in each worker (``use_multiprocess``) after this module was imported, and the
supervisor serve the sum of all workers on one endpoint.

The queue's depth and oldest item are not counted but read from the database at
each scrape (``QueueCollector``): the queue is shared by every process and host,
and only the database knows it.

Label values are bounded: directions, statuses, outcomes, SMTP reply codes and
the ids of the configured filter rules, never addresses or free text.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Histogram, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("relay.metrics")

RECEIVED = Counter(
    "relay_messages_received",
    "Messages accepted (250) and committed, one per recipient; bounce reports as direction dsn.",
    ["direction"],
)
DELIVERED = Counter(
    "relay_messages_delivered",
    "Messages handed over downstream (the smarthost's 250 or the Maildir), recorded.",
    ["direction"],
)
BLOCKED = Counter(
    "relay_messages_blocked",
    "Accepted messages not delivered: reason rule (a filter's reject), quarantine,"
    " opt_out, unreadable (could not be rewritten safely), failed (delivery refused"
    " permanently or given up).",
    ["direction", "reason"],
)
FILTER_HITS = Counter(
    "relay_filter_hits", "Filter rule hits, by rule id and action.", ["rule", "action"]
)
SMTP_REPLIES = Counter("relay_smtp_replies", "Replies the SMTP server sent, by code.", ["code"])
DELIVERY_ATTEMPTS = Counter(
    "relay_delivery_attempts",
    "Delivery attempts, by outcome (delivered, deferred, failed).",
    ["outcome"],
)
PURGED = Counter(
    "relay_archive_purged",
    "What the running relay's daily purge removed (archive.retention_days):"
    " messages (rows) and copies (stored files).",
    ["kind"],
)
CAMPAIGN_MESSAGES = Counter(
    "relay_campaign_messages",
    "Campaign messages by outcome: sent (queued for delivery), skipped_7_days,"
    " unsubscribed, opted_out, withdrawn (the campaign was cancelled or suspended).",
    ["outcome"],
)
CAMPAIGN_UNSUBSCRIBES = Counter(
    "relay_campaign_unsubscribes",
    "Followers who unsubscribed through a campaign message, by method (one_click, page).",
    ["method"],
)
WEBHOOK_ATTEMPTS = Counter(
    "relay_webhook_attempts",
    "Webhook delivery attempts, by outcome (delivered, retried, gave_up).",
    ["outcome"],
)
STAGE_SECONDS = Histogram(
    "relay_stage_seconds",
    "Time spent per stage: accept (DATA end to commit), filter, archive (one stored"
    " copy), delivery (read, sign and hand over one message).",
    ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


@contextmanager
def timed(stage: str) -> Iterator[None]:
    """Observe the block's wall time in ``relay_stage_seconds{stage=...}``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        STAGE_SECONDS.labels(stage).observe(time.perf_counter() - start)


def smtp_reply(status: str) -> None:
    """Count one SMTP reply by its code (the first three characters)."""
    code = status[:3]
    if len(code) == 3 and code.isdigit():
        SMTP_REPLIES.labels(code).inc()


class QueueCollector(Collector):
    """``relay_queue_depth`` and ``relay_queue_oldest_age_seconds``, read at scrape
    time; ``stats`` returns (pending deliveries, age in seconds of the oldest or
    None).  A database that cannot answer leaves them out of that scrape (and
    ``/healthz`` says why)."""

    def __init__(self, stats: Callable[[], tuple[int, float | None]]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            depth, oldest = self.stats()
        except Exception as exc:
            log.warning("queue metrics unavailable: %s", exc)
            return
        yield GaugeMetricFamily(
            "relay_queue_depth", "Deliveries waiting in the outbound queue.", value=depth
        )
        yield GaugeMetricFamily(
            "relay_queue_oldest_age_seconds",
            "Age of the oldest waiting delivery (0 when the queue is empty).",
            value=oldest or 0.0,
        )

    def describe(self) -> Iterator[Any]:
        return iter(())  # collected live: nothing to check at registration


def use_multiprocess(directory: Path) -> None:
    """Keep this process's metric values in ``directory`` (prometheus-client's
    multiprocess mode), where the supervisor's collector adds them up.  Must be
    called before the first metric value is created: in a worker at start."""
    for metric in (
        RECEIVED,
        DELIVERED,
        BLOCKED,
        FILTER_HITS,
        SMTP_REPLIES,
        DELIVERY_ATTEMPTS,
        PURGED,
        STAGE_SECONDS,
    ):
        metric.clear()  # values the supervisor made before the fork (its start-up checks)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
