"""Build the message the recipient sees (SECURITY.md, "Nothing real leaks").

The top-level header set is an allow-list: what a mail client needs to show and
thread the message (Subject, Date, MIME structure, a few presentation headers)
and ``X-`` headers that do not carry the sender's infrastructure.  Everything
else — Received, Return-Path, Sender, Reply-To, Cc, Bcc, old DKIM and ARC
signatures, vendor trace headers — is left out.  From, To, Message-ID and the
threading headers are ours.  Then every real address still anywhere in the
message (headers, bodies, attached messages, preambles) becomes a token, and a
last check refuses to let a message out if the counterpart's address survived.

Two ways to the same copy:

- the fast path (``compose_unchanged``), for a message whose body holds nothing
  to replace or repair: a header section of the relay's own, written as bytes
  (``relay.message.headers``), then the body exactly as it arrived.  The parse
  the message already had serves the body scan and the leak check; nothing is
  parsed or written through the ``email`` object model again.  When the only
  thing to replace is an address in text parts (a signature), and the MIME
  structure is simple, those parts alone are rewritten as the full path rewrites
  them, and every other part is passed on as the bytes it arrived as;
- the full path, for everything else (and whenever the fast path is unsure):
  the parsed message rewritten in place, written out by the ``email`` package,
  and parsed once more by the leak check.
"""

from __future__ import annotations

import contextlib
import email.policy
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email import errors
from email.headerregistry import BaseHeader
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser
from email.utils import (
    collapse_rfc2231_value,
    format_datetime,
    formatdate,
    parsedate_to_datetime,
)

from relay.core import addresses, names
from relay.message import headers, mailpolicy
from relay.message.parse import TRACE_HEADER
from relay.message.tokenizer import (
    AddressMap,
    carries_infrastructure,
    clean_header_value,
    decode_header_text,
    encoded_message_bytes,
    header_as_text,
    headers_kept_as_they_are,
    rewrite_params,
    rewrite_text_part,
    set_header,
    shown_as_text,
    text_decodings,
    tokenize_parts,
    unfold,
)

KEPT_HEADERS = frozenset(
    {
        "subject",
        "date",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
        "content-language",
        "content-description",
        "content-id",
        "accept-language",
        "importance",
        "priority",
        "sensitivity",
        "keywords",
        "comments",
        "auto-submitted",
        "thread-topic",
    }
)

INFRASTRUCTURE_HEADERS = (
    "received",
    "return-path",
    "sender",
    "reply-to",
    "bcc",
    "dkim-signature",
    "domainkey-signature",
    "authentication-results",
    "received-spf",
    "delivered-to",
    "x-original-to",
    "errors-to",
    "disposition-notification-to",
    "return-receipt-to",
    "user-agent",
    "x-mailer",
    "resent-from",
    "resent-sender",
    "resent-to",
    "resent-cc",
    "resent-bcc",
    "resent-date",
    "resent-message-id",
    TRACE_HEADER.lower(),
)
"""Dropped inside attached messages too (where From/To/Cc are kept, tokenized)."""


log = logging.getLogger("relay.compose")

_HEADERS = mailpolicy.DEFAULT.header_factory


class UnsafeMessage(Exception):
    """The sender's real address could not be removed from the message, or the
    message is too malformed to be rewritten at all."""


class MalformedMessage(UnsafeMessage):
    """The message is too malformed for the ``email`` package to rewrite at all."""


