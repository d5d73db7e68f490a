"""The archive, quarantine, queue and response-time routes of the HTTP API, over
real HTTP against a running relay fed with real SMTP mail, on SQLite and PostgreSQL.

Each route is held to its command: the same JSON as ``relay archive list|show``,
``relay quarantine``, ``relay queue`` and ``relay responses`` print for the same
data.  A seller key sees its own conversations with tokens for addresses, and
the buyer's real address appears in nothing it is answered.
"""

from __future__ import annotations

import asyncio
import base64
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.app import Relay
from relay.core import clock
from relay.core.config import RelayConfig
from tests import test_api
from tests.helpers import (
    Parties,
    Sink,
    build,
    buyer_writes,
    cli,
    register,
    relay_cli,
    seller_writes,
    send,
    wait_idle,
    wait_until,
)
from tests.test_api import bearer, key, problem

api = test_api.api
cfg_file = test_api.cfg_file
"""The fixtures of tests/test_api.py: an httpx client of the relay's API, a config file."""

RULES = """\
rules:
  - id: bulk-mailer
    description: Sent with a bulk-mail tool
    match: {header: [{name: X-Mailer, pattern: 'Bulk'}]}
    action: quarantine
    notice: Messages sent with bulk-mail tools are not passed on.
  - id: no-phone
    description: Phone numbers
    match: {regex: '\\b\\d{3}-\\d{4}\\b'}
    action: redact
"""
BULK = {"X-Mailer": "BulkMailer 3.0"}


def with_rules(relay: Relay, config: RelayConfig) -> None:
    config.filters.rules.write_text(textwrap.dedent(RULES), encoding="utf-8")
    assert relay.reload_rules()


async def admin_key(cfg: Path) -> str:
    return await asyncio.to_thread(key, cfg, "admin")


async def get(api: httpx.AsyncClient, who: str, path: str, **params: Any) -> Any:
    response = await api.get(path, params=params, headers=bearer(who))
    assert response.status_code == 200, response.text
    return response.json()


