"""The decisions' log outside the console: every quarantine release or
rejection, campaign review and promotion approval or rejection made over the
HTTP API or with the ``relay`` command is recorded once, with who made it
(``api-key:ID``, ``cli``), in the same transaction; a refused decision records
nothing.  Real HTTP against a running relay and the real command, on SQLite
and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlmodel import Session, col, select

from relay.app import Relay
from relay.core import clock
from relay.core.config import RelayConfig
from relay.storage.models import Decision
from tests.helpers import Parties, Sink, cli, relay_cli, seller_writes, wait_idle
from tests.test_api import api, bearer, cfg_file, problem
from tests.test_api_archive import BULK, with_rules
from tests.test_api_campaigns import brand_world, config, draft, ok

__all__ = ["api", "cfg_file", "config"]  # fixtures, used by name


def made_key(config_path: Path, scope: str) -> tuple[int, str]:
    """``relay api-key create``: the key's id (as the log names it) and secret."""
    data = relay_cli("-c", str(config_path), "api-key", "create", "--scope", scope, "--json").json()
    return int(data["id"]), str(data["key"])


def logged(relay: Relay) -> list[tuple[str, str, str, str]]:
    def run(s: Session) -> list[tuple[str, str, str, str]]:
        rows = s.exec(select(Decision).order_by(col(Decision.id))).all()
        return [(d.actor, d.action, d.subject, d.detail) for d in rows]

    return relay.db.call(run)


async def test_quarantine_decisions_name_who_made_them(
    relay: Relay,
    config: RelayConfig,
    sink: Sink,
    parties: Parties,
    api: httpx.AsyncClient,
    cfg_file: Path,
) -> None:
    with_rules(relay, config)
    key_id, admin = await asyncio.to_thread(made_key, cfg_file, "admin")
    _seller_id, seller = await asyncio.to_thread(made_key, cfg_file, f"seller:{parties.seller_id}")
    for n in range(4):
        await seller_writes(relay, parties, subject=f"Held {n}", headers=BULK)
    await wait_idle(relay)
    held = (await api.get("/quarantine", headers=bearer(admin))).json()["items"]
    a, b, c, d = sorted(m["id"] for m in held)

    await ok(api.post(f"/quarantine/{a}/release", headers=bearer(admin)))
    await ok(api.post(f"/quarantine/{b}/reject", headers=bearer(admin)))
    await cli(cfg_file, "quarantine", "release", str(c))
    await cli(cfg_file, "quarantine", "reject", str(d))
    # Refused decisions record nothing: not held any more, or not an admin's key.
    problem(await api.post(f"/quarantine/{a}/reject", headers=bearer(admin)), 409, "conflict")
    problem(await api.post(f"/quarantine/{a}/reject", headers=bearer(seller)), 403, "forbidden")
    again = await asyncio.to_thread(relay_cli, "-c", str(cfg_file), "quarantine", "release", str(c))
    assert again.code == 1

    api_key = f"api-key:{key_id}"
    assert logged(relay) == [
        (api_key, "quarantine.release", f"message {a}", ""),
        (api_key, "quarantine.reject", f"message {b}", ""),
        ("cli", "quarantine.release", f"message {c}", ""),
        ("cli", "quarantine.reject", f"message {d}", ""),
    ]

    # Shown with the message: ``relay archive show`` and an admin key's GET.
    shown = await cli(cfg_file, "archive", "show", str(a))
    assert [(x["actor"], x["action"]) for x in shown["decisions"]] == [
        (api_key, "quarantine.release")
    ]
    text = await asyncio.to_thread(relay_cli, "-c", str(cfg_file), "archive", "show", str(d))
    assert "decision: " in text.out and "quarantine.reject by cli" in text.out
    detail = await ok(api.get(f"/archive/{c}", headers=bearer(admin)))
    assert [(x["actor"], x["action"]) for x in detail["decisions"]] == [
        ("cli", "quarantine.release")
    ]
    # A seller key sees its own message, not who moderated it.
    own = await ok(api.get(f"/archive/{a}", headers=bearer(seller)))
    assert own["decisions"] is None