@dataclass(frozen=True, slots=True)
class Party:
    display_name: str
    token: str
    """The party's token address."""
    real: Sequence[str]
    """The party's real addresses (the first is where mail to it goes)."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    data: bytes
    smtputf8: bool


def compose(
    msg: EmailMessage,
    *,
    sender: Party,
    recipient: Party,
    message_id: str,
    in_reply_to: Sequence[str],
    references: Sequence[str],
    hostname: str,
    source: bytes | None = None,
    shared: bool = False,
) -> Outgoing:
    """The copy of ``msg`` for ``recipient``: the bytes to deliver.  ``msg`` is
    rewritten in place on the full path.

    ``source``: the bytes ``msg`` was parsed from, given when nothing has changed
    ``msg`` since.  Then a message whose body needs no rewriting is written from
    them (``compose_unchanged``), and ``msg`` is left as it is.  ``shared``: other
    recipients' copies are ``msg`` too, so it must not change at all: when the
    message has to be rewritten, a fresh parse of ``source`` is.

    Raises UnsafeMessage if a real address of the sender is still in the result,
    or if the message is too malformed to be rewritten at all.
    """
    if source is not None:
        try:
            out = compose_unchanged(
                msg,
                source,
                sender=sender,
                recipient=recipient,
                message_id=message_id,
                in_reply_to=in_reply_to,
                references=references,
                hostname=hostname,
            )
        except Exception as exc:  # a case the fast path does not know: the full path does
            log.info("the fast path gave up (%s): the message is rewritten", type(exc).__name__)
            out = None
        if out is not None:
            return out
        if shared:
            msg = _parse(source)
    elif shared:
        raise ValueError("a shared message can only be composed from its source")
    return _compose_rewritten(
        msg,
        sender=sender,
        recipient=recipient,
        message_id=message_id,
        in_reply_to=in_reply_to,
        references=references,
        hostname=hostname,
    )


def _parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, _class=EmailMessage, policy=mailpolicy.DEFAULT)
    assert isinstance(msg, EmailMessage)
    return msg


def _compose_rewritten(
    msg: EmailMessage,
    *,
    sender: Party,
    recipient: Party,
    message_id: str,
    in_reply_to: Sequence[str],
    references: Sequence[str],
    hostname: str,
) -> Outgoing:
    """The full path: ``msg`` rewritten in place through the ``email`` object model,
    written out, and the result parsed again for the leak check."""
    smtputf8 = not recipient.real[0].isascii()
    policy = mailpolicy.SMTPUTF8 if smtputf8 else mailpolicy.SMTP
    try:
        _rewrite(msg, sender, recipient, message_id, in_reply_to, references, hostname)
        _make_writable(msg, policy)
        data = msg.as_bytes(policy=policy)
        leaked = leaks(data, sender.real)
    except Exception as exc:
        # Malformed beyond what the email package can take apart and write back: a
        # notice to the sender beats a 451 they would retry for days.  Logged with
        # the traceback, since it also means a case the rewriting should learn.
        log.warning("message cannot be rewritten", exc_info=True)
        raise MalformedMessage(f"the message cannot be rewritten ({type(exc).__name__})") from None
    if leaked:
        raise UnsafeMessage("a real address of the sender is still in the message")
    return Outgoing(data=data, smtputf8=smtputf8)


def _rewrite(
    msg: EmailMessage,
    sender: Party,
    recipient: Party,
    message_id: str,
    in_reply_to: Sequence[str],
    references: Sequence[str],
    hostname: str,
) -> None:
    amap = _address_map(sender, recipient)
    tokenize_parts(msg, amap, drop=INFRASTRUCTURE_HEADERS)
    if not msg.is_multipart() and msg.get_content_maintype() == "text":
        rewrite_text_part(msg, amap)
    _rewrite_boundary_text(msg, amap)

    kept = kept_headers(((name, str(raw)) for name, raw in msg.raw_items()), amap)
    for name in {n for n, _ in msg.raw_items()}:
        del msg[name]

    # Display names come from registrations: made safe to write whatever is stored.
    msg["From"] = addresses.format_address(names.display_name(sender.display_name), sender.token)
    msg["To"] = addresses.format_address(
        names.display_name(recipient.display_name), recipient.real[0]
    )
    for name, value in kept:
        if name.lower() == "date":
            continue
        set_header(msg, name, value)
    date = next((v for n, v in kept if n.lower() == "date"), None)
    set_header(msg, "Date", date or formatdate(localtime=False))
    if getattr(msg["Date"], "datetime", None) is None:  # missing or unparseable
        del msg["Date"]
        msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = " ".join(in_reply_to)
    if references:
        msg["References"] = " ".join(references)
    if "MIME-Version" not in msg:
        msg["MIME-Version"] = "1.0"
    msg[TRACE_HEADER] = hostname


def _address_map(sender: Party, recipient: Party) -> AddressMap:
    """Both parties' real addresses, each to its token."""
    return AddressMap(
        {**{a: sender.token for a in sender.real}, **{a: recipient.token for a in recipient.real}}
    )


