"""What is kept: the database, its rows, the marketplace's directory, the archive.

- ``db``: engines, migrations, and the group-commit writer every hot-path write
  goes through (``Database.write``: one transaction, one commit, many callers);
- ``models``: the tables of sellers, buyers, orders, conversations, messages,
  rule hits, deliveries and attempts, API keys, and the webhooks' outbox;
- ``events``: ``emit``, which writes a webhook event in the transaction of the
  change it reports;
- ``directory``: sellers, buyers, orders and conversations as the CLI and the
  relay use them, and ``route``: a token and a sender → the conversation's route;
- ``archive``: durable copies of each message as received and as delivered
  (fsynced before the commit that refers to them), and archive queries.

May import: ``relay.core``.
"""
