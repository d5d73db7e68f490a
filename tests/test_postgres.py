"""The same relay on PostgreSQL: a throwaway database per test, dropped afterwards.

Skipped (with the reason) only when no PostgreSQL server answers on 127.0.0.1:5432.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
import pytest_asyncio
from sqlmodel import Session, select

from relay.app import Relay
from relay.config import DatabaseConfig, RelayConfig
from relay.models import Message, MessageStatus
from tests.helpers import Sink, build, buyer_writes, make_config, register, send, wait_until

ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"


@pytest.fixture
def pg_url() -> Iterator[str]:
    try:
        admin = psycopg.connect(ADMIN_DSN, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL server answers on 127.0.0.1:5432 ({exc})")
    name = f"relay_test_{secrets.token_hex(6)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest_asyncio.fixture
async def pg_relay(
    tmp_path: Path, sink: Sink, pg_url: str, dkim_key: tuple[Path, str]
) -> AsyncIterator[Relay]:
    config: RelayConfig = make_config(tmp_path, sink_port=sink.port, dkim_key=dkim_key[0])
    config = config.model_copy(update={"database": DatabaseConfig(url=pg_url)})
    relay = Relay(config)
    await relay.start()
    yield relay
    await relay.stop()


async def test_round_trip_on_postgresql(pg_relay: Relay, sink: Sink) -> None:
    parties = register(pg_relay)
    await buyer_writes(pg_relay, parties, body=parties.buyer)
    (got,) = await sink.wait_for(1)
    assert parties.buyer.encode() not in got.data
    reply = build(
        frm=parties.seller,
        to=parties.buyer_token,
        headers={"In-Reply-To": got.message["Message-ID"]},
    )
    await send(pg_relay, reply, sender=parties.seller, recipients=[parties.buyer_token])
    msgs = await sink.wait_for(2)
    assert msgs[1].rcpt_tos == [parties.buyer]

    def statuses(s: Session) -> list[MessageStatus]:
        return [m.status for m in s.exec(select(Message))]

    await wait_until(lambda: pg_relay.db.call(statuses) == [MessageStatus.DELIVERED] * 2)
