"""Names from registrations in the headers the relay writes (``relay.core.names``).

A store name, a buyer name, a brand name, a product title, a campaign subject or
the marketplace's name ends up in a From, a To or a Subject the relay writes.
Such a value is refused where it enters when it could break a header (a line
break or other control character, a bidirectional override, an encoded-word
look-alike, an address, a name longer than a display line).  And whatever is
stored all the same (rows from before the check, a database edited by hand),
every message still composes, no header is injected, nothing is leaked.
"""

from __future__ import annotations

import email
import email.policy
import json
import logging
import re
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import select

from relay.app import Relay
from relay.cli import main
from relay.core import names
from relay.core.addresses import format_address
from relay.core.config import MarketplaceConfig
from relay.core.yamlload import ConfigError
from relay.message.compose import Party, compose, leaks
from relay.storage.models import Buyer, Message, MessageStatus, Seller
from tests.helpers import Sink, build, register, send

BUYER = "maria@buyer.example"
SELLER = "shop@seller.example"
DOMAIN = "marketplace.example.com"

HOSTILE = {
    "crlf": "Shop\r\nBcc: victim@elsewhere.example",
    "lf": "Shop\nX-Injected: yes",
    "tab": "Shop\tand more",
    "nul": "Shop\x00",
    "c1": "Shop\x85Next line",
    "line-separator": "Shop\u2028Next",
    "bidi-override": "Shop \u202egpj.exe",
    "bidi-isolate": "Shop \u2066x\u2069",
    "encoded-word": "=?utf-8?q?Shop=0D=0ABcc=3A_x?=",
    "address": "shop@seller.example",
    "full-width-address": "shop\uff20seller.example",
    "too-long": "S" * (names.MAX_NAME + 1),
}


# --- refused where they enter --------------------------------------------------


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_check_refuses_and_names_the_field(text: str) -> None:
    with pytest.raises(names.NameProblem) as raised:
        names.check("seller name", text)
    assert str(raised.value).startswith("seller name: ")


@pytest.mark.parametrize(
    "text",
    [
        "Hà Nội Crafts",
        "Tindahan ni Aling Nena",
        "Café \u200dZwj",
        "O'Brien & Sons (PH)",
        "שלום\u200f",
    ],
)
def test_check_keeps_real_names(text: str) -> None:
    assert names.check("seller name", f"  {text} ") == text


def write_cli_config(root: Path) -> Path:
    (root / "filters.yaml").write_text("rules: []\n", encoding="utf-8")
    path = root / "relay.yaml"
    path.write_text(
        "database: {url: 'sqlite:///relay.db'}\n"
        "archive: {path: archive}\n"
        "filters: {rules: filters.yaml}\n",
        encoding="utf-8",
    )
    return path


