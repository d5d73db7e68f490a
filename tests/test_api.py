"""The HTTP API over real HTTP (httpx) against a running relay, on SQLite and PostgreSQL.

The marketplace's side: an order created over the API whose tokens then carry
real SMTP mail; an opt-out over the API that makes the next seller message
bounce back; what each key's scope may see; a table of malformed and hostile
requests, each with its exact status and problem type.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi.routing import APIRoute
from openapi_spec_validator import validate
from sqlmodel import select

from relay.api.app import PREFIX, ROUTERS
from relay.app import Relay
from relay.core.config import RelayConfig
from relay.storage.models import Order
from tests.helpers import Sink, build, config_file, relay_cli, send

PROBLEM = "application/problem+json"
MARIA = "maria@buyer.example"
SHOP = "shop@seller.example"


def key(config: Path, scope: str) -> str:
    """A key made with ``relay api-key create``, as an operator makes one."""
    result = relay_cli("-c", str(config), "api-key", "create", "--scope", scope, "--json")
    data = result.json()
    assert data["scope"] == scope and data["key"].startswith("rk_")
    return str(data["key"])


@pytest.fixture
def cfg_file(config: RelayConfig, tmp_path: Path) -> Path:
    return config_file(config, tmp_path / "relay.json")


@pytest_asyncio.fixture
async def api(relay: Relay) -> AsyncIterator[httpx.AsyncClient]:
    assert relay.api is not None
    async with httpx.AsyncClient(base_url=f"{relay.api.base_url}/api/v1", timeout=15) as client:
        yield client


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def problem(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    """The problem a refused request got: its status, media type and type."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body: dict[str, Any] = response.json()
    assert body["type"] == f"/api/v1/problems/{kind}", body
    assert body["status"] == status and body["title"] and isinstance(body["detail"], str)
    assert "Traceback" not in response.text
    return body


async def seller_and_order(
    api: httpx.AsyncClient,
    admin: str,
    *,
    order_id: str = "ORD-1",
    buyer: str = MARIA,
    shop: str = SHOP,
) -> tuple[int, dict[str, Any]]:
    made = await api.post(
        "/sellers", json={"name": "Hà Nội Crafts", "emails": [shop]}, headers=bearer(admin)
    )
    assert made.status_code == 201, made.text
    seller_id = made.json()["seller_id"]
    order = {
        "order_id": order_id,
        "buyer_email": buyer,
        "buyer_name": "Maria",
        "seller_id": seller_id,
    }
    created = await api.post("/orders", json=order, headers=bearer(admin))
    assert created.status_code == 201, created.text
    return seller_id, created.json()


async def test_an_order_made_over_the_api_carries_real_mail(
    relay: Relay, sink: Sink, api: httpx.AsyncClient, cfg_file: Path
) -> None:
    admin = await asyncio.to_thread(key, cfg_file, "admin")
    seller_id, order = await seller_and_order(api, admin)
    assert set(order) == {"order_id", "conversation_id", "buyer_token", "seller_token"}
    again = await api.post(
        "/orders",
        json={
            "order_id": "ORD-1",
            "buyer_email": MARIA,
            "buyer_name": "Maria",
            "seller_id": seller_id,
        },
        headers=bearer(admin),
    )
    assert again.status_code == 200 and again.json() == order  # idempotent: same tokens
    other = await api.post(
        "/orders",
        json={"order_id": "ORD-1", "buyer_email": "jose@buyer.example", "seller_id": seller_id},
        headers=bearer(admin),
    )
    assert "ORD-1 already exists" in problem(other, 409, "conflict")["detail"]

    msg = build(frm=f"Maria <{MARIA}>", to=order["seller_token"], body=f"Hello, {MARIA} here")
    await send(relay, msg, sender=MARIA, recipients=[order["seller_token"]])
    (got,) = await sink.wait_for(1)
    assert got.rcpt_tos == [SHOP]
    assert order["buyer_token"] in got.message["From"]
    assert MARIA.encode() not in got.data.lower()

    conv = await api.get(f"/conversations/{order['conversation_id']}", headers=bearer(admin))
    assert conv.status_code == 200
    assert conv.json()["buyer_initiated"] is True and conv.json()["seller_id"] == seller_id
    assert MARIA not in conv.text


