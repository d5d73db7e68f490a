"""Abuse limits kept in memory: connection counts, per-IP sliding windows and the
cost of a refused recipient (SECURITY.md, "Abuse limits" and "Tokens cannot be
guessed").

Limits that must hold across processes (messages per sender and per
conversation) are counted in the database instead (``directory.recent_counts``).
These are per process: several relay processes each allow ``max_connections``.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from relay.core.window import SlidingWindow

if TYPE_CHECKING:
    from relay.core.config import LimitsConfig


class Networks:
    """Client networks (``limits.trusted_networks``), already validated at config load."""

    def __init__(self, cidrs: Iterable[str]) -> None:
        self._networks = [ipaddress.ip_network(cidr) for cidr in cidrs]

    def __contains__(self, ip: object) -> bool:
        """Whether the client address ``ip`` (a string) is in one of the networks.
        An IPv4 client seen on a dual-stack socket (``::ffff:a.b.c.d``) counts as
        its IPv4 address; anything that is no address is in none."""
        if not isinstance(ip, str):
            return False
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._networks)


class ConnectionGate:
    """Admission of new SMTP sessions: a concurrency cap and a per-IP rate from
    which ``trusted`` networks are exempt.  ``per_ip_per_minute`` 0 is no rate."""

    def __init__(
        self, max_connections: int, per_ip_per_minute: int, *, trusted: Networks | None = None
    ) -> None:
        self.max_connections = max_connections
        self.active = 0
        self.rate = SlidingWindow(per_ip_per_minute, 60.0) if per_ip_per_minute else None
        self.trusted = trusted if trusted is not None else Networks(())

    @classmethod
    def from_limits(cls, limits: LimitsConfig) -> ConnectionGate:
        return cls(
            limits.max_connections,
            limits.connections_per_ip,
            trusted=Networks(limits.trusted_networks),
        )

    def admit(self, ip: str) -> str | None:
        """None if the session may start, else why not (for the log)."""
        if self.active >= self.max_connections:
            return f"{self.active} sessions open (limits.max_connections)"
        if self.rate is not None and ip not in self.trusted and not self.rate.record(ip):
            return f"more than {self.rate.limit} sessions a minute (limits.connections_per_ip)"
        self.active += 1
        return None

    def release(self) -> None:
        self.active -= 1


@dataclass(frozen=True, slots=True)
class Penalty:
    """What a refused RCPT costs the session that made it."""

    delay: float
    """Seconds to wait before answering (the reply itself is unchanged)."""
    close: bool = False
    """Answer 421 and close the session instead."""


class GuessingLimit:
    """The cost of refused RCPTs (an unknown token, or a token with the wrong
    sender, which is how a prober would tell that a token exists).

    Only refused RCPTs pay; a valid recipient is answered at once whoever else
    is guessing from the same address, since big providers share a few IPs among
    millions of users (SECURITY.md, "Tokens cannot be guessed").  A session that
    makes more than ``soft`` refused RCPTs waits ``delay`` seconds before the
    next refusal, twice that before the one after, and so on (the wait is
    asyncio's, so other sessions go on); past ``hard`` it is closed with 421.
    An IP that made ``per_ip_per_hour`` refused RCPTs in the last hour waits at
    least ``delay`` for each further one in any session, so that new sessions do
    not start the cost again; ``trusted`` networks are exempt from that count.
    """

    def __init__(
        self,
        *,
        per_ip_per_hour: int,
        soft: int,
        hard: int,
        delay: float,
        trusted: Networks,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.soft = soft
        self.hard = hard
        self.delay = delay
        self.trusted = trusted
        self.per_ip = SlidingWindow(per_ip_per_hour, 3600.0, max_keys=max_keys, clock=clock)

    @classmethod
    def from_limits(cls, limits: LimitsConfig) -> GuessingLimit:
        return cls(
            per_ip_per_hour=limits.unknown_recipients_per_ip,
            soft=limits.unknown_recipients_soft_limit,
            hard=limits.unknown_recipients_hard_limit,
            delay=limits.unknown_recipient_delay,
            trusted=Networks(limits.trusted_networks),
        )

    def refused(self, ip: str | None, in_session: int) -> Penalty:
        """The penalty for one refused RCPT from ``ip``, the ``in_session``-th of its
        session (counted from 1)."""
        if in_session > self.hard:
            return Penalty(0.0, close=True)
        steps = max(0, in_session - self.soft)
        if ip not in self.trusted and not self.per_ip.record(ip or "?"):
            steps = max(steps, 1)
        return Penalty(steps * self.delay)
