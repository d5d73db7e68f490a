"""The rule tester: what the relay would do with a message, without doing it.

A moderator pastes or uploads a message and picks the sender's side; the
relay's own stages run on it, in the order ``relay.pipeline.accept`` chains
them: the header limits and the parser, the filter stage (with its timeout),
then the decide stage (``relay.pipeline.decide.plan``: a rule's reject or
quarantine, else strip and redact, then the rewrite for the recipient) on a
made-up conversation.  Nothing is sent and nothing is written: the rewrite's
copy goes to a ``Scratch`` archive that keeps it in memory, the database is
only read (the threading headers' lookup), and no message row is recorded.
"""

from __future__ import annotations

import concurrent.futures
import enum
from dataclasses import dataclass
from pathlib import Path

from sqlmodel import Session

from relay.core.config import RelayConfig
from relay.core.refusals import Refusal, Refused
from relay.filters import Hit, Role, RuleSet
from relay.message.parse import check_header, header_text, parse
from relay.pipeline import decide, filtering, sender
from relay.pipeline.verdicts import Deliver, Held, OptedOut, RuleRejected, Unreadable
from relay.storage.archive import Archive
from relay.storage.directory import Route
from relay.storage.models import Direction

MAX_BYTES = 512 * 1024
"""A tested message is at most this big (a pasted or uploaded one)."""

SAMPLE_CONVERSATION = 0
"""No conversation has this id: the made-up route's threading lookups find nothing."""

_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="rule-tester")


class Problem(enum.Enum):
    """Why a test could not run; the console words each one."""

    EMPTY = "empty"
    TOO_BIG = "too_big"
    NOT_A_MESSAGE = "not_a_message"
    REFUSED = "refused"
    """The relay would refuse it at SMTP (header too big, a loop, too deeply nested...)."""
    TIMEOUT = "timeout"


class Outcome(enum.Enum):
    """What the recipient would get."""

    DELIVERED = "delivered"
    QUARANTINED = "quarantined"
    REJECTED = "rejected"
    UNREADABLE = "unreadable"


class TestFailed(Exception):
    def __init__(self, problem: Problem, detail: str = "", refusal: Refusal | None = None) -> None:
        super().__init__(detail or problem.value)
        self.problem = problem
        self.detail = detail
        self.refusal = refusal
        """For ``REFUSED``: the relay's own refusal (``relay.core.refusals``)."""


@dataclass(frozen=True, slots=True)
class Trial:
    hits: tuple[Hit, ...]
    outcome: Outcome
    rule_id: str = ""
    """The deciding rule of a quarantine or reject."""
    notice: str = ""
    """What the sender would be told, for a message not passed on."""
    delivered: bytes = b""
    """The copy the recipient would get, as the relay would write it."""


class Scratch(Archive):
    """An archive that keeps what it is given in memory and writes no file."""

    def __init__(self) -> None:
        super().__init__(Path("/nonexistent-scratch-archive"))
        self.stored: list[bytes] = []

    def store(self, data: bytes, kind: str) -> str:
        self.stored.append(data)
        return f"scratch/{len(self.stored)}.{kind}.eml"

    def check_writable(self) -> None:
        raise RuntimeError("a scratch archive is not for real copies")


def sample_route(side: Role, config: RelayConfig, claimed: list[str]) -> Route:
    """A made-up conversation whose sender is on ``side`` and writes from ``claimed``."""
    domain = config.marketplace.domain
    from_buyer = side is Role.BUYER
    sender_addresses = tuple(claimed) or ("sender@example.invalid",)
    return Route(
        conversation_id=SAMPLE_CONVERSATION,
        direction=Direction.BUYER_TO_SELLER if from_buyer else Direction.SELLER_TO_BUYER,
        buyer_token=f"buyer-sample@{domain}",
        seller_token=f"seller-sample@{domain}",
        buyer_email=sender_addresses[0] if from_buyer else "buyer@example.invalid",
        buyer_name="Sample Buyer",
        buyer_opted_out=False,
        seller_id=0,
        seller_name="Sample Shop",
        seller_emails=("shop@example.invalid",) if from_buyer else sender_addresses,
        buyer_initiated=True,
        has_traffic=True,
    )


def run(reads: Session, raw: bytes, *, side: Role, rules: RuleSet, config: RelayConfig) -> Trial:
    """Test ``raw`` against ``rules`` as if ``side`` had sent it; raises TestFailed.

    ``reads`` is a read-only session (the caller's transaction writes nothing)."""
    if not raw.strip():
        raise TestFailed(Problem.EMPTY)
    if len(raw) > MAX_BYTES:
        raise TestFailed(Problem.TOO_BIG)
    try:
        check_header(
            raw, max_bytes=config.limits.max_header_bytes, max_headers=config.limits.max_headers
        )
        parsed = parse(raw, hostname=config.smtp.hostname, max_hops=config.smtp.max_hops)
    except Refused as exc:
        raise TestFailed(Problem.REFUSED, str(exc), exc.refusal) from None
    if not any(header_text(parsed.message, h) for h in ("From", "To", "Subject")):
        raise TestFailed(Problem.NOT_A_MESSAGE)
    try:
        claimed = sender.from_addresses(parsed.message)
    except Refused:
        claimed = []
    route = sample_route(side, config, claimed)
    try:
        (verdict,) = filtering.run(_pool, rules, [(route, parsed)], timeout=config.filters.timeout)
    except Refused as exc:
        raise TestFailed(Problem.TIMEOUT, str(exc)) from None
    scratch = Scratch()
    plan = decide.plan(reads, route, parsed, verdict, config=config, archive=scratch)
    decision = plan.decision
    if isinstance(decision, Deliver):
        return Trial(verdict.hits, Outcome.DELIVERED, delivered=scratch.stored[-1])
    if isinstance(decision, Held):
        return Trial(verdict.hits, Outcome.QUARANTINED, rule_id=decision.rule_id)
    if isinstance(decision, RuleRejected):
        return Trial(verdict.hits, Outcome.REJECTED, rule_id=decision.rule_id, notice=decision.why)
    if isinstance(decision, Unreadable):
        return Trial(verdict.hits, Outcome.UNREADABLE, notice=decision.why)
    assert isinstance(decision, OptedOut)  # not for the sample buyer, who has not opted out
    raise AssertionError("the sample buyer has not opted out")
