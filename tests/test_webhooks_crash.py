"""Webhooks through a crash, and shared by two relays on one database.

A relay SIGKILLed after a change committed, before its event reached the
marketplace, sends the event after it restarts; two relays on one database
work through one outbox and send each event once.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib
import httpx
import pytest_asyncio
from sqlmodel import select

from relay.app import Relay
from relay.core.config import RelayConfig, load_config
from relay.storage.db import Database
from relay.storage.models import WebhookEvent
from tests.helpers import (
    build,
    buyer_writes,
    cli,
    config_file,
    free_port,
    register,
    seller_token,
    serving,
    start_sink,
    wait_idle,
    wait_until,
    write_config,
)
from tests.receiver import Receiver
from tests.test_api import bearer


def events_written(config: Path) -> list[str]:
    """The types of the events in the outbox, read from the database."""
    db = Database(load_config(config).database)
    try:
        return db.call(lambda s: [e.type for e in s.exec(select(WebhookEvent)).all()])
    finally:
        db.dispose()


async def test_an_event_survives_a_sigkill_and_is_sent_after_restart(
    tmp_path: Path, database_url: str
) -> None:
    smtp_port, sink_port, api_port, hook_port = (free_port() for _ in range(4))
    config = write_config(tmp_path, smtp_port=smtp_port, sink_port=sink_port, url=database_url)
    text = config.read_text().replace(
        'api: {listen: "127.0.0.1:0"}', f'api: {{listen: "127.0.0.1:{api_port}"}}'
    )
    config.write_text(text)
    token = await seller_token(config)
    admin = (await cli(config, "api-key", "create", "--scope", "admin"))["key"]
    base = f"http://127.0.0.1:{api_port}/api/v1"
    sink = await start_sink(sink_port)
    try:
        # The receiver is not there yet: every attempt is refused.
        async with serving(config, smtp_port) as proc:
            async with httpx.AsyncClient(base_url=base, timeout=10) as api:
                body = {
                    "url": f"http://127.0.0.1:{hook_port}/hooks",
                    "events": ["message.delivered"],
                }
                made = await api.post("/webhooks", json=body, headers=bearer(admin))
                assert made.status_code == 201, made.text
            msg = build(frm="maria@buyer.example", to=token, subject="before the crash")
            await aiosmtplib.send(
                msg, hostname="127.0.0.1", port=smtp_port,
                sender="maria@buyer.example", recipients=[token],
            )  # fmt: skip
            await sink.wait_for(1)
            await wait_until(lambda: "message.delivered" in events_written(config))
            os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()

        receiver = Receiver(hook_port)
        try:
            async with serving(config, smtp_port) as proc:
                (event,) = await receiver.wait_for(1)
                assert event["type"] == "message.delivered"
                proc.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(proc.wait(), 20) == 0
            assert len(receiver.ids()) == 1 and events_written(config) == ["message.delivered"]
        finally:
            receiver.close()
    finally:
        sink.server.close()
        await sink.server.wait_closed()


@pytest_asyncio.fixture
async def two_relays(config: RelayConfig) -> AsyncIterator[tuple[Relay, Relay]]:
    first, second = Relay(config), Relay(config)
    await first.start()
    await second.start()
    yield first, second
    await second.stop()
    await first.stop()


async def test_two_relays_on_one_database_send_each_event_once(
    two_relays: tuple[Relay, Relay], tmp_path: Path
) -> None:
    first, second = two_relays
    assert first.api is not None
    cfg = config_file(first.config, tmp_path / "relay.json")
    admin = (await cli(cfg, "api-key", "create", "--scope", "admin"))["key"]
    parties = register(first)
    receiver = Receiver()
    try:
        async with httpx.AsyncClient(base_url=f"{first.api.base_url}/api/v1") as api:
            body = {"url": receiver.url, "events": ["message.delivered"]}
            assert (await api.post("/webhooks", json=body, headers=bearer(admin))).is_success
        for n in range(12):
            await buyer_writes(first if n % 2 else second, parties, subject=f"Question {n}")
        events = await receiver.wait_for(12, timeout=30)
        assert {e["type"] for e in events} == {"message.delivered"}
        await wait_idle(first, second)
        assert len(receiver.requests) == 12  # each sent once, by one relay or the other
    finally:
        receiver.close()
