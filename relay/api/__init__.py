"""The marketplace's HTTP API (README, "The HTTP API"), under ``/api/v1/``.

- ``app``: the FastAPI application, its body limit and its routes;
- ``server``: uvicorn in a thread of its own, for ``relay serve`` and ``relay api``;
- ``auth``, ``keys``: API keys (only their hashes are kept), the per-key rate
  limit; what a key's scope may see is ``relay.core.scopes``;
- ``problems``: every error as ``application/problem+json`` (RFC 9457);
- ``directory``: sellers, orders, buyers' opt-outs, conversations, through the
  same functions as the CLI;
- ``archive``: the archive, the quarantine and the outbound queue, as
  ``relay archive``, ``quarantine`` and ``queue``;
- ``responses``: sellers' response times, as ``relay responses``;
- ``catalog``: brands, their followers and products;
- ``promotions``: promotions and their moderation, shopping events;
- ``campaigns``: brand campaigns from draft through review to their report, and
  the date picker's calendar;
- ``webhooks``: registering the endpoints that events are sent to;
- ``decided``: the decisions' log as the API writes (``api-key:ID``) and answers it.

May import: ``relay.core``, ``relay.storage``, ``relay.message``, ``relay.filters``,
``relay.delivery``, ``relay.campaigns``, ``relay.pipeline``, ``relay.ops``,
``relay.webhooks``.
"""
