"""One inbound message, from bytes to committed rows.

parse → resolve each recipient token → filters → opt-out → rewrite → archive →
enqueue.  Reads and CPU work come first, in short read transactions; then the
archive files are written and fsynced, and last one write transaction inserts
the message, its hits and its deliveries and commits before the SMTP server
answers 250.  Everything here is synchronous and runs in a worker thread
(``Pipeline.accept`` is called through ``asyncio.to_thread``): parsing, regexes
and SQL never run on the event loop.
"""

from __future__ import annotations

import concurrent.futures
import email
import email.policy
import email.utils
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from email.message import EmailMessage
from functools import cached_property

from sqlmodel import Session

from relay.core import addresses, metrics
from relay.core.config import RelayConfig
from relay.core.logs import redact
from relay.core.refusals import Refused
from relay.core.tokens import LocalKind, classify_recipient
from relay.delivery import spool
from relay.delivery.dsn import read_dsn
from relay.delivery.notices import create_notice, optout_reason
from relay.filters import Action, Role, RuleSet, Verdict, evaluate
from relay.filters import actions as filter_actions
from relay.inbound.replies import (
    CONVERSATION_RATE,
    FROM_MISMATCH,
    RELAY_DENIED,
    SENDER_RATE,
    TIMEOUT,
    UNKNOWN_TOKEN,
    Rejected,
)
from relay.message import mailpolicy, threading_ids
from relay.message.compose import MalformedMessage, Party, UnsafeMessage, compose
from relay.message.parse import ParsedMail, check_header, header_values, parse
from relay.message.tokenizer import decode_header_text
from relay.pipeline import authn
from relay.storage import directory
from relay.storage.archive import Archive
from relay.storage.db import Database, insert_row
from relay.storage.models import Conversation, Direction, Message, MessageStatus, RuleHit, utcnow
from relay.storage.models import Party as Side

log = logging.getLogger("relay.pipeline")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one recipient of an accepted message (for logs and tests)."""

    message_id: int | None
    status: str
    direction: str = "dsn"
    reason: str = ""
    """Why it is not delivered, for the metrics: rule, quarantine, opt_out, unreadable."""
    hits: tuple[tuple[str, str], ...] = ()
    """(rule id, action) of each filter hit."""


@dataclass(frozen=True, slots=True)
class Plan:
    """What becomes of a message for one recipient, decided before any write."""

    route: directory.Route
    verdict: Verdict
    status: MessageStatus
    """QUEUED (to be delivered), QUARANTINED, or why it is not delivered."""
    reason: str = ""
    why: str = ""
    """For the sender's notice, when it is not delivered."""
    relay_id: str | None = None
    original_id: str | None = None
    delivered_path: str | None = None


