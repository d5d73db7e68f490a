"""Real addresses ⇄ token addresses (SPEC §2, §4).

Tokens are 16 characters of ``[a-z0-9]`` drawn with ``secrets`` (about 82 bits),
matched case-insensitively.  ``AddressMap`` replaces every spelling of the
parties' real addresses by their tokens in text, header values and MIME parts:
plain, IDNA and Unicode domains, any letter case, and the HTML/URL spellings of
``@`` (``&#64;``, ``%40``, ``&commat;``) that would otherwise slip past a naive
search.  Replacement is deliberately greedy (no word boundaries): a real address
embedded in a longer string is still removed.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from enum import Enum
from urllib.parse import unquote

from relay import addresses

log = logging.getLogger("relay.tokenizer")

TOKEN_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
TOKEN_LENGTH = 16
_TOKEN_RE = re.compile(rf"^[a-z0-9]{{{TOKEN_LENGTH}}}$")
BOUNCE_PREFIX = "bounce+"

_AT = r"(?:@|%40|&#0*64;|&#[xX]0*40;|&commat;|\\@)"


def new_token() -> str:
    return "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(TOKEN_LENGTH))


def token_address(token: str, domain: str) -> str:
    return f"{token}@{domain}"


class LocalKind(Enum):
    FOREIGN = "foreign"
    TOKEN = "token"
    BOUNCE = "bounce"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Recipient:
    kind: LocalKind
    value: str = ""


def classify_recipient(address: str, domain: str) -> Recipient:
    """What an envelope recipient names: a token, a VERP bounce address, or nothing of ours.

    Source routes (``@a:b@c``) and the ``%`` hack are never ours: they are how open
    relays are abused (RFC 5321 §3.6.1 lets us ignore the route; we refuse it).
    """
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1]
    if address.startswith("@") or ":" in address:
        return Recipient(LocalKind.FOREIGN)
    try:
        normalized = addresses.normalize(address)
    except addresses.InvalidAddress:
        return Recipient(LocalKind.FOREIGN)
    local, _, dom = normalized.rpartition("@")
    if dom != addresses.normalize(f"x@{domain}").rpartition("@")[2]:
        return Recipient(LocalKind.FOREIGN)
    if "%" in local or "!" in local:
        return Recipient(LocalKind.FOREIGN)
    if local.startswith(BOUNCE_PREFIX):
        return Recipient(LocalKind.BOUNCE, local[len(BOUNCE_PREFIX) :])
    if _TOKEN_RE.match(local):
        return Recipient(LocalKind.TOKEN, local)
    return Recipient(LocalKind.UNKNOWN, local)


class AddressMap:
    """Replaces real addresses with token addresses, in every spelling we know."""

    def __init__(self, replacements: Mapping[str, str]) -> None:
        """``replacements`` maps real addresses to the token address that stands for them."""
        self._by_variant: dict[str, str] = {}
        for real, token in replacements.items():
            for variant in addresses.variants(real):
                self._by_variant[variant.casefold()] = token
        parts = []
        for variant in sorted(self._by_variant, key=len, reverse=True):
            local, _, domain = variant.rpartition("@")
            parts.append(re.escape(local) + _AT + re.escape(domain))
        self._pattern = re.compile("|".join(parts), re.IGNORECASE) if parts else None

    def _token_for(self, match: re.Match[str]) -> str:
        text = match.group(0)
        for spelling in ("%40", "&commat;", "\\@"):
            text = text.replace(spelling, "@")
        text = re.sub(r"&#[xX]?0*(?:64|40);", "@", text)
        return self._by_variant.get(text.casefold(), next(iter(self._by_variant.values())))

    def search(self, text: str) -> bool:
        return bool(self._pattern and self._pattern.search(text))

    def replace(self, text: str) -> str:
        if not self._pattern:
            return text
        return self._pattern.sub(self._token_for, text)

    def found_in(self, text: str) -> bool:
        """Also looks through percent-encoding, for URLs and RFC 2231 parameters."""
        return self.search(text) or ("%" in text and self.search(unquote(text, errors="replace")))


def decode_header_text(raw: str) -> str:
    """A raw header value with RFC 2047 encoded words decoded; never raises.

    Raw 8-bit bytes (kept by the parser as surrogate escapes) are read as UTF-8,
    with undecodable bytes replaced, so that what we write out is always valid.
    """
    raw = raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    try:
        return str(make_header(decode_header(raw)))
    except Exception:  # malformed encoded words: keep the raw text
        return raw


def _decoded_text(part: Message) -> tuple[str, bool] | None:
    """The decoded text of a text part and whether decoding was exact."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return None
    charset = part.get_content_charset() or "us-ascii"
    try:
        return payload.decode(charset), True
    except (LookupError, UnicodeDecodeError):
        try:
            return payload.decode("utf-8"), True
        except UnicodeDecodeError:
            return payload.decode("latin-1"), False


