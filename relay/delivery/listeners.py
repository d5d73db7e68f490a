"""Who else hears that a message was delivered or failed, by its direction.

The queue records a delivery's outcome; some messages also matter to a package
above this one, which the queue must not import (the README's package map): a
campaign message's fate is its send record's and the 7-day ledger's.  Such a
package registers a ``DeliveryListener`` for its ``Direction``, and the queue
calls it inside the transaction that records the outcome, so the two commit
together or not at all.

Registration is explicit, never a side effect of an import: ``relay.campaigns.
install()`` registers the campaigns' listener, and every entry point that
records deliveries or DSNs calls it before it starts (``relay.app.Relay``, which
``relay serve`` and each worker of ``--workers N`` run, the supervisor and the
command line).  A direction nobody registered for is only the queue's business.
"""

from __future__ import annotations

from typing import Protocol

from sqlmodel import Session

from relay.storage.models import Direction


class DeliveryListener(Protocol):
    """Told of a message's outcome, in the transaction that records it."""

    def delivered(self, session: Session, message_id: int, /) -> None:
        """The recipient's server took message ``message_id`` (it was queued until now)."""

    def failed(self, session: Session, message_id: int, /) -> None:
        """Message ``message_id`` failed for good: refused, given up, or a DSN
        came back (after it was delivered, too)."""


_listeners: dict[Direction, DeliveryListener] = {}


def register(direction: Direction, listener: DeliveryListener) -> None:
    """Tell ``listener`` the outcomes of ``direction``'s messages from now on.

    Registering an equal listener again does nothing, so that every entry point
    may install what it needs without knowing what another one already did; a
    different listener for a direction that has one is a mistake, not a swap.
    """
    current = _listeners.get(direction)
    if current is not None and current != listener:
        raise ValueError(f"{direction.value} messages already have a listener: {current!r}")
    _listeners[direction] = listener


def listener_for(direction: Direction) -> DeliveryListener | None:
    return _listeners.get(direction)
