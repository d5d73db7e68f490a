"""A brand campaign from the command line, as the README walks through it: a real
``relay serve`` delivering to a real SMTP sink, every step a ``relay`` command,
the five days of delivery rehearsed with ``relay campaign dispatch --at``."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import urllib.request
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.helpers import (
    cli,
    free_port,
    relay_cli,
    serving,
    start_sink,
    wait_until_async,
    write_config,
)

FOLLOWERS = 8


async def run(config: Path, *args: str) -> tuple[int, str, str]:
    """``relay -c config ARGS``: (status, stdout, stderr)."""
    result = await asyncio.to_thread(relay_cli, "-c", str(config), *args)
    return result.code, result.raw.decode(), result.err


def campaign_config(tmp_path: Path, database_url: str) -> tuple[Path, int, int, int]:
    """``relay serve``'s config with a fixed unsubscribe port: the links that
    ``relay campaign dispatch`` writes must lead to the serving relay."""
    smtp_port, sink_port, http_port = free_port(), free_port(), free_port()
    config = write_config(tmp_path, smtp_port=smtp_port, sink_port=sink_port, url=database_url)
    text = config.read_text(encoding="utf-8").replace(
        'unsubscribe: {listen: "127.0.0.1:0"}', f'unsubscribe: {{listen: "127.0.0.1:{http_port}"}}'
    )
    config.write_text(text, encoding="utf-8")
    return config, smtp_port, sink_port, http_port


async def test_a_campaign_from_the_cli_over_five_days(tmp_path: Path, database_url: str) -> None:
    config, smtp_port, sink_port, _http = campaign_config(tmp_path, database_url)
    sink = await start_sink(sink_port)
    today = datetime.now(UTC).date()
    start = today + timedelta(days=4)
    try:
        async with serving(config, smtp_port):
            brand = await cli(
                config, "brand", "add", "--name", "Hà Nội Crafts", "--registered", "--store-page"
            )
            assert brand["brand_id"] == 1
            for i in range(FOLLOWERS):
                await cli(
                    config, "follower", "add", "--brand", "1", "--email", f"c{i}@buyer.example",
                    "--name", f"Customer {i}",
                )  # fmt: skip
            await cli(
                config, "product", "add", "--brand", "1", "--sku", "HN-BOX", "--title",
                "Lacquer box", "--price", "250,000 VND",
            )  # fmt: skip
            await cli(config, "product", "add", "--brand", "1", "--sku", "HN-2", "--title", "Scarf")
            promo = await cli(
                config, "promotion", "add", "--product", "1", "--kind", "percent_off",
                "--discount", "20", "--start", str(today), "--end", str(today + timedelta(days=30)),
            )  # fmt: skip
            assert promo["status"] == "pending"
            eligible = await cli(
                config, "promotion", "list", "--product", "1", "--eligible-for", str(start)
            )
            assert eligible == []  # pending is not eligible
            await cli(config, "promotion", "approve", "1")
            eligible = await cli(
                config, "promotion", "list", "--product", "1", "--eligible-for", str(start)
            )
            assert [p["promotion_id"] for p in eligible] == [1]

            # Inside the 72-hour review lead: refused, with the earliest date.
            status, _out, err = await run(
                config, "campaign", "create", "--brand", "1", "--kind", "promotion",
                "--product", "1", "--promotion", "1", "--subject", "Sale", "--content", "Boxes",
                "--start", str(today + timedelta(days=2)),
            )  # fmt: skip
            assert status == 1
            assert "72 hours" in err and str(today + timedelta(days=4)) in err
            assert "Traceback" not in err

            created = await cli(
                config, "campaign", "create", "--brand", "1", "--kind", "promotion",
                "--product", "1", "--also", "2", "--promotion", "1",
                "--subject", "20% off lacquer boxes", "--content", "Hand made in Hà Nội.",
                "--start", str(start),
            )  # fmt: skip
            assert created["status"] == "draft"
            await cli(config, "campaign", "submit", "1")
            approved = await cli(config, "campaign", "review", "1", "--approve")
            assert approved["status"] == "approved"

            days = await cli(
                config, "campaign", "calendar", "--brand", "1", "--from", str(today),
                "--days", "14",
            )  # fmt: skip
            by_day = {date.fromisoformat(d["date"]): d for d in days}
            assert by_day[today]["colour"] == "unavailable"
            assert by_day[start]["colour"] == "conflict"
            assert by_day[start]["colliding_followers"] == FOLLOWERS
            assert by_day[start + timedelta(days=6)]["colour"] == "conflict"
            assert by_day[start + timedelta(days=7)]["colour"] == "free"

            # Five simulated days, one pass every 12 hours.
            per_pass = []
            for half_days in range(11):
                at = datetime.combine(start, datetime.min.time(), UTC) + timedelta(
                    hours=12 * half_days
                )
                done = await cli(config, "campaign", "dispatch", "--at", at.isoformat())
                per_pass.append(done["messages"].get("sent", 0))
                if half_days == 1:
                    # Sending: its promotion cannot be cancelled now.
                    status, _out, err = await run(config, "promotion", "cancel", "1")
                    assert status == 1 and "sending" in err, err
            assert sum(per_pass) == FOLLOWERS
            assert max(per_pass) < FOLLOWERS  # spread, not one burst
            assert sum(1 for n in per_pass if n) >= 3

            messages = await sink.wait_for(FOLLOWERS, timeout=20)
            assert sorted(r for m in messages for r in m.rcpt_tos) == sorted(
                f"c{i}@buyer.example" for i in range(FOLLOWERS)
            )
            shown: dict[str, Any] = {}

            async def all_delivered() -> bool:
                nonlocal shown
                shown = await cli(config, "campaign", "show", "1")
                return bool(shown["report"]["delivered"] == FOLLOWERS)

            await wait_until_async(all_delivered)
            assert shown["status"] == "completed"
            assert shown["report"]["planned"] == FOLLOWERS
            assert shown["report"]["sent"] == FOLLOWERS
            assert shown["report"]["delivered"] == FOLLOWERS
            assert [h["status"] for h in shown["history"]] == [
                "draft", "in_review", "approved", "scheduled", "sending", "completed",
            ]  # fmt: skip

            # One-click unsubscribe, from the link in a received message.
            first = email.message_from_bytes(messages[0].data, policy=email.policy.default)
            url = str(first["List-Unsubscribe"]).strip().strip("<>")
            assert first["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            request = urllib.request.Request(
                url,
                data=b"List-Unsubscribe=One-Click",
                method="POST",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
            unsubscribed = first["To"].addresses[0].addr_spec
            followers = await cli(config, "follower", "list", "--brand", "1")
            assert [f["email"] for f in followers if f["unsubscribed_at"]] == [unsubscribed]

            # A promotion cancelled before its campaign starts suspends it.
            await cli(
                config, "promotion", "add", "--product", "1", "--kind", "amount_off",
                "--discount", "50000", "--start", str(today), "--end",
                str(today + timedelta(days=40)), "--approved",
            )  # fmt: skip
            later = start + timedelta(days=7)
            await cli(
                config, "campaign", "create", "--brand", "1", "--kind", "promotion",
                "--product", "1", "--promotion", "2", "--subject", "More boxes",
                "--content", "Again.", "--start", str(later),
            )  # fmt: skip
            await cli(config, "campaign", "submit", "2")
            await cli(config, "campaign", "review", "2", "--approve")
            cancelled = await cli(config, "promotion", "cancel", "2")
            assert cancelled["suspended_campaigns"] == [2]
            done = await cli(
                config, "campaign", "dispatch", "--at", f"{later + timedelta(days=5)}T00:00:00"
            )
            assert done["messages"] == {}
            suspended = await cli(config, "campaign", "show", "2")
            assert suspended["status"] == "suspended"
            assert suspended["report"]["planned"] == 0

            # Moderation's rejection is final.
            await cli(
                config, "campaign", "create", "--brand", "1", "--kind", "spotlight",
                "--product", "2", "--subject", "Scarves", "--content", "New.",
                "--start", str(later),
            )  # fmt: skip
            await cli(config, "campaign", "submit", "3")
            status, _out, err = await run(config, "campaign", "review", "3", "--reject")
            assert status == 1 and "reason" in err
            await cli(config, "campaign", "review", "3", "--reject", "--reason", "blurry photos")
            status, _out, err = await run(config, "campaign", "edit", "3", "--subject", "x")
            assert status == 1 and "create a new campaign" in err

            # Bad arguments: usage errors, never a traceback.
            for args in (
                ("campaign", "calendar", "--brand", "1", "--from", "2026-13-01"),
                ("campaign", "create", "--brand", "1", "--product", "1"),
                ("promotion", "add", "--product", "1", "--kind", "bogus", "--discount", "1",
                 "--start", "2026-01-01", "--end", "2026-02-01"),
            ):  # fmt: skip
                status, _out, err = await run(config, *args)
                assert status == 2, (args, err)
                assert "Traceback" not in err
            status, _out, err = await run(config, "campaign", "show", "99")
            assert status == 1 and "no campaign with id 99" in err
    finally:
        sink.server.close()
        await sink.server.wait_closed()
    assert json.dumps(shown)  # the report is plain JSON
