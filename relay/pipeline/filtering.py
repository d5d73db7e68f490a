"""The filter stage: each recipient's copy of the message, and the rules' verdict on it.

The copies are one parse of the message as received, with the relay's
Authentication-Results header when one was added (which is also the copy
archived as "received" and the one a release from quarantine filters again),
shared by the recipients: the rules only read it, and a copy that the
rewriting must change gets a parse of its own (``ParsedMail.shared``).
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Sequence
from dataclasses import replace

from relay.core.refusals import Refusal, Refused
from relay.filters import Role, RuleSet, Verdict, evaluate
from relay.message.parse import ParsedMail, reparse
from relay.storage.directory import Route
from relay.storage.models import Direction

log = logging.getLogger("relay.pipeline")


def copies(raw: bytes, parsed: ParsedMail, count: int, *, same: bool) -> list[ParsedMail]:
    """``count`` copies of the message in ``raw``; ``same``: whether ``parsed`` was
    parsed from exactly ``raw`` (then it is the copy, and one parse is saved).

    One parse serves every recipient: a copy that needs no change is written
    without changing it (``compose``'s fast path), and one that must change (the
    rules' strip and redact, a body with an address to replace) is parsed anew
    first (``ParsedMail.shared``).  When a header was added to ``raw`` since,
    the copy is a parse of ``raw``, so that every recipient's copy has it (a
    ``header`` rule sees the same headers for every recipient)."""
    if count == 0:
        return []
    copy = parsed if same else reparse(parsed, raw)
    if count == 1:
        return [copy]
    return [replace(copy, shared=True)] * count


def run(
    pool: concurrent.futures.Executor,
    rules: RuleSet,
    items: Sequence[tuple[Route, ParsedMail]],
    *,
    timeout: float,
) -> list[Verdict]:
    """Run the rules for each recipient, bounded by ``filters.timeout``.

    A rule set that does not finish in time is a temporary failure
    (Refused(TIMEOUT), 451), never a pass: the sender retries, and nothing
    unchecked gets through.
    """
    if not rules.rules:
        return [Verdict() for _ in items]

    def evaluate_all() -> list[Verdict]:
        return [evaluate(rules, copy.message, role(route)) for route, copy in items]

    future = pool.submit(evaluate_all)
    try:
        return future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        log.error("filter stage timed out after %ss", timeout)
        raise Refused(Refusal.TIMEOUT) from None


def role(route: Route) -> Role:
    """Whose rules apply: the sender's role on this route."""
    return Role.BUYER if route.direction is Direction.BUYER_TO_SELLER else Role.SELLER
