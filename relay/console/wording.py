"""The campaign rules' words in the reader's language.

The domain (``relay.campaigns.rules``, ``lifecycle``, ``catalog``) explains
itself in English, the words of the CLI and the API.  A brand reading the
console in Vietnamese or Tagalog must understand why a date is grey or why a
campaign was refused, so each known sentence of the rules is matched here and
said again as a gettext message, with its values (dates in the reader's
format).  A sentence not known here is shown as the rules wrote it: better
English than nothing.

Messages are marked with ``_`` here (extracted, but translated when shown),
because the reader's language is known only at render time.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime

from relay.campaigns.models import CampaignKind, CampaignStatus, PromotionStatus, SendStatus
from relay.console.i18n import Formats


def _(message: str) -> str:
    """Marks a message for extraction; it is translated when shown."""
    return message


STATUS = {
    CampaignStatus.DRAFT: _("Draft"),
    CampaignStatus.IN_REVIEW: _("In review"),
    CampaignStatus.APPROVED: _("Approved"),
    CampaignStatus.NOT_APPROVED: _("Not approved"),
    CampaignStatus.SCHEDULED: _("Scheduled"),
    CampaignStatus.SENDING: _("Sending"),
    CampaignStatus.COMPLETED: _("Completed"),
    CampaignStatus.SUSPENDED: _("Suspended"),
    CampaignStatus.CANCELLED: _("Cancelled"),
}
KIND = {
    CampaignKind.NEW_PRODUCT: _("New product"),
    CampaignKind.SPOTLIGHT: _("Product spotlight"),
    CampaignKind.GIFT_GUIDE: _("Gift guide"),
    CampaignKind.PROMOTION: _("Promotion"),
}
PROMOTION_STATUS = {
    PromotionStatus.PENDING: _("Pending approval"),
    PromotionStatus.APPROVED: _("Approved"),
    PromotionStatus.REJECTED: _("Rejected"),
    PromotionStatus.CANCELLED: _("Cancelled"),
}
SEND_STATUS = {
    SendStatus.PLANNED: _("Planned"),
    SendStatus.SENT: _("Sent"),
    SendStatus.DELIVERED: _("Delivered"),
    SendStatus.BOUNCED: _("Bounced"),
    SendStatus.SKIPPED_7_DAYS: _("Skipped by the 7-day rule"),
    SendStatus.UNSUBSCRIBED: _("Unsubscribed"),
    SendStatus.OPTED_OUT: _("Opted out"),
    SendStatus.WITHDRAWN: _("Withdrawn"),
}
HISTORY_REASON = {
    "created": _("created"),
    "submitted for review": _("submitted for review"),
    "approved": _("approved"),
    "cancelled by the brand": _("cancelled by the brand"),
    "edited during review: submit again": _("edited during review: submit again"),
}
"""The lifecycle's own reasons of a status change (a moderator's are shown as written)."""

_STATUS_VALUES = {s.value for s in CampaignStatus}
_DAY = r"\d{4}-\d{2}-\d{2}"
_WHEN = rf"{_DAY}(?: \d{{2}}:\d{{2}} UTC)?"
_NAME = r"""(?:'(?P<q1>.*)'|"(?P<q2>.*)")"""
"""``repr()`` of a name: single quotes, or double ones when it has a single quote."""

_RULES: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(
            r"^too soon: review takes (?P<hours>\d+) hours"
            rf" \(the earliest start date is (?P<date>{_DAY})\)$"
        ),
        _("too soon: the review takes %(hours)s hours (the earliest start date is %(date)s)"),
    ),
    (
        re.compile(
            rf"^outside the shopping event {_NAME} \((?P<start>{_DAY}) to (?P<end>{_DAY})\)$"
        ),
        _("outside the shopping event “%(name)s” (%(start)s to %(end)s)"),
    ),
    (
        re.compile(
            rf"^outside promotion (?P<id>\d+)'s period \((?P<start>{_WHEN}) to (?P<end>{_WHEN})\)$"
        ),
        _("outside the period of promotion %(id)s (%(start)s to %(end)s)"),
    ),
    (
        re.compile(r"^promotion (?P<id>\d+) is for another product$"),
        _("promotion %(id)s is for another product"),
    ),
    (
        re.compile(r"^promotion (?P<id>\d+) is pending \(not approved yet\)$"),
        _("promotion %(id)s is not approved yet"),
    ),
    (
        re.compile(r"^promotion (?P<id>\d+) is rejected$"),
        _("promotion %(id)s was rejected"),
    ),
    (
        re.compile(r"^promotion (?P<id>\d+) is cancelled$"),
        _("promotion %(id)s was cancelled"),
    ),
    (
        re.compile(r"^promotion (?P<id>\d+) ends before it starts$"),
        _("promotion %(id)s ends before it starts"),
    ),
    (
        re.compile(rf"^promotion (?P<id>\d+) has ended \((?P<end>{_WHEN})\)$"),
        _("promotion %(id)s has ended (%(end)s)"),
    ),
    (
        re.compile(
            rf"^promotion (?P<id>\d+) \((?P<start>{_WHEN}) to (?P<end>{_WHEN})\) does not overlap"
            rf" the delivery window (?P<date>{_DAY}) \+ (?P<days>\d+) days$"
        ),
        _(
            "promotion %(id)s (%(start)s to %(end)s) does not overlap the %(days)s-day"
            " delivery window from %(date)s"
        ),
    ),
    (
        re.compile(r"^product (?P<id>\d+) is not one of the brand's products$"),
        _("product %(id)s is not one of your products"),
    ),
    (
        re.compile(r"^a campaign shows its main product and at most (?P<count>\d+) more$"),
        _("a campaign shows its main product and at most %(count)s more"),
    ),
    (re.compile(r"^each product may be featured once$"), _("each product may be featured once")),
    (
        re.compile(r"^a promotion campaign needs a promotion \(--promotion\)$"),
        _("a promotion campaign needs a promotion"),
    ),
    (re.compile(r"^a campaign needs a subject$"), _("a campaign needs a subject")),
    (re.compile(r"^a campaign needs content$"), _("a campaign needs a text")),
    (
        re.compile(r"^a campaign needs a kind, a main product and a start date$"),
        _("a campaign needs a kind, a main product and a start date"),
    ),
    (
        re.compile(r"^the content must be at most (?P<count>\d+) characters$"),
        _("the text must be at most %(count)s characters"),
    ),
    (
        re.compile(r"^the subject contains an email address: .*$"),
        _("the subject contains an email address: campaigns carry no addresses"),
    ),
    (
        re.compile(r"^the content contains an email address: .*$"),
        _("the text contains an email address: campaigns carry no addresses"),
    ),
    (
        re.compile(r"^a rejection needs a reason .*$"),
        _("a rejection needs a reason: the brand is told it"),
    ),
    (
        re.compile(rf"^campaign (?P<id>\d+)'s start date (?P<date>{_DAY}) has passed: .*$"),
        _("the start date of campaign %(id)s (%(date)s) has passed: it cannot be approved"),
    ),
    (
        re.compile(r"^campaign (?P<id>\d+) is (?P<status>[a-z_]+), not (?P<expected>[a-z_]+): .*$"),
        _("campaign %(id)s is no longer “%(expected)s” (it is “%(status)s”)"),
    ),
    (
        re.compile(
            r"^campaign (?P<id>\d+) (?:is (?P<status>[a-z_]+)|was not approved)[: ].*edited.*$"
        ),
        _("campaign %(id)s can no longer be edited"),
    ),
    (
        re.compile(r"^campaign (?P<id>\d+) is (?P<status>[a-z_]+) already$"),
        _("campaign %(id)s is %(status)s already"),
    ),
    (
        re.compile(r"^brand .* is not registered in the brand registry$"),
        _("the brand is not registered in the brand registry"),
    ),
    (re.compile(r"^brand .* has no store page$"), _("the brand has no store page")),
    (re.compile(r"^brand .* has no followers$"), _("the brand has no followers")),
]

_START_DATE = re.compile(rf"^start date (?P<date>{_DAY}): (?P<rest>.*)$")


def _value(key: str, text: str, fmt: Formats, gettext: Callable[[str], str]) -> str:
    """A matched value as the reader writes it: dates in the locale, statuses translated."""
    if re.fullmatch(_DAY, text):
        return fmt.date(date.fromisoformat(text))
    if re.fullmatch(_WHEN, text):
        return fmt.datetime(datetime.strptime(text, "%Y-%m-%d %H:%M UTC")) + " UTC"
    if key in ("status", "expected"):
        label = STATUS.get(CampaignStatus(text)) if text in _STATUS_VALUES else None
        return gettext(label) if label else text
    return text


def sentence(text: str, gettext: Callable[[str], str], fmt: Formats) -> str:
    """One sentence of the rules in the reader's language (as written if unknown)."""
    text = text.strip()
    prefixed = _START_DATE.match(text)
    if prefixed:
        rest = sentence(prefixed["rest"], gettext, fmt)
        return gettext("start date %(date)s: %(problem)s") % {
            "date": fmt.date(date.fromisoformat(prefixed["date"])),
            "problem": rest,
        }
    for pattern, message in _RULES:
        found = pattern.match(text)
        if found is None:
            continue
        groups = {k: v for k, v in found.groupdict().items() if v is not None}
        if "q1" in groups or "q2" in groups:
            groups["name"] = groups.pop("q1", None) or groups.pop("q2", "")
        values = {k: _value(k, v, fmt, gettext) for k, v in groups.items()}
        return gettext(message) % values
    return text


def refusal(text: str, gettext: Callable[[str], str], fmt: Formats) -> list[str]:
    """A refusal of the rules (sentences joined by ``; ``), one translated sentence each."""
    return [sentence(part, gettext, fmt) for part in text.split("; ") if part.strip()]
