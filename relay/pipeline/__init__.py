"""The pipeline: one inbound message between the end of DATA and the commit.

``accept.Pipeline.accept`` runs these stages, in this order, each in its own
module and each taking and returning typed values:

1. parse (``relay.message.parse``): the header limits, the hop count, the
   facts read off the headers;
2. ``recipients``: conversation tokens and bounce addresses, with their routes
   (found at RCPT, or looked up again);
3. ``sender``: the From header claims only addresses the sender may use;
4. ``authn``: SPF, DKIM and DMARC as ``auth.policy`` asks, and the
   Authentication-Results header, added before any copy is made;
5. ``filtering``: the recipients' copies of the message (one parse, shared until
   a copy must change), the rules' verdict on each;
6. ``decide``: a rule's reject or quarantine, the buyer's opt-out, the rules'
   strip and redact; then ``rewrite``: the copy the recipient gets, archived;
7. ``record``: the one write transaction, committed before the 250.

Also here:

- ``verdicts``: the decisions and outcomes the stages pass on; the status
  texts of the database and the metrics' labels are derived from them;
- ``quarantine``: an admin's release or rejection of a held message, written
  by the record stage;
- ``recipients.bounce_address_exists``, for the SMTP front's envelope checks.

A stage refuses by raising ``relay.core.refusals.Refused``; none speaks SMTP.

May import: ``relay.core``, ``relay.storage``, ``relay.message``, ``relay.filters``,
``relay.delivery``.
"""
