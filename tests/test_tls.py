"""STARTTLS with real TLS over loopback: offered to senders, used to the smarthost."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib
import pytest
import pytest_asyncio
from click.testing import CliRunner
from sqlmodel import select

from relay.app import Relay
from relay.cli import main
from relay.core.config import RelayConfig, SmarthostConfig, SmtpConfig
from relay.core.tls import TlsError, generate_self_signed, server_context
from relay.storage.models import Delivery, DeliveryAttempt
from tests.helpers import Sink, build, make_config, register, start_sink, wait_until


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("tls")
    cert, key = base / "relay.crt", base / "relay.key"
    generate_self_signed(cert, key, hostname="mx.test", days=2)
    return cert, key


def client_trusting(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


@pytest_asyncio.fixture
async def tls_relay(
    tmp_path: Path, sink: Sink, dkim_key: tuple[Path, str], certificate: tuple[Path, Path]
) -> AsyncIterator[Relay]:
    cert, key = certificate
    base = make_config(tmp_path, sink_port=sink.port, dkim_key=dkim_key[0])
    config = base.model_copy(
        update={"smtp": base.smtp.model_copy(update={"tls_cert": cert, "tls_key": key})}
    )
    relay = Relay(config)
    await relay.start()
    yield relay
    await relay.stop()


async def test_starttls_is_offered_and_mail_goes_through_encrypted(
    tls_relay: Relay, sink: Sink, certificate: tuple[Path, Path]
) -> None:
    parties = register(tls_relay)
    client = aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=tls_relay.port,
        start_tls=False,
        tls_context=client_trusting(certificate[0]),
        timeout=10,
    )
    async with client:
        await client.ehlo()
        assert client.supports_extension("starttls")
        await client.starttls()
        assert client.get_transport_info("sslcontext") is not None
        cipher = client.get_transport_info("cipher")
        assert cipher is not None
        msg = build(frm=parties.buyer, to=parties.seller_token, body="over TLS")
        await client.send_message(msg, sender=parties.buyer, recipients=[parties.seller_token])
    (received,) = await sink.wait_for(1)
    assert b"over TLS" in received.data


async def test_required_tls_refuses_mail_in_the_clear(
    tmp_path: Path, sink: Sink, dkim_key: tuple[Path, str], certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    base = make_config(tmp_path, sink_port=sink.port, dkim_key=dkim_key[0])
    smtp = base.smtp.model_copy(update={"tls_cert": cert, "tls_key": key, "require_tls": True})
    relay = Relay(base.model_copy(update={"smtp": smtp}))
    await relay.start()
    try:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port, start_tls=False, timeout=10)
        async with client:
            await client.ehlo()
            with pytest.raises(aiosmtplib.SMTPResponseException) as exc:
                await client.mail("someone@example.com")
            assert exc.value.code == 530
    finally:
        await relay.stop()


def test_a_bad_certificate_is_a_clear_configuration_error(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("not a certificate")
    with pytest.raises(TlsError) as exc:
        server_context(SmtpConfig(tls_cert=cert, tls_key=cert))
    assert "smtp.tls_cert/tls_key: cannot use" in exc.value.problems[0]


def test_tls_settings_go_together() -> None:
    with pytest.raises(ValueError, match="give both tls_cert and tls_key"):
        SmtpConfig(tls_cert=Path("a.pem"))
    with pytest.raises(ValueError, match="require_tls needs"):
        SmtpConfig(require_tls=True)


def test_selfsigned_command_writes_a_usable_pair(tmp_path: Path) -> None:
    (tmp_path / "relay.yaml").write_text("smtp: {hostname: mx.example.net}\n")
    runner = CliRunner()
    args = ["tls", "selfsigned", "-c", str(tmp_path / "relay.yaml"), "--json"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    cert, key = tmp_path / "tls" / "relay.crt", tmp_path / "tls" / "relay.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert server_context(SmtpConfig(tls_cert=cert, tls_key=key)) is not None
    again = runner.invoke(main, args)
    assert again.exit_code == 1
    assert "exists; use --force" in again.stderr


# --- outbound: STARTTLS to the smarthost ---------------------------------------------


async def start_tls_sink(cert: Path, key: Path) -> Sink:
    """A downstream server that insists on STARTTLS before it takes mail."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return await start_sink(tls_context=context)


