"""The two reference targets of the benchmark: a bare aiosmtpd server and Postfix.

- ``bare``: run as ``python bench/references.py bare --port P``, an aiosmtpd
  server in its own process that accepts every message and discards it.  It is
  the floor: what SMTP in Python on asyncio costs with no work behind it.
- ``PostfixInstance``: a private Postfix (own main.cf, master.cf, queue and log
  under the bench's temporary directory), a plain relay to the sink, loopback
  only, with Postfix's durable-queue defaults (it fsyncs every message).  It is
  the reference for a durable relay.  ``ensure_postfix`` installs Debian's
  package if it is missing, without starting the system's Postfix.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

POSTFIX = Path("/usr/sbin/postfix")
POSTFIX_MASTER = Path("/usr/lib/postfix/sbin/master")
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")


# ----------------------------------------------------------------------------- bare


class DiscardHandler:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 2.0.0 OK"


async def _serve_bare(host: str, port: int) -> None:
    from aiosmtpd.smtp import SMTP

    loop = asyncio.get_running_loop()
    handler = DiscardHandler()
    server = await loop.create_server(
        # hostname= so that aiosmtpd does not call socket.getfqdn()
        lambda: SMTP(handler, hostname="bare.bench.example"),
        host,
        port,
        backlog=1024,
    )
    sys.stdout.write(json.dumps({"event": "ready", "port": server.sockets[0].getsockname()[1]}))
    sys.stdout.write("\n")
    sys.stdout.flush()
    # Run until stdin says "quit" or closes (the parent died), or SIGTERM.
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while True:
        line = await stdin.readline()
        if not line or line.strip() == b"quit":
            break
    server.close()


# -------------------------------------------------------------------------- postfix


def ensure_postfix() -> str | None:
    """Install Debian's postfix package if it is missing; None, or why it cannot run.

    The install must not start the system's Postfix: a policy-rc.d that refuses
    every service start, a "No configuration" debconf answer, no prompts.
    """
    if POSTFIX.exists() and POSTFIX_MASTER.exists():
        return None if os.geteuid() == 0 else "running a private Postfix instance needs root"
    if os.geteuid() != 0:
        return (
            "Postfix is not installed and installing it needs root "
            "(as root: apt-get install postfix, or run make bench as root)"
        )
    if shutil.which("apt-get") is None or shutil.which("debconf-set-selections") is None:
        return "Postfix is not installed and there is no apt-get to install it with"
    print("installing Postfix (Debian package postfix; the system's Postfix is not started)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    previous = POLICY_RC_D.read_bytes() if POLICY_RC_D.exists() else None
    try:
        POLICY_RC_D.write_text("#!/bin/sh\n# bench/run.py: start no services\nexit 101\n")
        POLICY_RC_D.chmod(0o755)
        subprocess.run(
            ["debconf-set-selections"],
            input="postfix postfix/main_mailer_type select No configuration\n",
            text=True,
            check=True,
            timeout=60,
        )
        install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postfix"]
        if subprocess.run(install, env=env, timeout=900).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, timeout=600, check=True)
            subprocess.run(install, env=env, timeout=900, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"could not install Postfix ({exc}); install it with: apt-get install postfix"
    finally:
        if previous is None:
            POLICY_RC_D.unlink(missing_ok=True)
        else:
            POLICY_RC_D.write_bytes(previous)
    if not (POSTFIX.exists() and POSTFIX_MASTER.exists()):
        return "the postfix package was installed but /usr/sbin/postfix is still missing"
    return None


class PostfixError(RuntimeError):
    pass


class PostfixInstance:
    """A private Postfix under ``base``: ``start()``, ``master_pid``, ``stop()``."""

    def __init__(self, base: Path, *, port: int, sink_port: int, relay_domain: str) -> None:
        self.base = base
        self.port = port
        self.sink_port = sink_port
        self.relay_domain = relay_domain
        self.conf = base / "conf"
        self.queue = base / "spool"
        self.data = base / "data"
        self.maillog = base / "maillog"
        self.master_pid: int | None = None

    def write_config(self) -> None:
        for d in (self.base, self.conf, self.queue):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)  # Postfix's daemons (user postfix) must traverse them
        self.data.mkdir(exist_ok=True)
        shutil.chown(self.data, "postfix", "postfix")
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue),
            "data_directory": str(self.data),
            "command_directory": "/usr/sbin",
            "daemon_directory": "/usr/lib/postfix/sbin",
            "shlib_directory": "/usr/lib/postfix",
            "meta_directory": "/etc/postfix",
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "postfix.bench.example",
            "mydomain": "bench.example",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mydestination": "",
            "relay_domains": self.relay_domain,
            "relayhost": f"[127.0.0.1]:{self.sink_port}",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.base.parent),
            "alias_maps": "",
            "alias_database": "",
            "smtputf8_enable": "no",
            "biff": "no",
            "append_dot_mydomain": "no",
            "default_destination_concurrency_limit": "20",
        }
        (self.conf / "main.cf").write_text(
            "".join(f"{k} = {v}\n" for k, v in settings.items()), encoding="utf-8"
        )
        lines = []
        for line in Path("/etc/postfix/master.cf").read_text(encoding="utf-8").splitlines():
            fields = line.split()
            if line and not line[0].isspace() and not line.startswith("#") and len(fields) >= 8:
                if fields[0] == "smtp" and fields[1] == "inet":
                    fields[0] = f"127.0.0.1:{self.port}"
                fields[4] = "n"  # no chroot: the spool is a temporary directory
                line = "  ".join(fields)
            lines.append(line)
        (self.conf / "master.cf").write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _postfix(self, action: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(POSTFIX), "-c", str(self.conf), action],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def maillog_tail(self, lines: int = 30) -> str:
        try:
            text = self.maillog.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            return f"(no maillog: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def start(self, timeout: float = 60) -> int:
        """Start the instance; the master's pid.  Raises PostfixError with the log tail."""
        self.write_config()
        done = self._postfix("start", timeout)
        pid_file = self.queue / "pid" / "master.pid"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                pid = int(pid_file.read_text().strip())
                os.kill(pid, 0)
            except (OSError, ValueError):
                if done.returncode != 0:
                    break
                time.sleep(0.1)
                continue
            self.master_pid = pid
            return pid
        raise PostfixError(
            f"postfix -c {self.conf} start failed (exit {done.returncode})\n"
            f"{done.stdout}{done.stderr}\nmaillog:\n{self.maillog_tail()}"
        )

    def stop(self, timeout: float = 60) -> None:
        """``postfix stop``, then wait for the master to be gone (the caller kills
        what is left by pid)."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._postfix("stop", timeout)
        pid = self.master_pid
        deadline = time.monotonic() + 15
        while pid is not None and time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                return
            time.sleep(0.1)

    def queue_size(self) -> int:
        """Messages still in the queue (incoming, active, deferred)."""
        count = 0
        for sub in ("incoming", "active", "deferred", "maildrop"):
            d = self.queue / sub
            if d.exists():
                count += sum(len(files) for _root, _dirs, files in os.walk(d))
        return count

    def errors(self) -> list[str]:
        """Warnings, errors and deferrals in the maillog (first few)."""
        try:
            text = self.maillog.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        pattern = re.compile(r"warning:|error:|fatal:|panic:|status=(?!sent)")
        return [line for line in text.splitlines() if pattern.search(line)][:10]


def main() -> None:
    parser = argparse.ArgumentParser(description="bench reference targets")
    sub = parser.add_subparsers(dest="what", required=True)
    bare = sub.add_parser("bare", help="aiosmtpd server that accepts and discards")
    bare.add_argument("--host", default="127.0.0.1")
    bare.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.what == "bare":
        asyncio.run(_serve_bare(args.host, args.port))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
