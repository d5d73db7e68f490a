"""What every other package may use, and which itself knows no other package.

- ``config``: the typed configuration (``relay.yaml``), read by ``yamlload``,
  which keeps line numbers for every error and holds the strict model base;
- ``clock``: the one "now" (UTC), which tests can move;
- ``logs``: log set-up, structured fields, address redaction;
- ``names``: display names and subjects checked where they enter;
- ``addresses``: address normalisation (IDNA, case) and masking;
- ``tokens``: token addresses, how they are drawn and recognised in RCPT TO;
- ``refusals``: why a recipient or a message is refused, in no protocol's words;
- ``durable``: write, fsync, rename, fsync (archive copies, Maildir files, keys);
- ``metrics``: the Prometheus metrics every layer counts into;
- ``window``: the sliding window behind the in-memory rate limits;
- ``tls``: STARTTLS contexts, both directions;
- ``httpserver``: the small bounded HTTP server (asyncio + h11);
- ``pidfile``: the locked pid file that ``relay reload`` finds ``relay serve`` by;
- ``scopes``: what an API key may see (``admin``, ``seller:ID``, ``brand:ID``),
  which the API and the webhooks' fan-out both ask.

May import: nothing else of ``relay``.
"""
