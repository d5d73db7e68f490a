"""One-click unsubscribe (RFC 8058) for campaign messages.

Every campaign message names ``<base>/unsubscribe/<token>`` in its
``List-Unsubscribe`` header and its footer; the token is the send's, random and
unguessable, so it says which follower and which campaign without saying who
the follower is.

- ``POST`` (what a mail client's unsubscribe button sends, with the body
  ``List-Unsubscribe=One-Click``, and what the page's button sends):
  unsubscribes the follower from the brand, at once, with no further question
  or login; answers 200 with a short page.  Repeating it changes nothing.
- ``GET`` (a person following the footer link): a page with a button that
  POSTs.  A GET never unsubscribes by itself: mail scanners and link
  previewers fetch links nobody clicked.

An unknown token is 404; the endpoint never says whose a token is.  It has an
HTTP server of its own (``campaigns.unsubscribe.listen``, loopback by default,
behind the marketplace's HTTPS front end; ``relay.core.httpserver``), so a request
never touches the event loop that serves SMTP, and slow or oversized requests
are cut off there (SECURITY.md, "The HTTP endpoints").
"""

from __future__ import annotations

import enum
import html
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from sqlmodel import Session, col, select

from relay.campaigns.catalog import Via, unsubscribed
from relay.campaigns.models import Brand, CampaignSend, Follower
from relay.core import metrics
from relay.core.config import http_base
from relay.core.httpserver import HttpLimits, StartResponse, WsgiServer
from relay.core.logs import event
from relay.storage.db import Database, StorageUnavailable
from relay.storage.models import utcnow

log = logging.getLogger("relay.campaigns")

PREFIX = "/unsubscribe/"
MAX_BODY = 4096
"""A bigger POST body is refused (413) before it is read."""
LIMITS = HttpLimits(max_body_bytes=MAX_BODY)


class How(enum.StrEnum):
    """How a follower unsubscribed (the metric's label, the log's ``method``)."""

    ONE_CLICK = "one_click"
    """A mail client's one-click POST (RFC 8058)."""
    PAGE = "page"
    """The confirmation page's button."""


def _named(session: Session, token: str) -> tuple[CampaignSend, Follower, Brand] | None:
    """The send the token names, its follower and the brand (one query)."""
    row = session.exec(
        select(CampaignSend, Follower, Brand)
        .join(Follower, col(Follower.id) == col(CampaignSend.follower_id))
        .join(Brand, col(Brand.id) == col(Follower.brand_id))
        .where(CampaignSend.token == token)
    ).first()
    return None if row is None else (row[0], row[1], row[2])


def unsubscribe(session: Session, token: str, *, now: datetime | None = None) -> str | None:
    """Unsubscribe the follower the token names; returns the brand's name, or
    None for an unknown token."""
    named = _named(session, token)
    if named is None:
        return None
    send, follower, brand = named
    if follower.unsubscribed_at is None:
        follower.unsubscribed_at = now or utcnow()
        follower.unsubscribed_campaign_id = send.campaign_id
        session.add(follower)
        unsubscribed(session, follower, Via.LINK)
    return brand.name


def brand_of(session: Session, token: str) -> str | None:
    """The brand whose follower the token names (for the confirmation page)."""
    named = _named(session, token)
    return None if named is None else named[2].name


class UnsubscribeEndpoint:
    def __init__(self, db: Database, host: str, port: int, *, limits: HttpLimits = LIMITS) -> None:
        self.db = db
        self.server = WsgiServer(host, port, self._app, name="relay-unsubscribe", limits=limits)

    @property
    def base_url(self) -> str:
        """Where it really listens (the port it got, when asked for port 0)."""
        return http_base(self.server.host, self.server.port)

    def start(self) -> None:
        self.server.start()
        log.info("unsubscribe links answered on %s%s...", self.base_url, PREFIX)

    def stop(self) -> None:
        self.server.stop()

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        token = path[len(PREFIX) :] if path.startswith(PREFIX) else ""
        if not token or "/" in token or len(token) > 100:
            return _page(start_response, "404 Not Found", "Not found", "There is nothing here.")
        try:
            if method == "POST":
                body = _read_body(environ)  # "List-Unsubscribe=One-Click" (RFC 8058)
                brand = self.db.write(unsubscribe, token)
                if brand is None:
                    return _unknown(start_response)
                how = How.ONE_CLICK if _is_one_click(body, environ) else How.PAGE
                metrics.CAMPAIGN_UNSUBSCRIBES.labels(how.value).inc()
                event(log, "campaign unsubscribe", event="unsubscribe", method=how.value)
                return _page(
                    start_response,
                    "200 OK",
                    "Unsubscribed",
                    f"You will receive no more campaign emails from {html.escape(brand)}.",
                )
            if method in ("GET", "HEAD"):
                brand = self.db.call(brand_of, token)
                if brand is None:
                    return _unknown(start_response)
                return _page(
                    start_response,
                    "200 OK",
                    "Unsubscribe",
                    f"Stop receiving campaign emails from {html.escape(brand)}?"
                    f'<form method="post" action="{html.escape(path)}">'
                    '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
                    '<button type="submit">Unsubscribe</button></form>',
                )
        except StorageUnavailable as exc:
            log.warning("unsubscribe: database unavailable: %s", exc)
            return _page(
                start_response, "503 Service Unavailable", "Try again", "Please try again later."
            )
        start_response("405 Method Not Allowed", [("Allow", "GET, POST")])
        return [b""]


def _read_body(environ: dict[str, Any]) -> bytes:
    try:
        length = min(int(environ.get("CONTENT_LENGTH") or 0), MAX_BODY)
    except ValueError:
        length = 0
    body: bytes = environ["wsgi.input"].read(length) if length > 0 else b""
    return body


def _is_one_click(body: bytes, environ: dict[str, Any]) -> bool:
    """For the metric only: a mail client's one-click POST (RFC 8058 §3.2) or our
    page's button, which sends the same field plus the browser's ``Referer``."""
    fields = parse_qs(body.decode("latin-1"))
    return fields.get("List-Unsubscribe") == ["One-Click"] and not environ.get("HTTP_REFERER")


def _unknown(start_response: StartResponse) -> list[bytes]:
    return _page(
        start_response,
        "404 Not Found",
        "Unknown link",
        "This unsubscribe link is not known. If you copied it, check that it is complete.",
    )


def _page(start_response: StartResponse, status: str, title: str, body: str) -> list[bytes]:
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>"
        f"<p>{body}</p></body></html>\n"
    ).encode()
    start_response(
        status,
        [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Length", str(len(page))),
            ("Cache-Control", "no-store"),
        ],
    )
    return [page]
