"""Webhooks to a real local HTTP receiver, on SQLite and PostgreSQL.

What the marketplace relies on: every change it subscribed to reaches it,
signed, at least once, with one event id per change however often it is
retried; a receiver that fails or hangs gets the events once it recovers; an
endpoint hears only of its key's scope; no event carries a real address.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from hypothesis import example, given
from hypothesis import strategies as st

from relay.app import Relay
from relay.core import clock
from relay.core.config import RelayConfig, WebhooksConfig
from relay.storage.events import EventType, scrub
from relay.webhooks import signing
from tests import test_api
from tests.helpers import (
    Parties,
    Sink,
    buyer_writes,
    config_file,
    make_config,
    register,
    seller_writes,
    wait_idle,
    wait_until,
)
from tests.receiver import Receiver
from tests.test_api import bearer, key, problem

api = test_api.api
cfg_file = test_api.cfg_file
__all__ = ["api", "cfg_file"]  # fixtures, used by name

RULES = """\
rules:
  - id: bulk-mailer
    applies_to: both
    match: {header: [{name: X-Mailer, pattern: 'Bulk'}]}
    action: quarantine
  - id: no-marketing
    match: {keywords: [promo code]}
    action: reject
"""
ALL = [t.value for t in EventType]
HOOK = "https://example.com/h"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def config(
    tmp_path: Path, sink: Sink, dkim_key: tuple[Path, str], database_url: str
) -> RelayConfig:
    rules = tmp_path / "filters.yaml"
    rules.write_text(RULES, encoding="utf-8")
    return make_config(
        tmp_path,
        sink_port=sink.port,
        dkim_key=dkim_key[0],
        database_url=database_url,
        rules=rules,
    )


async def admin_key(cfg: Path) -> str:
    return await asyncio.to_thread(key, cfg, "admin")


async def subscribe(
    api: httpx.AsyncClient, who: str, url: str, events: list[str] = ALL
) -> dict[str, Any]:
    made = await api.post("/webhooks", json={"url": url, "events": events}, headers=bearer(who))
    assert made.status_code == 201, made.text
    body: dict[str, Any] = made.json()
    assert body["secret"].startswith("whsec_") and body["events"] == events
    return body


def check_signed(receiver: Receiver, secret: str) -> None:
    """Every request the receiver got verifies with ``secret``, as the README says."""
    for got in receiver.requests:
        header = got.headers["relay-signature"]
        assert signing.verify(secret, got.body, header), header
        assert not signing.verify(secret, got.body + b" ", header)
        assert not signing.verify("whsec_other", got.body, header)
        assert got.headers["content-type"] == "application/json"
        assert got.headers["relay-event-id"] == got.event["id"]


def no_address(receiver: Receiver, *addresses: str) -> None:
    for got in receiver.requests:
        text = got.body.decode()
        assert "@" not in text, text
        for address in addresses:
            assert address not in text


async def test_each_change_is_one_signed_event_with_no_address(
    relay: Relay,
    config: RelayConfig,
    sink: Sink,
    parties: Parties,
    receiver: Receiver,
    api: httpx.AsyncClient,
    cfg_file: Path,
) -> None:
    admin = await admin_key(cfg_file)
    hook = await subscribe(api, admin, receiver.url)

    await buyer_writes(relay, parties, subject="Hello")  # delivered
    await seller_writes(relay, parties, subject="Deal", body="Use promo code X")  # blocked: rule
    await buyer_writes(relay, parties, subject="Bulk", headers={"X-Mailer": "Bulk 1"})  # held
    events = await receiver.wait_for(3)
    by_type = {e["type"]: e for e in events}
    assert set(by_type) == {"message.delivered", "message.blocked", "message.quarantined"}
    delivered = by_type["message.delivered"]["data"]
    assert delivered["conversation_id"] == parties.conversation_id
    assert delivered["direction"] == "buyer_to_seller"
    blocked = by_type["message.blocked"]["data"]
    assert blocked["reason"] == "rule" and blocked["rule_id"] == "no-marketing"
    held = by_type["message.quarantined"]["data"]
    assert held["rule_id"] == "bulk-mailer"
    for event in events:
        assert event["id"].startswith("evt_") and event["created"].endswith("Z")
        assert set(event) == {"id", "type", "created", "data"}

    released = await api.post(f"/quarantine/{held['message_id']}/release", headers=bearer(admin))
    assert released.status_code == 200, released.text
    events = await receiver.wait_for(5)  # released, then delivered
    types = [e["type"] for e in events]
    assert types.count("message.released") == 1 and types.count("message.delivered") == 2

    # A buyer who opted out: the seller's first message is blocked, and says why.
    jose = register(relay, buyer="jose@buyer.example", seller=("b@seller.example",), order_id="O-2")
    out = await api.post("/buyers/opt-out", json={"email": jose.buyer}, headers=bearer(admin))
    assert out.status_code == 200
    await seller_writes(relay, jose, subject="New arrivals")
    events = await receiver.wait_for(6)
    (opted_out,) = [e for e in events if e["data"].get("reason") == "opt_out"]
    assert opted_out["type"] == "message.blocked"
    assert opted_out["data"]["conversation_id"] == jose.conversation_id
    await wait_idle(relay)
    check_signed(receiver, hook["secret"])
    no_address(receiver, parties.buyer, parties.seller, jose.buyer)
    assert len(receiver.requests) == len(receiver.ids()) == 6  # nothing sent twice

    async def recorded() -> bool:  # the receiver's answer, then the relay's commit
        shown = await api.get(f"/webhooks/{hook['id']}", headers=bearer(admin))
        assert shown.status_code == 200 and "secret" not in shown.json()
        return bool(shown.json()["delivered"] == 6 and shown.json()["failing"] is False)

    await wait_until_api(recorded)


async def test_a_failing_or_hanging_receiver_gets_each_event_once_it_recovers(
    relay: Relay,
    parties: Parties,
    receiver: Receiver,
    sink: Sink,
    api: httpx.AsyncClient,
    cfg_file: Path,
) -> None:
    admin = await admin_key(cfg_file)
    hook = await subscribe(api, admin, receiver.url, ["message.delivered"])
    receiver.mode = "fail"
    for n in range(3):
        await buyer_writes(relay, parties, subject=f"Question {n}")
    await sink.wait_for(3)
    await receiver.wait_for_requests(6)  # each event tried, and tried again
    assert receiver.answered == []

    receiver.mode = "hang"  # the relay's timeout (2 s in the tests) ends each attempt
    hung = len(receiver.requests)
    await receiver.wait_for_requests(hung + 3, timeout=30)
    shown = (await api.get(f"/webhooks/{hook['id']}", headers=bearer(admin))).json()
    assert shown["pending"] == 3 and shown["delivered"] == 0
    assert shown["last_error"] == "" and shown["failing"] is False  # not given up

    receiver.mode = "ok"
    events = await receiver.wait_for(3, timeout=30)
    assert [e["type"] for e in events] == ["message.delivered"] * 3
    # Retries carry the same event: one id per change, the same bytes each time.
    by_id: dict[str, set[bytes]] = {}
    for got in receiver.requests:
        by_id.setdefault(got.event["id"], set()).add(got.body)
    assert len(by_id) == 3 and all(len(bodies) == 1 for bodies in by_id.values())
    check_signed(receiver, hook["secret"])

    async def settled() -> bool:
        got = (await api.get(f"/webhooks/{hook['id']}", headers=bearer(admin))).json()
        return bool(got["delivered"] == 3 and got["pending"] == 0)

    await wait_until_api(settled)


async def wait_until_api(check: Any, timeout: float = 15) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


@pytest_asyncio.fixture
async def quick_give_up(
    tmp_path: Path, sink: Sink, dkim_key: tuple[Path, str], database_url: str
) -> AsyncIterator[Relay]:
    """A relay that gives a webhook delivery up after one second."""
    config = make_config(
        tmp_path,
        sink_port=sink.port,
        dkim_key=dkim_key[0],
        database_url=database_url,
        webhooks=WebhooksConfig(
            first_retry=0.2, max_retry_delay=0.4, poll_interval=0.1, timeout=1, give_up_after=1
        ),
    )
    relay = Relay(config)
    await relay.start()
    yield relay
    await relay.stop()


async def test_a_delivery_is_given_up_and_its_endpoint_marked_failing(
    quick_give_up: Relay, sink: Sink, receiver: Receiver, tmp_path: Path
) -> None:
    relay = quick_give_up
    assert relay.api is not None
    cfg = config_file(relay.config, tmp_path / "relay.json")
    admin = await admin_key(cfg)
    parties = register(relay)
    async with httpx.AsyncClient(base_url=f"{relay.api.base_url}/api/v1", timeout=15) as api:
        hook = await subscribe(api, admin, receiver.url, ["message.delivered"])
        receiver.mode = "fail"
        await buyer_writes(relay, parties, subject="One")

        async def failing() -> bool:
            got = (await api.get(f"/webhooks/{hook['id']}", headers=bearer(admin))).json()
            return bool(got["failing"])

        await wait_until_api(failing)
        shown = (await api.get(f"/webhooks/{hook['id']}", headers=bearer(admin))).json()
        assert shown["failed"] == 1 and shown["pending"] == 0
        assert shown["last_error"] == "HTTP 500" and shown["failing_since"]

        receiver.mode = "ok"
        await buyer_writes(relay, parties, subject="Two")
        (event,) = await receiver.wait_for(1)
        assert event["type"] == "message.delivered"

        async def healthy() -> bool:
            got = (await api.get(f"/webhooks/{hook['id']}", headers=bearer(admin))).json()
            return got["failing"] is False and got["delivered"] == 1

        await wait_until_api(healthy)


async def test_a_webhook_hears_only_its_scope(
    relay: Relay,
    sink: Sink,
    receiver: Receiver,
    api: httpx.AsyncClient,
    cfg_file: Path,
) -> None:
    admin = await admin_key(cfg_file)
    mine = register(relay)
    theirs = register(
        relay, buyer="jose@buyer.example", seller=("other@seller.example",), order_id="O-2"
    )
    seller = await asyncio.to_thread(key, cfg_file, f"seller:{mine.seller_id}")
    other = await asyncio.to_thread(key, cfg_file, f"seller:{theirs.seller_id}")
    brand = await asyncio.to_thread(key, cfg_file, "brand:1")

    refused = await api.post(
        "/webhooks",
        json={"url": receiver.url, "events": ["campaign.status_changed"]},
        headers=bearer(seller),
    )
    assert "cannot hear of campaign.status_changed" in str(
        problem(refused, 422, "validation-error")["errors"]
    )
    refused = await api.post(
        "/webhooks",
        json={"url": receiver.url, "events": ["message.delivered"]},
        headers=bearer(brand),
    )
    problem(refused, 422, "validation-error")

    hook = await subscribe(api, seller, receiver.url, ["message.delivered"])
    await buyer_writes(relay, theirs, subject="For the other seller")
    await buyer_writes(relay, mine, subject="For mine")
    await sink.wait_for(2)
    (event,) = await receiver.wait_for(1)
    assert event["data"]["conversation_id"] == mine.conversation_id
    await wait_idle(relay)

    # Another seller's key: the webhook does not exist for it.
    for method in ("get", "delete"):
        answer = await getattr(api, method)(f"/webhooks/{hook['id']}", headers=bearer(other))
        problem(answer, 404, "not-found")
    assert (await api.get("/webhooks", headers=bearer(other))).json() == []
    listed = (await api.get("/webhooks", headers=bearer(admin))).json()
    assert [h["id"] for h in listed] == [hook["id"]] and listed[0]["scope"] == str(
        f"seller:{mine.seller_id}"
    )
    gone = await api.delete(f"/webhooks/{hook['id']}", headers=bearer(seller))
    assert gone.status_code == 200 and gone.json()["deleted"] is True
    problem(await api.get(f"/webhooks/{hook['id']}", headers=bearer(admin)), 404, "not-found")
    problem(await api.get("/webhooks"), 401, "unauthorized")


BAD: list[tuple[dict[str, Any] | str, int, str, str]] = [
    ({"url": "http://example.com/hook", "events": ALL}, 422, "validation-error", "url"),
    ({"url": "ftp://127.0.0.1/hook", "events": ALL}, 422, "validation-error", "url"),
    ({"url": "javascript:alert(1)//", "events": ALL}, 422, "validation-error", "url"),
    ({"url": "https://user:pw@example.com/h", "events": ALL}, 422, "validation-error", "url"),
    ({"url": "https://169.254.169.254/latest", "events": ALL}, 422, "validation-error", "url"),
    ({"url": "https://example.com/\u0000x", "events": ALL}, 422, "validation-error", "url"),
    ({"url": "https://example.com/h", "events": []}, 422, "validation-error", "events"),
    ({"url": HOOK, "events": ["message.eaten"]}, 422, "validation-error", "events.0"),
    ({"url": HOOK, "events": "message.delivered"}, 422, "validation-error", "events"),
    ({"url": "https://example.com/h", "events": ALL, "extra": 1}, 422, "validation-error", "extra"),
    ({"url": 42, "events": ALL}, 422, "validation-error", "url"),
    ({"events": ALL}, 422, "validation-error", "url"),
    ({"url": HOOK, "events": ALL, "description": "a\x07b"}, 422, "validation-error", "description"),
    ('{"url": "https://example.com/h", "events": [', 400, "malformed-request", ""),
]  # fmt: skip


@pytest.mark.parametrize(("body", "status", "kind", "field"), BAD)
async def test_bad_registrations_get_a_clear_answer(
    relay: Relay,
    api: httpx.AsyncClient,
    cfg_file: Path,
    body: dict[str, Any] | str,
    status: int,
    kind: str,
    field: str,
) -> None:
    admin = await admin_key(cfg_file)
    headers = {**bearer(admin), "Content-Type": "application/json"}
    content = body if isinstance(body, str) else json.dumps(body)
    answer = await api.post("/webhooks", content=content, headers=headers)
    got = problem(answer, status, kind)
    if field:
        assert field in [e["field"] for e in got["errors"]], got


async def test_a_buyer_message_unanswered_for_24_hours_is_reported_late_once(
    relay: Relay,
    sink: Sink,
    parties: Parties,
    receiver: Receiver,
    api: httpx.AsyncClient,
    cfg_file: Path,
) -> None:
    admin = await admin_key(cfg_file)
    await subscribe(api, admin, receiver.url, ["response.late"])
    await buyer_writes(relay, parties, subject="Where is my parcel?")
    clock.advance(timedelta(hours=20))
    await buyer_writes(relay, parties, subject="Hello?")  # the same wait
    await sink.wait_for(2)
    clock.advance(timedelta(hours=5))  # the first passed 24 h, the second not yet
    (late,) = await receiver.wait_for(1)
    assert late["type"] == "response.late"
    assert late["data"]["conversation_id"] == parties.conversation_id
    assert late["data"]["seller_id"] == parties.seller_id

    clock.advance(timedelta(hours=20))  # the second passed 24 h too: the same wait
    passes = relay.webhooks.passes if relay.webhooks else 0
    await wait_until(lambda: relay.webhooks is not None and relay.webhooks.passes > passes + 5)
    await seller_writes(relay, parties, subject="On its way")  # answered: the clock stops
    await buyer_writes(relay, parties, subject="Thanks")
    clock.advance(timedelta(hours=25))  # a new wait, late again
    events = await receiver.wait_for(2)
    assert [e["type"] for e in events] == ["response.late"] * 2
    assert events[0]["data"]["message_id"] != events[1]["data"]["message_id"]
    await wait_idle(relay)
    assert len(receiver.ids()) == 2


async def test_campaign_and_follower_events_reach_the_brand(
    relay: Relay,
    receiver: Receiver,
    api: httpx.AsyncClient,
    cfg_file: Path,
) -> None:
    admin = await admin_key(cfg_file)
    h = bearer(admin)
    made = await api.post("/brands", json={"name": "Lotus Tea", "registered": True}, headers=h)
    assert made.status_code == 201, made.text
    brand_id = made.json()["brand_id"]
    other = await api.post("/brands", json={"name": "Other", "registered": True}, headers=h)
    other_id = other.json()["brand_id"]
    brand = await asyncio.to_thread(key, cfg_file, f"brand:{brand_id}")
    hook = await subscribe(
        api, brand, receiver.url, ["campaign.status_changed", "follower.unsubscribed"]
    )
    for b in (brand_id, other_id):
        body = {"email": "c1@buyer.example", "name": "Customer"}
        assert (await api.post(f"/brands/{b}/followers", json=body, headers=h)).status_code == 201
        left = await api.delete(f"/brands/{b}/followers/c1@buyer.example", headers=h)
        assert left.status_code == 200, left.text
    (event,) = await receiver.wait_for(1)
    assert event["type"] == "follower.unsubscribed"
    assert event["data"]["brand_id"] == brand_id and event["data"]["via"] == "admin"
    assert isinstance(event["data"]["follower_id"], int)
    check_signed(receiver, hook["secret"])
    no_address(receiver)


def test_a_signature_verifies_only_for_its_body_secret_and_time() -> None:
    secret = signing.new_secret()
    body = b'{"id":"evt_1"}'
    header = signing.sign(secret, body, timestamp=1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    assert signing.verify(secret, body, header, now=1_700_000_100)
    assert not signing.verify(secret, body, header, now=1_700_000_000 + 301)  # replayed late
    assert not signing.verify(secret, body + b"x", header, now=1_700_000_000)
    assert not signing.verify(secret, body, "v1=" + header.split("v1=")[1], now=1_700_000_000)
    assert not signing.verify(secret, body, "garbage", now=1_700_000_000)


ADDRESSES = st.emails()


@given(
    prefix=st.text(max_size=20),
    address=ADDRESSES,
    suffix=st.text(max_size=20),
)
@example(prefix="", address="'@A.af", suffix="")  # an apostrophe is a local part's letter
@example(prefix="", address="o'neil@shop.example", suffix="")
def test_scrub_leaves_no_address_in_any_string(prefix: str, address: str, suffix: str) -> None:
    text = f"{prefix} <{address}> {suffix}"
    nested = {"reply": text, "list": [text, 1, None], "inner": {"x": text}}
    out = json.dumps(scrub(nested), ensure_ascii=False)
    assert address not in out
    assert "@" not in out or "@" in prefix + suffix


def test_an_event_type_is_one_of_the_documented_names() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for event_type in EventType:
        assert f"`{event_type.value}`" in readme