async def test_an_opt_out_over_the_api_bounces_the_next_seller_message(
    relay: Relay, sink: Sink, api: httpx.AsyncClient, cfg_file: Path
) -> None:
    admin = await asyncio.to_thread(key, cfg_file, "admin")
    _seller, order = await seller_and_order(api, admin)
    out = await api.post("/buyers/opt-out", json={"email": MARIA}, headers=bearer(admin))
    assert out.status_code == 200 and out.json() == {"email": MARIA, "opted_out": True}
    msg = build(frm=f"Shop <{SHOP}>", to=order["buyer_token"], subject="New arrivals!")
    await send(relay, msg, sender=SHOP, recipients=[order["buyer_token"]])
    (notice,) = await sink.wait_for(1)
    assert notice.rcpt_tos == [SHOP] and notice.mail_from == ""
    assert "opted out of unsolicited messages" in " ".join(notice.message.get_content().split())

    back = await api.post("/buyers/opt-in", json={"email": MARIA}, headers=bearer(admin))
    assert back.json() == {"email": MARIA, "opted_out": False}
    await send(relay, msg, sender=SHOP, recipients=[order["buyer_token"]])
    await sink.wait_for(2)
    assert sink.messages[1].rcpt_tos == [MARIA]


async def test_each_scope_sees_only_its_own(
    relay: Relay, api: httpx.AsyncClient, cfg_file: Path
) -> None:
    admin = await asyncio.to_thread(key, cfg_file, "admin")
    mine, order = await seller_and_order(api, admin)
    theirs, their_order = await seller_and_order(
        api, admin, order_id="ORD-2", buyer="jose@buyer.example", shop="other@seller.example"
    )
    seller = await asyncio.to_thread(key, cfg_file, f"seller:{mine}")
    brand = await asyncio.to_thread(key, cfg_file, "brand:1")

    own = await api.get(f"/sellers/{mine}", headers=bearer(seller))
    assert own.status_code == 200 and own.json()["emails"] == [SHOP]
    conv = await api.get(f"/conversations/{order['conversation_id']}", headers=bearer(seller))
    assert conv.status_code == 200 and MARIA not in conv.text
    for path in (
        f"/sellers/{theirs}",
        f"/conversations/{their_order['conversation_id']}",
        "/sellers/999",
        "/conversations/999",
    ):
        for who in (seller, brand):
            assert problem(await api.get(path, headers=bearer(who)), 404, "not-found")
    made = await api.post(
        "/sellers", json={"name": "X", "emails": ["x@x.example"]}, headers=bearer(seller)
    )
    problem(made, 403, "forbidden")
    problem(
        await api.post("/buyers/opt-out", json={"email": MARIA}, headers=bearer(brand)),
        403,
        "forbidden",
    )
    assert (await api.get(f"/sellers/{mine}", headers=bearer(admin))).status_code == 200

    problem(await api.get(f"/sellers/{mine}"), 401, "unauthorized")
    problem(await api.get(f"/sellers/{mine}", headers=bearer("rk_nope")), 401, "unauthorized")
    problem(
        await api.get(f"/sellers/{mine}", headers={"Authorization": seller}), 401, "unauthorized"
    )
    listed = await asyncio.to_thread(relay_cli, "-c", str(cfg_file), "api-key", "list", "--json")
    seller_key = next(k for k in listed.json() if k["scope"] == f"seller:{mine}")
    assert all("key" not in k for k in listed.json())
    revoked = await asyncio.to_thread(
        relay_cli, "-c", str(cfg_file), "api-key", "revoke", str(seller_key["id"]), "--json"
    )
    assert revoked.json() == {"id": seller_key["id"], "revoked": True}
    problem(await api.get(f"/sellers/{mine}", headers=bearer(seller)), 401, "unauthorized")


async def test_a_key_revoked_right_after_creating_an_order_creates_no_more(
    relay: Relay, api: httpx.AsyncClient, cfg_file: Path
) -> None:
    admin = await asyncio.to_thread(key, cfg_file, "admin")
    seller_id, _order = await seller_and_order(api, admin)  # its scope is cached now
    listed = await asyncio.to_thread(relay_cli, "-c", str(cfg_file), "api-key", "list", "--json")
    (admin_id,) = [k["id"] for k in listed.json() if k["scope"] == "admin"]
    await asyncio.to_thread(relay_cli, "-c", str(cfg_file), "api-key", "revoke", str(admin_id))
    for order_id in ("ORD-1", "ORD-2"):  # the same order again, and a new one
        again = {"order_id": order_id, "buyer_email": MARIA, "seller_id": seller_id}
        problem(await api.post("/orders", json=again, headers=bearer(admin)), 401, "unauthorized")
    problem(await api.get(f"/sellers/{seller_id}", headers=bearer(admin)), 401, "unauthorized")
    assert relay.db.call(lambda s: s.exec(select(Order)).all())[0].id == "ORD-1"
    assert len(relay.db.call(lambda s: s.exec(select(Order)).all())) == 1


