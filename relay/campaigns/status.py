"""A campaign's status changes, each one recorded in its history.

Every change of ``Campaign.status`` goes through ``set_status``, so the history
(``campaign_status_change``) is complete: ``relay campaign show`` prints it.
A campaign that ends before all its messages went out (cancelled, suspended)
withdraws the planned ones in the same transaction, and every change is a
``campaign.status_changed`` webhook event, written with it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col

from relay.campaigns.models import (
    Campaign,
    CampaignSend,
    CampaignStatus,
    CampaignStatusChange,
    SendStatus,
)
from relay.storage.events import EventType, emit
from relay.storage.models import utcnow


def set_status(
    session: Session, campaign: Campaign, status: CampaignStatus, reason: str = ""
) -> int:
    """Move ``campaign`` to ``status``; returns how many planned messages this
    withdrew (a campaign that is cancelled or suspended sends nothing more)."""
    now = utcnow()
    previous = campaign.status if campaign.status is not status else None
    campaign.status = status
    campaign.status_reason = reason
    campaign.updated_at = now
    session.add(campaign)
    assert campaign.id is not None
    session.add(CampaignStatusChange(campaign_id=campaign.id, status=status, at=now, reason=reason))
    emit(
        session,
        EventType.CAMPAIGN_STATUS_CHANGED,
        {
            "campaign_id": campaign.id,
            "status": status.value,
            "previous_status": previous.value if previous else None,
            "reason": reason,
        },
        brand_id=campaign.brand_id,
    )
    if status not in (CampaignStatus.CANCELLED, CampaignStatus.SUSPENDED):
        return 0
    result: Any = session.execute(
        update(CampaignSend)
        .where(
            col(CampaignSend.campaign_id) == campaign.id,
            col(CampaignSend.status) == SendStatus.PLANNED,
        )
        .values(status=SendStatus.WITHDRAWN, done_at=now, claimed_by=None, claimed_until=None)
    )
    return int(result.rowcount)
