"""Brand campaigns over the HTTP API (real HTTP against a running relay, SQLite and
PostgreSQL): a campaign drafted, submitted, reviewed and delivered to a real SMTP
sink through the relay's own dispatcher; the calendar equal to the CLI's JSON;
the rules' refusals in the CLI's words; what a brand, seller or admin key may
see and do; a table of bad input."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.app import Relay
from relay.campaigns import rules
from relay.campaigns.models import SendStatus
from relay.core import clock
from relay.core.config import CampaignsConfig, RelayConfig, UnsubscribeConfig
from tests.helpers import Sink, make_config, relay_cli, wait_idle, wait_until_async
from tests.test_api import api, bearer, cfg_file, key, problem

__all__ = ["api", "cfg_file"]  # fixtures, used by name

FOLLOWERS = 6


@pytest.fixture
def config(
    tmp_path: Path, sink: Sink, dkim_key: tuple[Path, str], database_url: str
) -> RelayConfig:
    """The suite's config with a dispatcher that moves only when the test runs a
    pass (its own loop polls once an hour)."""
    return make_config(
        tmp_path,
        sink_port=sink.port,
        dkim_key=dkim_key[0],
        database_url=database_url,
        campaigns=CampaignsConfig(
            poll_interval=3600, batch=5, unsubscribe=UnsubscribeConfig(listen="127.0.0.1:0")
        ),
    )


async def ok(response: Any, status: int = 200) -> Any:
    got: httpx.Response = await response
    assert got.status_code == status, got.text
    return got.json()


async def brand_world(
    api: httpx.AsyncClient, cfg_file: Path, admin: str, name: str
) -> tuple[int, int, str]:
    """A registered brand with a store page, followers and a product, and its key."""
    h = bearer(admin)
    brand = await ok(
        api.post("/brands", json={"name": name, "registered": True, "store_page": True}, headers=h),
        201,
    )
    brand_id = brand["brand_id"]
    for i in range(FOLLOWERS):
        body = {"email": f"c{i}.{brand_id}@buyer.example", "name": f"Customer {i}"}
        await ok(api.post(f"/brands/{brand_id}/followers", json=body, headers=h), 201)
    product = {"sku": f"SKU-{brand_id}", "title": "Lacquer box", "price": "250,000 VND"}
    made = await ok(api.post(f"/brands/{brand_id}/products", json=product, headers=h), 201)
    brand_key = await asyncio.to_thread(key, cfg_file, f"brand:{brand_id}")
    return brand_id, made["product_id"], brand_key


def instants(campaign: dict[str, Any]) -> dict[str, Any]:
    """A campaign with its times parsed: the API writes UTC as ``Z``, the CLI as
    ``+00:00``; the same instants either way."""
    return {
        **campaign,
        "window": {k: datetime.fromisoformat(v) for k, v in campaign["window"].items()},
        "history": [{**h, "at": datetime.fromisoformat(h["at"])} for h in campaign["history"]],
        "decisions": [
            {**d, "at": datetime.fromisoformat(d["at"])} for d in campaign.get("decisions") or []
        ],
    }


def draft(brand_id: int, product_id: int, start: date, **more: Any) -> dict[str, Any]:
    return {
        "brand_id": brand_id,
        "kind": "new_product",
        "main_product_id": product_id,
        "subject": "New this week",
        "content": "Hand made in Hà Nội.",
        "start_on": str(start),
        **more,
    }


async def test_a_campaign_over_the_api_from_draft_to_delivery(
    relay: Relay, sink: Sink, api: httpx.AsyncClient, cfg_file: Path
) -> None:
    admin = await asyncio.to_thread(key, cfg_file, "admin")
    brand_id, product_id, brand = await brand_world(api, cfg_file, admin, "Hà Nội Crafts")
    today = clock.now().date()
    start = today + timedelta(days=4)

    promo = {
        "product_id": product_id,
        "kind": "percent_off",
        "discount": "20",
        "starts_at": f"{today}T00:00:00Z",
        "ends_at": f"{today + timedelta(days=30)}T00:00:00Z",
    }
    made = await ok(
        api.post(f"/brands/{brand_id}/promotions", json=promo, headers=bearer(brand)), 201
    )
    assert made["status"] == "pending"
    promotion_id = made["promotion_id"]
    problem(
        await api.post(f"/promotions/{promotion_id}/approve", headers=bearer(brand)),
        403,
        "forbidden",
    )
    eligible = f"/brands/{brand_id}/promotions?product_id={product_id}&eligible_for={start}"
    assert await ok(api.get(eligible, headers=bearer(brand))) == []
    approved = await ok(api.post(f"/promotions/{promotion_id}/approve", headers=bearer(admin)))
    assert approved["status"] == "approved" and approved["suspended_campaigns"] == []
    assert [p["promotion_id"] for p in await ok(api.get(eligible, headers=bearer(brand)))] == [
        promotion_id
    ]

    # Inside the 72-hour lead: refused in the rules' words, the CLI's.
    soon = draft(brand_id, product_id, today + timedelta(days=2), kind="promotion")
    soon["promotion_id"] = promotion_id
    refused = problem(
        await api.post("/campaigns", json=soon, headers=bearer(brand)), 422, "refused"
    )
    cli = await asyncio.to_thread(
        relay_cli, "-c", str(cfg_file), "campaign", "create", "--brand", str(brand_id),
        "--kind", "promotion", "--product", str(product_id), "--promotion", str(promotion_id),
        "--subject", "New this week", "--content", "Hand made in Hà Nội.",
        "--start", str(today + timedelta(days=2)),
    )  # fmt: skip
    assert cli.code == 1 and "72 hours" in refused["detail"]
    assert refused["detail"] in cli.err

    body = draft(brand_id, product_id, start, kind="promotion", promotion_id=promotion_id)
    created = await ok(api.post("/campaigns", json=body, headers=bearer(brand)), 201)
    campaign_id = created["campaign_id"]
    assert created["status"] == "draft" and created["history"][0]["reason"] == "created"
    edited = await ok(
        api.patch(f"/campaigns/{campaign_id}", json={"subject": "20% off"}, headers=bearer(brand))
    )
    assert edited["subject"] == "20% off" and edited["promotion_id"] == promotion_id
    submitted = await ok(api.post(f"/campaigns/{campaign_id}/submit", headers=bearer(brand)))
    assert submitted["status"] == "in_review"
    decision = {"decision": "approve"}
    review = f"/campaigns/{campaign_id}/review"
    problem(await api.post(review, json=decision, headers=bearer(brand)), 403, "forbidden")
    reviewed = await ok(api.post(review, json=decision, headers=bearer(admin)))
    assert reviewed["status"] == "approved"
    # The moderation's decision is final: a second review is refused in the CLI's words.
    second = problem(await api.post(review, json=decision, headers=bearer(admin)), 422, "refused")
    assert (
        second["detail"]
        == f"campaign {campaign_id} is approved, not in_review: it cannot be reviewed"
    )
    not_draft = problem(
        await api.patch(f"/campaigns/{campaign_id}", json={"subject": "x"}, headers=bearer(brand)),
        422,
        "refused",
    )
    assert "only a draft or a campaign in review can be edited" in not_draft["detail"]

    # The calendar: the same days as `relay campaign calendar --json`.
    last = today + timedelta(days=13)
    days = await ok(
        api.get(f"/brands/{brand_id}/calendar?from={today}&to={last}", headers=bearer(brand))
    )
    shown = await asyncio.to_thread(
        relay_cli, "-c", str(cfg_file), "campaign", "calendar", "--brand", str(brand_id),
        "--from", str(today), "--days", "14", "--json",
    )  # fmt: skip
    assert days == shown.json()
    by_day = {date.fromisoformat(d["date"]): d for d in days}
    assert by_day[today]["colour"] == "unavailable" and by_day[today]["reasons"]
    assert by_day[start]["colour"] == "conflict"
    assert by_day[start]["colliding_followers"] == FOLLOWERS
    assert by_day[start + timedelta(days=7)]["colour"] == "free"
    month = await ok(
        api.get(f"/brands/{brand_id}/calendar?month={start:%Y-%m}", headers=bearer(brand))
    )
    assert month[0]["date"] == f"{start:%Y-%m}-01" and 28 <= len(month) <= 31

    # Delivery: the relay's dispatcher, pass by pass over the five days.
    assert relay.dispatcher is not None
    await relay.dispatcher.pass_once(clock.now())
    window = rules.delivery_window(start)
    for half_days in range(11):
        target = window.start + timedelta(hours=12 * half_days)
        if target > clock.now():
            clock.advance(target - clock.now())
        before = len(sink.messages)
        done = await relay.dispatcher.pass_once(clock.now())
        await sink.wait_for(before + done.outcomes.get(SendStatus.SENT, 0))
        await wait_idle(relay)  # delivered before the clock moves on
    assert sorted(m.rcpt_tos[0] for m in sink.messages) == sorted(
        f"c{i}.{brand_id}@buyer.example" for i in range(FOLLOWERS)
    )

    async def delivered() -> bool:
        shown = await ok(api.get(f"/campaigns/{campaign_id}", headers=bearer(brand)))
        return bool(shown["report"]["delivered"] == FOLLOWERS)

    await wait_until_async(delivered)
    final = await ok(api.get(f"/campaigns/{campaign_id}", headers=bearer(brand)))
    assert final["status"] == "completed"
    assert [h["status"] for h in final["history"]] == [
        "draft", "in_review", "approved", "scheduled", "sending", "completed"
    ]  # fmt: skip
    assert final["report"]["planned"] == FOLLOWERS and final["report"]["pending"] == 0
    shown_cli = await asyncio.to_thread(
        relay_cli, "-c", str(cfg_file), "campaign", "show", str(campaign_id), "--json"
    )
    # The same, but the brand is not told which admin key moderated it.
    cli_view = shown_cli.json()
    assert [d["actor"] for d in cli_view["decisions"]] == ["api-key:1"]
    hidden = [{**d, "actor": "moderation"} for d in cli_view["decisions"]]
    assert instants(final) == instants({**cli_view, "decisions": hidden, "withdrawn_now": None})
    listed = await ok(api.get("/campaigns", headers=bearer(brand)))
    assert [c["campaign_id"] for c in listed] == [campaign_id] and listed[0]["history"] is None


async def test_scopes_brand_a_brand_b_seller_admin(
    relay: Relay, api: httpx.AsyncClient, cfg_file: Path
) -> None:
    admin = await asyncio.to_thread(key, cfg_file, "admin")
    a_id, _a_product, a_key = await brand_world(api, cfg_file, admin, "Brand A")
    b_id, b_product, b_key = await brand_world(api, cfg_file, admin, "Brand B")
    seller = await asyncio.to_thread(key, cfg_file, "seller:1")
    start = clock.now().date() + timedelta(days=5)
    b_campaign = await ok(
        api.post("/campaigns", json=draft(b_id, b_product, start), headers=bearer(b_key)), 201
    )
    b_promo = await ok(
        api.post(
            f"/brands/{b_id}/promotions",
            json={
                "product_id": b_product,
                "kind": "amount_off",
                "discount": "5",
                "starts_at": "2030-01-01T00:00:00Z",
                "ends_at": "2030-02-01T00:00:00Z",
            },
            headers=bearer(b_key),
        ),
        201,
    )
    cid, pid = b_campaign["campaign_id"], b_promo["promotion_id"]

    # Brand A's key: B's ids are absent (404), exactly like ids that do not exist.
    h = bearer(a_key)
    for path in (
        f"/brands/{b_id}", f"/brands/{b_id}/followers", f"/brands/{b_id}/products",
        f"/brands/{b_id}/promotions", f"/brands/{b_id}/calendar", f"/campaigns/{cid}",
        "/brands/999", "/campaigns/999", f"/campaigns?brand_id={b_id}",
    ):  # fmt: skip
        problem(await api.get(path, headers=h), 404, "not-found")
    for path in (
        f"/campaigns/{cid}/submit",
        f"/campaigns/{cid}/cancel",
        f"/promotions/{pid}/cancel",
    ):
        problem(await api.post(path, headers=h), 404, "not-found")
    problem(
        await api.patch(f"/campaigns/{cid}", json={"subject": "x"}, headers=h), 404, "not-found"
    )
    problem(
        await api.post(f"/brands/{b_id}/followers", json={"email": "x@y.example"}, headers=h),
        404,
        "not-found",
    )
    problem(
        await api.post("/campaigns", json=draft(b_id, b_product, start), headers=h),
        404,
        "not-found",
    )
    # Its own brand, but B's product: the lifecycle's words.
    mixed = problem(
        await api.post("/campaigns", json=draft(a_id, b_product, start), headers=h), 422, "refused"
    )
    assert f"product {b_product} is not one of the brand's products" in mixed["detail"]
    assert [b["brand_id"] for b in await ok(api.get("/brands", headers=h))] == [a_id]
    assert await ok(api.get("/campaigns", headers=h)) == []

    # What only moderation or the marketplace does: 403 for a brand key.
    problem(await api.post("/brands", json={"name": "Mine"}, headers=h), 403, "forbidden")
    problem(
        await api.patch(f"/brands/{a_id}", json={"registered": False}, headers=h), 403, "forbidden"
    )
    problem(
        await api.post(f"/campaigns/{cid}/review", json={"decision": "approve"}, headers=h),
        403,
        "forbidden",
    )
    problem(await api.post(f"/promotions/{pid}/reject", headers=h), 403, "forbidden")
    event = {"name": "Tết", "starts_on": "2030-01-20", "ends_on": "2030-01-30"}
    problem(await api.post("/events", json=event, headers=h), 403, "forbidden")
    await ok(api.post("/events", json=event, headers=bearer(admin)), 201)
    assert [e["name"] for e in await ok(api.get("/events", headers=h))] == ["Tết"]

    # Followers: the admin reads their addresses, the brand does not.
    as_admin = await ok(api.get(f"/brands/{a_id}/followers", headers=bearer(admin)))
    as_brand = await ok(api.get(f"/brands/{a_id}/followers", headers=h))
    assert all(f["email"] for f in as_admin) and len(as_admin) == FOLLOWERS
    assert [f["email"] for f in as_brand] == [None] * FOLLOWERS
    gone = await api.delete(f"/brands/{a_id}/followers/c0.{a_id}@buyer.example", headers=h)
    assert gone.status_code == 200 and gone.json()["unsubscribed"] is True
    assert "@" not in (await api.get(f"/brands/{a_id}/followers", headers=h)).text
    assert (await ok(api.get(f"/brands/{a_id}", headers=h)))["followers"] == FOLLOWERS - 1
    unknown = problem(
        await api.delete(f"/brands/{a_id}/followers/nobody@buyer.example", headers=h),
        422,
        "refused",
    )
    assert unknown["detail"] == f"nobody@buyer.example does not follow brand {a_id}"

    # A seller key: 403 on the lists, 404 on ids.
    s = bearer(seller)
    for path in ("/brands", "/campaigns", "/events"):
        problem(await api.get(path, headers=s), 403, "forbidden")
    for path in (f"/brands/{a_id}", f"/campaigns/{cid}", f"/brands/{a_id}/calendar"):
        problem(await api.get(path, headers=s), 404, "not-found")

    # The admin sees both; B's own key cancels its campaign.
    assert len(await ok(api.get("/brands", headers=bearer(admin)))) == 2
    cancelled = await ok(api.post(f"/campaigns/{cid}/cancel", headers=bearer(b_key)))
    assert cancelled["status"] == "cancelled" and cancelled["withdrawn_now"] == 0
    twice = problem(
        await api.post(f"/campaigns/{cid}/cancel", headers=bearer(b_key)), 422, "refused"
    )
    assert twice["detail"] == f"campaign {cid} is cancelled already"


async def test_rules_refuse_in_the_cli_words(
    relay: Relay, api: httpx.AsyncClient, cfg_file: Path
) -> None:
    admin = await asyncio.to_thread(key, cfg_file, "admin")
    brand_id, product_id, brand = await brand_world(api, cfg_file, admin, "Lotus Tea")
    h = bearer(brand)
    start = clock.now().date() + timedelta(days=5)
    first = await ok(
        api.post("/campaigns", json=draft(brand_id, product_id, start), headers=h), 201
    )
    await ok(api.post(f"/campaigns/{first['campaign_id']}/submit", headers=h))
    reject = {"decision": "reject"}
    review = f"/campaigns/{first['campaign_id']}/review"
    no_reason = problem(await api.post(review, json=reject, headers=bearer(admin)), 422, "refused")
    assert no_reason["detail"] == "a rejection needs a reason (--reason): the brand is told it"
    await ok(api.post(review, json={**reject, "reason": "blurry photos"}, headers=bearer(admin)))
    final = problem(
        await api.patch(f"/campaigns/{first['campaign_id']}", json={"subject": "x"}, headers=h),
        422,
        "refused",
    )
    assert "was not approved and cannot be edited" in final["detail"]

    promo_needed = problem(
        await api.post(
            "/campaigns", json=draft(brand_id, product_id, start, kind="promotion"), headers=h
        ),
        422,
        "refused",
    )
    assert "a promotion campaign needs a promotion (--promotion)" in promo_needed["detail"]
    address = problem(
        await api.post(
            "/campaigns",
            json=draft(brand_id, product_id, start, content="write to me@brand.example"),
            headers=h,
        ),
        422,
        "refused",
    )
    assert "the content contains an email address" in address["detail"]
    bad_discount = problem(
        await api.post(
            f"/brands/{brand_id}/promotions",
            json={
                "product_id": product_id,
                "kind": "percent_off",
                "discount": "150",
                "starts_at": "2030-01-01T00:00:00Z",
                "ends_at": "2030-01-02T00:00:00Z",
            },
            headers=h,
        ),
        422,
        "refused",
    )
    assert bad_discount["detail"] == "a percent_off discount must be below 100"
    unregistered = await ok(
        api.patch(f"/brands/{brand_id}", json={"registered": False}, headers=bearer(admin))
    )
    assert unregistered["registered"] is False
    refused = problem(
        await api.post("/campaigns", json=draft(brand_id, product_id, start), headers=h),
        422,
        "refused",
    )
    assert refused["detail"] == (
        "brand 'Lotus Tea' is not registered in the brand registry: campaigns are for"
        " registered brands with a store page and followers"
    )
    dup = problem(
        await api.post("/brands", json={"name": "Lotus Tea"}, headers=bearer(admin)), 422, "refused"
    )
    assert dup["detail"] == "a brand named 'Lotus Tea' exists already"


BAD = [
    ("post", "/campaigns", {"brand_id": 1, "kind": "new_product"}, 422, "validation-error"),
    (
        "post",
        "/campaigns",
        {**draft(1, 1, date(2030, 1, 1)), "start_on": "2030-02-30"},
        422,
        "validation-error",
    ),
    (
        "post",
        "/campaigns",
        {**draft(1, 1, date(2030, 1, 1)), "brand_id": "1"},
        422,
        "validation-error",
    ),
    (
        "post",
        "/campaigns",
        {**draft(1, 1, date(2030, 1, 1)), "colour": "red"},
        422,
        "validation-error",
    ),
    (
        "post",
        "/campaigns",
        {**draft(1, 1, date(2030, 1, 1)), "kind": "spam"},
        422,
        "validation-error",
    ),
    ("post", "/campaigns/1/review", {"decision": "maybe"}, 422, "validation-error"),
    ("post", "/brands", {"name": "X", "registered": "yes"}, 422, "validation-error"),
    ("post", "/brands", {"name": ""}, 422, "validation-error"),
    (
        "post",
        "/events",
        {"name": "E", "starts_on": "2030-13-01", "ends_on": "2030-12-02"},
        422,
        "validation-error",
    ),
    (
        "post",
        "/brands/1/followers",
        {"email": "a@b.example", "since": "yesterday"},
        422,
        "validation-error",
    ),
    ("patch", "/campaigns/1", {"extra_product_ids": ["2"]}, 422, "validation-error"),
    ("get", "/brands/1/calendar?month=2030-13", None, 422, "validation-error"),
    ("get", "/brands/1/calendar?month=2030-1", None, 422, "validation-error"),
    ("get", "/brands/1/calendar?from=2030-01-10&to=2030-01-01", None, 422, "validation-error"),
    ("get", "/brands/1/calendar?from=2030-01-01&to=2032-01-01", None, 422, "validation-error"),
    ("get", "/brands/1/calendar?from=tomorrow", None, 422, "validation-error"),
    ("get", "/brands/1/calendar?month=2030-01&from=2030-01-01", None, 422, "validation-error"),
    ("get", "/campaigns?status=lost", None, 422, "validation-error"),
    ("get", "/brands/1/promotions?eligible_for=2030-01-01", None, 422, "validation-error"),
    ("get", "/brands/x", None, 422, "validation-error"),
]


async def test_bad_input_is_refused_with_its_problem(
    relay: Relay, api: httpx.AsyncClient, cfg_file: Path
) -> None:
    admin = await asyncio.to_thread(key, cfg_file, "admin")
    await brand_world(api, cfg_file, admin, "Brand One")
    for method, path, body, status, kind in BAD:
        sent = await api.request(method, path, json=body, headers=bearer(admin))
        found = problem(sent, status, kind)
        assert found["detail"], (method, path)
    broken = await api.post(
        "/campaigns",
        content=b"{not json",
        headers={**bearer(admin), "Content-Type": "application/json"},
    )
    problem(broken, 400, "malformed-request")


async def test_an_edit_changes_only_what_it_sends(
    relay: Relay, api: httpx.AsyncClient, cfg_file: Path
) -> None:
    admin = await asyncio.to_thread(key, cfg_file, "admin")
    brand_id, product_id, brand = await brand_world(api, cfg_file, admin, "Saigon Silk")
    h = bearer(brand)
    promo = {
        "product_id": product_id,
        "kind": "amount_off",
        "discount": "50000",
        "starts_at": str(clock.now().date()),
        "ends_at": str(clock.now().date() + timedelta(days=30)),
    }
    problem(
        await api.post(
            f"/brands/{brand_id}/promotions", json={**promo, "approved": True}, headers=h
        ),
        403,
        "forbidden",
    )
    made = await ok(
        api.post(
            f"/brands/{brand_id}/promotions",
            json={**promo, "approved": True},
            headers=bearer(admin),
        ),
        201,
    )
    assert made["status"] == "approved" and made["discount"] == "50000"
    start = clock.now().date() + timedelta(days=6)
    body = draft(brand_id, product_id, start, promotion_id=made["promotion_id"])
    created = await ok(api.post("/campaigns", json=body, headers=h), 201)
    path = f"/campaigns/{created['campaign_id']}"
    kept = await ok(api.patch(path, json={"content": "Silk, woven by hand."}, headers=h))
    assert kept["promotion_id"] == made["promotion_id"] and kept["subject"] == "New this week"
    assert kept["content"] == "Silk, woven by hand."
    cleared = await ok(api.patch(path, json={"promotion_id": None}, headers=h))
    assert cleared["promotion_id"] is None and cleared["content"] == "Silk, woven by hand."
    await ok(api.post(f"{path}/submit", headers=h))
    back = await ok(api.patch(path, json={"subject": "Silk week"}, headers=h))
    assert back["status"] == "draft"  # a campaign in review goes back to draft
