"""The ``relay`` command as admins and the marketplace back end run it: a config
file in the test's directory, JSON or readable lines on stdout, and one-line
errors with exit status 1 (request) or 2 (usage), never a traceback.  Commands
run in this process (click's CliRunner); ``serve`` failing to bind runs as a
real process, whose output is the point."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlmodel import Session, select

from relay.app import Relay
from relay.core.config import RelayConfig, load_config
from relay.delivery.dkim_sign import rsa_txt_record
from relay.storage import directory
from relay.storage.db import Database
from relay.storage.models import Buyer, Delivery, DeliveryStatus, Message
from tests.helpers import (
    CliResult,
    Parties,
    Sink,
    build,
    relay_cli,
    relay_process,
    send,
    wait_until,
)

DOMAIN = "cli.example.org"
TOKEN = re.compile(rf"^[a-z0-9]{{16}}@{re.escape(DOMAIN)}$")


def run(*args: str | bytes) -> CliResult:
    """``relay ARGS``, in this process: its output, exit status and error text."""
    result = relay_cli(*args)
    assert "Traceback" not in result.err, result
    return result


class Cli:
    def __init__(self, root: Path, config: Path) -> None:
        self.root = root
        self.config = config

    def __call__(self, *args: str | bytes) -> CliResult:
        return run("-c", str(self.config), *args)

    def all(self, *calls: Sequence[str | bytes]) -> list[CliResult]:
        """Independent invocations, one after the other."""
        return [self(*c) for c in calls]

    def db(self) -> Database:
        return Database(load_config(self.config).database)


def write_config(root: Path, body: str) -> Path:
    (root / "filters.yaml").write_text("rules: []\n", encoding="utf-8")
    path = root / "relay.yaml"
    path.write_text(body, encoding="utf-8")
    return path


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    config = write_config(
        tmp_path,
        f"""\
