"""Webhooks: the marketplace hears of what happens without asking (README, "Webhooks").

- ``endpoints``: the URLs registered over the API, their event types and scope;
- ``signing``: the ``Relay-Signature`` header (HMAC-SHA256 over time and body);
- ``outbox``: from the events ``relay.storage.events.emit`` wrote, in the
  transaction of each change, to one delivery per endpoint; claims with a
  lease, outcomes, backoff and giving up; the ``response.late`` check;
- ``sender``: the loop in every ``relay serve`` process that POSTs them.

May import: ``relay.core``, ``relay.storage``, ``relay.delivery`` (its leases),
``relay.ops`` (the response clock).
"""