async def test_a_seller_key_updates_its_own_seller(
    relay: Relay, api: httpx.AsyncClient, cfg_file: Path
) -> None:
    admin = await asyncio.to_thread(key, cfg_file, "admin")
    mine, _order = await seller_and_order(api, admin)
    seller = await asyncio.to_thread(key, cfg_file, f"seller:{mine}")
    changed = await api.patch(
        f"/sellers/{mine}",
        json={"messaging": False, "add_emails": ["team@seller.example"]},
        headers=bearer(seller),
    )
    assert changed.status_code == 200, changed.text
    assert changed.json() == {
        "seller_id": mine,
        "name": "Hà Nội Crafts",
        "messaging": False,
        "emails": [SHOP, "team@seller.example"],
    }
    gone = await api.patch(
        f"/sellers/{mine}", json={"remove_emails": ["nobody@seller.example"]}, headers=bearer(admin)
    )
    assert problem(gone, 422, "refused")["detail"] == (
        f"nobody@seller.example is not an address of seller {mine}"
    )


BAD = [
    # (method, path, body as sent, status, problem type, a field the problem must name)
    ("POST", "/sellers", b'{"name": "A", "emails": [', 400, "malformed-request", None),
    ("POST", "/sellers", b"not json at all", 400, "malformed-request", None),
    (
        "POST",
        "/sellers",
        b'{"name": "A", "emails": "a@b.example"}',
        422,
        "validation-error",
        "emails",
    ),
    ("POST", "/sellers", b'{"name": "A", "emails": []}', 422, "validation-error", "emails"),
    (
        "POST",
        "/sellers",
        b'{"name": 5, "emails": ["a@b.example"]}',
        422,
        "validation-error",
        "name",
    ),
    ("POST", "/sellers", b'{"emails": ["a@b.example"]}', 422, "validation-error", "name"),
    (
        "POST",
        "/sellers",
        b'{"name": "A", "emails": ["a@b.example"], "admin": true}',
        422,
        "validation-error",
        "admin",
    ),
    ("POST", "/sellers", b"[1, 2]", 422, "validation-error", None),
    (
        "POST",
        "/sellers",
        json.dumps({"name": "Shop\u202e\u0007", "emails": ["a@b.example"]}).encode(),
        422,
        "refused",
        None,
    ),
    (
        "POST",
        "/sellers",
        json.dumps({"name": "Shop\r\nBcc: x@evil.example", "emails": ["a@b.example"]}).encode(),
        422,
        "refused",
        None,
    ),
    ("POST", "/sellers", b'{"name": "A", "emails": ["not an address"]}', 422, "refused", None),
    (
        "POST",
        "/orders",
        b'{"order_id": "O", "buyer_email": "a@b.example", "seller_id": "1"}',
        422,
        "validation-error",
        "seller_id",
    ),
    (
        "POST",
        "/orders",
        b'{"order_id": "O", "buyer_email": "a@b.example", "seller_id": 99}',
        404,
        "not-found",
        None,
    ),
    ("POST", "/buyers/opt-out", b'{"email": "nobody@buyer.example"}', 404, "not-found", None),
    ("GET", "/sellers/abc", None, 422, "validation-error", "path.seller_id"),
    ("GET", "/no/such/route", None, 404, "not-found", None),
    ("DELETE", "/sellers/1", None, 405, "method-not-allowed", None),
    (
        "POST",
        "/sellers",
        b'{"name": "' + b"x" * 2_000_000 + b'", "emails": []}',
        413,
        "payload-too-large",
        None,
    ),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "kind", "field"), BAD)
async def test_bad_input_gets_a_clear_problem(
    relay: Relay,
    api: httpx.AsyncClient,
    cfg_file: Path,
    method: str,
    path: str,
    body: bytes | None,
    status: int,
    kind: str,
    field: str | None,
) -> None:
    admin = await asyncio.to_thread(key, cfg_file, "admin")
    headers = {**bearer(admin), "Content-Type": "application/json"}
    response = await api.request(method, path, content=body, headers=headers)
    found = problem(response, status, kind)
    if field is not None:
        assert field in {e["field"] for e in found["errors"]}, found