marketplace: {{domain: {DOMAIN}, name: CLI Market}}
database: {{url: "sqlite:///state/relay.db"}}
archive: {{path: state/archive}}
delivery: {{mode: maildir, maildir: state/outbox}}
filters: {{rules: filters.yaml}}
dkim: {{selector: relay, private_key: keys/relay.key}}
""",
    )
    return Cli(tmp_path, config)


# --- sellers ----------------------------------------------------------------------


def test_sellers(cli: Cli) -> None:
    first = run(
        "seller", "add", "--name", "Hà Nội Crafts", "--email", "shop@seller.example",
        "--email", "Sales@Seller.example", "--json", "-c", str(cli.config),
    )  # fmt: skip
    assert first.json() == {"seller_id": 1}
    second = cli("--json", "seller", "add", "--name", "Other", "--email", "other@seller.example")
    assert second.json() == {"seller_id": 2}
    third = cli("seller", "add", "--name", "Third", "--email", "third@seller.example")
    assert third.out == "seller 3 (Third): addresses third@seller.example\n"

    updated = cli(
        "seller", "update", "1", "--messaging", "off", "--add-email", "new@seller.example",
        "--remove-email", "shop@seller.example", "--json",
    )  # fmt: skip
    assert updated.json() == {
        "seller_id": 1,
        "name": "Hà Nội Crafts",
        "messaging": "off",
        "emails": ["sales@seller.example", "new@seller.example"],  # the primary comes first
    }

    (
        unknown,
        last_address,
        taken,
        invalid_add,
        not_his,
        no_name,
        all_gone,
    ) = cli.all(
        ["seller", "update", "99", "--messaging", "on"],
        ["seller", "update", "2", "--remove-email", "other@seller.example"],
        ["seller", "update", "1", "--add-email", "Other@seller.example"],
        ["seller", "update", "1", "--add-email", "not-an-email"],
        ["seller", "update", "1", "--remove-email", "other@seller.example"],
        ["seller", "add", "--name", "  ", "--email", "blank@seller.example"],
        # The messaging change must not survive the failed removal.
        ["seller", "update", "1", "--messaging", "on", "--remove-email", "sales@seller.example",
         "--remove-email", "new@seller.example"],
    )  # fmt: skip
    assert unknown.failed() == "error: no seller with id 99"
    assert last_address.failed() == (
        "error: a seller must keep at least one approved sender address"
    )
    assert taken.failed() == "error: other@seller.example is already an address of seller 2"
    assert "error: Invalid value for '--add-email': not an email address: 'not-an-email'" in (
        invalid_add.failed(2)
    )
    assert not_his.failed() == "error: other@seller.example is not an address of seller 1"
    assert no_name.failed() == "error: a seller needs a name"
    assert all_gone.failed() == "error: a seller must keep at least one approved sender address"

    human = cli("seller", "update", "1", "--add-email", "shop@seller.example")
    assert human.out == (
        "seller 1 (Hà Nội Crafts): messaging off,"
        " addresses sales@seller.example, new@seller.example, shop@seller.example\n"
    )
    db = cli.db()
    with Session(db.engine) as s:
        assert not directory.get_seller(s, 1).messaging_enabled
        assert [a.email for a in directory.seller_addresses(s, 1)] == [
            "sales@seller.example",
            "new@seller.example",
            "shop@seller.example",
        ]
        assert [a.email for a in directory.seller_addresses(s, 2)] == ["other@seller.example"]
        assert directory.get_seller(s, 3).name == "Third"
    db.dispose()


# --- orders and buyers -------------------------------------------------------------


def test_orders_and_buyers(cli: Cli) -> None:
    assert cli("seller", "add", "--name", "Shop", "--email", "shop@seller.example").code == 0
    first = cli(
        "order", "add", "ORD-1", "--buyer", "Maria@Buyer.example", "--buyer-name",
        "Maria Santos", "--seller", "1", "--category", "handmade", "--json",
    ).json()  # fmt: skip
    assert set(first) == {"order_id", "conversation_id", "buyer_token", "seller_token"}
    assert first["order_id"] == "ORD-1" and first["conversation_id"] == 1
    assert TOKEN.match(first["buyer_token"]) and TOKEN.match(first["seller_token"]), first
    assert first["buyer_token"] != first["seller_token"]

    again, other, dup, no_seller, bad_buyer, seller_as_buyer = cli.all(
        ["order", "add", "ORD-2", "--buyer", "maria@buyer.example", "--seller", "1", "--json"],
        ["--json", "order", "add", "ORD-3", "--buyer", "ana@buyer.example", "--seller", "1"],
        ["order", "add", "ORD-1", "--buyer", "maria@buyer.example", "--seller", "1"],
        ["order", "add", "ORD-4", "--buyer", "maria@buyer.example", "--seller", "7"],
        ["order", "add", "ORD-5", "--buyer", "maria at buyer", "--seller", "1"],
        ["order", "add", "ORD-6", "--buyer", "Shop@seller.example", "--seller", "1"],
    )
    # Same buyer, same seller: the same conversation and tokens.
    assert again.json() == {**first, "order_id": "ORD-2"}
    other_order = other.json()
    assert other_order["conversation_id"] == 2
    assert {other_order["buyer_token"], other_order["seller_token"]}.isdisjoint(
        {first["buyer_token"], first["seller_token"]}
    )
    assert dup.failed() == "error: order ORD-1 already exists"
    assert no_seller.failed() == "error: no seller with id 7"
    assert "error: Invalid value for '--buyer': not an email address: 'maria at buyer'" in (
        bad_buyer.failed(2)
    )
    assert seller_as_buyer.failed() == (
        "error: shop@seller.example is a seller address and cannot be a buyer"
    )

    human = cli("order", "add", "ORD-7", "--buyer", "ana@buyer.example", "--seller", "1")
    assert human.out == (
        f"order ORD-7: conversation 2, buyer token {other_order['buyer_token']},"
        f" seller token {other_order['seller_token']}\n"
    )

    out, _in, unknown, shown = cli.all(
        ["buyer", "opt-out", "MARIA@buyer.example"],
        ["buyer", "opt-in", "ana@buyer.example", "--json"],
        ["buyer", "opt-out", "nobody@buyer.example"],
        ["conversation", "1", "--json"],
    )
    assert out.out == "maria@buyer.example: opted out of unsolicited seller messages\n"
    assert _in.json() == {"email": "ana@buyer.example", "opted_out": False}
    assert unknown.failed() == "error: no buyer with address nobody@buyer.example"
    assert shown.json() == {
        "conversation_id": 1,
        "buyer_token": first["buyer_token"],
        "seller_token": first["seller_token"],
        "seller_id": 1,
        "buyer_initiated": False,
        "messages": 0,
    }

    db = cli.db()
    with Session(db.engine) as s:
        buyers = {b.email: b for b in s.exec(select(Buyer)).all()}
        assert set(buyers) == {"maria@buyer.example", "ana@buyer.example"}
        assert buyers["maria@buyer.example"].opted_out
        assert buyers["maria@buyer.example"].name == "Maria Santos"
        assert not buyers["ana@buyer.example"].opted_out
        assert directory.conversation_categories(s, 1) == {"handmade"}
    db.dispose()


# --- archive and queue ----------------------------------------------------------------


def test_archive_and_queue_on_a_fresh_database(cli: Cli) -> None:
    # One command first: it creates the schema (concurrent first migrations race, see
    # the report on relay/db.py).
    assert cli("archive", "list", "--json").json() == []
    results = cli.all(
        ["archive", "--json", "list"],
        ["archive", "list"],
        ["archive", "show", "999"],
        ["queue", "list", "--json"],
        ["queue", "list"],
        ["queue", "retry", "999"],
    )
    alist_group_json, alist_human, show, qlist, qlist_human, retry = results
    assert alist_group_json.json() == []
    assert alist_human.out == "no archived messages\n"
    assert show.failed() == "error: no archived message with id 999"
    assert qlist.json() == []
    assert qlist_human.out == "the queue is empty\n"
    assert retry.failed() == "error: no delivery with id 999"


def yaml_for(config: RelayConfig, root: Path) -> Path:
    """A config file for the CLI that points at an in-process relay's state."""
    return write_config(
        root,
        f"""\
database: {{url: "{config.database.url}"}}
archive: {{path: "{config.archive.path}"}}
filters: {{rules: filters.yaml}}
dkim: {{private_key: "{config.dkim.private_key}"}}
""",
    )


