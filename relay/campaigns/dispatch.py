"""The campaign dispatcher: runs in ``relay serve`` (every process of it) and in
``relay campaign dispatch``.

Each pass, at time ``now``:

1. **Take up** approved campaigns: ``scheduled``, or ``suspended`` if their
   promotion is no longer eligible.
2. **Start** scheduled campaigns whose delivery window has begun: the
   promotion is checked again (under its row lock, the lock a promotion's
   cancellation takes, so the two cannot cross), then one ``campaign_send`` is
   planned per active follower, due at the follower's slot in the window
   (``rules.slot``: a steady rate over the 5 days).  A campaign a relay takes
   up more than ``LATE_START`` after its window began is spread over what is
   left of it instead of sent in a burst; one whose window has passed is
   suspended.
3. **Send** what is due, in batches: claim the sends with a lease (as the
   outbound queue does, so relays sharing the database never take the same
   one), suspend a campaign whose promotion was cancelled meanwhile, skip
   followers who unsubscribed, customers who opted out and customers the brand
   reached less than 7 days before (``ledger``); render and archive the rest
   outside any transaction; then, in one transaction per batch, reserve each
   customer in the ledger and queue the message (``Message`` of direction
   ``campaign`` plus a ``Delivery``), which the outbound worker DKIM-signs and
   delivers like any other.
4. **Complete** sending campaigns with nothing left planned.

A dispatcher that dies holding claims leaves them to expire after
``delivery.claim_timeout``; a message rendered but not queued leaves a stored
copy that is removed (or, after a crash, an orphan file: never a lost or
doubled message, since the queueing transaction is the only one that counts).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, insert
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, or_, select

from relay.campaigns import ledger, lifecycle, rules
from relay.campaigns.models import (
    Brand,
    BrandContact,
    Campaign,
    CampaignSend,
    CampaignStatus,
    Follower,
    Product,
    Promotion,
    PromotionStatus,
    SendStatus,
    ShoppingEvent,
)
from relay.campaigns.render import Content, Recipient, Renderer
from relay.campaigns.status import set_status
from relay.core import metrics
from relay.core.clock import as_utc
from relay.core.config import RelayConfig
from relay.core.logs import event
from relay.core.tokens import new_token
from relay.delivery import spool
from relay.message.compose import UnsafeMessage
from relay.storage.archive import Archive
from relay.storage.db import Database, StorageUnavailable, insert_row
from relay.storage.models import Buyer, Direction, Message, MessageStatus, utcnow

log = logging.getLogger("relay.campaigns")

LATE_START = timedelta(hours=1)


class Step(enum.StrEnum):
    """What a pass did to a campaign, as its log line says it (``status=``)."""

    STARTED = "started"
    SUSPENDED = "suspended"
    COMPLETED = "completed"


@dataclass(slots=True)
class PassReport:
    """What one pass did (``relay campaign dispatch`` prints it)."""

    scheduled: list[int] = field(default_factory=list)
    started: list[int] = field(default_factory=list)
    suspended: list[int] = field(default_factory=list)
    completed: list[int] = field(default_factory=list)
    outcomes: Counter[SendStatus] = field(default_factory=Counter)
    """How many sends ended how (sent, or why not)."""

    def counts(self) -> dict[str, int]:
        """The outcomes by name, in name order (the log line's and the JSON's)."""
        return {status.value: n for status, n in sorted(self.outcomes.items())}

    def as_json(self) -> dict[str, Any]:
        return {
            "scheduled": self.scheduled,
            "started": self.started,
            "suspended": self.suspended,
            "completed": self.completed,
            "messages": self.counts(),
        }


@dataclass(frozen=True, slots=True)
class Due:
    """A claimed send, with what rendering its message needs."""

    send_id: int
    campaign_id: int
    email: str
    name: str
    token: str


@dataclass(slots=True)
class Rendered:
    due: Due
    path: str | None
    """The archived copy; None when the message could not be rendered."""
    message_id: str = ""


# --- the steps, each one database transaction -------------------------------


def take_up(session: Session, now: datetime) -> tuple[list[int], list[int]]:
    """Approved → scheduled (or suspended): (scheduled ids, suspended ids)."""
    scheduled, suspended = [], []
    for candidate in session.exec(
        select(Campaign.id)
        .where(Campaign.status == CampaignStatus.APPROVED)
        .order_by(col(Campaign.id))
    ).all():
        campaign = _lock(session, candidate, CampaignStatus.APPROVED)
        if campaign is None or campaign.id is None:
            continue  # another relay took it up meanwhile
        problem = _promotion_problem(session, campaign, now)
        if problem:
            set_status(session, campaign, CampaignStatus.SUSPENDED, problem)
            suspended.append(campaign.id)
        else:
            window = rules.delivery_window(campaign.start_on, _promotion(session, campaign))
            set_status(
                session,
                campaign,
                CampaignStatus.SCHEDULED,
                f"delivery from {window.start:%Y-%m-%d %H:%M} to {window.end:%Y-%m-%d %H:%M} UTC",
            )
            scheduled.append(campaign.id)
    return scheduled, suspended


def due_to_start(session: Session, now: datetime) -> list[int]:
    rows = session.exec(
        select(Campaign)
        .where(Campaign.status == CampaignStatus.SCHEDULED)
        .order_by(col(Campaign.start_on), col(Campaign.id))
    ).all()
    return [c.id for c in rows if c.id is not None and rules.day_start(c.start_on) <= now]


def start(session: Session, campaign_id: int, now: datetime) -> tuple[Step | None, int]:
    """Start one scheduled campaign: (STARTED, planned), (SUSPENDED, 0), or
    (None, 0) when another process got to it first."""
    campaign = _lock(session, campaign_id, CampaignStatus.SCHEDULED)
    if campaign is None:
        return None, 0
    problem = _promotion_problem(session, campaign, now)
    promotion = _promotion(session, campaign)
    window = rules.delivery_window(campaign.start_on, promotion)
    if not problem and window.end <= now:
        problem = "its delivery window passed before a relay could start it"
    if problem:
        set_status(session, campaign, CampaignStatus.SUSPENDED, problem)
        return Step.SUSPENDED, 0
    if now - window.start > LATE_START:
        window = rules.Window(now, window.end)
    followers = session.exec(
        select(Follower.id, Follower.buyer_id)
        .where(Follower.brand_id == campaign.brand_id, col(Follower.unsubscribed_at).is_(None))
        .order_by(col(Follower.id))
    ).all()
    plan = [
        CampaignSend(
            campaign_id=campaign_id,
            follower_id=follower_id,
            buyer_id=buyer_id,
            due_at=rules.slot(campaign.brand_id, buyer_id, window),
            token=new_token() + new_token(),
        ).model_dump(exclude={"id"})
        for follower_id, buyer_id in followers
        if follower_id is not None
    ]
    if plan:  # one multi-row INSERT: a big audience must not hold the write lock long
        session.execute(insert(CampaignSend), plan)
    set_status(
        session,
        campaign,
        CampaignStatus.SENDING,
        f"{len(followers)} followers, {window.start:%Y-%m-%d %H:%M} to"
        f" {window.end:%Y-%m-%d %H:%M} UTC",
    )
    return Step.STARTED, len(followers)


def claim(
    session: Session, worker: str, now: datetime, *, limit: int, lease: float
) -> tuple[list[Due], Counter[SendStatus], list[int]]:
    """Lease up to ``limit`` due sends; settle those that cannot be sent at once.
    Returns (to send, settled outcomes, campaigns suspended)."""
    until = utcnow() + timedelta(seconds=lease)
    claimable = (
        col(CampaignSend.status) == SendStatus.PLANNED,
        col(CampaignSend.due_at) <= now,
        or_(col(CampaignSend.claimed_until).is_(None), col(CampaignSend.claimed_until) < utcnow()),
    )
    candidates = (
        select(CampaignSend.id)
        .join(Campaign, col(Campaign.id) == col(CampaignSend.campaign_id))
        .where(*claimable, Campaign.status == CampaignStatus.SENDING)
        .order_by(col(CampaignSend.due_at), col(CampaignSend.id))
        .limit(limit)
    )
    ids = spool.lease_rows(session, CampaignSend, candidates, claimable, worker=worker, until=until)
    settled: Counter[SendStatus] = Counter()
    suspended: list[int] = []
    if not ids:
        return [], settled, suspended
    checked: dict[int, bool] = {}
    due: list[Due] = []
    for send, campaign, follower, buyer, contact in _rows(session, ids):
        assert campaign.id is not None and send.id is not None
        if campaign.id not in checked:
            problem = _promotion_problem(session, campaign, now, started=True)
            checked[campaign.id] = not problem
            if problem:  # withdraws this batch's sends of it too
                settled[SendStatus.WITHDRAWN] += set_status(
                    session, campaign, CampaignStatus.SUSPENDED, problem + ": rest withdrawn"
                )
                suspended.append(campaign.id)
        if not checked[campaign.id]:
            continue
        verdict, other = _verdict(send, follower, buyer, contact)
        if verdict is not None:
            _settle(session, send, verdict, other)
            settled[verdict] += 1
            continue
        due.append(Due(send.id, campaign.id, buyer.email, buyer.name, send.token))
    return due, settled, suspended


def queue_rendered(
    session: Session, worker: str, rendered: list[Rendered], *, domain: str
) -> tuple[Counter[SendStatus], list[str]]:
    """Queue what was rendered, re-checking everything under the write lock.
    Returns the outcomes and the stored copies that were not used."""
    outcomes: Counter[SendStatus] = Counter()
    unused: list[str] = []
    rows = {row[0].id: row for row in _rows(session, [r.due.send_id for r in rendered])}
    for item in rendered:
        row = rows.get(item.due.send_id)
        if row is None or row[0].status is not SendStatus.PLANNED or row[0].claimed_by != worker:
            if item.path:
                unused.append(item.path)  # cancelled meanwhile, or our lease ran out
            continue
        send, campaign, follower, buyer, contact = row
        verdict, other = _verdict(send, follower, buyer, contact)
        if verdict is None and item.path is None:
            verdict = SendStatus.WITHDRAWN  # could not be rendered safely
        if verdict is None:
            other = ledger.reserve(
                session,
                brand_id=campaign.brand_id,
                buyer_id=send.buyer_id,
                campaign_id=send.campaign_id,
                at=as_utc(send.due_at),
            )
            if other is not None:
                verdict = SendStatus.SKIPPED_7_DAYS
        if verdict is not None:
            _settle(session, send, verdict, other)
            outcomes[verdict] += 1
            if item.path:
                unused.append(item.path)
            continue
        message_id = insert_row(
            session,
            Message(
                direction=Direction.CAMPAIGN,
                status=MessageStatus.QUEUED,
                status_reason=f"campaign {campaign.id}",
                recipient=buyer.email,
                subject=campaign.subject,
                relay_message_id=item.message_id,
                delivered_path=item.path,
                trace_id=f"campaign-{campaign.id}-{send.id}",
            ),
        )
        spool.enqueue(session, message_id, recipient=buyer.email, domain=domain)
        send.status = SendStatus.SENT
        send.message_id = message_id
        send.done_at = utcnow()
        send.claimed_by = send.claimed_until = None
        session.add(send)
        outcomes[SendStatus.SENT] += 1
    return outcomes, unused


def complete(session: Session) -> list[int]:
    """Sending campaigns with nothing left planned → completed."""
    done = []
    for campaign in session.exec(
        select(Campaign).where(Campaign.status == CampaignStatus.SENDING).order_by(col(Campaign.id))
    ).all():
        left = session.exec(
            select(CampaignSend.id)
            .where(
                CampaignSend.campaign_id == campaign.id, CampaignSend.status == SendStatus.PLANNED
            )
            .limit(1)
        ).first()
        if left is None:
            assert campaign.id is not None
            set_status(session, campaign, CampaignStatus.COMPLETED, "every message sent or settled")
            done.append(campaign.id)
    return done


def load_content(session: Session, campaign_id: int) -> Content:
    campaign = lifecycle.get_campaign(session, campaign_id)
    brand = session.get(Brand, campaign.brand_id)
    assert brand is not None
    main = session.get(Product, campaign.main_product_id)
    assert main is not None
    event = session.get(ShoppingEvent, campaign.event_id) if campaign.event_id else None
    return Content(
        campaign=campaign,
        brand=brand,
        products=[main, *lifecycle.extra_products(session, campaign_id)],
        promotion=_promotion(session, campaign),
        event=event,
    )


# --- helpers ----------------------------------------------------------------


def _promotion(session: Session, campaign: Campaign) -> Promotion | None:
    return session.get(Promotion, campaign.promotion_id) if campaign.promotion_id else None


def _lock(session: Session, campaign_id: int | None, status: CampaignStatus) -> Campaign | None:
    """The campaign, if it still has ``status``, locked for this transaction.

    On PostgreSQL its promotion's row is locked first, then the campaign's: the
    order ``catalog.set_promotion_status`` takes them in, so a dispatcher and a
    promotion's cancellation wait for each other instead of deadlocking, and
    the one that goes second sees what the first did.  (SQLite's writer holds
    the whole database.)"""
    found = session.get(Campaign, campaign_id)
    if found is None:
        return None
    if found.promotion_id is not None:
        session.exec(
            select(Promotion.id).where(Promotion.id == found.promotion_id).with_for_update()
        ).first()
    campaign = session.exec(
        select(Campaign)
        .where(Campaign.id == campaign_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if campaign is None or campaign.status is not status:
        return None
    return campaign


def _promotion_problem(
    session: Session, campaign: Campaign, now: datetime, *, started: bool = False
) -> str:
    """Why the campaign's promotion stops it ("" if it has none or it is fine).

    Before the start the whole eligibility is checked; once sending, only that
    the promotion still stands (it was eligible when the campaign started, and
    the window ends with the promotion)."""
    if campaign.promotion_id is None:
        return ""
    promotion = session.exec(
        select(Promotion)
        .where(Promotion.id == campaign.promotion_id)
        .execution_options(populate_existing=True)
    ).first()
    if promotion is None:
        return f"its promotion {campaign.promotion_id} no longer exists"
    if started:
        if promotion.status is PromotionStatus.APPROVED:
            return ""
        return f"its promotion {promotion.id} was {promotion.status.value}"
    problems = rules.promotion_problems(
        promotion, main_product_id=campaign.main_product_id, start_on=campaign.start_on, now=now
    )
    return "; ".join(problems)


def _rows(
    session: Session, ids: list[int]
) -> list[tuple[CampaignSend, Campaign, Follower, Buyer, BrandContact | None]]:
    """The sends ``ids`` with their campaign, follower, customer and the brand's
    ledger row for the customer: one query for a batch, in due order."""
    if not ids:
        return []
    rows = session.execute(  # five entities: more than sqlmodel's select() is typed for
        sa_select(CampaignSend, Campaign, Follower, Buyer, BrandContact)
        .join(Campaign, col(Campaign.id) == col(CampaignSend.campaign_id))
        .join(Follower, col(Follower.id) == col(CampaignSend.follower_id))
        .join(Buyer, col(Buyer.id) == col(CampaignSend.buyer_id))
        .join(
            BrandContact,
            and_(
                col(BrandContact.brand_id) == col(Campaign.brand_id),
                col(BrandContact.buyer_id) == col(CampaignSend.buyer_id),
            ),
            isouter=True,
        )
        .where(col(CampaignSend.id).in_(ids))
        .order_by(col(CampaignSend.due_at), col(CampaignSend.id))
        .execution_options(populate_existing=True)
    ).all()
    return [(s, c, f, b, contact) for s, c, f, b, contact in rows]


def _verdict(
    send: CampaignSend, follower: Follower, buyer: Buyer, contact: BrandContact | None
) -> tuple[SendStatus | None, int | None]:
    """Why this follower gets no message now (None: it may, as far as reads tell)."""
    if follower.unsubscribed_at is not None:
        return SendStatus.UNSUBSCRIBED, None
    if buyer.opted_out:
        return SendStatus.OPTED_OUT, None
    other = ledger.held_by(contact, as_utc(send.due_at))
    if other is not None:
        return SendStatus.SKIPPED_7_DAYS, other
    return None, None


def _settle(session: Session, send: CampaignSend, status: SendStatus, other: int | None) -> None:
    send.status = status
    send.skipped_for_campaign_id = other if status is SendStatus.SKIPPED_7_DAYS else None
    send.done_at = utcnow()
    send.claimed_by = send.claimed_until = None
    session.add(send)


# --- the dispatcher ---------------------------------------------------------


class Dispatcher:
    """Runs passes every ``campaigns.poll_interval`` until ``stop()``."""

    def __init__(
        self,
        config: RelayConfig,
        db: Database,
        archive: Archive,
        *,
        renderer: Renderer,
        on_queued: Callable[[], None] = lambda: None,
    ) -> None:
        self.config = config
        self.db = db
        self.archive = archive
        self.renderer = renderer
        self.on_queued = on_queued
        self.worker = spool.worker_id()
        self._wake = asyncio.Event()
        self._stopping = False

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self, now: Callable[[], datetime] = utcnow) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                await self.pass_once(now())
            except StorageUnavailable as exc:
                log.warning("campaign dispatch: database unavailable: %s", exc)
            except Exception:  # a bug must not stop the relay; the next pass retries
                log.exception("campaign dispatch failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.campaigns.poll_interval)

    async def pass_once(self, now: datetime) -> PassReport:
        """One pass at ``now`` (see the module's docstring)."""
        report = PassReport()
        scheduled, suspended = await self.db.awrite(take_up, now)
        report.scheduled += scheduled
        report.suspended += suspended
        for campaign_id in await self.db.run(due_to_start, now):
            outcome, planned = await self.db.awrite(start, campaign_id, now)
            if outcome is Step.STARTED:
                report.started.append(campaign_id)
                self._log(campaign_id, Step.STARTED, planned=planned)
            elif outcome is Step.SUSPENDED:
                report.suspended.append(campaign_id)
                self._log(campaign_id, Step.SUSPENDED)
        batch = self.config.campaigns.batch
        contents: dict[int, Content] = {}  # each campaign's shared part, read once a pass
        while not self._stopping:
            due, settled, stopped = await self.db.awrite(
                claim, self.worker, now, limit=batch, lease=self.config.delivery.claim_timeout
            )
            report.suspended += stopped
            self._count(report, settled)
            if not due and not settled:
                break
            if due:
                rendered = await asyncio.to_thread(self._render, due, contents)
                outcomes, unused = await self.db.awrite(
                    queue_rendered, self.worker, rendered, domain=self.config.marketplace.domain
                )
                self._count(report, outcomes)
                if unused:
                    await asyncio.to_thread(self._remove, unused)
                if outcomes.get(SendStatus.SENT):
                    self.on_queued()
        report.completed += await self.db.awrite(complete)
        for campaign_id in report.completed:
            self._log(campaign_id, Step.COMPLETED)
        if report.outcomes:
            event(log, "campaign pass", event="campaign", **report.counts())
        return report

    def _render(self, due: list[Due], contents: dict[int, Content]) -> list[Rendered]:
        """In a thread: render and archive each message (CPU and disk, no lock held)."""
        rendered = []
        for item in due:
            if item.campaign_id not in contents:
                contents[item.campaign_id] = self.db.call(load_content, item.campaign_id)
            content = contents[item.campaign_id]
            try:
                data, message_id = self.renderer.render(
                    content, Recipient(item.email, item.name, item.token)
                )
            except UnsafeMessage as exc:
                log.error(
                    "campaign %s send %s not rendered: %s", item.campaign_id, item.send_id, exc
                )
                rendered.append(Rendered(item, None))
                continue
            except Exception:  # one message that cannot be written must not stall the rest
                log.exception("campaign %s send %s not rendered", item.campaign_id, item.send_id)
                rendered.append(Rendered(item, None))
                continue
            path = self.archive.store(data, "campaign")
            rendered.append(Rendered(item, path, message_id))
        return rendered

    def _remove(self, paths: list[str]) -> None:
        for rel in paths:
            with contextlib.suppress(OSError):
                (self.archive.root / rel).unlink()

    def _count(self, report: PassReport, outcomes: Counter[SendStatus]) -> None:
        for outcome, n in outcomes.items():
            report.outcomes[outcome] += n
            metrics.CAMPAIGN_MESSAGES.labels(outcome.value).inc(n)

    def _log(self, campaign_id: int, step: Step, **fields: Any) -> None:
        event(
            log,
            f"campaign {step.value}",
            event="campaign",
            campaign=campaign_id,
            status=step.value,
            **fields,
        )
