"""Crash safety with the real ``relay serve`` process: SIGKILL right after 250, restart,
and the message is delivered; SIGTERM stops cleanly with status 0."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from tests.helpers import build, start_sink

RELAY = str(Path(sys.executable).with_name("relay"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_config(tmp: Path, *, smtp_port: int, sink_port: int, url: str | None = None) -> Path:
    """A config file in ``tmp``; the database at ``url``, or SQLite under ``tmp``."""
    path = tmp / "relay.yaml"
    path.write_text(
        f"""
smtp: {{host: 127.0.0.1, port: {smtp_port}, hostname: mx.crash.test}}
database: {{url: "{url or "sqlite:///state/relay.db"}"}}
archive: {{path: state/archive}}
delivery:
  mode: smtp
  smtp: {{host: 127.0.0.1, port: {sink_port}, timeout: 5}}
  retry: {{initial_delay: 0.2, max_delay: 0.5, give_up_after: 120}}
  poll_interval: 0.2
filters: {{rules: filters.yaml}}
dkim: {{private_key: state/dkim.key}}
campaigns: {{unsubscribe: {{listen: "127.0.0.1:0"}}}}
""",
        encoding="utf-8",
    )
    (tmp / "filters.yaml").write_text("rules: []\n", encoding="utf-8")
    return path


async def cli(config: Path, *args: str) -> Any:
    """``relay -c config ARGS --json``, which must succeed: its output, parsed."""
    proc = await asyncio.create_subprocess_exec(
        RELAY,
        "-c",
        str(config),
        *args,
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return json.loads(out)


async def seller_token(config: Path) -> str:
    """Registers a seller and an order with maria@buyer.example; the seller's token."""
    seller = await cli(
        config, "seller", "add", "--name", "Crafts", "--email", "shop@seller.example"
    )
    order = await cli(
        config,
        "order",
        "add",
        "O-1",
        "--buyer",
        "maria@buyer.example",
        "--seller",
        str(seller["seller_id"]),
    )
    token: str = order["seller_token"]
    return token


@contextlib.asynccontextmanager
async def serving(
    config: Path, port: int, *extra: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        RELAY,
        "serve",
        "-c",
        str(config),
        *extra,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its own process group: workers included in the cleanup
    )
    try:
        for _ in range(200):
            with contextlib.suppress(OSError):
                _r, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("relay did not start listening")
        yield proc
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


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
        await asyncio.sleep(0.3)
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
