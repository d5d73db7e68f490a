"""Reloading the filter rules (docs/filters.md): the new rules apply to the next
message, over SMTP; a bad file keeps the running rules, which go on applying.

Each rule redacts one word, so the message the buyer receives shows which rules
were in force when the relay took it: the word is ``[redacted]`` or still there.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import pytest

from relay.app import Relay
from relay.core.config import RelayConfig
from tests.helpers import Parties, Sink, register, seller_writes, wait_until

BAD_RULES = "rules:\n  - id: x\n    match: {nosuchkind: 1}\n"


def redacting(word: str) -> str:
    """A rules file with one rule: ``word`` in a seller's message is redacted."""
    return f"rules:\n  - id: no-{word}\n    match: {{keywords: [{word}]}}\n    action: redact\n"


async def buyer_reads(relay: Relay, sink: Sink, parties: Parties, text: str) -> str:
    """The seller writes ``text`` over SMTP; the body of the buyer's copy."""
    before = len(sink.messages)
    await seller_writes(relay, parties, subject="About your order", body=text)
    got = (await sink.wait_for(before + 1))[before]
    assert got.rcpt_tos == [parties.buyer]
    body = got.message.get_body(("plain",))
    assert body is not None
    return " ".join(str(body.get_content()).split())


async def test_bad_rules_file_keeps_previous_rules(
    relay: Relay, config: RelayConfig, sink: Sink, parties: Parties
) -> None:
    rules = config.filters.rules
    assert await buyer_reads(relay, sink, parties, "apple banana") == "apple banana"

    rules.write_text(redacting("apple"), encoding="utf-8")
    assert relay.reload_rules() is True
    assert await buyer_reads(relay, sink, parties, "apple banana") == "[redacted] banana"

    rules.write_text(BAD_RULES, encoding="utf-8")
    assert relay.reload_rules() is False
    # The relay keeps working with the rules it had.
    assert await buyer_reads(relay, sink, parties, "apple banana") == "[redacted] banana"

    rules.write_text(redacting("banana"), encoding="utf-8")
    assert relay.reload_rules() is True
    assert await buyer_reads(relay, sink, parties, "apple banana") == "apple [redacted]"


async def test_sighup_reloads(
    config: RelayConfig, sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relay.app")
    rules = config.filters.rules
    relay = Relay(config)
    task = asyncio.create_task(relay.serve_forever())

    async def hang_up(logged: str) -> None:
        """SIGHUP, then wait for the relay to say it has dealt with it."""
        seen = caplog.text.count(logged)
        os.kill(os.getpid(), signal.SIGHUP)
        await wait_until(lambda: caplog.text.count(logged) > seen)

    try:
        await wait_until(lambda: relay.server is not None or task.done())
        assert not task.done(), task
        parties = register(relay)
        assert await buyer_reads(relay, sink, parties, "apple banana") == "apple banana"

        rules.write_text(redacting("apple"), encoding="utf-8")
        await hang_up("reloaded 1 filter rules")
        assert await buyer_reads(relay, sink, parties, "apple banana") == "[redacted] banana"

        rules.write_text(BAD_RULES, encoding="utf-8")
        await hang_up("rules not reloaded, keeping the previous ones")
        assert await buyer_reads(relay, sink, parties, "apple banana") == "[redacted] banana"
    finally:
        if not task.done():  # its SIGTERM handler is installed: this stops it, not pytest
            os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(task, 30)
