"""Why the relay refuses a recipient or a message, in no protocol's words.

The directory, the parser and the pipeline say *why* they refuse (``Refused``
carrying a ``Refusal``); only the SMTP front turns a refusal into a reply
(``relay.inbound.replies.reply_for``), and the HTTP API will turn the same
refusals into its problem types.  Adding a member here without a reply is
caught by a test, not by a sender receiving aiosmtpd's default 500.
"""

from __future__ import annotations

import enum


class Refusal(enum.Enum):
    """A closed set: each member has exactly one SMTP reply in the catalogue."""

    RELAY_DENIED = "the recipient is not in the marketplace's domain"
    UNKNOWN_RECIPIENT = "no such recipient"
    SENDER_NOT_ALLOWED = "the sender may not write to this recipient"
    MESSAGING_OFF = "the seller does not take messages from new buyers"
    SENDER_RATE = "too many messages from this sender"
    CONVERSATION_RATE = "too many messages in this conversation"
    FROM_MISMATCH = "the From header does not match the sender"
    AUTH_UNAVAILABLE = "sender authentication could not be completed"
    SPF_FAILED = "SPF failed for the sender's domain"
    DKIM_FAILED = "no valid DKIM signature of the sender's domain"
    DMARC_FAILED = "no SPF or DKIM pass aligned with the From domain"
    TIMEOUT = "processing timed out"
    MAIL_LOOP = "mail loop"
    TOO_DEEP = "the message is nested too deeply"
    HEADER_TOO_BIG = "the message header is too large"

    @property
    def temporary(self) -> bool:
        """Whether the sender should try again later (a 4xx, not a 5xx)."""
        return self in _TEMPORARY


_TEMPORARY = frozenset(
    {Refusal.SENDER_RATE, Refusal.CONVERSATION_RATE, Refusal.AUTH_UNAVAILABLE, Refusal.TIMEOUT}
)


class Refused(Exception):
    """Raised where a recipient or a message is refused; ``detail``, when given,
    is a more precise text for the sender ("Mail loop detected: 31 hops")."""

    def __init__(self, refusal: Refusal, detail: str = "") -> None:
        super().__init__(detail or refusal.value)
        self.refusal = refusal
        self.detail = detail