def kept_headers(fields: Iterable[tuple[str, str]], amap: AddressMap) -> list[tuple[str, str]]:
    """The top-level headers the recipient gets, from the (name, raw value) pairs
    received, in order: the allow-list, addresses replaced.  MIME headers keep
    their raw (unfolded) value unless an address had to be replaced; the others
    are decoded and single-spaced.  From, To, Message-ID and threading are not
    among them: the relay writes its own."""
    kept: list[tuple[str, str]] = []
    for name, raw in fields:
        lname = name.lower()
        value = decode_header_text(raw)
        if lname in KEPT_HEADERS or (
            lname.startswith("x-")
            and lname not in INFRASTRUCTURE_HEADERS
            and not carries_infrastructure(name, value)
            and not amap.found_in(name)
        ):
            if lname.startswith("content-") or lname == "mime-version":
                new = None
                if lname in ("content-type", "content-disposition"):
                    new = rewrite_params(name, raw, amap)
                if new is None and amap.found_in(value):
                    new = amap.replace_all(value)
                kept.append((name, unfold(raw) if new is None else new))
            else:
                kept.append((name, " ".join(amap.replace_all(value).split())))
    return kept


# --- the fast path: the body as it arrived, a header section of our own ----------

_STRUCTURE_DEFECTS = (
    errors.NoBoundaryInMultipartDefect,
    errors.StartBoundaryNotFoundDefect,
    errors.CloseBoundaryNotFoundDefect,
    errors.FirstHeaderLineIsContinuationDefect,
    errors.MisplacedEnvelopeHeaderDefect,
    errors.MissingHeaderBodySeparatorDefect,
    errors.MultipartInvariantViolationDefect,
    errors.InvalidMultipartContentTransferEncodingDefect,
)
"""Defects of a MIME structure that the full path repairs as it writes the message
back (a missing boundary, a part without its empty line): such a body is not
passed on as it arrived."""

_SHAPING = ("content-type", "content-transfer-encoding")
"""The top-level headers that say how the body is read: the fast path keeps them
as received, so that the delivered copy's body reads as the one it scanned."""

_MAX_LINE = 998
"""Characters a line may have, CRLF not counted (RFC 5322 §2.1.1)."""

_PLAIN = re.compile(r"[\x20-\x7e\t]*")
"""A header value the fast path writes as it is: printable ASCII and blanks."""


def compose_unchanged(
    msg: EmailMessage,
    source: bytes,
    *,
    sender: Party,
    recipient: Party,
    message_id: str,
    in_reply_to: Sequence[str],
    references: Sequence[str],
    hostname: str,
) -> Outgoing | None:
    """The copy for ``recipient`` as a header section of the relay's own followed by
    the body of ``source`` exactly as it arrived, or with only its text parts that
    hold an address rewritten (``_body_rewritten``); None when the full path must
    write it: the body needs other rewriting, or something about the message is not
    plain enough to be sure of the result.

    ``msg`` is what ``source`` parsed to, unchanged since; it is read, never
    changed.  That one parse serves the body scan and the leak check: on this path
    the delivered copy is not parsed again, only the parts rewritten are.  The
    headers are the full path's (the same ``kept_headers``), written by
    ``relay.message.headers``; what a mail client shows of the result is what it
    shows of the full path's."""
    section = headers.split(source)
    if section is None or section.fields != [(str(n), str(v)) for n, v in msg.raw_items()]:
        return None  # the parser read the header section otherwise: it knows best
    amap = _address_map(sender, recipient)
    body = source[section.body :]
    fields = section.fields
    smtputf8 = not recipient.real[0].isascii()
    rewritten: list[tuple[bytes, EmailMessage]] = []
    if not _body_kept(msg, body, amap):
        policy = mailpolicy.SMTPUTF8 if smtputf8 else mailpolicy.SMTP
        new = _body_rewritten(msg, fields, body, amap, policy)
        if new is None:
            return None
        fields, body, rewritten = new
    head = _header_section(
        fields,
        amap,
        sender=sender,
        recipient=recipient,
        own=[
            ("Message-ID", message_id),
            ("In-Reply-To", " ".join(in_reply_to)),
            ("References", " ".join(references)),
        ],
        hostname=hostname,
        utf8=smtputf8,
    )
    if head is None or _header_section_leaks(head, sender.real):
        return None
    if rewritten and _rewritten_leak(rewritten, amap):
        return None
    return Outgoing(data=head + b"\r\n" + body, smtputf8=smtputf8)