def rewrite_text_part(part: EmailMessage, amap: AddressMap) -> bool:
    """Replace real addresses in one text/* part; returns True if it changed.

    The part is re-encoded as UTF-8 only if something was replaced, so untouched
    parts keep their bytes exactly.
    """
    decoded = _decoded_text(part)
    if decoded is None:
        return False
    text, _exact = decoded
    if not amap.found_in(text):
        return False
    new = amap.replace(text)
    if amap.found_in(new):  # only percent-encoded forms are left: decode them too
        new = amap.replace(unquote(new, errors="replace"))
    params = {
        k: v for k, v in part.get_params(header="content-type", failobj=[])[1:] if k != "charset"
    }
    disposition = part.get_content_disposition()
    filename = part.get_filename()
    cid = part.get("Content-ID")
    part.set_content(
        new,
        subtype=part.get_content_subtype(),
        charset="utf-8",
        disposition=disposition,
        filename=amap.replace(filename) if filename else None,
        cid=str(cid) if cid else None,
        params=params or None,
    )
    return True


def rewrite_header_value(raw: str, amap: AddressMap) -> str | None:
    """The header value with addresses replaced, or None if it had none."""
    decoded = decode_header_text(raw)
    if not (amap.found_in(raw) or amap.found_in(decoded)):
        return None
    new = amap.replace(decoded)
    if amap.found_in(new):
        new = amap.replace(unquote(new, errors="replace"))
    return " ".join(new.split())


def rewrite_headers(part: Message, amap: AddressMap, *, drop: Iterable[str] = ()) -> None:
    """Replace addresses in every header of ``part``; drop the headers named in ``drop``."""
    dropped = {name.lower() for name in drop}
    items = list(part.raw_items()) if isinstance(part, EmailMessage) else list(part.items())
    changed = False
    kept: list[tuple[str, str]] = []
    for name, value in items:
        if name.lower() in dropped or _is_dropped_pattern(name):
            changed = True
            continue
        new = rewrite_header_value(str(value), amap)
        if new is not None:
            changed = True
            kept.append((name, new))
        else:
            kept.append((name, str(value)))
    if not changed:
        return
    for name in {n for n, _ in items}:
        del part[name]
    for name, value in kept:
        try:
            part[name] = value
        except Exception:  # a header the policy cannot represent: leave it out
            log.info("dropped unrepresentable header %s", name)


def tokenize_parts(msg: EmailMessage, amap: AddressMap, *, drop: Iterable[str]) -> None:
    """Rewrite every MIME part below the top level (the top-level headers are the
    composer's business): text bodies and part headers everywhere, headers of
    attached messages too, minus the infrastructure headers in ``drop``."""
    for part in msg.walk():
        if part is not msg:
            rewrite_headers(part, amap, drop=drop)
        if part.get_content_maintype() == "text" and not part.is_multipart():
            assert isinstance(part, EmailMessage)
            rewrite_text_part(part, amap)


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
    vendor trace header) and so must not reach the other party (SPEC §4)."""
    return _is_dropped_pattern(name) or bool(_IP_RE.search(value))
