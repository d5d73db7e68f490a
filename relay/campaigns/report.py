"""What became of a campaign's messages (``relay campaign show``).

- ``planned``: followers the campaign was planned for when it started;
- ``sent``: messages handed to the outbound queue; of them ``delivered``:
  accepted by the recipient's server, and ``bounced``: refused for good, given
  up, or reported by a DSN (these figures live on the send records, so purging
  old messages from the archive does not change them);
- ``skipped_7_days``: the brand had reached the customer with another campaign
  less than 7 days before, per campaign in ``skipped_for``;
- ``unsubscribed``: followers who had unsubscribed when their turn came, plus
  ``unsubscribed_here``: those who unsubscribed through this campaign's link;
- ``opted_out``: customers with the global opt-out;
- ``withdrawn``: not sent because the campaign was cancelled or suspended;
- ``pending``: still waiting for their time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlmodel import Session, col, func, select

from relay.campaigns.models import CampaignSend, Follower, SendStatus
from relay.core.clock import as_utc

SENT = (SendStatus.SENT, SendStatus.DELIVERED, SendStatus.BOUNCED)


def campaign_report(session: Session, campaign_id: int) -> dict[str, Any]:
    by_status = dict(
        session.exec(
            select(CampaignSend.status, func.count())
            .where(CampaignSend.campaign_id == campaign_id)
            .group_by(col(CampaignSend.status))
        ).all()
    )
    count = {status: int(by_status.get(status, 0)) for status in SendStatus}
    skipped_for = session.exec(
        select(CampaignSend.skipped_for_campaign_id, func.count())
        .where(
            CampaignSend.campaign_id == campaign_id,
            CampaignSend.status == SendStatus.SKIPPED_7_DAYS,
        )
        .group_by(col(CampaignSend.skipped_for_campaign_id))
        .order_by(col(CampaignSend.skipped_for_campaign_id))
    ).all()
    unsubscribed_here = session.exec(
        select(func.count()).where(Follower.unsubscribed_campaign_id == campaign_id)
    ).one()
    return {
        "planned": sum(count.values()),
        "sent": count[SendStatus.SENT] + count[SendStatus.DELIVERED] + count[SendStatus.BOUNCED],
        "delivered": count[SendStatus.DELIVERED],
        "bounced": count[SendStatus.BOUNCED],
        "skipped_7_days": count[SendStatus.SKIPPED_7_DAYS],
        "skipped_for": {str(other): int(n) for other, n in skipped_for if other is not None},
        "unsubscribed": count[SendStatus.UNSUBSCRIBED],
        "unsubscribed_here": int(unsubscribed_here),
        "opted_out": count[SendStatus.OPTED_OUT],
        "withdrawn": count[SendStatus.WITHDRAWN],
        "pending": count[SendStatus.PLANNED],
    }


def describe_report(report: dict[str, Any]) -> str:
    """One line for the terminal."""
    skipped = report["skipped_7_days"]
    if report["skipped_for"]:
        skipped_text = ", ".join(f"{n} for campaign {c}" for c, n in report["skipped_for"].items())
        skipped = f"{skipped} ({skipped_text})"
    return (
        f"planned {report['planned']}, sent {report['sent']} (delivered {report['delivered']},"
        f" bounced {report['bounced']}), skipped by the 7-day rule {skipped}, unsubscribed"
        f" {report['unsubscribed']} (+{report['unsubscribed_here']} through this campaign),"
        f" opted out {report['opted_out']}, withdrawn {report['withdrawn']},"
        f" pending {report['pending']}"
    )


@dataclass(frozen=True, slots=True)
class DayCount:
    """One day of a campaign's window: messages sent, followers passed over
    (7-day rule, unsubscribed, opted out, withdrawn), and still planned."""

    day: date
    sent: int
    not_sent: int
    pending: int


def per_day(session: Session, campaign_id: int, first: date, days: int) -> list[DayCount]:
    """The campaign's messages per day (UTC) from ``first``: a handled message
    counts on the day it was handled, a planned one on the day it is due."""
    rows = session.exec(
        select(CampaignSend.status, CampaignSend.done_at, CampaignSend.due_at).where(
            CampaignSend.campaign_id == campaign_id
        )
    ).all()
    counts = {first + timedelta(days=i): [0, 0, 0] for i in range(days)}
    for status, done_at, due_at in rows:
        when = as_utc(done_at if done_at is not None and status != SendStatus.PLANNED else due_at)
        bucket = counts.get(when.date())
        if bucket is None:
            continue
        bucket[0 if status in SENT else 2 if status == SendStatus.PLANNED else 1] += 1
    return [DayCount(day, *figures) for day, figures in counts.items()]
