"""Every SMTP reply the relay sends, in one catalogue (README, "What senders are
told").

Code below the SMTP front says why it refuses with ``relay.core.refusals``;
``reply_for`` is where a refusal becomes its reply, and only ``relay.inbound``
turns exceptions into reply strings.  Anything unexpected is answered with a
4xx, never a 5xx: a 5xx makes the sender give up on a message we might have
taken later.
"""

from __future__ import annotations

from typing import NamedTuple

from relay.core.refusals import Refusal, Refused


class SmtpReply(NamedTuple):
    code: int
    status: str
    """Enhanced status code (RFC 3463); empty for 354, which has none."""
    text: str

    def __str__(self) -> str:
        return (
            f"{self.code} {self.status} {self.text}" if self.status else f"{self.code} {self.text}"
        )

    def with_text(self, text: str) -> SmtpReply:
        return self._replace(text=text)


SENDER_OK = SmtpReply(250, "2.1.0", "Sender OK")
RECIPIENT_OK = SmtpReply(250, "2.1.5", "Recipient OK")
ACCEPTED = SmtpReply(250, "2.0.0", "Message accepted for delivery")
START_DATA = SmtpReply(354, "", "End data with <CR><LF>.<CR><LF>")

RELAY_DENIED = SmtpReply(550, "5.7.1", "Relaying denied")
UNKNOWN_TOKEN = SmtpReply(550, "5.1.1", "No such recipient")
SENDER_NOT_ALLOWED = SmtpReply(550, "5.7.1", "Sender is not allowed to write to this recipient")
MESSAGING_OFF = SmtpReply(
    550,
    "5.7.1",
    "This seller is not accepting messages from new buyers at the moment; please try again later",
)
TOO_BIG = SmtpReply(552, "5.3.4", "Message size exceeds fixed maximum message size")
MAIL_LOOP = SmtpReply(554, "5.4.6", "Mail loop detected")
TOO_DEEP = SmtpReply(554, "5.6.0", "Message structure is nested too deeply")
LINE_TOO_LONG = SmtpReply(500, "5.5.2", "Line too long (RFC 5321 4.5.3.1.6)")
TOO_MANY_RECIPIENTS = SmtpReply(452, "4.5.3", "Too many recipients")
HEADER_TOO_BIG = SmtpReply(552, "5.3.4", "Message header too large")
TOO_MANY_CONNECTIONS = SmtpReply(421, "4.7.0", "Too many connections, please try again later")
SENDER_RATE = SmtpReply(450, "4.7.1", "Too many messages from this sender, please try again later")
CONVERSATION_RATE = SmtpReply(
    450, "4.7.1", "Too many messages in this conversation, please try again later"
)
TOO_MANY_UNKNOWN = SmtpReply(421, "4.7.0", "Too many unknown recipients, closing connection")
SESSION_TOO_LONG = SmtpReply(421, "4.4.2", "Session too long, closing connection")
NEED_RCPT = SmtpReply(503, "5.5.1", "Error: need RCPT command")
DATA_SYNTAX = SmtpReply(501, "5.5.4", "Syntax: DATA")
FROM_MISMATCH = SmtpReply(550, "5.7.1", "The From header does not match the sender")
AUTH_TEMP = SmtpReply(
    451, "4.7.24", "Sender authentication could not be completed (DNS), please try again later"
)
SPF_FAILED = SmtpReply(550, "5.7.23", "SPF validation failed for the sender's domain")
DKIM_FAILED = SmtpReply(550, "5.7.20", "No valid DKIM signature of the sender's domain")
DMARC_FAILED = SmtpReply(
    550, "5.7.26", "Sender authentication failed: no SPF or DKIM pass aligned with the From domain"
)
TEMP_FAILURE = SmtpReply(451, "4.3.0", "Temporary failure, please try again later")
TIMEOUT = SmtpReply(451, "4.4.2", "Processing timed out, please try again later")


REFUSALS: dict[Refusal, SmtpReply] = {
    Refusal.RELAY_DENIED: RELAY_DENIED,
    Refusal.UNKNOWN_RECIPIENT: UNKNOWN_TOKEN,
    Refusal.SENDER_NOT_ALLOWED: SENDER_NOT_ALLOWED,
    Refusal.MESSAGING_OFF: MESSAGING_OFF,
    Refusal.SENDER_RATE: SENDER_RATE,
    Refusal.CONVERSATION_RATE: CONVERSATION_RATE,
    Refusal.FROM_MISMATCH: FROM_MISMATCH,
    Refusal.AUTH_UNAVAILABLE: AUTH_TEMP,
    Refusal.SPF_FAILED: SPF_FAILED,
    Refusal.DKIM_FAILED: DKIM_FAILED,
    Refusal.DMARC_FAILED: DMARC_FAILED,
    Refusal.TIMEOUT: TIMEOUT,
    Refusal.MAIL_LOOP: MAIL_LOOP,
    Refusal.TOO_DEEP: TOO_DEEP,
    Refusal.HEADER_TOO_BIG: HEADER_TOO_BIG,
}
"""The reply of each refusal; a test checks that none is missing."""


def reply_for(refused: Refused) -> SmtpReply:
    """The reply for a refusal, with its detail as the text when it has one."""
    reply = REFUSALS[refused.refusal]
    return reply.with_text(refused.detail) if refused.detail else reply
