"""What operators watch and run beside the mail flow.

- ``endpoint``: ``/metrics`` and ``/healthz`` on the metrics listener;
- ``health``: the checks behind ``/healthz`` and ``relay status`` (database,
  downstream, queue depth and age);
- ``response_times``: sellers' response times to buyers, in one SQL statement;
- ``retention``: the archive purge (messages, copies, campaign sends past their age).

May import: ``relay.core``, ``relay.storage``, ``relay.delivery``, ``relay.campaigns``.
"""