@dataclass
class Pipeline:
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

    # --- RCPT time ---------------------------------------------------------

    def check_recipient(
        self, session: Session, envelope_from: str, address: str
    ) -> directory.Route | None:
        """Envelope checks for one RCPT TO; raises Rejected (README, SMTP replies).  Returns the
        route (None for a bounce address), which ``accept`` may reuse."""
        rcpt = classify_recipient(address, self.config.marketplace.domain)
        if rcpt.kind is LocalKind.FOREIGN:
            raise Rejected(RELAY_DENIED)
        if rcpt.kind is LocalKind.UNKNOWN:
            raise Rejected(UNKNOWN_TOKEN)
        if rcpt.kind is LocalKind.BOUNCE:
            if not spool.verp_exists(session, rcpt.value):
                raise Rejected(UNKNOWN_TOKEN)
            return None
        route = directory.route(
            session, rcpt.value, envelope_from, domain=self.config.marketplace.domain
        )
        limits = self.config.limits
        since = utcnow() - timedelta(hours=1)
        sent = directory.recent_messages(
            session, since=since, envelope_from=envelope_from, up_to=limits.messages_per_sender
        )
        if sent >= limits.messages_per_sender:
            raise Rejected(SENDER_RATE)
        recent = directory.recent_messages(
            session,
            since=since,
            conversation_id=route.conversation_id,
            direction=route.direction,
            up_to=limits.messages_per_conversation,
        )
        if recent >= limits.messages_per_conversation:
            raise Rejected(CONVERSATION_RATE)
        return route

    # --- DATA time ---------------------------------------------------------

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
        """Process and durably commit one message; raises Rejected or StorageUnavailable.

        ``known`` holds the routes ``check_recipient`` found at RCPT time, by
        recipient address, so that they are not looked up a second time.

        Reads and CPU work come first and writes last, so that the database's write
        lock is held only for the inserts.
        """
        cfg = self.config
        check_header(raw, max_bytes=cfg.limits.max_header_bytes, max_headers=cfg.limits.max_headers)
        parsed = parse(raw, hostname=cfg.smtp.hostname, max_hops=cfg.smtp.max_hops)
        domain = cfg.marketplace.domain
        kinds = [classify_recipient(r, domain) for r in recipients]
        if any(k.kind not in (LocalKind.TOKEN, LocalKind.BOUNCE) for k in kinds):
            raise Rejected(UNKNOWN_TOKEN)  # checked at RCPT; an admin change raced us
        bounces = [k.value for k in kinds if k.kind is LocalKind.BOUNCE]
        tokens = [k.value for k in kinds if k.kind is LocalKind.TOKEN]
        claimed = from_addresses(parsed.message) if tokens else []
        known = known or {}
        routes = [known[r] for r in recipients if r in known]
        if len(routes) != len(tokens):
            with self.db.session() as session:
                routes = [directory.route(session, t, envelope_from, domain=domain) for t in tokens]
        for route in routes:  # a forged From is refused before anything is looked up
            if not set(claimed) <= set(route.sender_addresses):
                raise Rejected(FROM_MISMATCH)
        if tokens and cfg.auth.policy != "none":
            results = self.authenticator.check(
                raw,
                ip=client_ip,
                helo=helo,
                mail_from=envelope_from,
                from_domain=claimed[0].rpartition("@")[2] if claimed else "",
            )
            refusal = authn.required(cfg.auth.policy, results)
            if refusal is not None:
                log.info(
                    "sender authentication: %s (%s)",
                    refusal,
                    redact(results.header("-")),
                    extra={"fields": {"trace": trace_id}},
                )
                raise Rejected(refusal)
            header = f"Authentication-Results: {results.header(cfg.smtp.hostname)}\r\n"
            raw = header.encode() + raw
        copies = [parsed, *(self._reparse(raw, parsed) for _ in routes[1:])][: len(routes)]
        with metrics.timed("filter"):
            verdicts = self._filter(list(zip(routes, copies, strict=True)))
        received_path = self.archive.store(raw, "received")
        with self.db.session() as reads:  # rewriting and archiving, before the write lock
            plans = [
                self._plan(reads, route, copy, verdict)
                for route, copy, verdict in zip(routes, copies, verdicts, strict=True)
            ]
        outcomes = self.db.write(
            self._record, envelope_from, received_path, parsed, bounces, plans, trace_id
        )
        count(outcomes)
        return outcomes

    def _record(
        self,
        session: Session,
        envelope_from: str,
        received_path: str,
        parsed: ParsedMail,
        bounces: list[str],
        plans: list[Plan],
        trace_id: str | None = None,
    ) -> list[Outcome]:
        """The writes of one message, run by the database's group-commit writer."""
        outcomes = [self._bounce(session, verp, parsed) for verp in bounces]
        for plan in plans:
            message = Message(
                trace_id=trace_id,
                conversation_id=plan.route.conversation_id,
                direction=plan.route.direction,
                status=MessageStatus.QUEUED,
                envelope_from=envelope_from,
                recipient=plan.route.recipient,
                subject=parsed.subject[:998],
                original_message_id=parsed.message_id,
                auto_submitted=parsed.auto_submitted or not envelope_from,
                received_path=received_path,
                delivered_path=plan.delivered_path,
                relay_message_id=plan.relay_id,
            )
            if plan.status is MessageStatus.QUEUED:  # the common case, without the ORM
                message.id = insert_row(session, message)
                self._record_hits(session, message.id, plan.verdict)
                outcome = self._queue(session, message.id, plan)
            else:
                session.add(message)
                session.flush()
                assert message.id is not None
                self._record_hits(session, message.id, plan.verdict)
                outcome = self._settle(session, message, plan)
            outcomes.append(
                replace(
                    outcome,
                    direction=plan.route.direction.value,
                    reason=_reason(plan),
                    hits=tuple((h.rule_id, h.action.label) for h in plan.verdict.hits),
                )
            )
        return outcomes

    def _filter(self, items: list[tuple[directory.Route, ParsedMail]]) -> list[Verdict]:
        """Run the rules for each recipient, bounded by ``filters.timeout``.

        A rule set that does not finish in time is a temporary failure (451), never
        a pass: the sender retries, and nothing unchecked gets through.
        """
        rules = self.rules
        if not rules.rules:
            return [Verdict() for _ in items]

        def run() -> list[Verdict]:
            return [evaluate(rules, copy.message, _role(route)) for route, copy in items]

        future = self._filter_pool.submit(run)
        try:
            return future.result(timeout=self.config.filters.timeout)
        except concurrent.futures.TimeoutError:
            log.error("filter stage timed out after %ss", self.config.filters.timeout)
            raise Rejected(TIMEOUT) from None

    @staticmethod
    def _reparse(raw: bytes, first: ParsedMail) -> ParsedMail:
        """A fresh copy for the next recipient: rewriting works in place."""
        msg = email.message_from_bytes(raw, _class=EmailMessage, policy=mailpolicy.DEFAULT)
        assert isinstance(msg, EmailMessage)
        return ParsedMail(
            message=msg,
            subject=first.subject,
            message_id=first.message_id,
            in_reply_to=first.in_reply_to,
            references=first.references,
            auto_submitted=first.auto_submitted,
        )

    def _bounce(self, session: Session, verp: str, parsed: ParsedMail) -> Outcome:
        verdict = read_dsn(parsed.message)
        if verdict is None:
            log.info("mail to a bounce address is not a delivery report; ignored")
            return Outcome(None, "ignored")
        spool.record_dsn(
            session,
            verp,
            permanent=verdict.permanent,
            status=verdict.status,
            diagnostic=verdict.diagnostic,
            archive=self.archive,
            config=self.config,
        )
        return Outcome(None, "dsn_failed" if verdict.permanent else "dsn_delayed")

    def _plan(
        self, reads: Session, route: directory.Route, parsed: ParsedMail, verdict: Verdict
    ) -> Plan:
        """Decide what becomes of the message for one recipient and, if it is to be
        delivered, rewrite and archive it.  Reads only: the caller writes."""
        cfg = self.config
        deciding = verdict.deciding
        if verdict.action is Action.REJECT and deciding is not None:
            why = deciding.notice or (
                f"It breaks the marketplace's messaging rules ({deciding.rule_id})."
            )
            return Plan(route, verdict, MessageStatus.REJECTED, f"rule {deciding.rule_id}", why)
        if verdict.action is Action.QUARANTINE and deciding is not None:
            return Plan(route, verdict, MessageStatus.QUARANTINED, f"rule {deciding.rule_id}")
        if self._blocked_by_optout(reads, route, parsed):
            return Plan(
                route, verdict, MessageStatus.BLOCKED, "buyer opted out", optout_reason(cfg)
            )
        changes = filter_actions.apply(parsed.message, verdict, marketplace=cfg.marketplace.name)
        if changes:
            log.info("conversation %s: %s", route.conversation_id, redact("; ".join(changes)))
        return self._rewrite(reads, route, parsed, verdict)

    def _blocked_by_optout(
        self, session: Session, route: directory.Route, parsed: ParsedMail
    ) -> bool:
        """The opt-out (README, walk-through step 5): an opted-out buyer only gets a
        seller's message if it is marked important, the buyer started the
        conversation, or an order is exempt."""
        if route.direction is not Direction.SELLER_TO_BUYER or not route.buyer_opted_out:
            return False
        if self.config.optout.important_tag in parsed.subject:
            return False
        if route.buyer_initiated:
            return False
        categories = directory.conversation_categories(session, route.conversation_id)
        return not categories & {c.lower() for c in self.config.optout.exempt_categories}

    def _rewrite(
        self, reads: Session, route: directory.Route, parsed: ParsedMail, verdict: Verdict
    ) -> Plan:
        cfg = self.config
        domain = cfg.marketplace.domain
        buyer = Party(
            display_name=cfg.marketplace.buyer_display_format.format(
                name=route.buyer_name or "Buyer", marketplace=cfg.marketplace.name
            ),
            token=route.buyer_token,
            real=(route.buyer_email,),
        )
        seller = Party(
            display_name=route.seller_name, token=route.seller_token, real=route.seller_emails
        )
        if route.direction is Direction.BUYER_TO_SELLER:
            sender, recipient = buyer, seller
        else:  # the buyer is addressed by name, not by the name sellers see
            sender, recipient = seller, replace(buyer, display_name=route.buyer_name)
        recipient_side = Side.SELLER if route.direction is Direction.BUYER_TO_SELLER else Side.BUYER
        relay_id = threading_ids.new_message_id(domain)
        in_reply_to = threading_ids.map_references(
            reads, route.conversation_id, parsed.in_reply_to, recipient=recipient_side
        )
        references = threading_ids.map_references(
            reads,
            route.conversation_id,
            parsed.references or parsed.in_reply_to,
            recipient=recipient_side,
        )
        try:
            out = compose(
                parsed.message,
                sender=sender,
                recipient=recipient,
                message_id=relay_id,
                in_reply_to=in_reply_to[:1],
                references=references,
                hostname=cfg.smtp.hostname,
            )
        except MalformedMessage:
            return Plan(
                route,
                verdict,
                MessageStatus.REJECTED,
                "could not be rewritten",
                "Its structure is too damaged to be passed on (for example broken MIME"
                " headers). Please send it again from your mail program as a new message.",
            )
        except UnsafeMessage:
            return Plan(
                route,
                verdict,
                MessageStatus.REJECTED,
                "could not be tokenized",
                "It contains a part in which your email address could not be replaced"
                " safely. Please send the text without that part.",
            )
        delivered_path = self.archive.store(out.data, "delivered")
        return Plan(
            route,
            verdict,
            MessageStatus.QUEUED,
            relay_id=relay_id,
            original_id=parsed.message_id,
            delivered_path=delivered_path,
        )

    def _settle(self, session: Session, message: Message, plan: Plan) -> Outcome:
        """Write what ``_plan`` decided for ``message`` (the caller commits)."""
        if plan.status is MessageStatus.QUARANTINED:
            message.status = MessageStatus.QUARANTINED
            message.status_reason = plan.reason
            session.add(message)
            log.info(
                "message %s quarantined (%s)",
                message.id,
                plan.reason,
                extra={"fields": {"trace": message.trace_id}},
            )
            return Outcome(message.id, message.status.value)
        if plan.status is not MessageStatus.QUEUED:
            return self._not_delivered(session, message, plan.status, plan.reason, why=plan.why)
        assert message.id is not None
        message.status = MessageStatus.QUEUED
        message.delivered_path = plan.delivered_path
        message.relay_message_id = plan.relay_id
        session.add(message)
        return self._queue(session, message.id, plan)

    def _queue(self, session: Session, message_id: int, plan: Plan) -> Outcome:
        """Enqueue the delivery of a QUEUED message and record what threading and
        the conversation need to know of it."""
        route = plan.route
        assert plan.relay_id is not None
        spool.enqueue(
            session, message_id, recipient=route.recipient, domain=self.config.marketplace.domain
        )
        threading_ids.record(
            session,
            route.conversation_id,
            author=route.sender_party,
            original_id=plan.original_id,
            relay_id=plan.relay_id,
        )
        if not route.has_traffic or (
            route.direction is Direction.BUYER_TO_SELLER and not route.buyer_initiated
        ):
            conv = session.get(Conversation, route.conversation_id)
            assert conv is not None
            if conv.first_message_at is None:
                conv.first_message_at = utcnow()
            if route.direction is Direction.BUYER_TO_SELLER:
                conv.buyer_initiated = True
            session.add(conv)
        log.debug("message %s queued for conversation %s", message_id, route.conversation_id)
        return Outcome(message_id, MessageStatus.QUEUED.value)

    def _not_delivered(
        self, session: Session, message: Message, status: MessageStatus, reason: str, *, why: str
    ) -> Outcome:
        message.status = status
        message.status_reason = reason
        session.add(message)
        session.flush()
        create_notice(
            session, self.archive, self.config, about=message, what="was not delivered", why=why
        )
        log.info(
            "message %s %s (%s)",
            message.id,
            status.value,
            reason,
            extra={"fields": {"trace": message.trace_id}},
        )
        return Outcome(message.id, status.value)

    # --- quarantine: an admin's decision ------------------------------------

    def release(self, session: Session, message_id: int) -> Outcome:
        """Deliver a quarantined message as an admin decided.

        The message as received is filtered again with the current rules, so that
        ``strip`` and ``redact`` still apply; ``reject`` and ``quarantine`` hits no
        longer hold it (the admin has overruled them).  An opted-out buyer still
        does not get it.  The caller commits.
        """
        message = self._quarantined(session, message_id)
        if message.received_path is None or message.conversation_id is None:
            raise directory.DirectoryError(f"message {message_id} has no archived copy to release")
        raw = self.archive.read(message.received_path)
        conv = session.get(Conversation, message.conversation_id)
        assert conv is not None
        to_seller = message.direction is Direction.BUYER_TO_SELLER
        token = conv.seller_token if to_seller else conv.buyer_token
        try:
            route = directory.route(
                session, token, message.envelope_from, domain=self.config.marketplace.domain
            )
        except Refused as exc:
            raise directory.DirectoryError(
                f"message {message_id} cannot be released: {exc}"
            ) from None
        parsed = parse(raw, hostname=self.config.smtp.hostname, max_hops=10**6)
        verdict = evaluate(self.rules, parsed.message, _role(route))
        verdict = Verdict(
            tuple(h for h in verdict.hits if h.action < Action.QUARANTINE), verdict.redact_marker
        )
        message.status_reason = "released from quarantine"
        message.updated_at = utcnow()
        return self._settle(session, message, self._plan(session, route, parsed, verdict))

    def reject_quarantined(self, session: Session, message_id: int) -> Outcome:
        """Refuse a quarantined message: the sender gets the notice of the rule that
        held it."""
        message = self._quarantined(session, message_id)
        rule_id = message.status_reason.removeprefix("rule ")
        rule = next((r for r in self.rules.rules if r.id == rule_id), None)
        why = (rule.notice if rule else "") or (
            f"It breaks the marketplace's messaging rules ({rule_id})."
        )
        message.updated_at = utcnow()
        reason = f"{message.status_reason}, by an admin"
        return self._not_delivered(session, message, MessageStatus.REJECTED, reason, why=why)

    @staticmethod
    def _quarantined(session: Session, message_id: int) -> Message:
        message = session.get(Message, message_id, with_for_update=True)
        if message is None:
            raise directory.DirectoryError(f"no message with id {message_id}")
        if message.status is not MessageStatus.QUARANTINED:
            raise directory.DirectoryError(
                f"message {message_id} is {message.status.value}, not quarantined"
            )
        return message

    @staticmethod
    def _record_hits(session: Session, message_id: int, verdict: Verdict) -> None:
        for hit in verdict.hits:
            insert_row(
                session,
                RuleHit(
                    message_id=message_id,
                    rule_id=hit.rule_id,
                    action=hit.action.label,
                    detail=hit.detail[:1000],
                    location=hit.where[:200],
                ),
            )