def _body_kept(msg: EmailMessage, body: bytes, amap: AddressMap) -> bool:
    """Whether the full path would leave the body as it is: no spelling of either
    party's address in the bytes, CRLF line ends only (the full path writes them),
    no attached message (always rewritten), no multipart without a usable
    boundary (written as text), no defect in the MIME structure, no header of a
    part dropped or rewritten, and no address in what a client shows of the parts
    either (their headers and parameters, preambles and epilogues, text in every
    plausible charset).

    That scan is also the leak check of the body: the delivered copy has these
    bytes under the same Content-Type and Content-Transfer-Encoding, so it parses
    to this same tree."""
    if amap.found_in_bytes(body) or not headers.crlf_only(body):
        return False
    for part in msg.walk():
        maintype = part.get_content_maintype()
        if maintype == "message" or (maintype == "multipart" and not part.is_multipart()):
            return False
        if any(isinstance(defect, _STRUCTURE_DEFECTS) for defect in part.defects):
            return False
        if part is not msg and (
            not headers_kept_as_they_are(part, amap, drop=INFRASTRUCTURE_HEADERS)
            or _headers_leak(part, amap)
        ):
            return False
        if _content_leaks(part, amap):
            return False
    return True


_SPLIT = ("mixed", "alternative")
"""The multipart subtypes whose parts the fast path rewrites one by one."""


def _body_rewritten(
    msg: EmailMessage,
    fields: list[tuple[str, str]],
    body: bytes,
    amap: AddressMap,
    policy: email.policy.EmailPolicy[EmailMessage],
) -> tuple[list[tuple[str, str]], bytes, list[tuple[bytes, EmailMessage]]] | None:
    """The body with only the parts that hold an address rewritten, as the full path
    rewrites them, and every other part passed on as the bytes it arrived as; None
    when the full path must write it.

    Returns the top-level fields the header section is written from (those of a
    single text part change with its text: set_content writes a new Content-Type
    and Content-Transfer-Encoding, last, as the full path has them), the new body,
    and each rewritten part as written and as parsed again, for the leak check.

    A single text part is rewritten whole.  A multipart/mixed or /alternative (with
    at most one multipart/alternative inside a mixed) is split on its delimiter
    lines (RFC 2046 §5.1.1), and the split must agree with the parser's: as many
    parts, the same part headers, the same text.  Whatever else would make the
    full path change the body (an attached message, a part header to drop or
    rewrite, an address in a preamble, epilogue or a part that is not text, a MIME
    structure with a defect) is left to the full path."""
    if not headers.crlf_only(body):
        return None
    for part in msg.walk():
        maintype = part.get_content_maintype()
        if maintype == "message" or (maintype == "multipart" and not part.is_multipart()):
            return None
        if any(isinstance(defect, _STRUCTURE_DEFECTS) for defect in part.defects):
            return None
        if part is not msg and (
            not headers_kept_as_they_are(part, amap, drop=INFRASTRUCTURE_HEADERS)
            or _headers_leak(part, amap)
        ):
            return None
        if any(amap.found_in(getattr(part, attr, None) or "") for attr in ("preamble", "epilogue")):
            return None
    written: list[tuple[bytes, EmailMessage]] = []
    if not msg.is_multipart():
        return _single_rewritten(msg, fields, body, amap, policy)
    if msg.get_content_subtype() not in _SPLIT:
        return None
    new = _parts_rewritten(msg, body, amap, policy, written, ())
    if new is None or not written:
        return None
    return fields, new, written


def _single_rewritten(
    msg: EmailMessage,
    fields: list[tuple[str, str]],
    body: bytes,
    amap: AddressMap,
    policy: email.policy.EmailPolicy[EmailMessage],
) -> tuple[list[tuple[str, str]], bytes, list[tuple[bytes, EmailMessage]]] | None:
    """A message that is one text part: its MIME headers and body parsed alone and
    rewritten as the full path rewrites the message (``rewrite_text_part``)."""
    if msg.get_content_maintype() != "text":
        return None
    mime = [
        (name, value)
        for name, value in fields
        if name.lower().startswith("content-") or name.lower() == "mime-version"
    ]
    raw = b"".join(f"{n}: {v}\r\n".encode("ascii", "surrogateescape") for n, v in mime)
    new = _leaf_rewritten(raw + b"\r\n" + body, amap, policy)
    if new is None:
        return None
    part, data, parsed = new
    others = [(n, v) for n, v in fields if not n.lower().startswith("content-")]
    ours = [(str(n), str(v)) for n, v in part.raw_items() if str(n).lower().startswith("content-")]
    _head, sep, text = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    return [*others, *ours], text, [(text, parsed)]


