"""Crash safety with the real ``relay serve`` process: SIGKILL right after 250, restart,
and the message is delivered; SIGTERM stops cleanly with status 0."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiosmtplib
import pytest

from tests.helpers import (
    build,
    free_port,
    queue_empty,
    seller_token,
    serving,
    start_sink,
    write_config,
)


async def test_sigkill_after_250_then_restart_delivers(tmp_path: Path, database_url: str) -> None:
    smtp_port, sink_port = free_port(), free_port()
    config = write_config(tmp_path, smtp_port=smtp_port, sink_port=sink_port, url=database_url)
    token = await seller_token(config)
    msg = build(frm="maria@buyer.example", to=token, subject="survives a crash")

    # The downstream is down, so the message cannot leave before the kill.
    async with serving(config, smtp_port) as proc:
        _errors, reply = await aiosmtplib.send(
            msg,
            hostname="127.0.0.1",
            port=smtp_port,
            sender="maria@buyer.example",
            recipients=[token],
        )
        assert reply.startswith("2.0.0")
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()

    sink = await start_sink(sink_port)
    try:
        async with serving(config, smtp_port) as proc:
            (got,) = await sink.wait_for(1, timeout=20)
            assert got.message["Subject"] == "survives a crash"
            assert got.rcpt_tos == ["shop@seller.example"]
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 20) == 0
            _out, err = await proc.communicate()
            assert b"Traceback" not in err
        # Stopped, and the delivery recorded: no copy can still be on its way.
        assert await queue_empty(config)
        assert len(sink.messages) == 1
    finally:
        sink.server.close()
        await sink.server.wait_closed()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_stop_signal_exits_zero(tmp_path: Path, sig: signal.Signals) -> None:
    smtp_port = free_port()
    config = write_config(tmp_path, smtp_port=smtp_port, sink_port=free_port())
    async with serving(config, smtp_port) as proc:
        proc.send_signal(sig)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
