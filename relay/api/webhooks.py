"""``/api/v1/webhooks``: where the relay sends events, registered by the marketplace.

Any key may register endpoints; each hears only of what its key may see
(``relay.webhooks.endpoints``).  The signing secret is in the answer to the
registration and nowhere else, ever after.  Another scope's endpoint is a 404.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, Strict, field_validator
from sqlmodel import Session

from relay.api.auth import Caller
from relay.api.catalog import AsText
from relay.api.directory import Body
from relay.api.problems import Kind, Problem
from relay.storage.db import Database
from relay.storage.events import EventType
from relay.storage.models import WebhookEndpoint
from relay.webhooks import endpoints

router = APIRouter()

EventName = Annotated[EventType, Strict(False), AsText]
"""An event type by its name (``message.delivered``)."""


class NewWebhook(Body):
    url: Annotated[str, Field(min_length=8, max_length=endpoints.MAX_URL)]
    """HTTPS, or plain HTTP on a loopback address."""
    events: Annotated[list[EventName], Field(min_length=1, max_length=len(EventType))]
    description: Annotated[str, Field(max_length=200)] = ""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return endpoints.check_url(value)

    @field_validator("description")
    @classmethod
    def _description(cls, value: str) -> str:
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError("no control characters")
        return value


class WebhookOut(BaseModel):
    id: int
    url: str
    events: list[EventType]
    description: str
    scope: str
    created: datetime
    failing: bool
    """A delivery to it was given up, and none has gone through since."""
    failing_since: datetime | None
    last_error: str
    last_success: datetime | None
    pending: int
    delivered: int
    failed: int


class WebhookCreated(BaseModel):
    id: int
    secret: str
    """Signs every delivery (``Relay-Signature``); shown this once."""
    url: str
    events: list[EventType]


class WebhookDeleted(BaseModel):
    id: int
    deleted: bool
    cancelled: int
    """Deliveries that were still waiting and will not be sent."""


def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def _out(session: Session, endpoint: WebhookEndpoint) -> WebhookOut:
    assert endpoint.id is not None
    counts = endpoints.counts(session, endpoint.id)
    return WebhookOut(
        id=endpoint.id,
        url=endpoint.url,
        events=endpoints.events_of(endpoint),
        description=endpoint.description,
        scope=endpoint.scope,
        created=endpoint.created_at,
        failing=endpoint.failing_since is not None,
        failing_since=endpoint.failing_since,
        last_error=endpoint.last_error,
        last_success=endpoint.last_success_at,
        pending=counts.pending,
        delivered=counts.delivered,
        failed=counts.failed,
    )


@router.post("/webhooks", status_code=201, response_model=WebhookCreated, tags=["webhooks"])
def create_webhook(body: NewWebhook, request: Request, scope: Caller) -> WebhookCreated:
    """Register an endpoint for the listed event types; the answer holds its
    signing secret, which is never shown again."""
    try:
        wanted = endpoints.check_events(scope, body.events)
    except ValueError as exc:
        raise Problem(
            Kind.VALIDATION,
            "invalid fields: events",
            errors=[{"field": "events", "problem": str(exc)}],
        ) from None

    def run(s: Session) -> WebhookCreated:
        made = endpoints.register(
            s, scope=scope, url=body.url, events=wanted, description=body.description
        )
        assert made.id is not None
        return WebhookCreated(id=made.id, secret=made.secret, url=made.url, events=wanted)

    return _db(request).write(run)


@router.get("/webhooks", response_model=list[WebhookOut], tags=["webhooks"])
def list_webhooks(request: Request, scope: Caller) -> list[WebhookOut]:
    """The key's endpoints (an admin key: all of them), with their delivery counts."""
    return _db(request).call(lambda s: [_out(s, e) for e in endpoints.visible(s, scope)])


@router.get("/webhooks/{webhook_id}", response_model=WebhookOut, tags=["webhooks"])
def read_webhook(webhook_id: int, request: Request, scope: Caller) -> WebhookOut:
    return _db(request).call(lambda s: _out(s, endpoints.get(s, webhook_id, scope)))


@router.delete("/webhooks/{webhook_id}", response_model=WebhookDeleted, tags=["webhooks"])
def delete_webhook(webhook_id: int, request: Request, scope: Caller) -> WebhookDeleted:
    """Stop sending to it; deliveries still waiting are cancelled."""
    cancelled = _db(request).write(endpoints.delete, webhook_id, scope)
    return WebhookDeleted(id=webhook_id, deleted=True, cancelled=cancelled)
