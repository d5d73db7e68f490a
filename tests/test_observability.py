"""Operators' view: Prometheus metrics, /healthz, ``relay status`` and the logs.

The metrics are read the way Prometheus reads them: over HTTP, parsed with
prometheus-client's own text parser, after real SMTP traffic.  The log tests
run ``relay serve`` as operators do and read what it writes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from relay.app import Relay
from relay.cli import main
from relay.core import logs
from relay.core.config import MetricsConfig, RelayConfig, parse_listen
from tests.helpers import (
    Parties,
    Sink,
    build,
    buyer_writes,
    free_port,
    make_config,
    register,
    seller_token,
    seller_writes,
    send,
    serving,
    start_sink,
    wait_until,
    write_config,
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

RULES = """
rules:
  - id: no-coupons
    description: no coupon codes
    applies_to: seller
    match:
      keywords:
        words: [coupon code]
    action: reject
"""


def scrape(port: int) -> Samples:
    """Every sample of /metrics, by (name, sorted labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def healthz(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@asynccontextmanager
async def metered_relay(tmp_path: Path, sink: Sink, database_url: str) -> AsyncIterator[Relay]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    config = make_config(
        tmp_path,
        sink_port=sink.port,
        rules=rules,
        database_url=database_url,
        metrics=MetricsConfig(listen="127.0.0.1:0"),
    )
    relay = Relay(config)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.stop()


def metrics_port(relay: Relay) -> int:
    assert relay.endpoint is not None
    return relay.endpoint.port


async def test_metrics_move_with_real_traffic(
    tmp_path: Path, sink: Sink, database_url: str
) -> None:
    async with metered_relay(tmp_path, sink, database_url) as relay:
        parties = register(relay)
        port = metrics_port(relay)
        await asyncio.to_thread(scrape, port)  # the queue gauges answer before any mail
        before = await asyncio.to_thread(scrape, port)

        await buyer_writes(relay, parties, subject="Is it handmade?")
        await seller_writes(relay, parties, subject="Deal", body="Use coupon code SAVE10 now")
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
            await send(
                relay,
                build(frm=parties.buyer, to=f"nobody@{parties.seller_token.split('@')[1]}"),
                sender=parties.buyer,
                recipients=[f"nosuchtoken@{parties.seller_token.split('@')[1]}"],
            )
        await sink.wait_for(2)  # the buyer's message and the seller's notice

        def delivered(samples: Samples) -> list[float]:
            return [
                value(samples, "relay_messages_delivered_total", direction=d)
                - value(before, "relay_messages_delivered_total", direction=d)
                for d in ("buyer_to_seller", "notice")
            ]

        await wait_until(lambda: delivered(scrape(port)) == [1, 1])
        after = await asyncio.to_thread(scrape, port)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("relay_messages_received_total", direction="buyer_to_seller") == 1
    assert moved("relay_messages_received_total", direction="seller_to_buyer") == 1
    assert moved("relay_messages_blocked_total", direction="seller_to_buyer", reason="rule") == 1
    assert moved("relay_messages_blocked_total", direction="buyer_to_seller", reason="rule") == 0
    assert moved("relay_filter_hits_total", rule="no-coupons", action="reject") == 1
    assert moved("relay_messages_delivered_total", direction="buyer_to_seller") == 1
    assert moved("relay_messages_delivered_total", direction="notice") == 1
    assert moved("relay_messages_delivered_total", direction="seller_to_buyer") == 0
    assert moved("relay_delivery_attempts_total", outcome="delivered") == 2
    assert moved("relay_smtp_replies_total", code="250") >= 2 * 4  # MAIL, RCPT, DATA end…
    assert moved("relay_smtp_replies_total", code="354") == 2
    assert moved("relay_smtp_replies_total", code="550") == 1
    assert moved("relay_smtp_replies_total", code="220") == 3  # three sessions' greetings
    for stage in ("accept", "filter", "archive", "delivery"):
        assert moved("relay_stage_seconds_count", stage=stage) >= 2, stage
        assert moved("relay_stage_seconds_sum", stage=stage) > 0, stage
    assert value(after, "relay_queue_depth") == 0
    assert value(after, "relay_queue_oldest_age_seconds") == 0
    assert ("relay_queue_depth", ()) in after


async def test_queue_gauges_and_health_when_the_downstream_is_down(
    tmp_path: Path, database_url: str
) -> None:
    sink = await start_sink()
    async with metered_relay(tmp_path, sink, database_url) as relay:
        parties = register(relay)
        port = metrics_port(relay)
        status, body = await asyncio.to_thread(healthz, port)
        assert status == 200
        assert body["ok"] is True
        assert body["database"]["ok"] and body["downstream"]["ok"]
        assert "greets with 220" in body["downstream"]["detail"]

        sink.server.close()
        await sink.server.wait_closed()
        await buyer_writes(relay, parties, subject="Waiting in the queue")
        await wait_until(
            lambda: value(scrape(port), "relay_delivery_attempts_total", outcome="deferred") > 0
        )
        # The gauge ages with the message: it passes 0.2 s, and the message still waits.
        await wait_until(lambda: value(scrape(port), "relay_queue_oldest_age_seconds") > 0.2)
        samples = await asyncio.to_thread(scrape, port)
        assert value(samples, "relay_queue_depth") == 1
        assert value(samples, "relay_queue_oldest_age_seconds") > 0.2

        status, body = await asyncio.to_thread(healthz, port)
        assert status == 503
        assert body["ok"] is False
        assert body["database"]["ok"] is True
        assert body["downstream"]["ok"] is False
        assert "not reachable" in body["downstream"]["detail"]
        assert body["queue_depth"] == 1


def _status(config: RelayConfig, tmp_path: Path, *args: str) -> Any:
    path = tmp_path / "status.yaml"
    smtp = config.delivery.smtp
    path.write_text(
        f"""
database: {{url: "{config.database.url}"}}
archive: {{path: "{config.archive.path}"}}
delivery: {{mode: smtp, smtp: {{host: 127.0.0.1, port: {smtp.port}}}}}
""",
        encoding="utf-8",
    )
    return CliRunner().invoke(main, ["status", "-c", str(path), *args])


async def test_status_prints_health_and_queue(
    tmp_path: Path, relay: Relay, sink: Sink, parties: Parties
) -> None:
    result = await asyncio.to_thread(_status, relay.config, tmp_path)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("database: ok")
    assert lines[1].startswith("downstream: ok (smarthost 127.0.0.1:")
    assert lines[2] == "queue: 0 waiting"

    sink.server.close()
    await sink.server.wait_closed()
    await buyer_writes(relay, parties, subject="Stuck for now")
    result = await asyncio.to_thread(_status, relay.config, tmp_path, "--json")
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["ok"] is False
    assert data["database"]["ok"] is True
    assert data["downstream"]["ok"] is False
    assert data["queue_depth"] == 1
    assert data["queue_oldest_age_seconds"] >= 0


def test_status_says_when_the_database_is_unreachable(tmp_path: Path) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text(
        """
database: {url: "postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2"}
archive: {path: archive}
delivery: {mode: maildir, maildir: outbox}
""",
        encoding="utf-8",
    )
    result = CliRunner().invoke(main, ["status", "-c", str(path)])
    assert result.exit_code == 1
    assert result.output.splitlines()[0].startswith("database: FAIL (")
    assert "downstream: ok (Maildir" in result.output
    assert "queue: unknown (database unavailable)" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9125", ("127.0.0.1", 9125)),
        ("[::1]:9125", ("::1", 9125)),
        ("9125", ("127.0.0.1", 9125)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
    ],
)
def test_listen_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected
    assert MetricsConfig(listen=text).address == expected


async def test_the_endpoint_listens_on_ipv6_loopback(
    tmp_path: Path, sink: Sink, database_url: str
) -> None:
    config = make_config(
        tmp_path,
        sink_port=sink.port,
        database_url=database_url,
        metrics=MetricsConfig(listen="[::1]:0"),
    )
    relay = Relay(config)
    await relay.start()
    try:
        assert relay.endpoint is not None
        url = f"http://[::1]:{relay.endpoint.port}/healthz"

        def get() -> int:
            with urllib.request.urlopen(url, timeout=10) as response:
                return int(response.status)

        assert await asyncio.to_thread(get) == 200
    finally:
        await relay.stop()


def test_a_bad_listen_address_is_a_clear_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text("metrics:\n  listen: localhost:http\n", encoding="utf-8")
    (tmp_path / "filters.yaml").write_text("rules: []\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["check-config", "-c", str(path)])
    assert result.exit_code == 2
    assert "relay.yaml:2" in result.output
    assert "not an address to listen on (host:port, e.g. 127.0.0.1:9125)" in result.output


def test_redact_replaces_every_address() -> None:
    text = "550 5.1.1 <maria@buyer.example>: Recipient address rejected; cc Shop@Seller.example"
    known = {"maria@buyer.example": "t0k3n@marketplace.example.com"}
    assert logs.redact(text, known) == (
        "550 5.1.1 <t0k3n@marketplace.example.com>: Recipient address rejected; cc <address>"
    )


def test_json_log_lines_carry_the_fields() -> None:
    record = logging.LogRecord("relay.x", logging.INFO, __file__, 1, "hello %s", ("you",), None)
    record.fields = {"trace": "abc", "to": ["t@x"]}
    data = json.loads(logs.JsonFormatter().format(record))
    assert data["message"] == "hello you"
    assert data["trace"] == "abc"
    assert data["to"] == ["t@x"]
    assert data["level"] == "info"
    text = logs.TextFormatter("%(message)s").format(record)
    assert text == "hello you trace=abc to=t@x"


# --- the logs of a running relay --------------------------------------------------


async def _served_log(
    tmp_path: Path, *, extra: str = "", workers: int = 1, metrics_port: int | None = None
) -> tuple[str, str, str, int | None]:
    """Run ``relay serve``, pass one buyer message and the seller's reply through it,
    stop it with SIGTERM: its log, the buyer token, the seller token and, with
    ``metrics.listen``, what the endpoint counted."""
    sink = await start_sink()
    smtp_port = free_port()
    config = write_config(tmp_path, smtp_port=smtp_port, sink_port=sink.port)
    if metrics_port is not None:
        extra += f"metrics: {{listen: '127.0.0.1:{metrics_port}'}}\n"
    with config.open("a", encoding="utf-8") as f:
        f.write(extra)
    token = await seller_token(config)
    received: int | None = None
    args = ("--workers", str(workers)) if workers > 1 else ()

    async def write(sender: str, recipient: str, subject: str, display: str = "") -> None:
        await aiosmtplib.send(
            build(
                frm=f"{display} <{sender}>" if display else sender, to=recipient, subject=subject
            ),
            hostname="127.0.0.1",
            port=smtp_port,
            sender=sender,
            recipients=[recipient],
            timeout=30,
        )

    async with serving(config, smtp_port, *args) as proc:
        await write("maria@buyer.example", token, "Hello", "Maria Santos")
        (first,) = await sink.wait_for(1)
        buyer_token = str(first.message["From"]).rpartition("<")[2].rstrip(">")
        await write("shop@seller.example", buyer_token, "Re: Hello")
        await sink.wait_for(2)
        if metrics_port is not None:
            await wait_until(
                lambda: (
                    value(
                        scrape(metrics_port),
                        "relay_messages_delivered_total",
                        direction="seller_to_buyer",
                    )
                    == 1
                )
            )
            samples = await asyncio.to_thread(scrape, metrics_port)
            received = int(
                value(samples, "relay_messages_received_total", direction="buyer_to_seller")
                + value(samples, "relay_messages_received_total", direction="seller_to_buyer")
            )
            # Every worker's values and none of the supervisor's: two messages'
            # received and delivered copies, and each worker's start-up probe of the
            # archive, but not the supervisor's own probe.
            assert value(samples, "relay_stage_seconds_count", stage="archive") == 2 * 2 + 2
            assert value(samples, "relay_stage_seconds_count", stage="delivery") == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.stderr is not None
        err = await asyncio.wait_for(proc.stderr.read(), 60)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
    sink.server.close()
    return err.decode(), buyer_token, token, received


async def test_log_lines_name_tokens_never_real_addresses(tmp_path: Path) -> None:
    log, buyer_token, seller_token_, _ = await _served_log(tmp_path)
    lowered = log.lower()
    assert "maria@buyer.example" not in lowered
    assert "shop@seller.example" not in lowered
    transactions = [line for line in log.splitlines() if "smtp transaction" in line]
    deliveries = [line for line in log.splitlines() if "delivery attempt" in line]
    assert len(transactions) == 2
    assert len(deliveries) == 2
    first, second = transactions
    assert f"to={seller_token_}" in first and f"sender={buyer_token}" in first
    assert f"to={buyer_token}" in second and f"sender={seller_token_}" in second
    assert "reply=250" in first and "outcome=delivered" in deliveries[0]
    trace = first.split("trace=")[1].split()[0]
    assert f"trace={trace}" in deliveries[0]  # the id follows the message
    assert f"to={seller_token_}" in deliveries[0]


async def test_json_logs_follow_one_message_by_its_trace_id(tmp_path: Path) -> None:
    log, buyer_token, seller_token_, _ = await _served_log(
        tmp_path, extra="logging: {format: json}\n"
    )
    assert "maria@buyer.example" not in log.lower()
    assert "shop@seller.example" not in log.lower()
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    smtp = [d for d in lines if d.get("event") == "smtp"]
    delivery = [d for d in lines if d.get("event") == "delivery"]
    assert [d["to"] for d in smtp] == [[seller_token_], [buyer_token]]
    assert [d["sender"] for d in smtp] == [[buyer_token], [seller_token_]]
    assert [d["reply"] for d in smtp] == ["250", "250"]
    for txn, attempt in zip(smtp, delivery, strict=True):
        assert attempt["trace"] == txn["trace"]
        assert attempt["outcome"] == "delivered"
        assert txn["result"][0].endswith(":queued")
    assert all({"time", "level", "logger", "message", "pid"} <= d.keys() for d in lines)


async def test_workers_add_up_on_one_metrics_endpoint(tmp_path: Path) -> None:
    _log, _b, _s, received = await _served_log(tmp_path, workers=2, metrics_port=free_port())
    assert received == 2


async def test_an_abandoned_transaction_gets_its_log_line_too(
    relay: Relay, parties: Parties, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relay.inbound")
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port, timeout=30)
    async with client:
        await client.ehlo()
        await client.mail(parties.buyer)
        await client.rcpt(parties.seller_token)
        with pytest.raises(aiosmtplib.SMTPRecipientRefused):
            await client.rcpt("someone@elsewhere.example")
        await client.rset()
        await client.mail(parties.buyer)
    await wait_until(lambda: len(_transactions(caplog)) == 2)
    reset, gone = _transactions(caplog)
    assert reset["ended"] == "reset"
    assert reset["to"] == [parties.seller_token]
    assert reset["refused"] == ["550"]
    assert reset["sender"] == [parties.buyer_token]
    assert gone["ended"] == "disconnected"
    assert gone["to"] == []
    assert reset["trace"] != gone["trace"]
    assert parties.buyer not in caplog.text
    assert "elsewhere.example" not in caplog.text


async def test_a_message_too_big_is_one_transaction_line(
    tmp_path: Path, sink: Sink, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relay.inbound")
    config = make_config(tmp_path, sink_port=sink.port, database_url=database_url)
    config = config.model_copy(
        update={"smtp": config.smtp.model_copy(update={"max_message_size": 2000})}
    )
    relay = Relay(config)
    await relay.start()
    try:
        parties = register(relay)
        msg = build(frm=parties.buyer, to=parties.seller_token, body="x" * 5000)
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port, timeout=30)
        async with client:  # no SIZE= at MAIL: the limit is found during DATA
            await client.mail(parties.buyer)
            await client.rcpt(parties.seller_token)
            with pytest.raises(aiosmtplib.SMTPDataError) as refused:
                await client.data(msg.as_bytes())
        assert refused.value.code == 552
        await wait_until(lambda: len(_transactions(caplog)) == 1)
    finally:
        await relay.stop()
    (txn,) = _transactions(caplog)
    assert (txn["ended"], txn["reply"], txn["to"]) == ("data", "552", [parties.seller_token])


def _transactions(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        r.fields  # type: ignore[attr-defined]
        for r in caplog.records
        if r.getMessage() == "smtp transaction"
    ]


async def test_a_refused_delivery_is_counted_and_its_reply_logged_by_token(
    tmp_path: Path, sink: Sink, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relay.outbound")
    async with metered_relay(tmp_path, sink, database_url) as relay:
        parties = register(relay)
        port = metrics_port(relay)
        before = await asyncio.to_thread(scrape, port)
        sink.handler.refuse[parties.seller] = (
            f"550 5.1.1 <{parties.seller}>: Recipient address rejected"
        )
        await buyer_writes(relay, parties, subject="Will bounce")
        await sink.wait_for(1)  # the notice to the buyer

        def failed(samples: Samples) -> float:
            return value(
                samples,
                "relay_messages_blocked_total",
                direction="buyer_to_seller",
                reason="failed",
            )

        await wait_until(lambda: failed(scrape(port)) - failed(before) == 1)
        after = await asyncio.to_thread(scrape, port)
    assert (
        value(after, "relay_delivery_attempts_total", outcome="failed")
        - value(before, "relay_delivery_attempts_total", outcome="failed")
        == 1
    )
    (line,) = [r for r in caplog.records if getattr(r, "fields", {}).get("outcome") == "failed"]
    fields: dict[str, Any] = line.fields  # type: ignore[attr-defined]
    assert fields["to"] == parties.seller_token
    assert fields["reply"] == f"550 5.1.1 <{parties.seller_token}>: Recipient address rejected"
    (notice,) = [
        r.fields  # type: ignore[attr-defined]
        for r in caplog.records
        if getattr(r, "fields", {}).get("outcome") == "delivered"
    ]
    assert notice["to"] == parties.buyer_token  # the notice goes back to the buyer
    assert notice["trace"] == fields["trace"]  # and keeps the message's trace id
    assert parties.seller not in caplog.text
