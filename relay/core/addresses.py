"""Email address normalization.

Real addresses are stored normalized so that lookups are exact: the whole address
lower-cased (providers treat local parts case-insensitively, and a relay that
refused ``Alice@`` for ``alice@`` would only hurt its users) and the domain in its
Unicode form, so ``xn--`` and Unicode spellings of an IDN domain are one address.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from email.headerregistry import Address

_LOCAL_RE = re.compile(r"^[^\s@<>()\[\],;:\"\\]+$")


class InvalidAddress(ValueError):
    """Not an address we can use."""


def _domain_unicode(domain: str) -> str:
    domain = domain.strip().rstrip(".").lower()
    labels = []
    for label in domain.split("."):
        if label.startswith("xn--"):
            with contextlib.suppress(UnicodeError):
                label = label.encode("ascii").decode("idna")
        labels.append(label)
    return ".".join(labels)


def domain_ascii(domain: str) -> str:
    """The IDNA (``xn--``) form of ``domain``, or the domain itself if it has none."""
    try:
        return _domain_unicode(domain).encode("idna").decode("ascii")
    except UnicodeError:
        return domain.lower()


def normalize(address: str) -> str:
    """``Local@Dömain.Example`` → ``local@dömain.example``; raises InvalidAddress."""
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1].strip()
    local, sep, domain = address.rpartition("@")
    if not sep or not local or not domain or not _LOCAL_RE.match(local):
        raise InvalidAddress(f"not an email address: {address!r}")
    if any(ch.isspace() for ch in domain) or "@" in domain:
        raise InvalidAddress(f"not an email address: {address!r}")
    domain = _domain_unicode(domain)
    if not domain or not all(domain.split(".")):
        raise InvalidAddress(f"not an email address: {address!r}")
    return f"{local.lower()}@{domain}"


def variants(address: str) -> set[str]:
    """Spellings under which ``address`` may appear in a message (case aside)."""
    local, _, domain = normalize(address).rpartition("@")
    return {f"{local}@{domain}", f"{local}@{domain_ascii(domain)}"}


def format_address(display_name: str, address: str) -> str:
    """A header value ``"Name" <addr>``; display names are encoded as needed."""
    local, _, domain = address.rpartition("@")
    return str(Address(display_name=display_name, username=local, domain=domain))


ANY_ADDRESS = re.compile(r"[^\s<>()\[\]\"',;:]+@[^\s<>()\[\]\"',;:]+")
"""Anything shaped like an address in free text (a server's reply, a log line)."""


def mask_addresses(
    text: str,
    *,
    known: Mapping[str, str] | None = None,
    keep_domain: str | None = None,
    mask: str = "[address]",
) -> str:
    """``text`` with every address replaced: by its token when ``known`` maps it
    (lower-case real address → token address), left as it is when it is in
    ``keep_domain`` (a token already), else by ``mask``.  For text from outside
    (a smarthost's diagnostic) that must not carry an address on."""
    known = known or {}
    suffix = f"@{keep_domain}" if keep_domain else None

    def one(match: re.Match[str]) -> str:
        found = match.group(0)
        if suffix is not None and found.lower().endswith(suffix):
            return found
        return known.get(found.lower(), mask)

    return ANY_ADDRESS.sub(one, text)
