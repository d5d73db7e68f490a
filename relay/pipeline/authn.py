"""Inbound sender authentication: SPF, DKIM and DMARC alignment (RFC 7208, 6376, 7489).

A seller or buyer is identified by an address; anybody can type an address into
an envelope or a From header.  The marketplace's ``auth.policy`` says what a
message must prove before the relay speaks for its sender:

- ``none``: nothing is checked (and nothing is looked up): for trying it out;
- ``spf``: the connecting IP is allowed to send for the envelope sender's domain;
- ``dkim``: a valid DKIM signature whose domain aligns with the From domain;
- ``dmarc``: SPF or DKIM passes *and* aligns with the From domain (RFC 7489 §3.1,
  relaxed alignment by default, strict where the domain's record asks for it).

All checks run in a worker thread with dnspython pointed at the configured
resolver (``auth.nameservers``; the system's by default) and a deadline of
``auth.dns_timeout`` seconds; a DNS failure is a temporary error (451), never a
pass and never a silent drop.  SPF is evaluated by pyspf, DKIM by dkimpy.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dkim
import dns.exception
import dns.resolver
import spf
from publicsuffixlist import PublicSuffixList

from relay.core.config import AuthConfig, split_nameserver
from relay.core.logs import redact
from relay.core.refusals import Refusal, Refused

log = logging.getLogger("relay.authn")
stage_log = logging.getLogger("relay.pipeline")

_psl = PublicSuffixList()
_local = threading.local()


class DnsTempError(Exception):
    """A lookup that timed out or failed: the answer is unknown, not empty."""


class Dns:
    """TXT (and, for SPF, A/AAAA/MX/PTR) lookups against one resolver, bounded in time."""

    def __init__(self, config: AuthConfig) -> None:
        self.resolver = dns.resolver.Resolver(configure=not config.nameservers)
        if config.nameservers:
            servers = [split_nameserver(entry) for entry in config.nameservers]
            self.resolver.nameservers = [host for host, _port in servers]
            self.resolver.port = servers[0][1]  # dnspython: one port for all
        self.resolver.timeout = config.dns_timeout
        self.resolver.lifetime = config.dns_timeout

    def answers(self, name: str, qtype: str) -> list[Any]:
        try:
            return list(self.resolver.resolve(name, qtype, search=False))
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            raise DnsTempError(f"{name} {qtype}: {exc}") from None

    def txt(self, name: str) -> list[bytes]:
        return [b"".join(r.strings) for r in self.answers(name, "TXT")]


def _spf_lookup(name: str, qtype: str, strict: bool = True, timeout: float = 20) -> list[Any]:
    """pyspf's DNS hook, answered by the resolver of the current thread's check."""
    resolver: Dns = _local.dns
    try:
        records = resolver.answers(name, qtype)
    except DnsTempError as exc:
        raise spf.TempError(f"DNS {exc}") from None
    out: list[Any] = []
    for r in records:
        if qtype in ("A", "AAAA"):
            out.append(((name, qtype), r.address))
        elif qtype == "MX":
            out.append(((name, qtype), (r.preference, r.exchange)))
        elif qtype == "PTR":
            out.append(((name, qtype), r.target.to_text(True)))
        elif qtype in ("TXT", "SPF"):
            out.append(((name, qtype), r.strings))
    return out


spf.DNSLookup = _spf_lookup


@dataclass
class AuthResults:
    spf: str = "none"
    spf_domain: str = ""
    dkim: list[tuple[str, str]] = field(default_factory=list)
    """(result, d=) per signature."""
    dmarc: str = "none"
    from_domain: str = ""
    aligned_spf: bool = False
    aligned_dkim: bool = False

    def header(self, hostname: str) -> str:
        """The Authentication-Results value (RFC 8601) for the archived copy."""
        parts = [hostname]
        parts.append(f"spf={self.spf} smtp.mailfrom={self.spf_domain or '<>'}")
        if self.dkim:
            parts += [f"dkim={r} header.d={d}" for r, d in self.dkim]
        else:
            parts.append("dkim=none")
        parts.append(f"dmarc={self.dmarc} header.from={self.from_domain or '<none>'}")
        return "; ".join(parts)


def organizational(domain: str) -> str:
    """The organizational domain (RFC 7489 §3.2), from the Public Suffix List."""
    domain = domain.lower().rstrip(".")
    return _psl.privatesuffix(domain) or domain


def aligned(a: str, b: str, strict: bool) -> bool:
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    return a == b if strict else organizational(a) == organizational(b)


class Authenticator:
    def __init__(self, config: AuthConfig) -> None:
        self.config = config
        self.dns = Dns(config)

    def check(
        self, raw: bytes, *, ip: str | None, helo: str, mail_from: str, from_domain: str
    ) -> AuthResults:
        """Run every check (each bounded by the DNS deadline); never raises for DNS."""
        results = AuthResults(from_domain=from_domain)
        started = time.monotonic()
        results.spf_domain = mail_from.rpartition("@")[2] if mail_from else helo
        results.spf = self._spf(ip, helo, mail_from)
        results.dkim = self._dkim(raw)
        self._dmarc(results)
        log.debug("authentication took %.0f ms", (time.monotonic() - started) * 1000)
        return results

    def _spf(self, ip: str | None, helo: str, mail_from: str) -> str:
        if not ip:
            return "none"
        _local.dns = self.dns
        try:
            result, _explanation = spf.check2(
                i=ip,
                s=mail_from or f"postmaster@{helo}",
                h=helo or "unknown",
                timeout=self.config.dns_timeout,
                querytime=self.config.dns_timeout,
            )
        except Exception as exc:  # pyspf raises on some malformed input
            log.info("SPF check failed: %s", redact(str(exc)))
            return "permerror"
        return str(result)

    def _dkim(self, raw: bytes) -> list[tuple[str, str]]:
        def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
            found = self.dns.txt(name.decode("ascii", "replace").rstrip("."))
            return found[0] if found else None

        try:
            checker = dkim.DKIM(raw)
        except Exception:
            return []
        signatures = [v for k, v in checker.headers if k.lower() == b"dkim-signature"]
        out: list[tuple[str, str]] = []
        for index, value in enumerate(signatures[:5]):  # more is an attack on our CPU
            try:
                tags = dkim.util.parse_tag_value(value.replace(b"\r\n", b""))
                domain = tags.get(b"d", b"").decode("ascii", "replace")
            except Exception:
                out.append(("permerror", ""))
                continue
            try:
                ok = checker.verify(idx=index, dnsfunc=dnsfunc)
                out.append(("pass" if ok else "fail", domain))
            except DnsTempError:
                out.append(("temperror", domain))
            except dkim.DKIMException:
                out.append(("fail", domain))
            except Exception:
                out.append(("permerror", domain))
        return out

    def _dmarc(self, results: AuthResults) -> None:
        domain = results.from_domain
        if not domain:
            results.dmarc = "permerror"
            return
        try:
            record = self._dmarc_record(domain)
        except DnsTempError:
            results.dmarc = "temperror"
            record = {}
        strict_spf = record.get("aspf") == "s"
        strict_dkim = record.get("adkim") == "s"
        results.aligned_spf = results.spf == "pass" and aligned(
            results.spf_domain, domain, strict_spf
        )
        results.aligned_dkim = any(
            r == "pass" and aligned(d, domain, strict_dkim) for r, d in results.dkim
        )
        if results.dmarc == "temperror":
            return
        if results.aligned_spf or results.aligned_dkim:
            results.dmarc = "pass"
        else:
            results.dmarc = "fail" if record else "none"

    def _dmarc_record(self, domain: str) -> dict[str, str]:
        for name in dict.fromkeys([domain, organizational(domain)]):
            for txt in self.dns.txt(f"_dmarc.{name}"):
                text = txt.decode("ascii", "replace")
                if text.replace(" ", "").lower().startswith("v=dmarc1"):
                    return {
                        k.strip().lower(): v.strip().lower()
                        for k, _, v in (p.partition("=") for p in text.split(";"))
                    }
        return {}


def required(policy: str, results: AuthResults) -> Refusal | None:
    """Why a message that does not pass ``policy`` is refused, or None."""
    if policy == "none":
        return None
    dkim_temp = any(r == "temperror" for r, _d in results.dkim)
    if policy == "spf":
        ok, temp, fail = results.spf == "pass", results.spf == "temperror", Refusal.SPF_FAILED
    elif policy == "dkim":
        ok, temp, fail = results.aligned_dkim, dkim_temp, Refusal.DKIM_FAILED
    else:
        ok = results.aligned_spf or results.aligned_dkim
        temp = results.spf == "temperror" or dkim_temp or results.dmarc == "temperror"
        fail = Refusal.DMARC_FAILED
    if ok:
        return None
    return Refusal.AUTH_UNAVAILABLE if temp else fail


def authenticate(
    authenticator: Authenticator,
    raw: bytes,
    *,
    claimed: Sequence[str],
    ip: str | None,
    helo: str,
    mail_from: str,
    hostname: str,
    trace_id: str | None = None,
) -> bytes:
    """The authentication stage: ``raw`` with the relay's Authentication-Results
    header on top, or Refused if the sender does not pass ``auth.policy``.

    The header goes on before any recipient's copy is made from ``raw``, so that
    every copy, and the archived copy as received, carries the same one.
    ``claimed``: the addresses of the From header (its first one's domain is the
    one DMARC aligns with)."""
    results = authenticator.check(
        raw,
        ip=ip,
        helo=helo,
        mail_from=mail_from,
        from_domain=claimed[0].rpartition("@")[2] if claimed else "",
    )
    refusal = required(authenticator.config.policy, results)
    if refusal is not None:
        stage_log.info(
            "sender authentication: %s (%s)",
            refusal.value,
            redact(results.header("-")),
            extra={"fields": {"trace": trace_id}},
        )
        raise Refused(refusal)
    header = f"Authentication-Results: {results.header(hostname)}\r\n"
    return header.encode() + raw
