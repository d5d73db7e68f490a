"""SIGHUP reload of the filter rules: a bad file keeps the running rules (docs/filters.md)."""

from __future__ import annotations

import asyncio
import os
import signal

from relay.app import Relay
from relay.config import RelayConfig
from tests.helpers import Parties, Sink, buyer_writes


async def test_bad_rules_file_keeps_previous_rules(
    relay: Relay, config: RelayConfig, sink: Sink, parties: Parties
) -> None:
    before = relay.pipeline.rules
    config.filters.rules.write_text("rules:\n  - id: x\n    match: {nosuchkind: 1}\n")
    assert relay.reload_rules() is False
    assert relay.pipeline.rules is before
    # The relay keeps working with the rules it had.
    await buyer_writes(relay, parties)
    await sink.wait_for(1)
    config.filters.rules.write_text("rules: []\n")
    assert relay.reload_rules() is True
    assert relay.pipeline.rules is not before


async def test_sighup_reloads(config: RelayConfig) -> None:
    relay = Relay(config)
    task = asyncio.create_task(relay.serve_forever())
    try:
        while relay.server is None:
            await asyncio.sleep(0.01)
        before = relay.pipeline.rules
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(100):
            if relay.pipeline.rules is not before:
                break
            await asyncio.sleep(0.01)
        assert relay.pipeline.rules is not before
    finally:
        if not task.done():  # its SIGTERM handler is installed: this stops it, not pytest
            os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(task, 30)
