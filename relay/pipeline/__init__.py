"""The pipeline: what happens to one inbound message between DATA and the 250.

``accept.Pipeline.accept`` runs the stages in this order, each in its own
module, each taking and returning typed values (``verdicts``):

1. parse (``relay.message.parse``): the header limits, the hop count, the facts
   read off the headers;
2. ``recipients``: conversation tokens and bounce addresses, with their routes;
3. ``sender``: the From header claims only addresses the sender may use;
4. ``authn``: SPF, DKIM and DMARC as ``auth.policy`` asks; the
   Authentication-Results header;
5. ``filtering``: one copy per recipient, and the rules' verdict on each;
6. ``decide``: a rule's reject or quarantine, the buyer's opt-out, the rules'
   strip and redact; then ``rewrite``: the copy the recipient gets, archived;
7. ``record``: the one write transaction, committed before the 250.

A stage refuses a message by raising ``relay.core.refusals.Refused``; it never
speaks SMTP (the SMTP front, ``relay.inbound``, turns refusals into replies).
Also here: ``quarantine``, an admin's release or rejection of a held message,
written by the same record stage; and ``recipients.bounce_address_exists`` for
the SMTP front's envelope checks.

May import: core, storage, message, filters, delivery.
"""
