"""Inbound sender authentication (SPF, DKIM, DMARC alignment) against a local DNS
server, and the From header check that stops a forged From over a valid envelope."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import dkim
import pytest
import pytest_asyncio

from relay.app import Relay
from relay.core.config import AuthConfig
from relay.core.refusals import Refusal, Refused
from relay.delivery.dkim_sign import generate_rsa_key
from relay.message.parse import parse
from relay.pipeline.sender import from_addresses
from relay.storage import directory
from tests.dnsserver import FakeDns, fake_dns
from tests.helpers import DOMAIN, Parties, Sink, build, make_config, register, send

SELLER_DOMAIN = "seller.example"


@pytest.fixture(scope="module")
def seller_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, str]:
    """The seller's own DKIM key (PEM) and its TXT record."""
    path = tmp_path_factory.mktemp("seller") / "s1.key"
    record = generate_rsa_key(path)
    return path.read_bytes(), record


@pytest_asyncio.fixture
async def dns_server(seller_key: tuple[bytes, str]) -> AsyncIterator[FakeDns]:
    async with fake_dns() as server:
        server.add_txt(SELLER_DOMAIN, "v=spf1 ip4:127.0.0.1 -all")
        server.add_txt(f"_dmarc.{SELLER_DOMAIN}", "v=DMARC1; p=reject")
        server.add_txt(f"s1._domainkey.{SELLER_DOMAIN}", seller_key[1])
        server.add_txt("evil.example", "v=spf1 -all")
        server.add_txt("s1._domainkey.evil.example", seller_key[1])
        yield server


Start = Callable[..., Any]


@pytest_asyncio.fixture
async def start(
    tmp_path: Path, sink: Sink, dkim_key: tuple[Path, str], dns_server: FakeDns
) -> AsyncIterator[Start]:
    relays: list[Relay] = []

    async def run(policy: str, **auth: Any) -> tuple[Relay, Parties]:
        settings = AuthConfig(
            policy=policy,  # type: ignore[arg-type]
            nameservers=[f"127.0.0.1:{dns_server.port}"],
            dns_timeout=auth.pop("dns_timeout", 2),
        )
        config = make_config(tmp_path, sink_port=sink.port, dkim_key=dkim_key[0], auth=settings)
        relay = Relay(config)
        await relay.start()
        relays.append(relay)
        return relay, register(relay, seller=(f"shop@{SELLER_DOMAIN}",))

    yield run
    for relay in relays:
        await relay.stop()


def signed(data: bytes, key: bytes, domain: str = SELLER_DOMAIN) -> bytes:
    signature: bytes = dkim.sign(
        data, b"s1", domain.encode(), key, include_headers=[b"from", b"to", b"subject"]
    )
    return signature + data


def seller_mail(parties: Parties, frm: str | None = None) -> bytes:
    msg = build(
        frm=frm or f"Shop <{parties.seller}>", to=parties.buyer_token, body="Your parcel left."
    )
    return msg.as_bytes().replace(b"\n", b"\r\n")


async def refused(relay: Relay, data: bytes, parties: Parties) -> tuple[int, str]:
    with pytest.raises(aiosmtplib.SMTPDataError) as exc:
        await send(relay, data, sender=parties.seller, recipients=[parties.buyer_token])
    return exc.value.code, exc.value.message


async def test_authenticated_seller_mail_is_delivered_signed_by_the_marketplace(
    start: Start, sink: Sink, seller_key: tuple[bytes, str], dkim_key: tuple[Path, str]
) -> None:
    relay, parties = await start("dmarc")
    await send(
        relay,
        signed(seller_mail(parties), seller_key[0]),
        sender=parties.seller,
        recipients=[parties.buyer_token],
    )
    (got,) = await sink.wait_for(1)

    def marketplace_dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"relay._domainkey.marketplace.example.com."
        return dkim_key[1].encode()

    assert dkim.verify(got.data, dnsfunc=marketplace_dns)
    assert b"seller.example" not in got.data.split(b"\r\n\r\n")[0].split(b"DKIM-Signature")[0]
    from relay.storage import archive

    rows = relay.db.call(lambda s: archive.list_messages(s, limit=1))
    received = relay.archive.read(rows[0].message.received_path or "")
    first = received.split(b"\r\n", 1)[0].decode()
    assert first == (
        "Authentication-Results: mx.test; spf=pass smtp.mailfrom=seller.example;"
        " dkim=pass header.d=seller.example; dmarc=pass header.from=seller.example"
    )


