"""Which event loop the relay's servers run on: uvloop's when it is installed.

uvloop (the optional extra ``fast``, which ``make`` installs) runs the same
asyncio code with its transports and scheduling in C: fewer CPU milliseconds per
SMTP message and per API request (docs/performance.md).  Without it, asyncio's
own loop runs everything the same way.

One limit: libuv's state does not survive ``fork()``.  A process that forks
workers (``relay serve --workers N``) must not have run a uvloop loop before,
or the workers hang in their first lookup; so the supervisor's own HTTP
servers run on asyncio's loop (``fast=False``) and the workers on uvloop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory(*, fast: bool = True) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop if it is installed and ``fast``, else None: asyncio's own."""
    if not fast:
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], *, fast: bool = True) -> T:
    """``asyncio.run(main)`` on the loop ``loop_factory`` picks."""
    with asyncio.Runner(loop_factory=loop_factory(fast=fast)) as runner:
        return runner.run(main)