def _leaf_rewritten(
    raw: bytes, amap: AddressMap, policy: email.policy.EmailPolicy[EmailMessage]
) -> tuple[EmailMessage, bytes, EmailMessage] | None:
    """One text part (its headers and body) parsed, rewritten and written as the full
    path rewrites and writes it; with it the part in memory and the written bytes
    parsed again.  None if it is not a plain text part, if nothing was replaced, or
    if the written part does not read as the one in memory (its type, parameters
    and transfer encoding).  Whether an address survived is ``_rewritten_leak``'s
    to say."""
    part = _parse(raw)
    if part.is_multipart() or part.get_content_maintype() != "text" or part.defects:
        return None
    if not rewrite_text_part(part, amap):
        return None
    data = part.as_bytes(policy=policy)
    parsed = _parse(data)
    if not headers.crlf_only(data) or _reads(parsed) != _reads(part):
        return None
    return part, data, parsed


def _reads(part: Message) -> tuple[object, ...]:
    """How a client reads a part's body: its type, parameters, transfer encoding."""
    cte = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    params = dict(getattr(part.get("Content-Type"), "params", None) or {})
    return part.get_content_type(), params, cte


def _parts_rewritten(
    container: Message,
    body: bytes,
    amap: AddressMap,
    policy: email.policy.EmailPolicy[EmailMessage],
    written: list[tuple[bytes, EmailMessage]],
    enclosing: tuple[bytes, ...],
) -> bytes | None:
    """The body of a multipart, its parts rewritten or copied (``_part_rewritten``);
    its preamble, delimiter lines and epilogue as they arrived."""
    boundary = container.get_boundary()
    parts = container.get_payload()
    if not boundary or not _PLAIN.fullmatch(boundary) or not isinstance(parts, list):
        return None
    delimiter = b"--" + boundary.encode("ascii")
    enclosing = (*enclosing, delimiter)
    lines = _delimiter_lines(body, delimiter)
    if (
        len(lines) != len(parts) + 1
        or any(line.group(1) for line in lines[:-1])
        or not lines[-1].group(1)
        or amap.found_in_bytes(body[: lines[0].start()])
        or amap.found_in_bytes(body[lines[-1].end() :])
    ):
        return None
    out = [body[: lines[0].end()]]
    for i, part in enumerate(parts):
        start, end = lines[i].end(), lines[i + 1].start() - 2
        if end < start or not lines[i].group(0).endswith(b"\r\n") or body[end : end + 2] != b"\r\n":
            return None
        new = _part_rewritten(container, part, body[start:end], amap, policy, written, enclosing)
        if new is None:
            return None
        out += [new, body[end : lines[i + 1].end()]]
    out.append(body[lines[-1].end() :])
    return b"".join(out)


def _delimiter_lines(body: bytes, delimiter: bytes) -> list[re.Match[bytes]]:
    """The delimiter lines of a multipart's body as the parser finds them: a line
    that starts with the delimiter, then "--" if it is the closing one, then blanks
    and the line end.  Looked for with ``bytes.find`` (a regex anchored at line
    starts tries every position of a 200 KB attachment)."""
    rest = re.compile(re.escape(delimiter) + rb"(--)?[ \t]*(?:\r\n|\Z)")
    lines = []
    at = body.find(delimiter)
    while at >= 0:
        if at == 0 or body[at - 1] == 0x0A:  # at the start of a line
            line = rest.match(body, at)
            if line:
                lines.append(line)
        at = body.find(delimiter, at + 1)
    return lines