@pytest.mark.parametrize(
    "frm",
    [
        "Shop <someone@elsewhere.example>",  # right envelope, wrong From
        '"shop@seller.example" <someone@elsewhere.example>',  # display-name trick
        "Shop <shop@seller.example>, Other <someone@elsewhere.example>",
    ],
)
async def test_a_forged_from_is_refused(
    start: Start, sink: Sink, seller_key: tuple[bytes, str], frm: str
) -> None:
    relay, parties = await start("dmarc")
    data = signed(seller_mail(parties, frm), seller_key[0])
    assert await refused(relay, data, parties) == (
        550,
        "5.7.1 The From header does not match the sender",
    )
    assert sink.messages == []


async def test_wrong_envelope_with_the_right_from_is_refused_at_rcpt(start: Start) -> None:
    relay, parties = await start("dmarc")
    data = seller_mail(parties)
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as exc:
        await send(
            relay, data, sender="someone@elsewhere.example", recipients=[parties.buyer_token]
        )
    assert exc.value.recipients[0].code == 550


async def test_dkim_alone_satisfies_dmarc_when_spf_fails(
    start: Start, sink: Sink, dns_server: FakeDns, seller_key: tuple[bytes, str]
) -> None:
    dns_server.records[(SELLER_DOMAIN, "TXT")] = ['"v=spf1 ip4:192.0.2.1 -all"']
    relay, parties = await start("dmarc")
    data = signed(seller_mail(parties), seller_key[0])
    await send(relay, data, sender=parties.seller, recipients=[parties.buyer_token])
    await sink.wait_for(1)


async def test_no_aligned_pass_fails_dmarc(
    start: Start, dns_server: FakeDns, seller_key: tuple[bytes, str]
) -> None:
    dns_server.records[(SELLER_DOMAIN, "TXT")] = ['"v=spf1 ip4:192.0.2.1 -all"']
    relay, parties = await start("dmarc")
    # A valid signature, but by another domain: not aligned with From.
    data = signed(seller_mail(parties), seller_key[0], domain="evil.example")
    code, message = await refused(relay, data, parties)
    assert (code, message[:6]) == (550, "5.7.26")


async def test_a_tampered_signature_does_not_pass(
    start: Start, dns_server: FakeDns, seller_key: tuple[bytes, str]
) -> None:
    dns_server.records[(SELLER_DOMAIN, "TXT")] = ['"v=spf1 ip4:192.0.2.1 -all"']
    relay, parties = await start("dkim")
    data = signed(seller_mail(parties), seller_key[0]).replace(b"parcel", b"refund")
    code, message = await refused(relay, data, parties)
    assert (code, message[:6]) == (550, "5.7.20")


async def test_spf_policy(start: Start, sink: Sink, dns_server: FakeDns) -> None:
    relay, parties = await start("spf")
    await send(relay, seller_mail(parties), sender=parties.seller, recipients=[parties.buyer_token])
    await sink.wait_for(1)
    dns_server.records[(SELLER_DOMAIN, "TXT")] = ['"v=spf1 ip4:192.0.2.1 -all"']
    code, message = await refused(relay, seller_mail(parties), parties)
    assert (code, message[:6]) == (550, "5.7.23")


