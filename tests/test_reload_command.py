"""``relay reload`` and the pid file of ``relay serve`` (README, "Command line").

The real commands run as subprocesses on a config in the test's directory:
``relay serve`` writes its pid file and removes it when it stops, a second one
is refused, one killed with SIGKILL leaves a stale file that the next one
replaces, and ``relay reload`` makes the running relay (and every worker of
``--workers N``) apply a changed filter rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib

from tests.helpers import RELAY, build, cli, free_port, seller_token, wait_until

RULE = """\
rules:
  - id: no-whatsapp
    applies_to: both
    match: {keywords: [whatsapp]}
    action: reject
    notice: Keep the conversation on the marketplace.
"""


def write_config(tmp: Path, smtp_port: int, *, pid_file: str | None = "run/relay.pid") -> Path:
    """A config in ``tmp``; ``pid_file`` None leaves smtp.pid_file at its default."""
    path = tmp / "relay.yaml"
    pid = f", pid_file: {pid_file}" if pid_file else ""
    path.write_text(
        f"""
smtp: {{host: 127.0.0.1, port: {smtp_port}, hostname: mx.reload.test{pid}}}
database: {{url: "sqlite:///state/relay.db"}}
archive: {{path: state/archive}}
delivery: {{mode: maildir, maildir: state/outbox, poll_interval: 0.2}}
filters: {{rules: filters.yaml}}
dkim: {{private_key: state/dkim.key}}
campaigns: {{unsubscribe: {{listen: "127.0.0.1:0"}}}}
""",
        encoding="utf-8",
    )
    (tmp / "filters.yaml").write_text("rules: []\n", encoding="utf-8")
    return path


def relay(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RELAY_CONFIG"}
    done = subprocess.run(
        [RELAY, "-c", str(config), *args], capture_output=True, text=True, timeout=60, env=env
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


class Served:
    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    async def wait_for_log(self, needle: str, count: int = 1, timeout: float = 20) -> None:
        await wait_until(lambda: self.text().count(needle) >= count, timeout)


@contextlib.asynccontextmanager
async def serving(config: Path, port: int, *extra: str) -> AsyncIterator[Served]:
    log = config.parent / f"serve-{len(list(config.parent.glob('serve-*.log')))}.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            RELAY,
            "serve",
            "-c",
            str(config),
            *extra,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=out,
            start_new_session=True,  # its own process group: workers included in the cleanup
        )
    served = Served(proc, log)
    try:
        expected = "workers share" if extra else "listening on"
        await wait_until(lambda: expected in served.text() or proc.returncode is not None, 30)
        assert proc.returncode is None, served.text()
        yield served
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


async def send(port: int, token: str, body: str) -> None:
    msg = build(frm="maria@buyer.example", to=token, subject="Question", body=body)
    await aiosmtplib.send(
        msg,
        hostname="127.0.0.1",
        port=port,
        sender="maria@buyer.example",
        recipients=[token],
        timeout=30,
    )


async def statuses(config: Path) -> list[str]:
    """The buyer's messages, newest first (the relay's notices left out)."""
    found = await cli(config, "archive", "list")
    return [m["status"] for m in found if m["direction"] == "buyer_to_seller"]


async def test_reload_applies_a_changed_rule_and_the_pid_file_follows_the_relay(
    tmp_path: Path,
) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    pid_file = tmp_path / "run" / "relay.pid"
    token = await seller_token(config)

    missing = await asyncio.to_thread(relay, config, "reload")
    assert missing.returncode == 1
    assert missing.stderr == (
        f"error: no pid file {pid_file}: relay serve is not running with this configuration\n"
    )

    async with serving(config, port) as served:
        assert pid_file.read_text(encoding="ascii") == f"{served.proc.pid}\n"
        second = await asyncio.to_thread(relay, config, "serve")
        assert second.returncode == 1
        assert second.stderr.splitlines()[-1] == (
            f"error: relay serve is already running (pid {served.proc.pid}): its pid file"
            f" {pid_file} is locked; stop it first (`relay reload` reloads its filter rules)"
        )

        await send(port, token, "Do you have whatsapp?")
        await wait_until_statuses(config, ["delivered"])

        # A broken rules file: nothing is signalled, the relay keeps its rules.
        (tmp_path / "filters.yaml").write_text("rules:\n  - id: x\n", encoding="utf-8")
        broken = await asyncio.to_thread(relay, config, "reload")
        assert broken.returncode == 2
        assert broken.stderr.endswith(
            f"not reloaded: relay serve (pid {served.proc.pid}) keeps its current rules\n"
        )
        assert f"{tmp_path / 'filters.yaml'}:2: rules[0]" in broken.stderr

        (tmp_path / "filters.yaml").write_text(RULE, encoding="utf-8")
        done = await asyncio.to_thread(relay, config, "reload")
        assert done.returncode == 0, done.stderr
        assert done.stdout == (
            f"sent SIGHUP to relay serve (pid {served.proc.pid}): it reloads 1 filter rule\n"
        )
        await served.wait_for_log("reloaded 1 filter rules")
        # Signals arrive in order: had the broken file been signalled, its error
        # would be logged before this reload.
        assert "rules not reloaded" not in served.text()

        await send(port, token, "Add me on whatsapp, it is quicker")
        await wait_until_statuses(config, ["rejected", "delivered"])

        served.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(served.proc.wait(), 60) == 0
    assert not pid_file.exists()


async def wait_until_statuses(config: Path, wanted: list[str], timeout: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (got := await statuses(config)) != wanted:
        assert asyncio.get_running_loop().time() < deadline, got
        await asyncio.sleep(0.1)


async def test_a_stale_pid_file_is_reported_and_replaced(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    pid_file = tmp_path / "run" / "relay.pid"  # smtp.pid_file is relative to the config
    async with serving(config, port) as served:
        killed = served.proc.pid
        assert pid_file.read_text(encoding="ascii") == f"{killed}\n"
        os.killpg(killed, signal.SIGKILL)
        await served.proc.wait()
    assert pid_file.exists()  # kill -9 gives no chance to remove it
    stale = await asyncio.to_thread(relay, config, "reload")
    assert stale.returncode == 1
    assert stale.stderr == (
        f"error: stale pid file {pid_file} (pid {killed}): relay serve is not running"
        " (the next relay serve replaces the file)\n"
    )
    async with serving(config, port) as again:
        assert pid_file.read_text(encoding="ascii") == f"{again.proc.pid}\n"
        reloaded = await asyncio.to_thread(relay, config, "reload", "--json")
        assert reloaded.returncode == 0, reloaded.stderr
        assert f'"pid": {again.proc.pid}' in reloaded.stdout
        await again.wait_for_log("reloaded 0 filter rules")
        again.proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(again.proc.wait(), 60) == 0
    assert not pid_file.exists()


async def test_reload_reaches_every_worker(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port, pid_file=None)
    token = await seller_token(config)
    pid_file = tmp_path.parent / "var" / "relay.pid"  # the default: ../var/ from the config
    async with serving(config, port, "--workers", "2") as served:
        assert pid_file.read_text(encoding="ascii") == f"{served.proc.pid}\n"  # the supervisor
        await served.wait_for_log("worker 1 started")
        (tmp_path / "filters.yaml").write_text(RULE, encoding="utf-8")
        done = await asyncio.to_thread(relay, config, "reload")
        assert done.returncode == 0, done.stderr
        await served.wait_for_log("reloaded 1 filter rules", count=2)
        for i in range(4):  # whichever worker takes it, the new rule applies
            await send(port, token, f"whatsapp me ({i})")
        await wait_until_statuses(config, ["rejected"] * 4)
        served.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(served.proc.wait(), 60) == 0
    assert not pid_file.exists()


async def test_a_port_in_use_is_the_same_message_with_one_process(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    with socket.socket() as other:  # another program listens there
        other.bind(("127.0.0.1", port))
        other.listen()
        done = await asyncio.to_thread(relay, config, "serve")
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert not (tmp_path / "run" / "relay.pid").exists()