def cli(config: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["-c", str(config), *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("option", "command"),
    [
        ("--name", ["seller", "add", "--email", SELLER, "--name"]),
        (
            "--buyer-name",
            ["order", "add", "O-1", "--buyer", BUYER, "--seller", "1", "--buyer-name"],
        ),
        ("--name", ["brand", "add", "--registered", "--store-page", "--name"]),
        ("--title", ["product", "add", "--brand", "1", "--sku", "S-1", "--title"]),
        ("--name", ["event", "add", "--start", "2027-01-01", "--end", "2027-01-02", "--name"]),
        ("--name", ["follower", "add", "--brand", "1", "--email", BUYER, "--name"]),
    ],
)
@pytest.mark.parametrize("text", [HOSTILE["crlf"], HOSTILE["bidi-override"]], ids=["crlf", "bidi"])
def test_the_cli_refuses_names_that_would_break_a_header(
    tmp_path: Path, option: str, command: list[str], text: str
) -> None:
    config = write_cli_config(tmp_path)
    # What the refused command needs besides the name: a seller, a brand.
    assert cli(config, "seller", "add", "--name", "Shop", "--email", "s2@seller.example")[0] == 0
    assert cli(config, "brand", "add", "--name", "Lotus", "--registered", "--store-page")[0] == 0
    before = cli(config, "seller", "list", "--json")[1], cli(config, "brand", "list", "--json")[1]
    code, _out, err = cli(
        config, *command, text, *(["--price", "1"] if "product" in command else [])
    )
    assert code == 2, err  # a bad argument, with the usage
    assert f"Invalid value for '{option}': must " in err, err
    assert "Traceback" not in err
    after = cli(config, "seller", "list", "--json")[1], cli(config, "brand", "list", "--json")[1]
    assert after == before


@pytest.mark.parametrize("text", [HOSTILE["crlf"], HOSTILE["encoded-word"]], ids=["crlf", "ew"])
def test_the_directory_refuses_them_too_and_names_the_field(database_url: str, text: str) -> None:
    """What the CLI checks first, the directory functions check again: they are
    what an API calls, and a refusal must name the field."""
    from relay.campaigns import catalog
    from relay.core.config import DatabaseConfig
    from relay.storage import directory
    from relay.storage.db import Database

    db = Database(DatabaseConfig(url=database_url))
    db.migrate()
    try:
        seller = db.write(lambda s: directory.add_seller(s, name="Shop", emails=[SELLER]))
        brand = db.write(
            lambda s: catalog.add_brand(s, name="Lotus", registered=True, store_page=True)
        )
        attempts = {
            "seller name": lambda s: directory.add_seller(s, name=text, emails=["x@s.example"]),
            "buyer name": lambda s: directory.add_order(
                s, "O-1", buyer_email=BUYER, buyer_name=text, seller_id=seller.id
            ),
            "brand name": lambda s: catalog.add_brand(
                s, name=text, registered=True, store_page=True
            ),
            "product title": lambda s: catalog.add_product(
                s, brand.id, sku="S-1", title=text, price="1", description=""
            ),
        }
        for field, attempt in attempts.items():
            with pytest.raises(directory.DirectoryError) as raised:
                db.write(attempt)
            assert str(raised.value).startswith(f"{field}: "), raised.value
        assert db.call(lambda s: len(s.exec(select(Seller)).all())) == 1
    finally:
        db.dispose()


@pytest.mark.parametrize("subject", ["Winter teas\r\nBcc: x", "Winter \u202eteas", "=?utf-8?q?x?="])
def test_a_campaign_subject_that_would_break_a_header_is_refused(
    database_url: str, subject: str
) -> None:
    from datetime import date

    from relay.campaigns import lifecycle
    from relay.core.config import DatabaseConfig
    from relay.storage.db import Database
    from tests.test_campaign_rules import NOW, create, draft, open_shop, refusal

    db = Database(DatabaseConfig(url=database_url))
    db.migrate()
    try:
        shop = db.write(open_shop)
        start = date(2026, 12, 10)
        message = refusal(
            db, lifecycle.create, shop.brand_id, draft(shop, start, subject=subject), now=NOW
        )
        assert message.startswith("the subject must "), message
        campaign_id = create(db, shop, start)
        edited = lifecycle.Draft(subject=subject)
        assert refusal(db, lifecycle.edit, campaign_id, edited, now=NOW).startswith("the subject")
    finally:
        db.dispose()


@pytest.mark.parametrize(
    ("key", "value"),
    [("name", "Example\r\nBcc: x@y.example"), ("buyer_display_format", "{name}\n{marketplace}")],
)
def test_the_configuration_refuses_a_marketplace_name_that_breaks_headers(
    tmp_path: Path, key: str, value: str
) -> None:
    from relay.core.config import load_config

    path = write_cli_config(tmp_path)
    path.write_text(
        path.read_text() + f"marketplace: {{{key}: {json.dumps(value)}}}\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert f"marketplace.{key}" in str(raised.value)
    assert "control characters" in str(raised.value)
    assert MarketplaceConfig(name=" Chợ Việt ").name == "Chợ Việt"


# --- harmless where they are written ------------------------------------------------


async def test_stored_hostile_names_still_deliver_both_ways(
    relay: Relay, sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    """Names that got into the database before the check (or around it): every
    message is still delivered, to the right party, with no header injected."""
    parties = register(relay)

    def corrupt(session: object) -> None:
        from sqlmodel import Session

        assert isinstance(session, Session)
        seller = session.get(Seller, parties.seller_id)
        buyer = session.exec(select(Buyer).where(Buyer.email == BUYER)).one()
        assert seller is not None
        seller.name = "Shop\r\nBcc: victim@elsewhere.example\r\nX-Injected: yes \u202eexe"
        buyer.name = f"=?utf-8?q?Maria=0D=0ABcc=3A_x?= {BUYER}\n" + "M" * 500
        session.add(seller)
        session.add(buyer)

    relay.db.write(corrupt)
    caplog.set_level(logging.INFO, logger="relay")
    await send(
        relay,
        build(frm=parties.seller, to=parties.buyer_token),
        sender=parties.seller,
        recipients=[parties.buyer_token],
    )
    await send(
        relay,
        build(frm=parties.buyer, to=parties.seller_token),
        sender=parties.buyer,
        recipients=[parties.seller_token],
    )
    received = await sink.wait_for(2)
    assert sorted(r.rcpt_tos[0] for r in received) == sorted([BUYER, SELLER])
    for got in received:
        head = got.data.split(b"\r\n\r\n", 1)[0]
        assert not re.search(rb"(?im)^(bcc|x-injected):", head), head
        parsed = email.message_from_bytes(got.data, policy=email.policy.default)
        assert parsed["Subject"] == "Hello"  # the message itself, not a notice
        assert len(parsed.get_all("From") or []) == 1
        sender_token = parties.buyer_token if got.rcpt_tos == [SELLER] else parties.seller_token
        assert parsed["From"].addresses[0].addr_spec == sender_token
        assert "\u202e" not in str(parsed["From"])
        assert "=?" not in str(parsed["From"]).replace(" ", "")
        assert BUYER not in got.data.decode("latin-1") or got.rcpt_tos == [BUYER]
    statuses = relay.db.call(lambda s: [m.status for m in s.exec(select(Message)).all()])
    assert MessageStatus.REJECTED not in statuses
    assert not [r for r in caplog.records if r.exc_info], "no traceback in the log"


# --- the property: any name, every message composes ---------------------------------

PIECES = [
    "\r", "\n", "\r\n ", "\t", "\x00", "\x85", "\u2028", "\u202e", "\u2066", "=?", "?=", "@",
    "utf-8?q?", "=0D=0A", "Bcc: ", "x", " ", '"', "<", ">", ",", ";", "\\", "ệ", "ñ",
    BUYER, SELLER, "MARIA@BUYER.EXAMPLE", "shop\uff20seller.example",
]  # fmt: skip
ANY_NAME = st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from(PIECES), max_size=40).map("".join),
)


def _message() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = SELLER
    msg["To"] = "buyertoken@marketplace.example.com"
    msg["Subject"] = "Order ORD-1"
    msg.set_content("Your order ships tomorrow.")
    return msg


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sender_name=ANY_NAME, recipient_name=ANY_NAME)
def test_any_stored_name_composes_without_injection_or_leak(
    sender_name: str, recipient_name: str
) -> None:
    sender = Party(display_name=sender_name, token=f"sellertoken@{DOMAIN}", real=(SELLER,))
    recipient = Party(display_name=recipient_name, token=f"buyertoken@{DOMAIN}", real=(BUYER,))
    out = compose(
        _message(),
        sender=sender,
        recipient=recipient,
        message_id=f"<id@{DOMAIN}>",
        in_reply_to=[],
        references=[],
        hostname="mx.test",
    )
    assert not leaks(out.data, [SELLER])
    parsed = email.message_from_bytes(out.data, policy=email.policy.default)
    headers = [name.lower() for name in parsed]
    assert sorted(headers) == sorted(
        [
            "subject",
            "mime-version",
            "content-type",
            "content-transfer-encoding",
            "from",
            "to",
            "date",
            "message-id",
            "x-marketplace-relay",
        ]
    ), headers
    assert [a.addr_spec for a in parsed["From"].addresses] == [sender.token]
    assert [a.addr_spec for a in parsed["To"].addresses] == [BUYER]
    assert parsed["Subject"] == "Order ORD-1"


@settings(max_examples=300, deadline=None)
@given(text=ANY_NAME)
def test_any_text_is_a_writable_display_name_and_subject(text: str) -> None:
    """What notices and campaigns write (the marketplace's name, a brand's name,
    a campaign subject): always one header each, never an address."""
    msg = EmailMessage()
    msg["From"] = format_address(names.display_name(text), f"mailer-daemon@{DOMAIN}")
    msg["Subject"] = names.for_header(text)
    msg.set_content("x")
    parsed = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)
    assert sorted(parsed.keys()) == sorted(
        ["From", "Subject", "Content-Type", "Content-Transfer-Encoding", "MIME-Version"]
    )
    assert [a.addr_spec for a in parsed["From"].addresses] == [f"mailer-daemon@{DOMAIN}"]
    assert not names.has_address(parsed["From"].addresses[0].display_name)
    shown = str(parsed["Subject"])
    assert len(shown) <= names.MAX_NAME
    assert not any(c in shown for c in "\r\n\u202e\u2028")