async def test_campaign_and_promotion_decisions_name_who_made_them(
    relay: Relay, api: httpx.AsyncClient, cfg_file: Path
) -> None:
    key_id, admin = await asyncio.to_thread(made_key, cfg_file, "admin")
    api_key = f"api-key:{key_id}"
    start = clock.now().date() + timedelta(days=4)

    # Four brands, each with a campaign in review and a pending promotion.
    campaigns: list[int] = []
    promotions: list[int] = []
    brand_keys: list[str] = []
    for n in range(4):
        brand_id, product_id, brand = await brand_world(api, cfg_file, admin, f"Brand {n}")
        brand_keys.append(brand)
        made = await ok(
            api.post("/campaigns", json=draft(brand_id, product_id, start), headers=bearer(brand)),
            201,
        )
        await ok(api.post(f"/campaigns/{made['campaign_id']}/submit", headers=bearer(brand)))
        campaigns.append(made["campaign_id"])
        promo = {
            "product_id": product_id,
            "kind": "percent_off",
            "discount": "10",
            "starts_at": f"{start}T00:00:00Z",
            "ends_at": f"{start + timedelta(days=20)}T00:00:00Z",
        }
        p = await ok(
            api.post(f"/brands/{brand_id}/promotions", json=promo, headers=bearer(brand)), 201
        )
        promotions.append(p["promotion_id"])
    c1, c2, c3, c4 = campaigns
    p1, p2, p3, p4 = promotions

    h = bearer(admin)
    await ok(api.post(f"/campaigns/{c1}/review", json={"decision": "approve"}, headers=h))
    reject = {"decision": "reject", "reason": "blurry photos"}
    await ok(api.post(f"/campaigns/{c2}/review", json=reject, headers=h))
    await cli(cfg_file, "campaign", "review", str(c3), "--approve")
    await cli(cfg_file, "campaign", "review", str(c4), "--reject", "--reason", "too loud")
    await ok(api.post(f"/promotions/{p1}/approve", headers=h))
    await ok(api.post(f"/promotions/{p2}/reject", headers=h))
    await cli(cfg_file, "promotion", "approve", str(p3))
    await cli(cfg_file, "promotion", "reject", str(p4))
    # Not decisions, or refused ones: nothing more in the log.
    await ok(api.post(f"/promotions/{p1}/cancel", headers=bearer(brand_keys[0])))
    second = await api.post(f"/campaigns/{c1}/review", json={"decision": "reject"}, headers=h)
    problem(second, 422, "refused")
    forbidden = await api.post(f"/promotions/{p3}/reject", headers=bearer(brand_keys[2]))
    problem(forbidden, 403, "forbidden")
    refused = await asyncio.to_thread(
        relay_cli, "-c", str(cfg_file), "campaign", "review", str(c4), "--approve"
    )
    assert refused.code == 1

    assert logged(relay) == [
        (api_key, "campaign.approve", f"campaign {c1}", ""),
        (api_key, "campaign.reject", f"campaign {c2}", "blurry photos"),
        ("cli", "campaign.approve", f"campaign {c3}", ""),
        ("cli", "campaign.reject", f"campaign {c4}", "too loud"),
        (api_key, "promotion.approve", f"promotion {p1}", ""),
        (api_key, "promotion.reject", f"promotion {p2}", ""),
        ("cli", "promotion.approve", f"promotion {p3}", ""),
        ("cli", "promotion.reject", f"promotion {p4}", ""),
    ]

    # A campaign's decisions: who for the admin and the command line; "moderation"
    # for the brand.
    def who(campaign: dict[str, Any]) -> list[tuple[str, str, str]]:
        return [(d["actor"], d["action"], d["detail"]) for d in campaign["decisions"]]

    as_admin = await ok(api.get(f"/campaigns/{c2}", headers=h))
    assert who(as_admin) == [(api_key, "campaign.reject", "blurry photos")]
    as_brand = await ok(api.get(f"/campaigns/{c2}", headers=bearer(brand_keys[1])))
    assert who(as_brand) == [("moderation", "campaign.reject", "blurry photos")]
    assert as_brand["decisions"][0]["at"] == as_admin["decisions"][0]["at"]
    shown = await cli(cfg_file, "campaign", "show", str(c4))
    assert who(shown) == [("cli", "campaign.reject", "too loud")]
    text = await asyncio.to_thread(relay_cli, "-c", str(cfg_file), "campaign", "show", str(c3))
    assert "decision: " in text.out and "campaign.approve by cli" in text.out
