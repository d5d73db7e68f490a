"""The filter stage: each recipient's copy of the message, and the rules' verdict on it.

Rewriting works in place (the filters' ``strip`` and ``redact``, then
``compose``), so each recipient gets a copy of its own.  All copies are parsed
from the same bytes: the message as received, with the relay's
Authentication-Results header when one was added, which is also the copy
archived as "received" and the one a release from quarantine filters again.
"""

from __future__ import annotations

import concurrent.futures
import email
import logging
from collections.abc import Sequence
from dataclasses import replace
from email.message import EmailMessage

from relay.core.refusals import Refusal, Refused
from relay.filters import Role, RuleSet, Verdict, evaluate
from relay.message import mailpolicy
from relay.message.parse import ParsedMail
from relay.storage.directory import Route
from relay.storage.models import Direction

log = logging.getLogger("relay.pipeline")


def copies(raw: bytes, parsed: ParsedMail, count: int, *, same: bool) -> list[ParsedMail]:
    """``count`` copies of the message in ``raw``; ``same``: whether ``parsed`` was
    parsed from exactly ``raw`` (then it is the first copy, and one parse is saved).

    When a header was added to ``raw`` since, every copy is parsed anew, so that
    no recipient's copy differs from the others' (a ``header`` rule sees the same
    headers for every recipient)."""
    if count == 0:
        return []
    first = [parsed] if same else []
    return first + [_reparse(raw, parsed) for _ in range(count - len(first))]


def _reparse(raw: bytes, parsed: ParsedMail) -> ParsedMail:
    """A fresh copy: the facts ``parse`` read off the headers stay those of ``parsed``."""
    msg = email.message_from_bytes(raw, _class=EmailMessage, policy=mailpolicy.DEFAULT)
    assert isinstance(msg, EmailMessage)
    return replace(parsed, message=msg)


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