@pytest.mark.parametrize("mode", ["silent", "servfail"])
async def test_dns_trouble_is_a_temporary_failure(
    start: Start, sink: Sink, dns_server: FakeDns, mode: str
) -> None:
    relay, parties = await start("dmarc", dns_timeout=0.5)
    dns_server.mode = mode
    code, message = await refused(relay, seller_mail(parties), parties)
    assert (code, message[:6]) == (451, "4.7.24")
    assert sink.messages == []
    from relay.storage import archive

    assert relay.db.call(lambda s: archive.list_messages(s, limit=5)) == []


async def test_policy_none_looks_nothing_up(start: Start, sink: Sink, dns_server: FakeDns) -> None:
    relay, parties = await start("none")
    await send(relay, seller_mail(parties), sender=parties.seller, recipients=[parties.buyer_token])
    await sink.wait_for(1)
    assert dns_server.queries == []


def received_with_from(header: str) -> EmailMessage:
    """A message as the pipeline parses it off the wire."""
    raw = f"From: {header}\r\nTo: t@marketplace.example.com\r\nSubject: s\r\n\r\nhi\r\n"
    return parse(raw.encode(), hostname="mx.test", max_hops=30).message


@pytest.mark.parametrize(
    ("header", "claims"),
    [
        ("Maria <maria@buyer.example>", ["maria@buyer.example"]),
        ("maria@buyer.example (Maria)", ["maria@buyer.example"]),
        # A display name counts for nothing, whatever it looks like.
        ("0@0 <maria@buyer.example>", ["maria@buyer.example"]),
        ("<0@0> <maria@buyer.example>", ["maria@buyer.example"]),
        ('"<x@evil.example>, y@evil.example" <maria@buyer.example>', ["maria@buyer.example"]),
        ('"shop@seller.example" <x@elsewhere.example>', ["x@elsewhere.example"]),
        # Every mailbox claims its address.
        ("A <a@x.example>, b@y.example", ["a@x.example", "b@y.example"]),
        ("Maria", []),
    ],
)
def test_what_a_from_header_claims(header: str, claims: list[str]) -> None:
    assert from_addresses(received_with_from(header)) == claims


def test_an_unreadable_from_claims_anything_so_it_is_refused() -> None:
    with pytest.raises(Refused) as caught:
        from_addresses(received_with_from("Maria <maria@>"))
    assert caught.value.refusal is Refusal.FROM_MISMATCH


async def test_every_recipient_gets_the_same_authentication_results(
    start: Start, sink: Sink
) -> None:
    """The Authentication-Results header is part of the message before any
    recipient's copy is made: a rule that looks at it holds for all recipients
    alike (and for the archived copy as received), and none of the delivered
    copies carries it (``compose`` keeps only its allow-list)."""
    relay, parties = await start("spf")
    relay.config.filters.rules.write_text(
        "rules:\n"
        "  - id: spf-checked\n"
        "    match: {header: [{name: Authentication-Results, pattern: 'spf=pass'}]}\n"
        "    action: flag\n",
        encoding="utf-8",
    )
    assert relay.reload_rules()

    def second_buyer(s: Any) -> str:
        _order, conv = directory.add_order(
            s,
            "ORD-2",
            buyer_email="joao@buyer.example",
            buyer_name="João",
            seller_id=parties.seller_id,
        )
        return f"{conv.buyer_token}@{DOMAIN}"

    other = relay.db.call(second_buyer)
    await send(
        relay, seller_mail(parties), sender=parties.seller, recipients=[parties.buyer_token, other]
    )
    delivered = await sink.wait_for(2)
    assert sorted(got.rcpt_tos[0] for got in delivered) == ["joao@buyer.example", parties.buyer]
    assert all(b"Authentication-Results" not in got.data for got in delivered)
    from relay.storage import archive

    rows = relay.db.call(lambda s: archive.list_messages(s, limit=2))
    assert len(rows) == 2
    assert [[(h.rule_id, h.action) for h in row.hits] for row in rows] == [
        [("spf-checked", "flag")]
    ] * 2
    (received,) = {row.message.received_path for row in rows}
    assert relay.archive.read(received or "").startswith(
        b"Authentication-Results: mx.test; spf=pass"
    )