async def test_archive_and_queue_show_real_traffic(
    relay: Relay, sink: Sink, parties: Parties, config: RelayConfig, tmp_path: Path
) -> None:
    cli = Cli(tmp_path, yaml_for(config, tmp_path))

    def deliveries() -> list[Delivery]:
        return relay.db.call(lambda s: list(s.exec(select(Delivery)).all()))

    sink.handler.rcpt_faults.extend(["451 4.3.0 Try again later"] * 1000)
    msg = build(frm=parties.buyer, to=parties.seller_token, subject="Is it handmade?")
    await send(relay, msg, sender=parties.buyer, recipients=[parties.seller_token])
    await wait_until(lambda: any(d.attempts for d in deliveries()))
    (delivery,) = deliveries()
    message = relay.db.call(lambda s: s.exec(select(Message)).one())

    conv = str(parties.conversation_id)
    results = await asyncio.to_thread(
        cli.all,
        ["queue", "list", "--json"],
        ["queue", "list"],
        ["archive", "list", "--json"],
        ["archive", "list"],
        ["archive", "list", "--conversation", conv, "--status", "queued", "--json"],
        ["archive", "show", str(message.id)],
        ["archive", "show", str(message.id), "--raw"],
        ["archive", "show", str(message.id), "--delivered"],
    )
    qjson, qhuman, ajson, ahuman, by_conv, show, raw, delivered = results
    (queued,) = qjson.json()
    assert queued["id"] == delivery.id and queued["status"] == "pending"
    assert queued["attempts"] >= 1 and queued["last_reply"].startswith("451")
    assert re.match(rf"^\s*{delivery.id}  msg\s+{message.id}  pending .* 451", qhuman.out)
    (listed,) = ajson.json()
    assert listed["id"] == message.id
    assert listed["conversation_id"] == parties.conversation_id
    assert (listed["direction"], listed["status"]) == ("buyer_to_seller", "queued")
    assert listed["rule_hits"] == []
    assert by_conv.json() == [listed]
    line = ahuman.out.splitlines()
    assert len(line) == 1 and "buyer_to_seller" in line[0] and "Is it handmade?" in line[0]
    assert f"id: {message.id}" in show.out.splitlines()
    assert f"delivery {delivery.id} to {parties.seller}: pending" in show.out
    assert b"Is it handmade?" in raw.raw and parties.buyer.encode() in raw.raw
    assert parties.buyer_token.encode() in delivered.raw
    assert parties.buyer.encode() not in delivered.raw

    retry = await asyncio.to_thread(cli, "queue", "retry", str(delivery.id))
    assert retry.out == f"delivery {delivery.id}: pending, due now\n"
    sink.handler.rcpt_faults.clear()
    await sink.wait_for(1)
    await wait_until(lambda: deliveries()[0].status is DeliveryStatus.DELIVERED)
    empty, everything, again = await asyncio.to_thread(
        cli.all, ["queue", "list", "--json"], ["queue", "list", "--all", "--json"],
        ["queue", "retry", str(delivery.id)],
    )  # fmt: skip
    assert empty.json() == []
    assert [d["status"] for d in everything.json()] == ["delivered"]
    assert again.failed() == f"error: delivery {delivery.id} was delivered; nothing to retry"


# --- dkim ------------------------------------------------------------------------------