def _part_rewritten(
    container: Message,
    part: Message,
    chunk: bytes,
    amap: AddressMap,
    policy: email.policy.EmailPolicy[EmailMessage],
    written: list[tuple[bytes, EmailMessage]],
    enclosing: tuple[bytes, ...],
) -> bytes | None:
    """One part of a multipart: ``chunk`` (the bytes between its delimiter lines) if
    the full path leaves it as it is (no spelling of an address in its bytes or
    its decoded text), else a text part rewritten (``_leaf_rewritten``) or a
    multipart/alternative inside a mixed whose parts are.  None if its bytes do not
    read as the parser read them, or if something else would change."""
    section = headers.split(chunk)
    if section is None or section.fields != [(str(n), str(v)) for n, v in part.raw_items()]:
        return None
    if part.is_multipart():
        if (
            len(enclosing) != 1
            or container.get_content_subtype() != "mixed"
            or part.get_content_subtype() != "alternative"
        ):
            return None
        inner = _parts_rewritten(part, chunk[section.body :], amap, policy, written, enclosing)
        return None if inner is None else chunk[: section.body] + inner
    text = chunk[section.body :]
    if text.isascii() and part.get_payload() != text.decode("ascii"):
        return None  # not the text the parser took for this part
    if not amap.found_in_bytes(chunk) and not _content_leaks(part, amap):
        return chunk
    if part.get_content_maintype() != "text":
        return None
    new = _leaf_rewritten(chunk, amap, policy)
    if new is None:
        return None
    _part, data, parsed = new
    if any(delimiter in data for delimiter in enclosing):
        return None  # it would end the part early
    written.append((data, parsed))
    return data


def _rewritten_leak(rewritten: Sequence[tuple[bytes, EmailMessage]], check: AddressMap) -> bool:
    """The leak check of the rewritten parts, as ``leaks`` checks a whole message:
    their bytes, and their headers and text as parsed again from those bytes.  It
    looks for both parties' addresses (``check`` is the copy's address map): one
    still there means the full path would not have written the part this way
    either (it rewrites a single text part twice).  The parts passed on as they
    arrived need no check: ``_body_rewritten`` found no spelling of either party's
    address in them."""
    return any(
        check.found_in_bytes(data) or any(_part_leaks(p, check) for p in parsed.walk())
        for data, parsed in rewritten
    )


def _header_section(
    fields: Sequence[tuple[str, str]],
    amap: AddressMap,
    *,
    sender: Party,
    recipient: Party,
    own: Sequence[tuple[str, str]],
    hostname: str,
    utf8: bool,
) -> bytes | None:
    """The full path's header section (``_rewrite``), in its order, as bytes; None
    if a value is one the fast path does not write: a MIME header that is not
    plain ASCII or that changed how the body reads, or any value holding ``=?``
    (whether a client decodes it again is not for this path to guess)."""
    out = [
        headers.address_field(
            "From", names.display_name(sender.display_name), sender.token, utf8=utf8
        ),
        headers.address_field(
            "To", names.display_name(recipient.display_name), recipient.real[0], utf8=utf8
        ),
    ]
    received: dict[str, str] = {}
    for name, raw in fields:
        received.setdefault(name.lower(), unfold(raw))
    written = {"from": 1, "to": 1}
    kept = kept_headers(fields, amap)
    for name, value in kept:
        lname = name.lower()
        limit = mailpolicy.DEFAULT.header_max_count(name)
        if lname == "date" or (limit is not None and written.get(lname, 0) >= limit):
            continue  # a second Subject is left out (set_header)
        written[lname] = written.get(lname, 0) + 1
        value = clean_header_value(value)
        if "=?" in value:
            return None
        if lname.startswith("content-") or lname == "mime-version":
            if not _PLAIN.fullmatch(value) or (lname in _SHAPING and value != received[lname]):
                return None
            out.append(headers.raw_field(name, value))
        else:
            out.append(headers.text_field(name, value, utf8=utf8))
    date = next((v for n, v in kept if n.lower() == "date"), None)
    ours = [("Date", _date(date)), *((n, v) for n, v in own if v)]
    if "mime-version" not in written:
        ours.append(("MIME-Version", "1.0"))
    ours.append((TRACE_HEADER, hostname))
    for name, value in ours:
        if not _PLAIN.fullmatch(value) or "=?" in value:
            return None
        out.append(headers.text_field(name, value, utf8=False))
    head = b"".join(out)
    if any(len(line) > _MAX_LINE for line in head.split(b"\r\n")):
        return None  # a word too long to fold (a huge field name): the full path copes
    return head


