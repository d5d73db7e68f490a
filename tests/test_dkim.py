"""Outbound DKIM: RSA-2048 and Ed25519 (RFC 8463) signatures, verified with dkimpy
after a round trip through the relay, for delivered messages and notices alike."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import dkim
import pytest_asyncio
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.app import Relay
from relay.delivery.dkim_sign import generate_ed25519_key, generate_rsa_key
from relay.storage import directory
from tests.helpers import Sink, build, make_config, register, send

DOMAIN = "marketplace.example.com"


@pytest_asyncio.fixture
async def dual(tmp_path: Path, sink: Sink) -> AsyncIterator[tuple[Relay, dict[bytes, bytes]]]:
    rsa_path, ed_path = tmp_path / "k" / "relay.key", tmp_path / "k" / "relay.ed25519"
    records = {
        f"relay._domainkey.{DOMAIN}.".encode(): generate_rsa_key(rsa_path).encode(),
        f"relay-ed25519._domainkey.{DOMAIN}.".encode(): generate_ed25519_key(ed_path).encode(),
    }
    base = make_config(tmp_path, sink_port=sink.port, dkim_key=rsa_path)
    config = base.model_copy(update={"dkim": base.dkim.model_copy(update={"ed25519_key": ed_path})})
    relay = Relay(config)
    await relay.start()
    yield relay, records
    await relay.stop()


def verify_both(data: bytes, records: dict[bytes, bytes]) -> list[bytes]:
    """The algorithms of the signatures that verify, in header order."""

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return records[name]

    checker = dkim.DKIM(data)
    signatures = [v for k, v in checker.headers if k.lower() == b"dkim-signature"]
    verified = []
    for index, sig in enumerate(signatures):
        try:
            ok = checker.verify(idx=index, dnsfunc=dns)
        except dkim.ValidationError:  # a body hash mismatch is raised, not returned
            ok = False
        if ok:
            verified.append(dict(dkim.util.parse_tag_value(sig.replace(b"\r\n", b"")))[b"a"])
    return verified


async def test_delivered_mail_carries_two_valid_signatures(
    dual: tuple[Relay, dict[bytes, bytes]], sink: Sink
) -> None:
    relay, records = dual
    parties = register(relay)
    msg = build(frm=parties.buyer, to=parties.seller_token, subject="Câu hỏi", body="Xin chào")
    await send(relay, msg, sender=parties.buyer, recipients=[parties.seller_token])
    (got,) = await sink.wait_for(1)
    assert verify_both(got.data, records) == [b"ed25519-sha256", b"rsa-sha256"]
    assert b"d=marketplace.example.com" in got.data


async def test_notices_are_signed_too(dual: tuple[Relay, dict[bytes, bytes]], sink: Sink) -> None:
    relay, records = dual
    parties = register(relay)
    relay.db.call(lambda s: directory.set_opt_out(s, parties.buyer, True))
    msg = build(frm=parties.seller, to=parties.buyer_token, subject="New arrivals")
    await send(relay, msg, sender=parties.seller, recipients=[parties.buyer_token])
    (notice,) = await sink.wait_for(1)
    assert notice.mail_from == "" and notice.rcpt_tos == [parties.seller]
    assert verify_both(notice.data, records) == [b"ed25519-sha256", b"rsa-sha256"]


async def test_a_changed_message_fails_verification(
    dual: tuple[Relay, dict[bytes, bytes]], sink: Sink
) -> None:
    relay, records = dual
    parties = register(relay)
    msg = build(frm=parties.buyer, to=parties.seller_token, body="the original text")
    await send(relay, msg, sender=parties.buyer, recipients=[parties.seller_token])
    (got,) = await sink.wait_for(1)
    assert verify_both(got.data.replace(b"original", b"tampered"), records) == []


def test_an_unusable_ed25519_key_stops_the_start(tmp_path: Path) -> None:
    from relay.delivery.dkim_sign import DkimError, Signer

    rsa_path, ed_path = tmp_path / "relay.key", tmp_path / "relay.ed25519"
    generate_rsa_key(rsa_path)
    ed_path.write_text("not a key\n")
    try:
        Signer.load(domain=DOMAIN, selector="relay", private_key=rsa_path, ed25519_key=ed_path)
    except DkimError as exc:
        assert "cannot sign with Ed25519" in str(exc)
    else:
        raise AssertionError("an unusable Ed25519 key was accepted")


def test_openssl_signing_gives_dkimpys_exact_signature(tmp_path: Path) -> None:
    """The RSA step runs in OpenSSL; the result must be what dkimpy computes itself."""
    import hashlib

    from dkim.crypto import parse_pem_private_key

    from relay.delivery import dkim_sign

    path = tmp_path / "relay.key"
    generate_rsa_key(path)
    key = parse_pem_private_key(path.read_bytes())
    for algorithm in (hashlib.sha256, hashlib.sha1):
        digest = algorithm(b"the canonicalised headers")
        ours = dkim_sign._openssl_rsa_sign(digest, key)
        theirs = dkim_sign._PURE_PYTHON_RSA_SIGN(digest, key)
        assert ours == bytes(theirs)


_LINE_PIECES = st.sampled_from(
    [b"a", b"Zz", b"=", b" ", b"  ", b"\t", b" \t ", b"\r\n", b"\n", b"\r", b"x:y", b"\xc3\xa9"]
)


@settings(max_examples=300, deadline=None)
@given(
    headers=st.lists(
        st.tuples(
            st.sampled_from([b"From", b"To", b"Subject", b"X-A"]),
            st.lists(_LINE_PIECES, max_size=6).map(b"".join),
            st.booleans(),
        ),
        max_size=4,
    ),
    separator=st.sampled_from([b"\r\n", b"\n"]),
    body=st.lists(_LINE_PIECES, max_size=40).map(b"".join),
)
def test_the_faster_canonicalisation_is_dkimpys(
    headers: list[tuple[bytes, bytes, bool]], separator: bytes, body: bytes
) -> None:
    """The message split and the relaxed body canonicalisation that replace
    dkimpy's give dkimpy's own results, byte for byte, on any message."""
    from relay.delivery import dkim_sign

    head = b"".join(
        name
        + b": "
        + value.replace(b"\r", b"").replace(b"\n", b"")
        + separator
        + (b"\tfolded" + separator if folded else b"")
        for name, value, folded in headers
    )

    def outcome(parse: Callable[[bytes], object], message: bytes) -> object:
        try:
            return parse(message)
        except Exception as exc:  # dkimpy's own errors, whichever: the same ones
            return type(exc)

    for message in (head + separator + body, head + body, body):
        theirs = outcome(dkim_sign._DKIMPY_RFC822_PARSE, message)
        assert outcome(dkim_sign._rfc822_parse, message) == theirs
    assert dkim_sign._relaxed_body(body) == dkim_sign._DKIMPY_RELAXED_BODY(body)
    crlf = body.replace(b"\r", b"").replace(b"\n", b"\r\n")
    assert dkim_sign._relaxed_body(crlf) == dkim_sign._DKIMPY_RELAXED_BODY(crlf)