def test_dkim_keygen(cli: Cli) -> None:
    key = cli.root / "keys" / "relay.key"
    # The relay signs with dkim.selector: a record for s1 alone would never verify.
    other = cli("dkim", "keygen", "--selector", "s1")
    assert "set `dkim.selector: s1`" in other.failed(2) and not key.exists()
    made = cli("dkim", "keygen", "--selector", "relay", "--json")
    record = made.json()
    assert record["name"] == f"relay._domainkey.{DOMAIN}" and record["type"] == "TXT"
    assert re.fullmatch(r"v=DKIM1; k=rsa; p=[A-Za-z0-9+/]+=*", record["value"]), record
    assert record["key"] == str(key)
    assert rsa_txt_record(key.read_bytes()) == record["value"]
    assert key.stat().st_mode & 0o777 == 0o600

    before = key.read_bytes()
    refused, bad_selector = cli.all(
        ["dkim", "keygen", "--selector", "relay"],
        ["dkim", "keygen", "--selector", "s 1", "--force"],
    )
    assert refused.failed() == f"error: {key} exists; use --force to replace it"
    assert "not a valid DKIM selector" in bad_selector.failed(2)
    assert key.read_bytes() == before

    replaced = cli("dkim", "keygen", "--force")
    assert key.read_bytes() != before and replaced.err == ""
    # Zone-file syntax: one TXT string holds at most 255 characters.
    name, value = replaced.out.rstrip("\n").split(" IN TXT ")
    assert name == f"relay._domainkey.{DOMAIN}."
    strings = re.findall(r'"([^"]*)"', value)
    assert value.startswith("( ") and len(strings) == 2
    assert all(len(s) <= 255 for s in strings)
    assert "".join(strings) == rsa_txt_record(key.read_bytes())

    both = cli("dkim", "keygen", "--force", "--ed25519", "--json")
    rsa, ed = both.json()
    ed_key = cli.root / "keys" / "relay.ed25519"
    assert rsa["name"] == f"relay._domainkey.{DOMAIN}"
    assert ed["name"] == f"relay-ed25519._domainkey.{DOMAIN}" and ed["key"] == str(ed_key)
    assert re.fullmatch(r"v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=", ed["value"]), ed
    assert ed_key.stat().st_mode & 0o777 == 0o600
    assert "dkim.ed25519_key" in both.err  # not configured yet: the relay would not use it
    key.unlink()
    assert cli("dkim", "keygen", "--ed25519").failed() == (
        f"error: {ed_key} exists; use --force to replace it"
    )
    assert not key.exists()


# --- usage errors and failures ---------------------------------------------------------


def test_bad_arguments_are_usage_errors(cli: Cli) -> None:
    cases: list[tuple[list[str | bytes], str]] = [
        (["seller", "add", "--email", "a@b.example"], "Missing option '--name'"),
        (["seller", "update", "abc"], "'abc' is not a valid integer"),
        (["archive", "show", "99999999999999999999999"], "is not in the range"),
        (["seller", "update", "1", "--messaging", "maybe"], "'maybe' is not one of 'on', 'off'"),
        (["frobnicate"], "No such command 'frobnicate'"),
        (["queue", "list", "--jsn"], "No such option"),
        (["seller", "add", "--name", b"Caf\xe9", "--email", "a@b.example"], "not valid UTF-8"),
    ]
    for case, result in zip(cases, cli.all(*(c for c, _ in cases)), strict=True):
        assert case[1] in result.failed(2), result
    assert not (cli.root / "state").exists()  # nothing ran


def test_failures_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where a directory should be\n", encoding="utf-8")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(
            tmp_path,
            f"""\
smtp: {{host: 127.0.0.1, port: {port}}}
database: {{url: "sqlite:///blocker/relay.db"}}
archive: {{path: state/archive}}
dkim: {{private_key: blocker/relay.key}}
campaigns: {{unsubscribe: {{listen: "127.0.0.1:0"}}}}
""",
        )
        other = tmp_path / "serve.yaml"
        other.write_text(
            config.read_text(encoding="utf-8")
            .replace("blocker/relay.db", "state/relay.db")
            .replace("blocker/relay.key", "state/relay.key"),
            encoding="utf-8",
        )
        no_db = run("-c", str(config), "archive", "list")
        no_key = run("-c", str(config), "dkim", "keygen")
        # A real process: what ``serve`` prints when it cannot bind, and its status.
        in_use = relay_process("serve", "-c", str(other), cwd=tmp_path)
        assert "Traceback" not in in_use.err, in_use
    assert no_db.failed().startswith("error: cannot open the database: ")
    assert no_key.failed().startswith(f"error: cannot write the key {tmp_path / 'blocker'}")
    assert in_use.code == 1, in_use
    assert in_use.err.splitlines()[-1].startswith("error: "), in_use
    assert "Address already in use" in in_use.err
