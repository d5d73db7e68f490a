"""The relay's own English words, as a moderator reads them in the console's language.

The archive, the filters and the health checks describe things in fixed English
words (a message's status, a hit's place, a status reason, a check's detail).
The closed sets are translated by value; the sentences the relay builds
("rule bulk-mailer, by an admin", "sqlite answers") are recognised by their
shape and translated with their variable part kept.  Anything else (a
downstream server's reply, a rule's own text) is shown as it is: it is data.
"""

from __future__ import annotations

import re
from collections.abc import Callable

Gettext = Callable[[str], str]


def status(_: Gettext, value: str) -> str:
    known = {
        "queued": _("queued"),
        "delivered": _("delivered"),
        "blocked": _("blocked"),
        "rejected": _("rejected"),
        "quarantined": _("quarantined"),
        "failed": _("failed"),
        "pending": _("pending"),
        "bounced": _("bounced"),
    }
    return known.get(value, value)


def direction(_: Gettext, value: str) -> str:
    known = {
        "buyer_to_seller": _("buyer to seller"),
        "seller_to_buyer": _("seller to buyer"),
        "notice": _("notice"),
        "campaign": _("campaign"),
    }
    return known.get(value, value)


def action(_: Gettext, value: str) -> str:
    known = {
        "flag": _("flag"),
        "redact": _("redact"),
        "strip": _("strip"),
        "quarantine": _("quarantine"),
        "reject": _("reject"),
    }
    return known.get(value, value)


def side(_: Gettext, value: str) -> str:
    return {"buyer": _("buyer"), "seller": _("seller")}.get(value, value)


def outcome(_: Gettext, value: str) -> str:
    known = {
        "delivered": _("delivered"),
        "deferred": _("deferred"),
        "failed": _("failed"),
        "gave_up": _("gave up"),
        "dsn_delayed": _("delay reported"),
        "dsn_failed": _("failure reported"),
    }
    return known.get(value, value)


_HEADER = re.compile(r"^header (?P<name>\S+)$")
_ATTACHMENT = re.compile(r'^attachment "(?P<name>.*)"$', re.DOTALL)
_INLINE = re.compile(r"^inline (?P<type>\S+) part$")


def where(_: Gettext, value: str) -> str:
    """Where a rule matched (``relay.filters``' ``Finding.where``)."""
    known = {
        "": _("the whole message"),
        "subject": _("subject"),
        "text body": _("text body"),
        "HTML body": _("HTML body"),
    }
    if value in known:
        return known[value]
    if m := _HEADER.match(value):
        return _("header %(name)s") % {"name": m["name"]}
    if m := _ATTACHMENT.match(value):
        return _('attachment "%(name)s"') % {"name": m["name"]}
    if m := _INLINE.match(value):
        return _("inline %(type)s part") % {"type": m["type"]}
    return value


_KEYWORD = re.compile(r'^keyword "(?P<word>.*?)": "(?P<excerpt>.*)"$', re.DOTALL)
_PATTERN = re.compile(r'^pattern (?P<pattern>.+?): "(?P<excerpt>.*)"$', re.DOTALL)
_TIMED_OUT = re.compile(
    r"^pattern (?P<pattern>.+?) timed out( after \S+s)? \(treated as a match\)$"
)
_MATCHES = re.compile(r'^"(?P<value>.*)" matches (?P<pattern>.+)$', re.DOTALL)
_LINK = re.compile(r"^link to (?P<host>\S+)$")
_IMAGE = re.compile(r"^image (?P<source>.+) links to (?P<host>\S+)$", re.DOTALL)
_CONTENT = re.compile(
    r"^content is (?P<mime>[^,:\s]+)"
    r"(?:(?P<macros>, a document with macros)|(?P<other>, not an allowed type)"
    r"|, disguised \((?P<claims>.*)\)|: (?P<problem>.*))$",
    re.DOTALL,
)
_TOTAL = re.compile(
    r"^ \((?P<size>[\d,]+) bytes\) takes the attachments to (?P<total>[\d,]+) bytes"
    r" \(limit: under (?P<limit>[\d,]+)\)$"
)


def _claim(_: Gettext, text: str) -> str:
    if text.startswith("named "):
        return _("named %(name)s") % {"name": text.removeprefix("named ")}
    if text.startswith("declared "):
        return _("declared %(type)s") % {"type": text.removeprefix("declared ")}
    return text


_PLAIN_ZIP = re.compile(r"^claims to be (?P<type>\S+) but is a plain ZIP archive$")


def file_problem(_: Gettext, value: str) -> str:
    """Why a file is not what it looks like (``attachments.detect``'s problem)."""
    known = {
        "a damaged OLE2 (Office 97-2003) file": _("a damaged OLE2 (Office 97-2003) file"),
        "a damaged ZIP container": _("a damaged ZIP container"),
    }
    if value in known:
        return known[value]
    if m := _PLAIN_ZIP.match(value):
        return _("claims to be %(type)s but is a plain ZIP archive") % {"type": m["type"]}
    return value


