"""One message as the relay reads and rewrites it, without deciding anything.

- ``parse``: bytes → ``EmailMessage``, loop and nesting checks, the header
  facts the pipeline needs (``check_header`` refuses huge headers unparsed);
- ``mailpolicy``: the ``email`` policies, with a header factory that caches;
- ``tokenizer``: real → token addresses in headers, bodies and attached
  messages (``AddressMap``), and the MIME editing that needs;
- ``compose``: what the recipient sees: the header allow-list, From/To,
  Message-ID, and the leak check that refuses a copy with a real address left;
- ``headers``: the header section of received bytes, and header fields
  written and folded as bytes (compose's fast path);
- ``threading_ids``: In-Reply-To/References mapped between the two sides.

May import: ``relay.core``, ``relay.storage``.
"""
