"""The SMTP front: the only place where the relay speaks SMTP to senders.

- ``server``: the aiosmtpd handler: envelope checks at RCPT, the pipeline at
  DATA (in a thread), ``250`` only after the commit; every exception becomes a
  reply here and nowhere else;
- ``envelope``: the checks of one RCPT TO (relaying, unknown tokens and bounce
  addresses, the directory's sender check, the hourly limits);
- ``dataread``: the DATA body read in large pieces, dot-stuffing undone in one pass;
- ``limits``: the connection gate, sliding windows, what guessing costs;
- ``replies``: every SMTP reply, in one catalogue, and ``reply_for``, which
  maps a refusal (``relay.core.refusals``) to its reply.

May import: ``relay.core``, ``relay.storage``, ``relay.message``, ``relay.pipeline``.
"""