def _content(_: Gettext, value: str) -> str:
    m = _CONTENT.match(value)
    if m is None:
        return value
    mime = m["mime"]
    if m["macros"]:
        return _("content is %(type)s, a document with macros") % {"type": mime}
    if m["other"]:
        return _("content is %(type)s, not an allowed type") % {"type": mime}
    if m["claims"] is not None:
        claims = ", ".join(_claim(_, c) for c in m["claims"].split(", "))
        return _("content is %(type)s, disguised (%(claims)s)") % {"type": mime, "claims": claims}
    return _("content is %(type)s: %(problem)s") % {
        "type": mime,
        "problem": file_problem(_, m["problem"]),
    }


def detail(_: Gettext, value: str, at: str = "") -> str:
    """What a rule found (a matcher's ``Finding.detail``); ``at`` is where it
    matched, which attachment findings start with."""
    if m := _KEYWORD.match(value):
        return _('keyword "%(word)s": "%(excerpt)s"') % {"word": m["word"], "excerpt": m["excerpt"]}
    if m := _TIMED_OUT.match(value):
        return _("pattern %(pattern)s took too long (treated as a match)") % {
            "pattern": m["pattern"]
        }
    if m := _PATTERN.match(value):
        return _('pattern %(pattern)s: "%(excerpt)s"') % {
            "pattern": m["pattern"],
            "excerpt": m["excerpt"],
        }
    if m := _MATCHES.match(value):
        return _('"%(value)s" matches %(pattern)s') % {"value": m["value"], "pattern": m["pattern"]}
    if m := _LINK.match(value):
        return _("link to %(host)s") % {"host": m["host"]}
    if m := _IMAGE.match(value):
        return _("image %(source)s links to %(host)s") % {"source": m["source"], "host": m["host"]}
    if at and value.startswith(at):
        rest = value[len(at) :]
        if rest.startswith(": "):
            return f"{where(_, at)}: {_content(_, rest[2:])}"
        if m := _TOTAL.match(rest):
            return _(
                "%(attachment)s (%(size)s bytes) takes the attachments to %(total)s bytes"
                " (limit: under %(limit)s)"
            ) % {
                "attachment": where(_, at),
                "size": m["size"],
                "total": m["total"],
                "limit": m["limit"],
            }
    return value


_RULE = re.compile(r"^rule (?P<rule>\S+)(?P<admin>, by an admin)?$")


def status_reason(_: Gettext, value: str) -> str:
    """A message's ``status_reason`` (``relay.pipeline.verdicts`` words most)."""
    known = {
        "": "",
        "released from quarantine": _("released from quarantine"),
        "buyer opted out": _("buyer opted out"),
        "could not be rewritten": _("could not be rewritten"),
        "could not be tokenized": _("could not be tokenized"),
    }
    if value in known:
        return known[value]
    if m := _RULE.match(value):
        if m["admin"]:
            return _("rule %(rule)s, by an admin") % {"rule": m["rule"]}
        return _("rule %(rule)s") % {"rule": m["rule"]}
    return value


_ANSWERS = re.compile(r"^(?P<db>\w+) answers$")
_GREETS = re.compile(r"^smarthost (?P<addr>\S+) greets with 220$")
_UNREACHABLE = re.compile(r"^smarthost (?P<addr>\S+) not reachable: (?P<why>.*)$", re.DOTALL)
_GREETED = re.compile(r"^smarthost (?P<addr>\S+) greeted with (?P<what>.*)$", re.DOTALL)
_MAILDIR_NEW = re.compile(r"^Maildir (?P<path>.+) \(created on the first delivery\)$")
_MAILDIR_OK = re.compile(r"^Maildir (?P<path>.+) is writable$")
_MAILDIR_BAD = re.compile(r"^Maildir (?P<path>.+) (is not a writable directory|cannot be created)$")


def health_detail(_: Gettext, value: str) -> str:
    """A health check's detail (``relay.ops.health``)."""
    if m := _ANSWERS.match(value):
        return _("the %(database)s database answers") % {"database": m["db"]}
    if m := _GREETS.match(value):
        return _("the smarthost %(address)s greets with 220") % {"address": m["addr"]}
    if m := _UNREACHABLE.match(value):
        return _("the smarthost %(address)s is not reachable: %(reason)s") % {
            "address": m["addr"],
            "reason": m["why"],
        }
    if m := _GREETED.match(value):
        return _("the smarthost %(address)s greeted with %(reply)s") % {
            "address": m["addr"],
            "reply": m["what"],
        }
    if m := _MAILDIR_NEW.match(value):
        return _("Maildir %(path)s (created on the first delivery)") % {"path": m["path"]}
    if m := _MAILDIR_OK.match(value):
        return _("Maildir %(path)s is writable") % {"path": m["path"]}
    if m := _MAILDIR_BAD.match(value):
        return _("Maildir %(path)s cannot be written") % {"path": m["path"]}
    return value


def labels(_: Gettext) -> dict[str, Callable[..., str]]:
    """The label functions bound to ``_``, for the templates (``label.status(x)``)."""
    return {
        "status": lambda v: status(_, v),
        "direction": lambda v: direction(_, v),
        "action": lambda v: action(_, v),
        "side": lambda v: side(_, v),
        "outcome": lambda v: outcome(_, v),
        "where": lambda v: where(_, v),
        "detail": lambda v, at="": detail(_, v, at),
        "file_problem": lambda v: file_problem(_, v),
        "reason": lambda v: status_reason(_, v),
        "health": lambda v: health_detail(_, v),
    }
