from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from relay.app import Relay
from relay.config import RelayConfig
from relay.dkim_sign import generate_rsa_key
from tests.helpers import Parties, Sink, make_config, register, start_sink


@pytest.fixture(scope="session")
def dkim_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One RSA key for the whole run (key generation is the slow part) and its TXT value."""
    path = tmp_path_factory.mktemp("dkim") / "relay.key"
    return path, generate_rsa_key(path)


@pytest_asyncio.fixture
async def sink() -> AsyncIterator[Sink]:
    s = await start_sink()
    yield s
    s.server.close()
    await s.server.wait_closed()


@pytest.fixture
def config(tmp_path: Path, sink: Sink, dkim_key: tuple[Path, str]) -> RelayConfig:
    return make_config(tmp_path, sink_port=sink.port, dkim_key=dkim_key[0])


@pytest_asyncio.fixture
async def relay(config: RelayConfig) -> AsyncIterator[Relay]:
    r = Relay(config)
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
def parties(relay: Relay) -> Parties:
    return register(relay)
