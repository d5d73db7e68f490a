"""Real addresses ⇄ token addresses (SECURITY.md, "Nothing real leaks").

The tokens themselves are ``relay.core.tokens``.  ``AddressMap`` replaces every spelling of the
parties' real addresses by their tokens in text, header values and MIME parts:
plain, IDNA and Unicode domains, any letter case, and the HTML/URL/QP spellings
of any of their characters (``&#64;``, ``&#x6d;``, ``%40``, ``&commat;``, ``=40``)
that would otherwise slip past a naive search.  Replacement is deliberately
greedy (no word boundaries): a real address embedded in a longer string is still
removed.

Headers are read the way a mail client (and the ``email`` package, when a value
is set) reads them: encoded words decoded leniently and repeatedly, RFC 2231
parameters joined and decoded.  Parts are rewritten the way a client shows them:
text parts in whichever plausible charset reveals an address, attached messages
even when (wrongly) base64-encoded, a multipart without a boundary as the text
it is.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import email
import email.policy
import email.utils
import functools
import html
import logging
import quopri
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from email.header import decode_header, make_header
from email.headerregistry import (
    BaseHeader,
    ContentDispositionHeader,
    ContentTypeHeader,
    HeaderRegistry,
)
from email.message import EmailMessage, Message
from urllib.parse import unquote

from relay.core import addresses
from relay.message import mailpolicy

log = logging.getLogger("relay.tokenizer")

_EXTRA_SPELLINGS = {
    "@": (r"&commat;", r"\\@"),
    ".": (r"&period;",),
    "-": (r"&hyphen;", r"&dash;"),
    "_": (r"&lowbar;", r"&UnderBar;"),
    "+": (r"&plus;",),
}
"""Named HTML entities (and the backslash-escaped ``@``) for characters of addresses."""

_AT_SPELLINGS = re.compile(r"@|&|%|=40")
"""What every spelling of ``@`` in ``_char_pattern`` starts with or is."""
_AT_FIRST = ("@", "&", "%", "=40")
"""The same, for a first look: text with none of these holds no address."""
_AT_FIRST_BYTES = tuple(at.encode("ascii") for at in _AT_FIRST)
_LONGEST_SPELLING = 16
"""Characters the longest spelling of one address character can take: ``&#x`` with
eight zeros, two hex digits and ``;`` is 14 (``%e1%ba%a1`` is 9)."""


@functools.lru_cache(maxsize=4096)
def _char_pattern(ch: str) -> str:
    """A regex for one character of an address in any spelling a mail client or a
    browser would show as that character: itself (either case), a decimal or hex
    HTML entity, a named entity, percent-encoding (URLs, RFC 2231) or ``=XX``
    (quoted-printable and Q-encoded words that were not decoded)."""
    alts = {re.escape(ch)}
    for c in {ch.lower(), ch.upper()} - {""}:
        if len(c) != 1:  # "ß".upper() == "SS": the IGNORECASE match covers those
            continue
        code = ord(c)
        # Leading zeros are bounded so that a match has a bounded length (see
        # ``AddressMap.search``); more of them are caught by ``found_in``'s unescaping.
        alts.add(f"&#0{{0,8}}{code};")
        alts.add(f"&#[xX]0{{0,8}}{code:x};")
        encoded = c.encode("utf-8")
        alts.add("".join(f"%{b:02x}" for b in encoded))
        alts.add("".join(f"={b:02x}" for b in encoded))
    alts.update(_EXTRA_SPELLINGS.get(ch, ()))
    pattern = "(?:" + "|".join(sorted(alts, key=len, reverse=True)) + ")"
    if ch == "@":  # "maria @ example.com", and the (obsolete) CFWS around it in headers
        pattern = rf"\s{{0,3}}{pattern}\s{{0,3}}"
    return pattern


def _spelled(variant: str) -> str:
    return "".join(_char_pattern(ch) for ch in variant)


class AddressMap:
    """Replaces real addresses with token addresses, in every spelling we know."""

    def __init__(self, replacements: Mapping[str, str]) -> None:
        """``replacements`` maps real addresses to the token address that stands for them."""
        self._tokens: list[str] = []
        groups = []
        first = {"&", "%", "="}  # how an entity or an escape starts
        for real, token in replacements.items():
            spellings = sorted(
                {s for v in addresses.variants(real) for s in (v, v.casefold())},
                key=len,
                reverse=True,
            )
            groups.append(f"(?P<t{len(self._tokens)}>" + "|".join(map(_spelled, spellings)) + ")")
            self._tokens.append(token)
            first.update(c for v in spellings for c in (v[0].lower(), v[0].upper()))
        # The lookahead lets the scan skip most positions at the cost of one test.
        lead = "(?=[" + "".join(re.escape(c) for c in sorted(first)) + "])"
        self._pattern = (
            re.compile(f"{lead}(?:{'|'.join(groups)})", re.IGNORECASE) if groups else None
        )
        longest = max(
            (len(v) for real in replacements for v in addresses.variants(real)), default=0
        )
        self._reach = longest * _LONGEST_SPELLING + 8

    def _token_for(self, match: re.Match[str]) -> str:
        assert match.lastgroup is not None
        return self._tokens[int(match.lastgroup[1:])]

    def search(self, text: str) -> bool:
        """Whether ``text`` holds an address, in any spelling.

        Every spelling of an address contains a spelling of ``@``, so the full
        pattern only runs in windows around those: a 200 KB base64 attachment,
        which has none, costs four substring tests (each many times faster than
        the scan for them) instead of a regex try per position.
        """
        if not self._pattern or not any(at in text for at in _AT_FIRST):
            return False
        end = -1  # the text up to here has been searched
        for at in _AT_SPELLINGS.finditer(text):
            if at.end() <= end:
                continue
            start = max(at.start() - self._reach, end, 0)
            end = at.end() + self._reach
            if self._pattern.search(text, start, end):
                return True
        return False

    def replace(self, text: str) -> str:
        if not self._pattern or not self.search(text):
            return text
        return self._pattern.sub(self._token_for, text)

    def found_in(self, text: str) -> bool:
        """Also looks through percent-encoding and HTML entities applied more than
        once (``%2540``, ``&amp;#64;``)."""
        if self.search(text):
            return True
        if "%" in text and self.search(unquote(text, errors="replace")):
            return True
        return "&" in text and self.search(html.unescape(text))

    def found_in_bytes(self, data: bytes) -> bool:
        """``found_in`` for bytes, read as Latin-1 and as UTF-8 (undecodable bytes
        replaced), as a mail client may show them.  Bytes without any ASCII start
        of a spelling of ``@`` are passed over undecoded: neither reading can show
        an ASCII character that is not in the bytes."""
        if not self._pattern or not any(at in data for at in _AT_FIRST_BYTES):
            return False
        return self.found_in(data.decode("latin-1")) or self.found_in(
            data.decode("utf-8", "replace")
        )

    def replace_all(self, text: str) -> str:
        """``replace``, then, if an address is still hidden behind a second layer of
        percent-encoding or HTML entities, that layer is decoded and replaced too."""
        new = self.replace(text)
        for unwrap in (lambda t: unquote(t, errors="replace"), html.unescape):
            if self.found_in(new):
                new = self.replace(unwrap(new))
        return new


_HEADER_FACTORY = mailpolicy.DEFAULT.header_factory


def _decode_once(text: str) -> str:
    """One round of RFC 2047 decoding, as leniently as the ``email`` package does
    when a header is set (which is what a written header will say), or, failing
    that, as the legacy decoder does."""
    try:
        decoded = str(_HEADER_FACTORY("x-decoded", text))
    except Exception:  # the lenient parser gave up: try the strict one
        decoded = text
    if decoded == text:
        try:
            decoded = str(make_header(decode_header(text)))
        except Exception:  # malformed encoded words: keep the text
            decoded = text
    return decoded


def unfold(value: str) -> str:
    """A raw (folded) header value on one line, as it can be set again: the
    ``email`` package refuses values with line breaks."""
    return "".join(value.splitlines())


def decode_header_text(raw: str) -> str:
    """A raw header value with RFC 2047 encoded words decoded; never raises.

    Raw 8-bit bytes (kept by the parser as surrogate escapes) are read as UTF-8,
    with undecodable bytes replaced, so that what we write out is always valid.
    Decoding is repeated until nothing changes: setting a header decodes encoded
    words in the value again, so an encoded word that decodes to another encoded
    word must not hide an address from us.
    """
    text = unfold(without_surrogates(raw))
    for _ in range(5):
        if "=?" not in text:
            break
        decoded = _decode_once(text)
        if decoded == text:
            break
        text = decoded
    return text


def text_decodings(payload: bytes, charset: str | None) -> Iterator[tuple[str, bool]]:
    """The ways a mail client may read a text body, best first: the declared charset,
    UTF-16 if there is its byte order mark, UTF-8 (the usual mislabelling), the
    declared charset with undecodable bytes replaced, Latin-1; each with whether it
    decoded exactly."""
    charset = charset or "us-ascii"
    tries = [(charset, "strict"), ("utf-8", "strict"), (charset, "replace")]
    if payload.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # clients sniff it
        tries.insert(1, ("utf-16", "replace"))
    for name, errors in tries:
        try:
            yield payload.decode(name, errors), errors == "strict"
        except (LookupError, UnicodeDecodeError, ValueError):  # ValueError: NUL in the name
            continue
    yield payload.decode("latin-1"), False


def _decodings(part: Message) -> Iterator[tuple[str, bool]]:
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        yield from text_decodings(payload, part.get_content_charset())


def shown_as_text(part: Message) -> bool:
    """Whether a mail client shows this (non-multipart) part as text: text/*, a
    syntactically invalid type (RFC 2045 §5.2: that means text/plain), or a
    multipart the parser could not split (no usable boundary)."""
    if part.is_multipart():
        return False
    return part.get_content_maintype() in ("text", "multipart") or not _VALID_TYPE.match(
        part.get_content_type()
    )


def _decoded_text(part: Message, amap: AddressMap) -> tuple[str, bool] | None:
    """The decoded text of a text part and whether decoding was exact: the first
    decoding in which an address shows, else the best one."""
    first = None
    for text, exact in _decodings(part):
        if amap.found_in(text):
            return text, exact
        first = first or (text, exact)
    return first


_CONTENT_HEADERS_KEPT_BY_SET_CONTENT = frozenset(
    {"content-type", "content-transfer-encoding", "content-disposition", "content-id"}
)


def rewrite_text_part(
    part: EmailMessage, amap: AddressMap, *, subtype: str | None = None, always: bool = False
) -> bool:
    """Replace real addresses in one text/* part; returns True if it changed.

    The part is re-encoded as UTF-8 only if something was replaced (or ``always``),
    so untouched parts keep their bytes exactly.  ``subtype`` overrides the part's
    own (a defective multipart without a boundary is rewritten as the text it is).
    """
    decoded = _decoded_text(part, amap)
    if decoded is None:
        return False
    text, _exact = decoded
    if not (always or amap.found_in(text)):
        return False
    set_part_text(part, amap.replace_all(text), subtype=subtype, rename=amap.replace_all)
    return True


def set_part_text(
    part: EmailMessage,
    new: str,
    *,
    subtype: str | None = None,
    rename: Callable[[str], str] = lambda value: value,
) -> None:
    """Replace the text of a (leaf) part, re-encoded as UTF-8, keeping its
    disposition, file name, Content-ID and other descriptive headers; ``rename``
    is applied to the file name and the Content-Type parameters."""
    params = {  # format=flowed, method=REQUEST...: only a text type's own mean anything
        k: rename(email.utils.collapse_rfc2231_value(v))
        for k, v in part.get_params(header="content-type", failobj=[])[1:]
        if k not in ("charset", "boundary") and part.get_content_maintype() == "text"
    }
    disposition = part.get_content_disposition()
    filename = part.get_filename()
    cid = part.get("Content-ID")
    # set_content drops every Content-* header: keep the descriptive ones.
    others = [
        (name, unfold(str(value)))
        for name, value in _raw_items(part)
        if name.lower().startswith("content-")
        and name.lower() not in _CONTENT_HEADERS_KEPT_BY_SET_CONTENT
    ]
    subtype = subtype or part.get_content_subtype()
    had_mime_version = "MIME-Version" in part
    if part.get_content_maintype() != "text":
        del part["Content-Type"]  # set_content refuses to write text into a multipart
    part.set_content(
        new,
        subtype=subtype,
        charset="utf-8",
        disposition=disposition,
        filename=rename(filename) if filename else None,
        cid=str(cid) if cid else None,
        params=params or None,
    )
    for name, value in others:
        set_header(part, name, value)
    if not had_mime_version:  # set_content adds one, which belongs on the message only
        del part["MIME-Version"]


def _raw_items(part: Message) -> list[tuple[str, str]]:
    """The headers as received: reading them through the policy parses them, which
    raises on some malformed address headers."""
    return [(str(name), str(value)) for name, value in part.raw_items()]


_AS_TEXT = HeaderRegistry(use_default_map=False)
"""Makes every header unstructured text: for values whose own syntax is too broken
for the ``email`` package to parse or to fold (it raises on some of them)."""


def clean_header_value(value: str) -> str:
    """A raw header value that can be set again: unfolded, raw 8-bit bytes read as
    UTF-8 (undecodable ones replaced)."""
    return unfold(without_surrogates(value))


def without_surrogates(text: str) -> str:
    """Raw 8-bit bytes (which the parser keeps as surrogate escapes) read as UTF-8,
    undecodable ones (and any other lone surrogate) replaced."""
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that is not an escaped byte
        data = text.encode("utf-8", "replace")
    return data.decode("utf-8", "replace")


def header_as_text(name: str, value: str) -> BaseHeader:
    """``value`` as an unstructured header; Content-* headers are made ASCII, since
    the MIME machinery reads them back as text."""
    value = clean_header_value(value)
    if name.lower().startswith("content-"):
        value = value.encode("ascii", "replace").decode("ascii")
    header: BaseHeader = _AS_TEXT(name, value)
    return header


def set_header(part: Message, name: str, value: str) -> None:
    """Add a header; a value its header's syntax cannot carry is kept as text, a
    header beyond the number a message may have (a second Subject) is left out."""
    limit = part.policy.header_max_count(name)
    present = sum(1 for n, _v in part.raw_items() if n.lower() == name.lower())
    if limit is not None and present >= limit:
        log.info("dropped extra header %s", name)
        return
    try:
        part[name] = clean_header_value(value)
    except Exception:  # a value its header's syntax cannot carry: keep it as text
        part[name] = header_as_text(name, value)


def rewrite_header_value(raw: str, amap: AddressMap) -> str | None:
    """The header value with addresses replaced, or None if it had none."""
    decoded = decode_header_text(raw)
    if not (amap.found_in(raw) or amap.found_in(decoded)):
        return None
    return " ".join(amap.replace_all(decoded).split())


_PARAMETERIZED = ("content-type", "content-disposition")


def rewrite_params(name: str, value: str, amap: AddressMap) -> str | None:
    """A Content-Type or Content-Disposition value rebuilt with addresses replaced
    in its parameters, or None if none has one.

    Parameters are looked at as a mail client reads them: RFC 2231 continuations
    joined and percent-decoded, encoded words decoded; an address split over
    ``filename*0*``/``filename*1*`` is invisible in the raw text.
    """
    try:
        header = _HEADER_FACTORY(name, unfold(value))
    except Exception:  # unparseable: the textual replacement is all we can do
        return None
    if isinstance(header, ContentTypeHeader):
        main = header.content_type
    elif isinstance(header, ContentDispositionHeader):
        main = header.content_disposition or "attachment"
    else:
        return None
    params = {k: decode_header_text(str(v)) for k, v in header.params.items()}
    if not any(amap.found_in(v) for v in params.values()):
        return None
    pieces = [main]
    for key, val in params.items():
        new = amap.replace_all(val)
        if new.isascii():
            pieces.append(f'{key}="{email.utils.quote(new)}"')
        else:
            pieces.append(f"{key}*={email.utils.encode_rfc2231(new, 'utf-8')}")
    return "; ".join(pieces)


def rewrite_headers(part: Message, amap: AddressMap, *, drop: Iterable[str] = ()) -> None:
    """Replace addresses in every header of ``part``; drop the headers named in ``drop``."""
    dropped = {name.lower() for name in drop}
    items = _raw_items(part)
    changed = False
    kept: list[tuple[str, str]] = []
    for name, value in items:
        dropping, new = _rewritten_header(name, value, amap, dropped)
        if dropping:
            changed = True
            continue
        if new is not None:
            changed = True
            kept.append((name, new))
        else:
            kept.append((name, unfold(str(value))))
    if not changed:
        return
    for name in {n for n, _ in items}:
        del part[name]
    for name, value in kept:
        set_header(part, name, value)


def headers_kept_as_they_are(part: Message, amap: AddressMap, *, drop: Iterable[str]) -> bool:
    """Whether ``rewrite_headers`` would leave every header of ``part`` as it is."""
    dropped = {name.lower() for name in drop}
    return all(
        _rewritten_header(name, value, amap, dropped) == (False, None)
        for name, value in _raw_items(part)
    )


def _rewritten_header(
    name: str, value: str, amap: AddressMap, dropped: set[str]
) -> tuple[bool, str | None]:
    """Whether a header of a MIME part is dropped, and else its value with addresses
    replaced (None: it has none)."""
    if name.lower() in dropped or _is_dropped_pattern(name) or amap.found_in(name):
        return True, None
    new = None
    if name.lower() in _PARAMETERIZED:
        new = rewrite_params(name, str(value), amap)
    if new is None:
        new = rewrite_header_value(str(value), amap)
    return False, new


def decode_encoded_messages(msg: Message) -> None:
    """Attached messages (``message/*``) sent base64 or quoted-printable encoded,
    which RFC 2046 forbids but mail clients decode and show, are decoded and parsed
    into messages, so that their headers and text parts can be rewritten like any
    other; what cannot be decoded is left for the final leak check."""
    for part in msg.walk():
        data = encoded_message_bytes(part)
        if data is None:
            continue
        inner = email.message_from_bytes(data, _class=EmailMessage, policy=mailpolicy.DEFAULT)
        part.set_payload([inner])
        del part["Content-Transfer-Encoding"]
        part["Content-Transfer-Encoding"] = "7bit" if data.isascii() else "8bit"


def encoded_message_bytes(part: Message) -> bytes | None:
    """The decoded bytes of a base64 or quoted-printable ``message/*`` part (the
    parser takes the encoded text for a message without headers), else None."""
    if part.get_content_maintype() != "message":
        return None
    cte = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    if cte not in ("base64", "quoted-printable"):
        return None
    payload = part.get_payload()
    if not isinstance(payload, list) or len(payload) != 1 or not isinstance(payload[0], Message):
        return None
    try:
        encoded = payload[0].as_bytes()
    except Exception:  # nothing we can regenerate
        return None
    return _b64decode_lenient(encoded) if cte == "base64" else quopri.decodestring(encoded)


def _b64decode_lenient(data: bytes) -> bytes | None:
    clean = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
    clean = clean[: len(clean) - len(clean) % 4 if len(clean) % 4 == 1 else len(clean)]
    try:
        return base64.b64decode(clean + b"=" * (-len(clean) % 4))
    except (binascii.Error, ValueError):
        return None


_VALID_TYPE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9a-z]+/[!#$%&'*+\-.^_`|~0-9a-z]+$")


def tokenize_parts(msg: EmailMessage, amap: AddressMap, *, drop: Iterable[str]) -> None:
    """Rewrite every MIME part below the top level (the top-level headers are the
    composer's business): text bodies and part headers everywhere, headers of
    attached messages too, minus the infrastructure headers in ``drop``."""
    decode_encoded_messages(msg)
    for part in msg.walk():
        if part is not msg:
            rewrite_headers(part, amap, drop=drop)
        if part.is_multipart():
            continue
        assert isinstance(part, EmailMessage)
        if part.get_content_maintype() == "text":
            rewrite_text_part(part, amap)
        elif part.get_content_maintype() == "multipart":
            # A multipart without a (usable) boundary: mail clients show its body as
            # text, and so do we (the email package cannot even write it back).
            rewrite_text_part(part, amap, subtype="plain", always=True)
        elif shown_as_text(part):  # an invalid Content-Type
            rewrite_text_part(part, amap, subtype="plain")


_DROPPED_PATTERNS = re.compile(
    r"^(?:arc-.*|x-originating-.*|x-.*-ip|x-sender.*|x-forwarded-.*|x-envelope-.*|x-google-.*"
    r"|x-gm-.*|x-ms-.*|x-microsoft-.*|x-received.*|x-mailer|x-source.*|x-authenticated-.*"
    r"|x-apparently-.*|x-spam-.*|x-virus-.*|x-ymail-.*|x-yahoo-.*|x-aol-.*|x-mailgun-.*"
    r"|x-ses-.*|x-sg-.*|x-mc-.*|x-php-.*|x-proofpoint-.*|x-mimecast-.*|x-ip.*)$",
    re.IGNORECASE,
)


def _is_dropped_pattern(name: str) -> bool:
    return bool(_DROPPED_PATTERNS.match(name))


_IP_RE = re.compile(
    r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])|\b(?:[0-9a-f]{1,4}:){3,7}[0-9a-f]{0,4}\b",
    re.IGNORECASE,
)


def carries_infrastructure(name: str, value: str) -> bool:
    """A header that names the sender's infrastructure (an IP address, a known
    vendor trace header) and so must not reach the other party."""
    return _is_dropped_pattern(name) or bool(_IP_RE.search(value))
