"""The pipeline's decisions carry what they mean; the texts written to the
database (``status_reason``, shown by ``relay archive show``) and the metrics'
labels are derived from them, and must not drift: dashboards and admins read them."""

from __future__ import annotations

import pytest

from relay.pipeline.verdicts import (
    Blocked,
    Decision,
    Deliver,
    Held,
    OptedOut,
    RuleRejected,
    Unreadable,
)
from relay.storage.models import MessageStatus


@pytest.mark.parametrize(
    ("decision", "status", "reason", "blocked"),
    [
        (Deliver("<r@m>", None, "d/1.eml"), MessageStatus.QUEUED, "", None),
        (
            Deliver("<r@m>", None, "d/1.eml", released=True),
            MessageStatus.QUEUED,
            "released from quarantine",
            None,
        ),
        (Held("bulk-mailer"), MessageStatus.QUARANTINED, "rule bulk-mailer", "quarantine"),
        (
            RuleRejected("no-external-links"),
            MessageStatus.REJECTED,
            "rule no-external-links",
            "rule",
        ),
        (
            RuleRejected("bulk-mailer", by_admin=True),
            MessageStatus.REJECTED,
            "rule bulk-mailer, by an admin",
            "rule",
        ),
        (OptedOut("why"), MessageStatus.BLOCKED, "buyer opted out", "opt_out"),
        (Unreadable.MALFORMED, MessageStatus.REJECTED, "could not be rewritten", "unreadable"),
        (Unreadable.UNSAFE, MessageStatus.REJECTED, "could not be tokenized", "unreadable"),
    ],
)
def test_the_texts_of_each_decision(
    decision: Decision, status: MessageStatus, reason: str, blocked: str | None
) -> None:
    assert decision.status is status
    assert decision.status_reason == reason
    assert (decision.blocked.value if decision.blocked else None) == blocked
    assert decision.blocked is None or isinstance(decision.blocked, Blocked)


def test_a_rule_without_a_notice_is_named_in_the_senders_notice() -> None:
    assert RuleRejected("no-links").why == "It breaks the marketplace's messaging rules (no-links)."
    assert RuleRejected("no-links", "No links, please.").why == "No links, please."
