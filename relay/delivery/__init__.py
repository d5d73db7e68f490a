"""Outbound delivery: every accepted message's way out, whoever queued it.

- ``spool``: the durable queue, deliveries claimed with a lease, and what each
  attempt's outcome (or a DSN) does to the delivery and its message;
- ``outbound``: the worker that claims, signs and hands deliveries over (to the
  smarthost or a Maildir) and records the outcome;
- ``dkim_sign``: DKIM keys and signing;
- ``notices``: the bounce-back notices that tell a sender their message failed;
- ``dsn``: reading the delivery status notifications that come back;
- ``listeners``: the packages above told of their messages' outcomes.

It may import ``relay.core``, ``relay.storage`` and ``relay.message`` (the
README's package map): it knows messages by their ``Direction``, not what sent
them.  A package above that must hear of its messages' fate (``relay.campaigns``)
registers a listener in ``listeners``.
"""