async def walk(api: httpx.AsyncClient, who: str, **params: Any) -> list[list[int]]:
    """Every page of ``GET /archive``: the ids of each."""
    pages: list[list[int]] = []
    cursor = None
    while True:
        page = await get(api, who, "/archive", **params, **({"cursor": cursor} if cursor else {}))
        pages.append([m["id"] for m in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            return pages


async def test_the_archive_lists_filters_and_pages_like_the_cli(
    relay: Relay,
    config: RelayConfig,
    sink: Sink,
    parties: Parties,
    api: httpx.AsyncClient,
    cfg_file: Path,
) -> None:
    with_rules(relay, config)
    admin = await admin_key(cfg_file)
    for n in range(3):
        await buyer_writes(relay, parties, subject=f"Question {n}")
    await seller_writes(relay, parties, subject="Answer", body="Call 555-1234.")
    await seller_writes(relay, parties, subject="Thanks")
    await sink.wait_for(5)
    await wait_idle(relay)

    listed = await get(api, admin, "/archive")
    assert listed["next_cursor"] is None
    assert listed["items"] == await cli(cfg_file, "archive", "list")  # the same JSON
    ids = [m["id"] for m in listed["items"]]
    assert len(ids) == 5 and ids == sorted(ids, reverse=True)

    async def count(**params: Any) -> int:
        return len((await get(api, admin, "/archive", **params))["items"])

    today = clock.now().date()
    assert await count(direction="buyer_to_seller") == 3
    assert await count(direction="seller_to_buyer", status="delivered") == 2
    assert await count(status="quarantined") == 0
    (hit,) = (await get(api, admin, "/archive", rule="no-phone"))["items"]
    assert hit["subject"] == "Answer" and hit["rule_hits"][0]["rule_id"] == "no-phone"
    assert await count(conversation=parties.conversation_id) == 5
    assert await count(conversation=999) == 0
    assert await count(since=today.isoformat()) == 5
    assert await count(since=(today + timedelta(days=1)).isoformat()) == 0
    assert await count(until=(today + timedelta(days=1)).isoformat()) == 5
    assert await count(until=today.isoformat()) == 0

    # Page by page, while a new message arrives: no duplicate, no gap.
    first = await get(api, admin, "/archive", limit=2)
    assert [m["id"] for m in first["items"]] == ids[:2]
    await buyer_writes(relay, parties, subject="Arrives meanwhile")
    seen = [m["id"] for m in first["items"]]
    cursor = first["next_cursor"]
    while cursor is not None:
        page = await get(api, admin, "/archive", limit=2, cursor=cursor)
        assert len(page["items"]) <= 2
        seen += [m["id"] for m in page["items"]]
        cursor = page["next_cursor"]
    assert seen == ids
    pages = await walk(api, admin, limit=2)
    assert [len(p) for p in pages] == [2, 2, 2]
    assert pages[0][0] > ids[0] and [i for p in pages for i in p] == [pages[0][0], *ids]
    assert await walk(api, admin, limit=200) == [[pages[0][0], *ids]]
    assert await walk(api, admin, limit=1, direction="seller_to_buyer") == [[i] for i in ids[:2]]


async def test_show_has_hits_deliveries_and_the_copies(
    relay: Relay,
    config: RelayConfig,
    sink: Sink,
    parties: Parties,
    api: httpx.AsyncClient,
    cfg_file: Path,
) -> None:
    with_rules(relay, config)
    admin = await admin_key(cfg_file)
    await seller_writes(relay, parties, subject="Answer", body="Call 555-1234.")
    (got,) = await sink.wait_for(1)
    await wait_idle(relay)
    (entry,) = (await get(api, admin, "/archive"))["items"]
    shown = await get(api, admin, f"/archive/{entry['id']}")
    from_cli = await cli(cfg_file, "archive", "show", str(entry["id"]))
    assert shown["received_copy"] is True and shown["delivered_copy"] is True
    assert {k: v for k, v in shown.items() if not k.endswith("_copy")} == {
        k: v for k, v in from_cli.items() if not k.endswith("_copy")
    }
    assert shown["status"] == "delivered" and shown["envelope_from"] == parties.seller
    assert [(h["rule_id"], h["action"], h["where"]) for h in shown["rule_hits"]] == [
        ("no-phone", "redact", "text body")
    ]
    (delivery,) = shown["deliveries"]
    assert delivery["recipient"] == parties.buyer and delivery["status"] == "delivered"
    assert [a["outcome"] for a in delivery["history"]] == ["delivered"]

    for which, flag in (("received", "--raw"), ("delivered", "--delivered")):
        copy = await api.get(f"/archive/{entry['id']}/{which}", headers=bearer(admin))
        assert copy.status_code == 200
        assert copy.headers["content-type"] == "message/rfc822"
        printed = await asyncio.to_thread(
            relay_cli, "-c", str(cfg_file), "archive", "show", str(entry["id"]), flag
        )
        assert copy.content == printed.raw
    delivered = await api.get(f"/archive/{entry['id']}/delivered", headers=bearer(admin))
    assert b"[redacted]" in delivered.content and got.data.count(b"[redacted]") == 1
    assert (
        b"555-1234"
        in (await api.get(f"/archive/{entry['id']}/received", headers=bearer(admin))).content
    )
    missing = await api.get("/archive/999999", headers=bearer(admin))
    assert problem(missing, 404, "not-found")["detail"] == "no archived message with id 999999"
    problem(await api.get("/archive/999999/received", headers=bearer(admin)), 404, "not-found")


async def test_quarantined_mail_is_released_and_rejected_over_the_api(
    relay: Relay,
    config: RelayConfig,
    sink: Sink,
    parties: Parties,
    api: httpx.AsyncClient,
    cfg_file: Path,
) -> None:
    with_rules(relay, config)
    admin = await admin_key(cfg_file)
    seller = await asyncio.to_thread(key, cfg_file, f"seller:{parties.seller_id}")
    await seller_writes(relay, parties, subject="First", body="Call 555-1234.", headers=BULK)
    await seller_writes(relay, parties, subject="Second", headers=BULK)
    await wait_idle(relay)
    assert sink.messages == []

    held = await get(api, admin, "/quarantine")
    assert held["items"] == await cli(cfg_file, "quarantine", "list")
    second, first = (m["id"] for m in held["items"])
    assert {h["rule_id"] for h in held["items"][0]["rule_hits"]} == {"bulk-mailer"}
    paged = await get(api, admin, "/quarantine", limit=1)
    assert [m["id"] for m in paged["items"]] == [second] and paged["next_cursor"]

    problem(await api.get("/quarantine", headers=bearer(seller)), 403, "forbidden")
    problem(
        await api.post(f"/quarantine/{first}/release", headers=bearer(seller)), 403, "forbidden"
    )

    released = await api.post(f"/quarantine/{first}/release", headers=bearer(admin))
    assert released.status_code == 200 and released.json() == {
        "message_id": first,
        "status": "queued",
    }
    refused = await api.post(f"/quarantine/{second}/reject", headers=bearer(admin))
    assert refused.json() == {"message_id": second, "status": "rejected"}

    await wait_until(lambda: len(sink.to(parties.buyer)) == 1)
    out = sink.to(parties.buyer)[0]
    assert out.message["Subject"] == "First" and b"555-1234" not in out.data
    await wait_until(lambda: len(sink.to(parties.seller)) == 1)
    notice = " ".join(sink.to(parties.seller)[0].message.get_content().split())
    assert "Messages sent with bulk-mail tools are not passed on." in notice
    await wait_idle(relay)
    shown = await get(api, admin, f"/archive/{first}")
    assert shown["status"] == "delivered" and shown["status_reason"] == "released from quarantine"
    assert (await get(api, admin, f"/archive/{second}"))["status_reason"] == (
        "rule bulk-mailer, by an admin"
    )
    assert (await get(api, admin, "/quarantine"))["items"] == []

    again = await api.post(f"/quarantine/{first}/release", headers=bearer(admin))
    assert problem(again, 409, "conflict")["detail"] == (
        f"message {first} is delivered, not quarantined"
    )
    gone = await api.post("/quarantine/999999/reject", headers=bearer(admin))
    assert problem(gone, 404, "not-found")["detail"] == "no message with id 999999"


async def test_a_failed_delivery_is_listed_and_retried(
    relay: Relay,
    sink: Sink,
    parties: Parties,
    api: httpx.AsyncClient,
    cfg_file: Path,
) -> None:
    admin = await admin_key(cfg_file)
    sink.handler.refuse[parties.seller] = "550 5.1.1 no such mailbox here"
    await buyer_writes(relay, parties, subject="Where is my parcel?")
    await wait_until(lambda: len(sink.to(parties.buyer)) == 1)  # the failure's notice
    await wait_idle(relay)
    (message,) = [
        m
        for m in (await get(api, admin, "/archive"))["items"]
        if m["direction"] == "buyer_to_seller"
    ]
    assert message["status"] == "failed"

    everything = await get(api, admin, "/queue", all="true")
    assert everything == await cli(cfg_file, "queue", "list", "--all")
    (failed,) = [d for d in everything if d["message_id"] == message["id"]]
    assert failed["status"] == "failed" and "550 5.1.1" in failed["last_reply"]
    assert await get(api, admin, "/queue") == []

    del sink.handler.refuse[parties.seller]
    retried = await api.post(f"/queue/{failed['id']}/retry", headers=bearer(admin))
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "pending" and retried.json()["id"] == failed["id"]
    await wait_until(lambda: len(sink.to(parties.seller)) == 1)
    got = sink.to(parties.seller)[0]
    assert got.message["Subject"] == "Where is my parcel?"
    await wait_idle(relay)
    assert (await get(api, admin, f"/archive/{message['id']}"))["status"] == "delivered"

    done = await api.post(f"/queue/{failed['id']}/retry", headers=bearer(admin))
    assert problem(done, 409, "conflict")["detail"] == (
        f"delivery {failed['id']} was delivered; nothing to retry"
    )
    problem(await api.post("/queue/999999/retry", headers=bearer(admin)), 404, "not-found")
    seller = await asyncio.to_thread(key, cfg_file, f"seller:{parties.seller_id}")
    problem(await api.get("/queue", headers=bearer(seller)), 403, "forbidden")
    problem(
        await api.post(f"/queue/{failed['id']}/retry", headers=bearer(seller)), 403, "forbidden"
    )


async def test_response_times_are_the_cli_figures(
    relay: Relay,
    sink: Sink,
    parties: Parties,
    api: httpx.AsyncClient,
    cfg_file: Path,
) -> None:
    admin = await admin_key(cfg_file)
    other = register(
        relay, buyer="jose@buyer.example", seller=("other@seller.example",), order_id="ORD-2"
    )
    await buyer_writes(relay, parties, subject="Question")
    await seller_writes(relay, parties, subject="Answer")
    await buyer_writes(relay, other, subject="Anyone?")
    await sink.wait_for(3)
    await wait_idle(relay)

    every = await get(api, admin, "/responses")
    assert every == await cli(cfg_file, "responses")
    assert [f["seller_id"] for f in every] == [parties.seller_id, other.seller_id]
    assert every[0]["within_24h"] == 1 and every[1]["open"] == 1
    today = clock.now().date().isoformat()
    assert await get(api, admin, "/responses", seller=other.seller_id, since=today) == (
        await cli(cfg_file, "responses", "--seller", str(other.seller_id), "--since", today)
    )
    tomorrow = (clock.now().date() + timedelta(days=1)).isoformat()
    assert await get(api, admin, "/responses", since=tomorrow) == []

    seller = await asyncio.to_thread(key, cfg_file, f"seller:{parties.seller_id}")
    own = await cli(cfg_file, "responses", "--seller", str(parties.seller_id))
    assert await get(api, seller, "/responses") == own
    assert await get(api, seller, "/responses", seller=parties.seller_id) == own
    theirs = await api.get("/responses", params={"seller": other.seller_id}, headers=bearer(seller))
    assert problem(theirs, 404, "not-found")["detail"] == f"no seller with id {other.seller_id}"
    unknown = await api.get("/responses", params={"seller": 999}, headers=bearer(admin))
    assert problem(unknown, 404, "not-found")["detail"] == "no seller with id 999"
    brand = await asyncio.to_thread(key, cfg_file, "brand:1")
    problem(await api.get("/responses", headers=bearer(brand)), 403, "forbidden")


async def test_a_seller_key_sees_its_own_and_never_the_buyers_address(
    relay: Relay,
    config: RelayConfig,
    sink: Sink,
    parties: Parties,
    api: httpx.AsyncClient,
    cfg_file: Path,
) -> None:
    with_rules(relay, config)
    admin = await admin_key(cfg_file)
    other = register(
        relay, buyer="jose@buyer.example", seller=("other@seller.example",), order_id="ORD-2"
    )
    seller = await asyncio.to_thread(key, cfg_file, f"seller:{parties.seller_id}")
    brand = await asyncio.to_thread(key, cfg_file, "brand:1")

    msg = build(frm=f"Maria <{parties.buyer}>", to=parties.seller_token, body="Hi, 555-1234")
    await send(relay, msg, sender=parties.buyer, recipients=[parties.seller_token])
    await sink.wait_for(1)
    # The buyer's server refuses, quoting the buyer's address: a failed delivery and a notice.
    sink.handler.rcpt_faults.append(f"550 5.1.1 <{parties.buyer}>: Recipient address rejected")
    await seller_writes(relay, parties, subject="Your parcel")
    await seller_writes(relay, parties, subject="Bulk", headers=BULK)  # quarantined
    await buyer_writes(relay, other, subject="Not yours")
    await wait_until(lambda: len(sink.messages) == 3)
    await wait_idle(relay)

    everything = (await get(api, admin, "/archive"))["items"]
    mine = [m for m in everything if m["conversation_id"] == parties.conversation_id]
    assert len(mine) == 4 and len(everything) == 5  # with the failure's notice to the seller
    assert any(parties.buyer in (m["envelope_from"], m["recipient"]) for m in mine)

    bodies: list[str] = []

    async def as_seller(path: str, **params: Any) -> Any:
        response = await api.get(path, params=params, headers=bearer(seller))
        bodies.append(response.text)
        assert response.status_code == 200, response.text
        return response.json()

    listed = (await as_seller("/archive"))["items"]
    assert [m["id"] for m in listed] == [m["id"] for m in mine]
    buyers = [m for m in listed if m["direction"] == "buyer_to_seller"]
    assert [m["envelope_from"] for m in buyers] == [parties.buyer_token]
    to_buyer = [m for m in listed if m["direction"] == "seller_to_buyer"]
    assert {m["recipient"] for m in to_buyer} == {parties.buyer_token}
    for m in listed:
        shown = await as_seller(f"/archive/{m['id']}")
        assert shown["received_copy"] is (m["direction"] != "notice")
    failed = next(m for m in to_buyer if m["status"] == "failed")
    (delivery,) = (await as_seller(f"/archive/{failed['id']}"))["deliveries"]
    assert delivery["recipient"] == parties.buyer_token
    assert "550 5.1.1" in delivery["last_reply"] and parties.buyer_token in delivery["last_reply"]
    await as_seller("/archive", direction="buyer_to_seller", rule="no-phone")
    await as_seller("/responses")
    assert all(parties.buyer not in body for body in bodies), bodies

    theirs = next(m for m in everything if m["conversation_id"] == other.conversation_id)
    for path in (f"/archive/{theirs['id']}", "/archive/999999"):
        for who in (seller, brand):
            assert (
                problem(await api.get(path, headers=bearer(who)), 404, "not-found")["detail"]
                == f"no archived message with id {path.rsplit('/', 1)[1]}"
            )
    for which in ("received", "delivered"):
        for who in (seller, brand):
            copy = await api.get(f"/archive/{mine[0]['id']}/{which}", headers=bearer(who))
            assert parties.buyer not in problem(copy, 403, "forbidden")["detail"]
    for path in ("/archive", "/quarantine", "/queue"):
        problem(await api.get(path, headers=bearer(brand)), 403, "forbidden")
    assert (await get(api, seller, "/archive", conversation=other.conversation_id))["items"] == []


def _cursor(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


BAD = [
    # (query, the field the problem names)
    ({"cursor": "!!!not a cursor"}, "query.cursor"),
    ({"cursor": _cursor(b'{"before": "7"}')}, "query.cursor"),
    ({"cursor": _cursor(b'{"before": 0}')}, "query.cursor"),
    ({"cursor": _cursor(b"[1]")}, "query.cursor"),
    ({"since": "yesterday"}, "query.since"),
    ({"until": "2026-13-01"}, "query.until"),
    ({"status": "lost"}, "query.status"),
    ({"direction": "sideways"}, "query.direction"),
    ({"limit": "0"}, "query.limit"),
    ({"limit": "201"}, "query.limit"),
    ({"conversation": "x"}, "query.conversation"),
]


@pytest.mark.parametrize(("query", "field"), BAD)
async def test_bad_listing_input_gets_a_clear_problem(
    relay: Relay,
    api: httpx.AsyncClient,
    cfg_file: Path,
    query: dict[str, str],
    field: str,
) -> None:
    admin = await admin_key(cfg_file)
    found = problem(
        await api.get("/archive", params=query, headers=bearer(admin)), 422, "validation-error"
    )
    assert field in {e["field"] for e in found["errors"]}, found


async def test_bad_ids_and_dates_elsewhere(
    relay: Relay,
    api: httpx.AsyncClient,
    cfg_file: Path,
) -> None:
    admin = await admin_key(cfg_file)
    for method, path, params in (
        ("GET", "/archive/abc", {}),
        ("GET", "/responses", {"since": "soon"}),
        ("GET", "/responses", {"seller": "0"}),
        ("GET", "/quarantine", {"cursor": "%%%"}),
        ("POST", "/queue/abc/retry", {}),
    ):
        response = await api.request(method, path, params=params, headers=bearer(admin))
        problem(response, 422, "validation-error")