def _date(value: str | None) -> str:
    """The Date the full path writes: the sender's, as the ``email`` package
    rewrites a date it parses, or the time now if there is none that parses."""
    if value:
        with contextlib.suppress(Exception):
            return format_datetime(parsedate_to_datetime(clean_header_value(value)))
    return formatdate(localtime=False)


def _header_section_leaks(head: bytes, real: Sequence[str]) -> bool:
    """``leaks`` for a header section alone: its bytes, and its headers and
    parameters decoded as a client reads them (only these bytes are parsed)."""
    check = AddressMap(dict.fromkeys(real, "x@x"))
    if check.found_in_bytes(head):
        return True
    top = BytesHeaderParser(_class=EmailMessage, policy=mailpolicy.DEFAULT).parsebytes(head)
    return _headers_leak(top, check)


# --- the full path -------------------------------------------------------------


def _make_writable(msg: EmailMessage, policy: email.policy.EmailPolicy[EmailMessage]) -> None:
    """Headers the ``email`` package would fail to write (it raises on some
    malformed address lists, and on raw 8-bit bytes in a header it must refold)
    are replaced by their text, so that one bad header does not sink a message."""
    for part in msg.walk():
        for name, value in list(part.raw_items()):
            try:
                policy.fold_binary(name, value)
            except Exception:
                _replace_as_text(part, name, policy)


def _replace_as_text(
    part: Message, name: str, policy: email.policy.EmailPolicy[EmailMessage]
) -> None:
    values = [v for n, v in part.raw_items() if n.lower() == name.lower()]
    del part[name]
    for value in values:
        try:
            policy.fold_binary(name, value)
            part[name] = value if isinstance(value, BaseHeader) else clean_header_value(value)
        except Exception:
            text = header_as_text(name, str(value))
            with contextlib.suppress(Exception):  # unwritable even as text: left out
                policy.fold_binary(name, text)
                part[name] = text


def _rewrite_boundary_text(msg: EmailMessage, amap: AddressMap) -> None:
    for part in msg.walk():
        for attr in ("preamble", "epilogue"):
            text = getattr(part, attr, None)
            if text and amap.found_in(text):
                setattr(part, attr, amap.replace_all(text))


def leaks(data: bytes, real: Sequence[str]) -> bool:
    """Whether any spelling of the ``real`` addresses is in the bytes, or in what a
    mail client shows of them: decoded headers and parameters, decoded text parts
    (quoted-printable and base64 hide addresses from a byte scan), attached messages
    sent encoded.  The bytes are parsed afresh, as the recipient's client will."""
    check = AddressMap(dict.fromkeys(real, "x@x"))
    if check.found_in_bytes(data):
        return True
    delivered = email.message_from_bytes(data, _class=EmailMessage, policy=mailpolicy.DEFAULT)
    return any(_part_leaks(part, check) for part in delivered.walk())


def _part_leaks(part: Message, check: AddressMap) -> bool:
    return _headers_leak(part, check) or _content_leaks(part, check)


def _headers_leak(part: Message, check: AddressMap) -> bool:
    for name, raw in part.raw_items():
        if check.found_in(decode_header_text(str(raw))):
            return True
        if name.lower() in ("content-type", "content-disposition"):
            # Parameters as two parsers read them (both raise on some malformed values).
            values: list[str] = []
            with contextlib.suppress(Exception):
                params = part.get_params([], header=name)
                values.extend(collapse_rfc2231_value(v) for _k, v in params)
            with contextlib.suppress(Exception):
                values.extend(map(str, _HEADERS(name, unfold(str(raw))).params.values()))
            if any(check.found_in(decode_header_text(v)) for v in values):
                return True
    return False


def _content_leaks(part: Message, check: AddressMap) -> bool:
    for attr in ("preamble", "epilogue"):
        if check.found_in(getattr(part, attr, None) or ""):
            return True
    payload: object = encoded_message_bytes(part)  # an attached message left encoded
    if payload is None:
        if not shown_as_text(part):
            return False
        payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return False
    decodings = text_decodings(payload, part.get_content_charset())
    return any(check.found_in(text) for text, _exact in decodings)
