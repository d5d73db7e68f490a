"""The endpoints events are sent to: registered, listed and deleted over the API.

An endpoint belongs to the scope of the key that registered it and hears only
of what that key may see: an admin's of everything, a seller's of its own
conversations' messages, a brand's of its own campaigns and followers.  Its URL
is HTTPS, or plain HTTP on a loopback address (for trying it out and for
tests): an event must not cross a network in clear text.  Its secret is made
here and returned once, when it is registered.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import update
from sqlmodel import Session, col, func, select

from relay.core.scopes import Role, Scope
from relay.storage.directory import DirectoryError, NotFound
from relay.storage.events import EventType
from relay.storage.models import (
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEndpoint,
    utcnow,
)
from relay.webhooks.signing import new_secret

MAX_URL = 2000
MAX_ENDPOINTS_PER_SCOPE = 20
"""More would be a mistake (or a way to multiply the relay's outgoing requests)."""


def check_url(url: str) -> str:
    """``url`` if events may be sent to it; raises ValueError saying why not."""
    if len(url) > MAX_URL or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise ValueError(f"a URL of at most {MAX_URL} characters, with no spaces or controls")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError:
        raise ValueError("not a valid URL") from None
    if parts.scheme not in ("https", "http") or not host:
        raise ValueError("an https:// URL (or http:// on a loopback address), with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("no user name or password in the URL: they would be logged")
    if parts.fragment:
        raise ValueError("no #fragment: it is never sent")
    if parts.scheme == "http" and not _loopback(host):
        raise ValueError("plain http:// only on a loopback address; use https://")
    if _link_local(host):
        raise ValueError("not a link-local or unspecified address")
    return url


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _loopback(host: str) -> bool:
    ip = _address(host)
    return host.lower() == "localhost" if ip is None else ip.is_loopback


def _link_local(host: str) -> bool:
    ip = _address(host)
    return ip is not None and (ip.is_link_local or ip.is_unspecified or ip.is_multicast)


def check_events(scope: Scope, events: Sequence[EventType]) -> list[EventType]:
    """The event types, each once, if ``scope`` may hear of them; raises ValueError."""
    wanted = list(dict.fromkeys(events))
    if not wanted:
        raise ValueError("name at least one event type")
    if scope.role is Role.SELLER:
        foreign = [e for e in wanted if e.about_brand]
    elif scope.role is Role.BRAND:
        foreign = [e for e in wanted if not e.about_brand]
    else:
        foreign = []
    if foreign:
        names = ", ".join(e.value for e in foreign)
        raise ValueError(f"a {scope.role.value} key's webhook cannot hear of {names}")
    return wanted


def events_of(endpoint: WebhookEndpoint) -> list[EventType]:
    return [EventType(name) for name in endpoint.events.split()]


def register(
    session: Session,
    *,
    scope: Scope,
    url: str,
    events: Sequence[EventType],
    description: str = "",
) -> WebhookEndpoint:
    """A new endpoint; its ``secret`` is the one time the caller sees it.
    Raises DirectoryError for a URL or event types that cannot be taken."""
    try:
        url = check_url(url)
        wanted = check_events(scope, events)
    except ValueError as exc:
        raise DirectoryError(str(exc)) from None
    owned = session.exec(
        select(func.count()).where(
            WebhookEndpoint.scope == str(scope), col(WebhookEndpoint.deleted_at).is_(None)
        )
    ).one()
    if owned >= MAX_ENDPOINTS_PER_SCOPE:
        raise DirectoryError(f"at most {MAX_ENDPOINTS_PER_SCOPE} webhooks per key scope")
    endpoint = WebhookEndpoint(
        url=url,
        events=" ".join(e.value for e in wanted),
        scope=str(scope),
        secret=new_secret(),
        description=description,
    )
    session.add(endpoint)
    session.flush()
    return endpoint


def visible(session: Session, scope: Scope) -> list[WebhookEndpoint]:
    """The live endpoints ``scope`` registered (all of them, for an admin)."""
    query = select(WebhookEndpoint).where(col(WebhookEndpoint.deleted_at).is_(None))
    if not scope.is_admin:
        query = query.where(WebhookEndpoint.scope == str(scope))
    return list(session.exec(query.order_by(col(WebhookEndpoint.id))).all())


def get(session: Session, endpoint_id: int, scope: Scope) -> WebhookEndpoint:
    """The endpoint, if it is live and ``scope``'s to see; else NotFound."""
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if (
        endpoint is None
        or endpoint.deleted_at is not None
        or not (scope.is_admin or endpoint.scope == str(scope))
    ):
        raise NotFound(f"no webhook with id {endpoint_id}")
    return endpoint


def delete(session: Session, endpoint_id: int, scope: Scope) -> int:
    """Delete the endpoint: nothing more is sent to it, what waited is cancelled.
    Returns how many deliveries were cancelled."""
    endpoint = get(session, endpoint_id, scope)
    now = utcnow()
    endpoint.deleted_at = now
    session.add(endpoint)
    result: Any = session.execute(
        update(WebhookDelivery)
        .where(
            col(WebhookDelivery.endpoint_id) == endpoint_id,
            col(WebhookDelivery.status) == WebhookDeliveryStatus.PENDING,
        )
        .values(status=WebhookDeliveryStatus.CANCELLED, finished_at=now)
    )
    return int(result.rowcount)


@dataclass(frozen=True, slots=True)
class Counts:
    pending: int
    delivered: int
    failed: int


def counts(session: Session, endpoint_id: int) -> Counts:
    """How many of the endpoint's deliveries wait, went through, were given up."""
    rows = session.exec(
        select(WebhookDelivery.status, func.count())
        .where(WebhookDelivery.endpoint_id == endpoint_id)
        .group_by(col(WebhookDelivery.status))
    ).all()
    by = {status: int(n) for status, n in rows}
    return Counts(
        by.get(WebhookDeliveryStatus.PENDING, 0),
        by.get(WebhookDeliveryStatus.DELIVERED, 0),
        by.get(WebhookDeliveryStatus.FAILED, 0),
    )