async def deliver_through(
    tmp_path: Path, dkim_key: tuple[Path, str], smarthost: SmarthostConfig, sink: Sink
) -> Relay:
    base = make_config(tmp_path, sink_port=sink.port, dkim_key=dkim_key[0])
    config: RelayConfig = base.model_copy(
        update={"delivery": base.delivery.model_copy(update={"smtp": smarthost})}
    )
    relay = Relay(config)
    await relay.start()
    parties = register(relay)
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port, timeout=10)
    async with client:
        msg = build(frm=parties.buyer, to=parties.seller_token, body="to the smarthost")
        await client.send_message(msg, sender=parties.buyer, recipients=[parties.seller_token])
    return relay


@pytest.mark.parametrize("verify", [True, False])
async def test_starttls_to_the_smarthost(
    tmp_path: Path, dkim_key: tuple[Path, str], certificate: tuple[Path, Path], verify: bool
) -> None:
    cert, key = certificate
    sink = await start_tls_sink(cert, key)
    smarthost = SmarthostConfig(
        host="127.0.0.1",
        port=sink.port,
        starttls=True,
        verify=verify,
        ca_file=cert if verify else None,
        timeout=5,
    )
    relay = await deliver_through(tmp_path, dkim_key, smarthost, sink)
    try:
        (received,) = await sink.wait_for(1)
        assert b"to the smarthost" in received.data
    finally:
        await relay.stop()
        sink.server.close()


async def test_an_untrusted_smarthost_certificate_is_retried_not_delivered(
    tmp_path: Path, dkim_key: tuple[Path, str], certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    sink = await start_tls_sink(cert, key)
    smarthost = SmarthostConfig(host="127.0.0.1", port=sink.port, starttls=True, timeout=5)
    relay = await deliver_through(tmp_path, dkim_key, smarthost, sink)
    try:

        def attempts() -> list[DeliveryAttempt]:
            return list(relay.db.call(lambda s: s.exec(select(DeliveryAttempt)).all()))

        await wait_until(lambda: bool(attempts()))
        (first, *_rest) = attempts()
        assert first.outcome == "deferred"
        assert "certificate verify failed" in first.reply.lower()
        assert sink.messages == []
        delivery = relay.db.call(lambda s: s.exec(select(Delivery)).one())
        assert delivery.status.value == "pending"
    finally:
        await relay.stop()
        sink.server.close()


def test_starttls_on_uvloops_event_loop(
    tmp_path: Path, dkim_key: tuple[Path, str], certificate: tuple[Path, Path]
) -> None:
    """``relay serve`` runs on uvloop (relay.core.loops): aiosmtpd's STARTTLS, which
    swaps the transport's protocol by hand, must work on uvloop's transports too."""
    import asyncio

    import uvloop  # installed with the relay (the extra "fast" of make's install)

    from relay.core import loops

    assert loops.loop_factory() is uvloop.new_event_loop

    async def scenario() -> bytes:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        sink = await start_sink()
        cert, key = certificate
        base = make_config(tmp_path, sink_port=sink.port, dkim_key=dkim_key[0])
        relay = Relay(
            base.model_copy(
                update={"smtp": base.smtp.model_copy(update={"tls_cert": cert, "tls_key": key})}
            )
        )
        await relay.start()
        try:
            parties = register(relay)
            client = aiosmtplib.SMTP(
                hostname="127.0.0.1",
                port=relay.port,
                start_tls=False,
                tls_context=client_trusting(cert),
                timeout=10,
            )
            async with client:
                await client.starttls()
                assert client.get_transport_info("cipher") is not None
                msg = build(frm=parties.buyer, to=parties.seller_token, body="over TLS on uvloop")
                await client.send_message(
                    msg, sender=parties.buyer, recipients=[parties.seller_token]
                )
            (received,) = await sink.wait_for(1)
            return received.data
        finally:
            await relay.stop()
            sink.server.close()
            await sink.server.wait_closed()

    assert b"over TLS on uvloop" in loops.run(scenario())
