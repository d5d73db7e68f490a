"""Brand campaigns: a registered brand's email campaigns to its followers.

One campaign's path, module by module:

- ``models``: the campaign tables (brands, followers, products, promotions,
  events, campaigns, their sends and the 7-day ledger) and their statuses;
- ``catalog``: brands, followers, products, promotions and shopping events, and
  what a promotion's status change does to the campaigns that show it;
- ``lifecycle``: a campaign from draft through review (``status`` records
  every change);
- ``rules``: the marketplace's rules on dates, promotions, the delivery window
  and the 7-day frequency, in one place;
- ``calendar``: the date picker's data;
- ``dispatch``: in ``relay serve``, starts approved campaigns on their date and
  hands each follower's message to the outbound queue at its time, enforcing
  the 7-day rule as it sends;
- ``ledger``: the 7-day rule's ledger, and what a message's delivery or bounce
  does to its send;
- ``render``: the message (HTML and plain text) from its templates;
- ``unsubscribe``: the one-click unsubscribe endpoint;
- ``report``: what became of each campaign's messages.

It may import ``relay.core``, ``relay.storage``, ``relay.message`` and
``relay.delivery`` (the README's package map), and none of them imports it.
What they must know of campaigns, the campaigns tell them through ``install``,
below: every process that migrates the database or records deliveries calls it.
"""

from __future__ import annotations

from sqlmodel import SQLModel

from relay.campaigns import ledger, models
from relay.delivery import listeners
from relay.storage.models import Direction


def install() -> None:
    """Make the layers below aware of the campaigns, in this process.

    - The tables: ``Database.migrate`` creates every table of SQLModel's
      metadata, and the campaign tables are in it once ``models`` is imported,
      which importing this package does.
    - The queue's outcomes: a campaign message delivered, refused, given up or
      bounced by a DSN updates its send (``ledger.LedgerListener``) in the same
      transaction.

    Called by every entry point before it migrates or starts delivering:
    ``relay.app.Relay`` (``relay serve`` and each worker of ``--workers N``), the
    supervisor's start-up, the command line's database, the tests' template
    database.  Calling it again does nothing.
    """
    assert models.Campaign.__tablename__ in SQLModel.metadata.tables
    listeners.register(Direction.CAMPAIGN, ledger.LedgerListener())
