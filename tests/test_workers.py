"""``relay serve --workers N``: N processes share the port and the database.

The real command runs as a subprocess: connections spread over both workers,
every message is delivered once, a killed worker is replaced, SIGHUP reaches
every worker, and SIGTERM stops them all with status 0.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
from pathlib import Path

import aiosmtplib

from tests.helpers import (
    RELAY,
    build,
    free_port,
    queue_empty,
    seller_token,
    serving,
    start_sink,
    wait_until,
    wait_until_async,
    write_config,
)


def children(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text(encoding="ascii")
    return {int(p) for p in text.split()}


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's exit is reaped by whoever adopted it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def listeners(port: int) -> int:
    """How many sockets listen on 127.0.0.1:``port`` (state 0A in /proc/net/tcp)."""
    local = f"0100007F:{port:04X}"
    lines = Path("/proc/net/tcp").read_text(encoding="ascii").splitlines()[1:]
    return sum(1 for ln in lines if ln.split()[1] == local and ln.split()[3] == "0A")


async def test_two_workers_share_the_port_and_deliver_each_message_once(
    tmp_path: Path, database_url: str
) -> None:
    smtp_port, sink_port = free_port(), free_port()
    config = write_config(tmp_path, smtp_port=smtp_port, sink_port=sink_port, url=database_url)
    token = await seller_token(config)
    sink = await start_sink(sink_port)
    try:
        log = tmp_path / "relay.log"
        async with serving(config, smtp_port, "--workers", "2", log=log) as proc:
            await wait_until(lambda: listeners(smtp_port) == 2)
            first = children(proc.pid)

            async def one(i: int) -> None:  # one connection per message: spread by the kernel
                msg = build(frm="maria@buyer.example", to=token, subject=f"message {i}")
                await aiosmtplib.send(
                    msg,
                    hostname="127.0.0.1",
                    port=smtp_port,
                    sender="maria@buyer.example",
                    recipients=[token],
                )

            await asyncio.gather(*(one(i) for i in range(24)))
            got = await sink.wait_for(24, timeout=30)
            assert sorted(str(m.message["Subject"]) for m in got) == sorted(
                f"message {i}" for i in range(24)
            )

            # all recorded as delivered before the kill
            await wait_until_async(lambda: queue_empty(config), timeout=10)
            victim = min(first)
            os.kill(victim, signal.SIGKILL)
            await wait_until(lambda: len(children(proc.pid) - {victim}) == 2, timeout=10)
            await wait_until(lambda: listeners(smtp_port) == 2, timeout=10)
            await one(99)  # still served, by the survivor or the replacement
            await sink.wait_for(25, timeout=20)

            proc.send_signal(signal.SIGHUP)

            def reloaded() -> int:
                return log.read_text(encoding="utf-8").count("reloaded 0 filter rules")

            await wait_until(lambda: reloaded() >= 2, timeout=20)  # SIGHUP reached both
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 60) == 0
        text = log.read_text(encoding="utf-8")
        assert "Traceback" not in text
        queued_by = set(
            re.findall(r"\[(\d+)\] relay\.inbound: smtp transaction .* reply=250 ", text)
        )
        assert len(queued_by) >= 2, "both workers accepted mail"
        assert reloaded() == 2, "each worker reloaded once"
        # Stopped, and every delivery recorded: no copy can still be on its way.
        assert await queue_empty(config)
        assert len(sink.messages) == 25
    finally:
        sink.server.close()
        await sink.server.wait_closed()


async def test_a_port_in_use_is_one_clear_error(tmp_path: Path) -> None:
    smtp_port = free_port()
    config = write_config(tmp_path, smtp_port=smtp_port, sink_port=free_port())
    with socket.socket() as other:  # another program listens there, without SO_REUSEPORT
        other.bind(("127.0.0.1", smtp_port))
        other.listen()
        proc = await asyncio.create_subprocess_exec(
            RELAY, "-c", str(config), "serve", "--workers", "2", stderr=asyncio.subprocess.PIPE
        )
        _out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    assert err.decode().strip().splitlines()[-1] == (
        f"error: cannot listen on 127.0.0.1:{smtp_port}: Address already in use"
    )
    assert b"Traceback" not in err


async def test_workers_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    smtp_port = free_port()
    config = write_config(tmp_path, smtp_port=smtp_port, sink_port=free_port())
    async with serving(config, smtp_port, "--workers", "2") as proc:
        await wait_until(lambda: listeners(smtp_port) == 2)
        workers = children(proc.pid)
        assert len(workers) == 2
        proc.kill()  # the supervisor only: its workers are orphaned
        await proc.wait()
        await wait_until(lambda: not any(running(w) for w in workers), 15)
        assert listeners(smtp_port) == 0