async def test_a_chunked_body_over_the_limit_is_cut_off(
    relay: Relay, api: httpx.AsyncClient, cfg_file: Path
) -> None:
    admin = await asyncio.to_thread(key, cfg_file, "admin")

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'", "emails": ["a@b.example"]}'

    response = await api.post(
        "/sellers", content=chunks(), headers={**bearer(admin), "Content-Type": "application/json"}
    )
    problem(response, 413, "payload-too-large")


async def test_the_openapi_document_lists_every_route(api: httpx.AsyncClient) -> None:
    doc = (await api.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.") and doc["info"]["version"] == "1"
    routes = {
        (f"{PREFIX}{route.path}", method.lower())
        for router in ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in route.methods
    }
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert len(routes) >= 9 and routes == documented
    for path in ("/sellers", "/orders", "/buyers/opt-out", "/buyers/opt-in", "/webhooks"):
        assert "post" in doc["paths"][f"{PREFIX}{path}"]
    validate(doc)  # a valid OpenAPI 3 document, not only a JSON one: raises if not


async def test_health_is_for_admins(relay: Relay, api: httpx.AsyncClient, cfg_file: Path) -> None:
    admin = await asyncio.to_thread(key, cfg_file, "admin")
    seller = await asyncio.to_thread(key, cfg_file, "seller:1")
    health = await api.get("/health", headers=bearer(admin))
    assert health.status_code == 200 and health.json()["ok"] is True
    problem(await api.get("/health", headers=bearer(seller)), 403, "forbidden")


async def test_a_key_past_its_rate_gets_429_with_retry_after(
    config: RelayConfig, tmp_path: Path
) -> None:
    limited = config.model_copy(
        update={"api": config.api.model_copy(update={"requests_per_minute": 3})}
    )
    relay = Relay(limited)
    await relay.start()
    try:
        admin = await asyncio.to_thread(key, config_file(limited, tmp_path / "r.json"), "admin")
        other = await asyncio.to_thread(key, config_file(limited, tmp_path / "r.json"), "admin")
        assert relay.api is not None
        async with httpx.AsyncClient(base_url=f"{relay.api.base_url}/api/v1") as api:
            for _ in range(3):
                assert (await api.get("/sellers/1", headers=bearer(admin))).status_code == 404
            refused = await api.get("/sellers/1", headers=bearer(admin))
            problem(refused, 429, "rate-limited")
            assert 1 <= int(refused.headers["Retry-After"]) <= 60
            # the limit is the key's: another key goes on
            assert (await api.get("/sellers/1", headers=bearer(other))).status_code == 404
    finally:
        await relay.stop()


@pytest.mark.sqlite_only("process start-up, the same on both databases")
async def test_relay_api_serves_alone_and_serve_workers_serves_it_once(
    config: RelayConfig, tmp_path: Path
) -> None:
    from tests.helpers import RELAY, free_port, serving, wait_until_async

    api_port, smtp_port = free_port(), free_port()
    alone = config.model_copy(
        update={
            "api": config.api.model_copy(update={"listen": f"127.0.0.1:{api_port}"}),
            "smtp": config.smtp.model_copy(update={"port": smtp_port}),
        }
    )
    path = config_file(alone, tmp_path / "relay.json")
    admin = await asyncio.to_thread(key, path, "admin")
    url = f"http://127.0.0.1:{api_port}/api/v1"
    proc = await asyncio.create_subprocess_exec(
        RELAY, "api", "-c", str(path), stderr=asyncio.subprocess.PIPE
    )
    try:
        async with httpx.AsyncClient(base_url=url) as api:

            async def answers() -> bool:
                try:
                    health = await api.get("/health", headers=bearer(admin))
                except httpx.TransportError:
                    return False
                assert health.status_code == 200, health.text
                return True

            await wait_until_async(answers, timeout=20)
    finally:
        proc.terminate()
        _out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err
    async with (
        serving(path, smtp_port, "--workers", "2"),
        httpx.AsyncClient(base_url=url) as api,
    ):
        made = await api.post(
            "/sellers", json={"name": "Crafts", "emails": [SHOP]}, headers=bearer(admin)
        )
        assert made.status_code == 201, made.text


@pytest.mark.sqlite_only("a listener's address family, the same on both databases")
async def test_the_api_listens_on_ipv6_loopback(relay: Relay, config: RelayConfig) -> None:
    from relay.api.server import ApiServer
    from relay.core.config import parse_listen

    server = ApiServer(config, relay.db, *parse_listen("[::1]:0"))
    server.start()
    try:
        assert server.base_url.startswith("http://[::1]:")
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            doc = await client.get("/api/v1/openapi.json")
        assert doc.status_code == 200
    finally:
        await asyncio.to_thread(server.stop)