def from_addresses(message: EmailMessage) -> list[str]:
    """The addresses the From header claims, normalised; raises Rejected if it
    cannot be read (a From nobody can check is a From anybody could forge).

    A display name counts for nothing, only the address does: in
    ``0@0 <maria@buyer.example>``, ``<0@0> <maria@buyer.example>`` or
    ``"shop@seller.example" <x@y>`` the claim is the last address in angle
    brackets (the recipient never sees the display name: the relay writes its own
    From).  A mailbox without angle brackets claims its bare address; a bare name
    or word claims none."""
    values = header_values(message, "From")
    if not values:
        return []
    if len(values) > 1:
        raise Rejected(FROM_MISMATCH)
    text = " ".join(decode_header_text(values[0]).split())
    found: list[str] = []
    for mailbox in _mailboxes(text):
        # The address is the last angle address: whatever comes before it, even
        # "<0@0>" unquoted, is the display name.
        angle = _ANGLE_ADDRESS.findall(_QUOTED.sub('""', mailbox))[-1:]
        claims = angle or [a for _n, a in email.utils.getaddresses([mailbox]) if "@" in a]
        if not claims and "@" in _QUOTED.sub("", mailbox):  # "<maria@>": unreadable
            raise Rejected(FROM_MISMATCH)
        try:
            found.extend(addresses.normalize(a) for a in claims)
        except addresses.InvalidAddress:
            raise Rejected(FROM_MISMATCH) from None
    return found


