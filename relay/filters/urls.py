"""Finding URLs in text the way a reader (or a determined seller) would write them.

Caught: ``http(s)://`` and ``ftp://`` links in any case, the defanged forms
``hxxp://``, ``h**p://``, ``http[:]//``, dots written ``[.]``, ``(.)``, ``{.}``,
``[dot]`` or as full-width/ideographic dots, bare ``www.`` hosts and bare domain
names with a well-known top-level domain (``mystore.shop``) or a defanged dot
(``mystore[.]xyz``).  Domains right after ``@`` are e-mail addresses, not links.

Every finding carries its span in the searched text (for redaction) and the host
it points at, normalised for comparison with an allow-list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

_DOT = r"(?:\.|\[\.\]|\(\.\)|\{\.\}|\[dot\]|\(dot\)|\{dot\}|\s\[\.\]\s|[\u3002\uff0e\uff61])"
_OBFUSCATED_DOT = r"(?:\[\.\]|\(\.\)|\{\.\}|\[dot\]|\(dot\)|\{dot\})"
_LABEL = r"[^\W_](?:[\w-]{0,61}[^\W_])?"
_SCHEME = r"(?:h(?:tt|xx|\*\*|XX|TT)ps?|ftps?|hxxp?s?)"
_SEP = r"(?:\[:\]|\(:\)|:)\s*[/\\]{2}"
_TAIL = r"(?:[:/?#][^\s<>\"'\]\[)]*)?"

_SCHEME_URL = re.compile(
    rf"(?<![\w.])(?P<scheme>{_SCHEME}){_SEP}(?P<rest>[^\s<>\"']+)", re.IGNORECASE
)
_WWW_URL = re.compile(
    rf"(?<![\w.@/-])(?P<host>www{_DOT}{_LABEL}(?:{_DOT}{_LABEL})+){_TAIL}", re.IGNORECASE
)
_BARE = re.compile(
    rf"(?<![\w.@/-])(?P<host>{_LABEL}(?:{_DOT}{_LABEL})*{_DOT}(?P<tld>[a-z]{{2,24}}|xn--[a-z0-9-]+))"
    rf"(?![\w@-]|\.[\w])(?P<tail>{_TAIL})",
    re.IGNORECASE,
)

COMMON_TLDS = frozenset(
    [
        "com",
        "net",
        "org",
        "info",
        "biz",
        "co",
        "io",
        "me",
        "app",
        "dev",
        "shop",
        "store",
        "online",
        "site",
        "website",
        "xyz",
        "top",
        "club",
        "link",
        "click",
        "live",
        "life",
        "world",
        "today",
        "store",
        "space",
        "tech",
        "web",
        "page",
        "blog",
        "news",
        "email",
        "buy",
        "sale",
        "deals",
        "market",
        "shopping",
        "vip",
        "pro",
        "mobi",
        "asia",
        "vn",
        "ph",
        "us",
        "uk",
        "ca",
        "au",
        "de",
        "fr",
        "jp",
        "cn",
        "kr",
        "sg",
        "my",
        "th",
        "id",
        "in",
        "hk",
        "tw",
        "nz",
        "ru",
        "br",
        "mx",
        "es",
        "it",
        "nl",
        "eu",
        "ly",
        "gl",
        "gg",
        "tv",
        "cc",
        "ws",
        "bit",
    ]
)
"""Bare ``name.tld`` counts as a link only for these; with a defanged dot, any TLD."""

_DOT_RE = re.compile(_DOT, re.IGNORECASE)
_OBF_RE = re.compile(_OBFUSCATED_DOT, re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class FoundUrl:
    start: int
    end: int
    text: str
    host: str


def find_urls(text: str) -> list[FoundUrl]:
    found: list[FoundUrl] = []
    taken: list[tuple[int, int]] = []

    def add(start: int, end: int, host: str) -> None:
        if any(s < end and start < e for s, e in taken):
            return
        taken.append((start, end))
        found.append(FoundUrl(start, end, text[start:end], host))

    for m in _SCHEME_URL.finditer(text):
        rest = _trim(m.group("rest"))
        host = host_of(rest)
        if host:
            add(m.start(), m.start("rest") + len(rest), host)
    for m in _WWW_URL.finditer(text):
        add(m.start(), m.end(), normalize_host(m.group("host")))
    for m in _BARE.finditer(text):
        tld = m.group("tld").lower()
        if tld in COMMON_TLDS or tld.startswith("xn--") or _OBF_RE.search(m.group("host")):
            add(m.start(), m.end(), normalize_host(m.group("host")))
    found.sort(key=lambda f: f.start)
    return found


def _trim(rest: str) -> str:
    """Sentence punctuation after a link, and a closing bracket around it, are not
    part of it."""
    while rest and (
        rest[-1] in ".,;:!?'\""
        or (rest[-1] == ")" and rest.count("(") < rest.count(")"))
        or (rest[-1] == "]" and rest.count("[") < rest.count("]"))
    ):
        rest = rest[:-1]
    return rest


def host_of(rest: str) -> str:
    """The host of what follows ``scheme://``: userinfo, port and path removed."""
    authority = re.split(r"[/\\?#]", rest, maxsplit=1)[0]
    authority = authority.rsplit("@", 1)[-1]
    if authority.startswith("["):  # IPv6 literal
        return authority.split("]", 1)[0].strip("[").lower()
    return normalize_host(authority.split(":", 1)[0] if authority.count(":") == 1 else authority)


def normalize_host(host: str) -> str:
    """Lower case, defanged and full-width dots undone, percent-decoding, IDNA."""
    host = _DOT_RE.sub(".", unquote(host)).strip(".").lower()
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


_LAX_SCHEME = re.compile(r"(?:https?|ftps?)\s*:[/\\]*(.+)", re.IGNORECASE | re.DOTALL)


def href_host(value: str) -> str | None:
    """The host an ``href`` takes the reader to, or None for links that go nowhere
    external (mailto:, tel:, cid:, fragments, relative paths)."""
    value = value.strip()
    if value.startswith(("//", "\\\\")):
        return host_of(value[2:]) or None
    m = re.match(rf"{_SCHEME}{_SEP}(.*)", value, re.IGNORECASE | re.DOTALL)
    if m:
        return host_of(m.group(1)) or None
    m = _LAX_SCHEME.match(value)  # browsers read "https:evil.com" as https://evil.com/
    if m:
        return host_of(m.group(1)) or None
    urls = find_urls(value)
    if urls and urls[0].start == 0:
        return urls[0].host
    return None


def allowed(host: str, allow: frozenset[str]) -> bool:
    """``example.com`` allows that host only; ``*.example.com`` any subdomain of it."""
    if host in allow:
        return True
    parts = host.split(".")
    return any("*." + ".".join(parts[i:]) in allow for i in range(1, len(parts)))
