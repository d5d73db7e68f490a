"""One follower's campaign message, from the templates.

The message is ``multipart/alternative``: plain text and HTML, rendered with
Jinja2 from ``templates/campaign.txt`` and ``templates/campaign.html`` (or the
admin's own, ``campaigns.templates``), with the campaign's text, its products,
the promotion on the main product and the shopping event.  HTML is
autoescaped: a brand's text is text, never markup.

Headers: ``List-Unsubscribe`` with the follower's one-click link and
``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058; the relay's
DKIM signature covers both, as §3 requires), ``List-Id`` naming the brand,
``Precedence: bulk``, and our trace header, so a campaign message that comes
back in is recognised as a loop.

The customer's real address appears in ``To`` and nowhere else: the rest of
the message is built from the brand's data, the customer's name (left out if
it looks like an address) and the unguessable unsubscribe token, and a last
check (``compose.leaks``, which decodes every part as a mail client would)
refuses a message in which the address turns up anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any

import jinja2

from relay.campaigns.models import Brand, Campaign, Product, Promotion, PromotionKind, ShoppingEvent
from relay.core import addresses, names
from relay.core.addresses import ANY_ADDRESS
from relay.core.clock import as_utc
from relay.core.config import RelayConfig
from relay.core.yamlload import ConfigError
from relay.message import mailpolicy
from relay.message.compose import UnsafeMessage, leaks
from relay.message.parse import TRACE_HEADER
from relay.message.threading_ids import new_message_id

BUILTIN = Path(__file__).parent / "templates"


@dataclass(frozen=True, slots=True)
class Content:
    """What every message of one campaign shares."""

    campaign: Campaign
    brand: Brand
    products: list[Product]
    """The main product first."""
    promotion: Promotion | None
    event: ShoppingEvent | None


@dataclass(frozen=True, slots=True)
class Recipient:
    email: str
    name: str
    token: str
    """The send's unsubscribe token."""


class Renderer:
    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        folder = config.campaigns.templates or BUILTIN
        loader = jinja2.FileSystemLoader(str(folder))
        try:
            self._load(loader)
        except jinja2.TemplateError as exc:
            raise ConfigError(
                [f"campaigns.templates: {folder}: cannot use the templates: {exc}"]
            ) from None

    def _load(self, loader: jinja2.BaseLoader) -> None:
        self._text = jinja2.Environment(
            loader=loader,
            autoescape=False,
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
        ).get_template("campaign.txt")
        self._html = jinja2.Environment(
            loader=loader, autoescape=True, undefined=jinja2.StrictUndefined
        ).get_template("campaign.html")

    def render(self, content: Content, recipient: Recipient) -> tuple[bytes, str]:
        """The message's bytes and its Message-ID; raises UnsafeMessage if the
        recipient's address would appear outside ``To``.

        A name that spells the address some other way (``lan%40example.org``)
        would be caught by the check: the message is then written without it."""
        name = _safe_name(recipient.name)
        try:
            return self._render(content, recipient, name)
        except UnsafeMessage:
            if not name:
                raise
        return self._render(content, recipient, "")

    def _render(self, content: Content, recipient: Recipient, name: str) -> tuple[bytes, str]:
        market = self.config.marketplace
        cc = self.config.campaigns
        brand, campaign = content.brand, content.campaign
        url = cc.unsubscribe.link(recipient.token)
        values: dict[str, Any] = {
            "marketplace": market.name,
            "brand": brand,
            "campaign": campaign,
            "subject": campaign.subject,
            "content": campaign.content,
            "paragraphs": [p.strip() for p in campaign.content.split("\n\n") if p.strip()],
            "greeting_name": name,
            "products": [self._product(p) for p in content.products],
            "promotion": self._promotion(content.promotion),
            "event": content.event,
            "store_url": cc.store_url.format(domain=market.domain, brand_id=brand.id),
            "unsubscribe_url": url,
        }
        # An address with a non-ASCII local part or domain is written as it is,
        # for delivery with SMTPUTF8 (RFC 6532), as the relay's other mail is.
        policy = mailpolicy.SMTP if recipient.email.isascii() else mailpolicy.SMTPUTF8
        msg = EmailMessage(policy=policy)
        domain = market.domain
        msg["From"] = addresses.format_address(
            names.display_name(f"{brand.name} via {market.name}"), f"{cc.sender}@{domain}"
        )
        msg["Subject"] = names.for_header(campaign.subject)
        msg["Date"] = formatdate(localtime=False)
        message_id = new_message_id(domain)
        msg["Message-ID"] = message_id
        msg["List-Id"] = f"<brand-{brand.id}.campaigns.{domain}>"
        msg["List-Unsubscribe"] = f"<{url}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        msg["Precedence"] = "bulk"
        msg["X-Marketplace-Campaign"] = str(campaign.id)
        msg[TRACE_HEADER] = self.config.smtp.hostname
        msg.set_content(self._text.render(values), cte="quoted-printable")
        msg.add_alternative(self._html.render(values), subtype="html", cte="quoted-printable")
        data = msg.as_bytes()
        if leaks(data, [recipient.email]):
            raise UnsafeMessage("the customer's address would appear in the campaign message")
        # To goes on top of what was checked (header order is free): writing the
        # whole message again would double the cost of rendering.
        to = policy.header_factory(
            "To", addresses.format_address(names.display_name(name), recipient.email)
        )
        return to.fold(policy=policy).encode("utf-8" if policy.utf8 else "ascii") + data, message_id

    def _product(self, product: Product) -> dict[str, str]:
        market = self.config.marketplace
        return {
            "title": product.title,
            "price": product.price,
            "description": product.description,
            "url": self.config.campaigns.product_url.format(domain=market.domain, sku=product.sku),
        }

    def _promotion(self, promotion: Promotion | None) -> dict[str, str] | None:
        if promotion is None:
            return None
        if promotion.kind is PromotionKind.PERCENT_OFF:
            headline = f"{promotion.discount}% off"
        else:
            headline = f"{promotion.discount} {self.config.campaigns.currency} off"
        starts, ends = as_utc(promotion.starts_at), as_utc(promotion.ends_at)
        return {
            "headline": headline,
            "period": f"from {starts:%Y-%m-%d %H:%M} to {ends:%Y-%m-%d %H:%M} UTC",
        }


def _safe_name(name: str) -> str:
    """The customer's name for the greeting; nothing if it holds an address."""
    name = " ".join(name.split())
    return "" if not name or ANY_ADDRESS.search(name) or "@" in name else name