def _mailboxes(text: str) -> list[str]:
    """``text`` split at its top-level commas: not inside quotes, angle brackets
    or comments."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    angle = comment = 0
    for ch in text:
        current.append(ch)
        if escaped:
            escaped = False
        elif ch == "\\" and (quoted or comment):
            escaped = True
        elif quoted:
            quoted = ch != '"'
        elif ch == '"':
            quoted = True
        elif ch == "(":
            comment += 1
        elif ch == ")" and comment:
            comment -= 1
        elif ch == "<" and not comment:
            angle += 1
        elif ch == ">" and angle:
            angle -= 1
        elif ch == "," and not (angle or comment):
            current.pop()
            parts.append("".join(current))
            current = []
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
_ANGLE_ADDRESS = re.compile(r"<([^<>\s]+@[^<>\s]+)>")


def _reason(plan: Plan) -> str:
    """The metrics' short reason why a message is not delivered."""
    if plan.status is MessageStatus.QUEUED:
        return ""
    if plan.status is MessageStatus.QUARANTINED:
        return "quarantine"
    if plan.status is MessageStatus.BLOCKED:
        return "opt_out"
    return "rule" if plan.verdict.action is Action.REJECT else "unreadable"


def count(outcomes: Sequence[Outcome]) -> None:
    """Count committed outcomes in the metrics."""
    for o in outcomes:
        metrics.RECEIVED.labels(o.direction).inc()
        if o.reason:
            metrics.BLOCKED.labels(o.direction, o.reason).inc()
        for rule, action in o.hits:
            metrics.FILTER_HITS.labels(rule, action).inc()


def _role(route: directory.Route) -> Role:
    return Role.BUYER if route.direction is Direction.BUYER_TO_SELLER else Role.SELLER
