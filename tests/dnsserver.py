"""A tiny authoritative DNS server on loopback for the authentication tests.

Answers from a dict of records; can also stay silent (a timeout) or answer
SERVFAIL, to test that DNS trouble is a temporary failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import cast

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


def txt(value: str) -> str:
    """A TXT value in zone-file form, split into 255-byte strings as DNS requires."""
    chunks = [value[i : i + 255] for i in range(0, len(value), 255)] or [""]
    return " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


@dataclass
class FakeDns(asyncio.DatagramProtocol):
    records: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    """(name, type) → values in zone-file form (use ``txt()`` for TXT)."""
    mode: str = "answer"
    """answer | silent | servfail"""
    queries: list[tuple[str, str]] = field(default_factory=list)
    transport: asyncio.DatagramTransport | None = None

    def add_txt(self, name: str, value: str) -> None:
        self.records.setdefault((name.lower(), "TXT"), []).append(txt(value))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        name = question.name.to_text().rstrip(".").lower()
        qtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, qtype))
        if self.mode == "silent":
            return
        response = dns.message.make_response(query)
        if self.mode == "servfail":
            response.set_rcode(dns.rcode.SERVFAIL)
        elif (name, qtype) in self.records:
            response.answer.append(
                dns.rrset.from_text_list(
                    question.name, 60, "IN", qtype, self.records[(name, qtype)]
                )
            )
        elif not any(n == name for n, _t in self.records):
            response.set_rcode(dns.rcode.NXDOMAIN)
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)

    @property
    def port(self) -> int:
        assert self.transport is not None
        port: int = self.transport.get_extra_info("sockname")[1]
        return port


@asynccontextmanager
async def fake_dns() -> AsyncIterator[FakeDns]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(FakeDns, local_addr=("127.0.0.1", 0))
    try:
        yield protocol
    finally:
        transport.close()
