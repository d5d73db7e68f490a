"""A brand's pages and the moderators' review queue, in a real Chromium.

A brand drafts a campaign on the start-date calendar (a grey date cannot be
picked, a red one tells its collision and how many followers it concerns, a
green one is picked), submits it; a moderator approves it, and rejects another
with a reason that the brand then reads.  The calendar in Vietnamese and
Tagalog; a brand that edits the URL toward another brand's campaign (404) or a
moderator's page (403); the report of a campaign the relay's dispatcher sent.
"""

from __future__ import annotations

import asyncio
import re
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from relay.app import Relay
from relay.campaigns import rules
from relay.campaigns.models import SendStatus
from relay.core import clock
from relay.storage import decisions
from tests.browser import PASSWORD, Browser, add_user, keep
from tests.helpers import Sink, wait_idle, wait_until_async
from tests.test_api import api, bearer, cfg_file, key
from tests.test_api_campaigns import FOLLOWERS, brand_world, config, draft, ok

__all__ = ["api", "cfg_file", "config"]  # fixtures, used by name

HOSTILE = '<img src=x onerror="alert(1)"><script>alert(2)</script>'


def base(relay: Relay) -> str:
    assert relay.api is not None
    return relay.api.base_url


async def http_sign_in(http: httpx.AsyncClient, username: str) -> None:
    page = await http.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token is not None
    data = {"csrf": token.group(1), "username": username, "password": PASSWORD}
    assert (await http.post("/login", data=data)).status_code == 303


async def approved_campaign(
    api: httpx.AsyncClient, admin: str, brand_key: str, brand_id: int, product: int, start: date
) -> int:
    """A campaign of the brand, approved by moderation (through the API)."""
    made = await ok(
        api.post("/campaigns", json=draft(brand_id, product, start), headers=bearer(brand_key)),
        201,
    )
    cid = int(made["campaign_id"])
    await ok(api.post(f"/campaigns/{cid}/submit", headers=bearer(brand_key)))
    decision = {"decision": "approve"}
    await ok(api.post(f"/campaigns/{cid}/review", json=decision, headers=bearer(admin)))
    return cid


def show_month(browser: Browser, day: date) -> None:
    """Move the calendar to ``day``'s month with its own previous/next buttons."""
    wanted = f"{day:%Y-%m}"
    for _ in range(24):
        shown = browser.find("input[name=shown]").get_attribute("value")
        if shown == wanted:
            return
        button = "#next-month" if str(shown) < wanted else "#previous-month"
        browser.submit(button)
    raise AssertionError(f"the calendar never showed {wanted}")


def pick(browser: Browser, day: date) -> None:
    browser.find(f"label[for=day-{day}]").click()
    assert browser.find(f"#day-{day}").is_selected()


async def test_a_brand_drafts_on_the_calendar_and_moderation_decides(
    relay: Relay, browser: Browser, api: httpx.AsyncClient, cfg_file: Path
) -> None:
    admin = await asyncio.to_thread(key, cfg_file, "admin")
    brand_id, product, brand_key = await brand_world(api, cfg_file, admin, "Hà Nội Crafts")
    extra = await ok(
        api.post(
            f"/brands/{brand_id}/products",
            json={"sku": "SKU-SILK", "title": "Silk scarf", "price": "400,000 VND"},
            headers=bearer(admin),
        ),
        201,
    )
    today = clock.now().date()
    earliest = rules.earliest_start(clock.now())
    other_start = earliest + timedelta(days=14)
    other = await approved_campaign(api, admin, brand_key, brand_id, product, other_start)
    red, green = other_start + timedelta(days=3), other_start + timedelta(days=7)
    await asyncio.to_thread(add_user, cfg_file, "hoa", f"brand:{brand_id}")
    await asyncio.to_thread(add_user, cfg_file, "mai", "moderator")
    browser.base = base(relay)

    browser.sign_in("hoa")
    assert browser.driver.current_url.endswith("/brand/campaigns")
    assert f"#{other} New this week" in browser.text() and "Approved" in browser.text()
    browser.shot("brand-campaigns")
    browser.submit("#new-campaign")
    Select(browser.find("#kind")).select_by_value("new_product")
    Select(browser.find("#main-product")).select_by_value(str(product))
    browser.find(f"input[name=extra_product_ids][value='{extra['product_id']}']").click()
    browser.find("#subject").send_keys("Lacquer for Tết")
    browser.find("#content").send_keys("Hand made in Hà Nội.\n" + HOSTILE)

    # Grey: today, too soon for the 72-hour review: a disabled control, and why.
    show_month(browser, today)
    assert browser.find(f"#day-{today}").get_attribute("disabled") is not None
    title = str(browser.find(f"label[for=day-{today}]").get_attribute("title"))
    assert "Cannot be chosen: too soon: the review takes 72 hours" in title
    browser.find(f"label[for=day-{today}]").click()
    assert not browser.find(f"#day-{today}").is_selected()
    assert "too soon: the review takes 72 hours" in browser.find("ul.grey-reasons").text
    # The form kept what was typed across the months.
    assert browser.find("#subject").get_attribute("value") == "Lacquer for Tết"

    # Red: allowed, with the collision and its followers, on hover and on focus.
    show_month(browser, red)
    cell = browser.find(f"#day-{red}")
    assert cell.get_attribute("disabled") is None
    said = f"Collides with campaign {other} under the 7-day rule: {FOLLOWERS} followers"
    assert said in str(browser.find(f"label[for=day-{red}]").get_attribute("title"))
    assert f"Collides · {FOLLOWERS}" in browser.find(f"label[for=day-{red}]").text
    why = browser.find(f"#why-{red}")
    assert not why.is_displayed()
    pick(browser, red)  # clicking a label focuses its control
    assert why.is_displayed() and said in why.text
    assert cell.get_attribute("aria-describedby") == f"why-{red}"
    warning = browser.find("#conflict-warning")
    assert "the later one is not sent to them" in warning.text
    browser.shot("brand-calendar-red")
    # Keyboard: the arrows move between the days (down: a week later, with console.js).
    cell.send_keys(Keys.ARROW_RIGHT)
    assert browser.find(f"#day-{red + timedelta(days=1)}").is_selected()
    browser.driver.switch_to.active_element.send_keys(Keys.ARROW_DOWN)
    week_later = red + timedelta(days=8)
    if f"{week_later:%Y-%m}" == f"{red:%Y-%m}":
        assert browser.find(f"#day-{week_later}").is_selected()

    # Green: free, picked.
    show_month(browser, green)
    assert "Free" in browser.find(f"label[for=day-{green}]").text
    pick(browser, green)
    browser.shot("brand-calendar-en")
    keep(browser.shot("brand-calendar-en"), "calendar")
    browser.submit("#save")
    browser.wait_for(".campaign-status")
    assert "The draft was saved" in browser.text()
    campaign_url = browser.driver.current_url.split("?")[0]
    mine = int(campaign_url.rsplit("/", 1)[1])
    assert "Draft" in browser.find(".campaign-status").text
    assert HOSTILE in browser.find("pre.preview").text  # the brand's text, as text
    assert "Silk scarf (SKU-SILK)" in browser.text()
    browser.submit("#submit-review")
    browser.wait_for(".campaign-status")
    assert "In review" in browser.find(".campaign-status").text
    assert "submitted for review" in browser.find("table.history").text

    # A second campaign, through the API, to be rejected.
    second = await ok(
        api.post(
            "/campaigns",
            json=draft(brand_id, product, green + timedelta(days=14), subject="Second <i>try</i>"),
            headers=bearer(brand_key),
        ),
        201,
    )
    rejected = second["campaign_id"]
    await ok(api.post(f"/campaigns/{rejected}/submit", headers=bearer(brand_key)))
    browser.sign_out()

    # The moderator's queue: both, as the brand wrote them (escaped), then decisions.
    browser.sign_in("mai")
    assert browser.driver.current_url.endswith("/review")
    assert browser.find(f"#campaign-{mine} pre.content").text.endswith(HOSTILE)
    assert browser.find(f"#campaign-{rejected} .subject").text == "Second <i>try</i>"
    assert not browser.alert_shown()
    keep(browser.shot("review-queue"), "review")
    browser.submit(f"#approve-{mine}")
    browser.wait_for("p.notice")
    assert "The campaign was approved." in browser.text()
    assert browser.all(f"#campaign-{mine}") == []
    # A rejection needs a reason: the browser asks for one first (nothing is sent).
    browser.find(f"#reject-{rejected}").click()
    assert browser.all(f"#campaign-{rejected}") != []
    assert "the brand sees your reason" not in browser.text()
    browser.find(f"#reason-{rejected}").send_keys("Prices must be shown <with> the currency.")
    browser.submit(f"#reject-{rejected}")
    browser.wait_for("p.notice")
    assert "the brand sees your reason" in browser.text()
    assert "No campaign is waiting for review." in browser.text()
    assert browser.console_errors() == []
    browser.sign_out()

    def logged(s: Any, campaign: int) -> list[tuple[str, str, str]]:
        return [(d.actor, d.action, d.detail) for d in decisions.about(s, f"campaign {campaign}")]

    assert await asyncio.to_thread(relay.db.call, logged, mine) == [
        ("console:mai", "campaign.approve", "")
    ]
    assert await asyncio.to_thread(relay.db.call, logged, rejected) == [
        ("console:mai", "campaign.reject", "Prices must be shown <with> the currency.")
    ]

    browser.sign_in("hoa")
    row = [r.text for r in browser.all("table.campaigns tbody tr") if f"#{mine} " in r.text]
    assert row and "Approved" in row[0]
    browser.go(f"/brand/campaigns/{mine}")
    assert "Approved" in browser.find(".campaign-status").text
    assert browser.all("#edit") == [] and browser.all("#submit-review") == []
    browser.go(f"/brand/campaigns/{rejected}")
    assert "Not approved" in browser.find(".campaign-status").text
    reason = browser.find("#rejection-reason").text
    assert reason == "Prices must be shown <with> the currency."
    assert browser.all("#edit") == []
    browser.shot("brand-campaign-rejected")
    for page, expect in (
        ("/brand/followers", "Customer 0"),
        ("/brand/products", "Silk scarf"),
        ("/brand/promotions", "No promotions yet."),
    ):
        browser.go(page)
        assert expect in browser.text()
        assert "@" not in browser.find("main").text  # no follower address, ever
    assert browser.console_errors() == []


async def _draft_with_event(
    api: httpx.AsyncClient, cfg_file: Path, admin: str
) -> tuple[int, int, date, date, int]:
    """A brand with an approved campaign, and a draft themed on a shopping event
    near it: (brand, draft, event's first day, last day, the approved campaign)."""
    brand_id, product, brand_key = await brand_world(api, cfg_file, admin, "Sài Gòn Tea")
    earliest = rules.earliest_start(clock.now())
    first, last = earliest + timedelta(days=10), earliest + timedelta(days=20)
    event = await ok(
        api.post(
            "/events",
            json={"name": "Tết sale", "starts_on": str(first), "ends_on": str(last)},
            headers=bearer(admin),
        ),
        201,
    )
    other = await approved_campaign(
        api, admin, brand_key, brand_id, product, earliest + timedelta(days=14)
    )
    body = draft(brand_id, product, earliest + timedelta(days=15), event_id=event["event_id"])
    made = await ok(api.post("/campaigns", json=body, headers=bearer(brand_key)), 201)
    return brand_id, made["campaign_id"], first, last, other


TRANSLATED: dict[str, dict[str, str]] = {
    "vi": {
        "legend": "Xanh lá: còn trống",
        "event": "ngoài sự kiện mua sắm “Tết sale”",
        "collides": "Trùng với chiến dịch %(other)s theo quy tắc 7 ngày: 6 người theo dõi",
        "previous": "Tháng trước",
    },
    "tl": {
        "legend": "Berde: bakante",
        "event": "labas sa shopping event na “Tết sale”",
        "collides": (
            "Sumasalungat sa kampanya %(other)s ayon sa 7-araw na patakaran: 6 na tagasunod"
        ),
        "previous": "Nakaraang buwan",
    },
}


async def test_the_calendar_in_vietnamese_and_tagalog(
    relay: Relay, browser: Browser, api: httpx.AsyncClient, cfg_file: Path
) -> None:
    admin = await asyncio.to_thread(key, cfg_file, "admin")
    brand_id, campaign, first, last, other = await _draft_with_event(api, cfg_file, admin)
    await asyncio.to_thread(add_user, cfg_file, "thu", f"brand:{brand_id}")
    browser.base = base(relay)
    browser.sign_in("thu")
    browser.go(f"/brand/campaigns/{campaign}")
    warning = browser.find("#collision-warning").text
    assert f"collides with campaign {other} under the 7-day rule: {FOLLOWERS} followers" in warning
    browser.submit("#edit")
    browser.wait_for(".calendar")
    outside = first - timedelta(days=1) if first.day > 1 else last + timedelta(days=1)
    show_month(browser, outside)
    title = str(browser.find(f"label[for=day-{outside}]").get_attribute("title"))
    assert "outside the shopping event “Tết sale”" in title
    browser.shot("brand-calendar-event-en")
    inside = first + timedelta(days=5)
    for lang, words in TRANSLATED.items():
        browser.language(lang)
        browser.wait_for(".calendar")
        assert browser.find("html").get_attribute("lang") == lang
        show_month(browser, outside)
        text = browser.text()
        assert words["legend"] in text and words["previous"] in text
        grey = str(browser.find(f"label[for=day-{outside}]").get_attribute("title"))
        assert words["event"] in grey, grey
        assert words["event"] in browser.find("ul.grey-reasons").text
        show_month(browser, inside)
        red = str(browser.find(f"label[for=day-{inside}]").get_attribute("title"))
        assert words["collides"] % {"other": other} in red, red
        assert "Collides" not in browser.find("table.month").text
        browser.shot(f"brand-calendar-{lang}")
    browser.language("en")
    assert browser.console_errors() == []


async def test_a_brand_cannot_open_another_brands_campaign_nor_moderation(
    relay: Relay, browser: Browser, api: httpx.AsyncClient, cfg_file: Path
) -> None:
    admin = await asyncio.to_thread(key, cfg_file, "admin")
    a_id, a_product, a_key = await brand_world(api, cfg_file, admin, "Brand A")
    b_id, b_product, b_key = await brand_world(api, cfg_file, admin, "Brand B")
    start = rules.earliest_start(clock.now()) + timedelta(days=3)
    made = await ok(
        api.post("/campaigns", json=draft(b_id, b_product, start), headers=bearer(b_key)), 201
    )
    theirs = made["campaign_id"]
    mine = await ok(
        api.post("/campaigns", json=draft(a_id, a_product, start), headers=bearer(a_key)), 201
    )
    a_campaign = mine["campaign_id"]
    await asyncio.to_thread(add_user, cfg_file, "an", f"brand:{a_id}")
    await asyncio.to_thread(add_user, cfg_file, "mai", "moderator")
    browser.base = base(relay)
    browser.sign_in("an")
    browser.go("/brand/campaigns/999999")
    unknown = browser.find("main").text
    assert "There is no such page." in unknown
    for path in (f"/brand/campaigns/{theirs}", f"/brand/campaigns/{theirs}/edit"):
        browser.go(path)
        assert browser.find("main").text == unknown
        assert "New this week" not in browser.text()
    browser.go("/review")
    assert "This page is not for your account." in browser.find("main").text
    browser.sign_out()
    async with httpx.AsyncClient(base_url=base(relay)) as http:
        for path in (f"/brand/campaigns/{theirs}", "/brand/campaigns/999999"):
            # Not signed in: sent to sign in, whether the id exists or not.
            answer = await http.get(path, follow_redirects=False)
            assert answer.status_code == 303 and answer.headers["location"].startswith("/login")
        await http_sign_in(http, "an")
        statuses = {
            path: (await http.get(path)).status_code
            for path in (
                f"/brand/campaigns/{theirs}",
                f"/brand/campaigns/{theirs}/edit",
                "/brand/campaigns/999999",
                "/review",
            )
        }
        assert statuses == {
            f"/brand/campaigns/{theirs}": 404,
            f"/brand/campaigns/{theirs}/edit": 404,
            "/brand/campaigns/999999": 404,
            "/review": 403,
        }
        page = await http.get(f"/brand/campaigns/{a_campaign}")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert token is not None
        for action in ("submit", "cancel", "edit"):
            data = {"csrf": token.group(1), "action": "save", "subject": "mine now"}
            answer = await http.post(f"/brand/campaigns/{theirs}/{action}", data=data)
            assert answer.status_code == 404, action
        decision = {"csrf": token.group(1), "decision": "approve"}
        assert (await http.post(f"/review/{theirs}", data=decision)).status_code == 403
    shown = await ok(api.get(f"/campaigns/{theirs}", headers=bearer(b_key)))
    assert shown["status"] == "draft" and shown["subject"] == "New this week"
    # A user made for a brand that does not exist: a page that says so.
    await asyncio.to_thread(add_user, cfg_file, "ghost", "brand:999")
    async with httpx.AsyncClient(base_url=base(relay)) as http:
        await http_sign_in(http, "ghost")
        for path in ("/brand/campaigns", "/brand/campaigns/new", "/brand/followers"):
            answer = await http.get(path)
            assert answer.status_code == 404
            assert "brand does not exist: ask the marketplace" in answer.text
    browser.sign_in("mai")
    browser.go("/brand/campaigns")
    assert "This page is not for your account." in browser.find("main").text
    assert browser.console_errors() == []


async def test_the_report_of_a_campaign_the_dispatcher_sent(
    relay: Relay, sink: Sink, browser: Browser, api: httpx.AsyncClient, cfg_file: Path
) -> None:
    admin = await asyncio.to_thread(key, cfg_file, "admin")
    brand_id, product, brand_key = await brand_world(api, cfg_file, admin, "Huế Ceramics")
    start = rules.earliest_start(clock.now())
    campaign = await approved_campaign(api, admin, brand_key, brand_id, product, start)
    await asyncio.to_thread(add_user, cfg_file, "lan", f"brand:{brand_id}")
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
        await wait_idle(relay)

    async def delivered() -> bool:
        shown: dict[str, Any] = await ok(
            api.get(f"/campaigns/{campaign}", headers=bearer(brand_key))
        )
        return bool(shown["report"]["delivered"] == FOLLOWERS)

    await wait_until_async(delivered)
    shown = await ok(api.get(f"/campaigns/{campaign}", headers=bearer(brand_key)))
    browser.base = base(relay)
    browser.sign_in("lan")
    browser.go(f"/brand/campaigns/{campaign}")
    assert "Completed" in browser.find(".campaign-status").text
    figures = browser.find("table.figures").text
    assert f"Planned {FOLLOWERS}" in figures and f"Delivered {FOLLOWERS}" in figures
    assert f"Sent {shown['report']['sent']}" in figures
    assert "Skipped by the 7-day rule 0" in figures
    bars = browser.all("svg.chart rect.sent")
    assert len(bars) >= rules.WINDOW_DAYS
    per_day = [int(r.text.split()[-3]) for r in browser.all("table.per-day tbody tr")]
    assert sum(per_day) == FOLLOWERS
    heights = [float(str(b.get_attribute("height"))) for b in bars]
    assert sum(1 for h in heights if h > 0) == sum(1 for n in per_day if n > 0)
    browser.driver.execute_script("document.getElementById('report').scrollIntoView()")
    keep(browser.shot("brand-report"), "report")
    assert browser.console_errors() == []


async def test_promotions_offered_edits_refusals_and_cancel_in_vietnamese(
    relay: Relay, browser: Browser, api: httpx.AsyncClient, cfg_file: Path
) -> None:
    admin = await asyncio.to_thread(key, cfg_file, "admin")
    brand_id, product, brand_key = await brand_world(api, cfg_file, admin, "Đà Lạt Flowers")
    other_product = await ok(
        api.post(
            f"/brands/{brand_id}/products",
            json={"sku": "SKU-VASE", "title": "Vase"},
            headers=bearer(admin),
        ),
        201,
    )
    today = clock.now().date()
    earliest = rules.earliest_start(clock.now())
    promotion_end = earliest + timedelta(days=8)

    async def promotion(product_id: int, approved: bool) -> int:
        body = {
            "product_id": product_id,
            "kind": "percent_off",
            "discount": "15",
            "starts_at": f"{today}T00:00:00Z",
            "ends_at": f"{promotion_end}T00:00:00Z",
            "approved": approved,
        }
        made = await ok(
            api.post(f"/brands/{brand_id}/promotions", json=body, headers=bearer(admin)), 201
        )
        return int(made["promotion_id"])

    eligible = await promotion(product, True)
    pending = await promotion(product, False)
    elsewhere = await promotion(other_product["product_id"], True)
    start = earliest + timedelta(days=2)
    made = await ok(
        api.post("/campaigns", json=draft(brand_id, product, start), headers=bearer(brand_key)),
        201,
    )
    campaign = made["campaign_id"]
    await asyncio.to_thread(add_user, cfg_file, "hue", f"brand:{brand_id}")
    browser.base = base(relay)
    browser.sign_in("hue")
    browser.go(f"/brand/campaigns/{campaign}/edit")
    offered = [
        r.get_attribute("value") for r in browser.all("input[name=promotion_id]") if r.is_enabled()
    ]
    assert offered == ["", str(eligible)]  # only the eligible one, besides none
    refused = browser.find("ul.not-eligible").text
    assert f"promotion {pending} is not approved yet" in refused
    assert f"promotion {elsewhere} is for another product" in refused

    browser.language("vi")
    browser.wait_for(".calendar")
    refused = browser.find("ul.not-eligible").text
    assert f"khuyến mãi {pending} chưa được duyệt" in refused
    assert f"khuyến mãi {elsewhere} dành cho sản phẩm khác" in refused
    # The promotion chosen, the calendar greys the days after it ends.
    browser.find(f"input[name=promotion_id][value='{eligible}']").click()
    Select(browser.find("#kind")).select_by_value("promotion")
    browser.submit("#refresh")
    browser.wait_for(".calendar")
    after = promotion_end + timedelta(days=1)
    show_month(browser, after)
    grey = str(browser.find(f"label[for=day-{after}]").get_attribute("title"))
    assert f"ngoài thời gian của khuyến mãi {eligible}" in grey, grey
    assert browser.find(f"#day-{after}").get_attribute("disabled") is not None
    # A promotion that is not eligible stays chosen, with why, if the form carries it.
    chosen = browser.find(f"input[name=promotion_id][value='{eligible}']")
    browser.driver.execute_script("arguments[0].value = arguments[1]", chosen, str(pending))
    browser.submit("#refresh")
    browser.wait_for(".calendar")
    assert browser.find(f"input[name=promotion_id][value='{pending}']").is_selected()
    said = f"Khuyến mãi đã chọn không đủ điều kiện: khuyến mãi {pending} chưa được duyệt"
    assert said in browser.text()
    browser.find(f"input[name=promotion_id][value='{eligible}']").click()
    # A refusal of the rules, in the reader's language; nothing saved.
    subject = browser.find("#subject")
    subject.clear()
    subject.send_keys("Viết cho shop@flowers.example")
    show_month(browser, start)
    browser.submit("#save")
    errors = browser.wait_for("#form-errors").text
    assert "tiêu đề có địa chỉ email: chiến dịch không được chứa địa chỉ" in errors
    assert browser.find(f"input[name=promotion_id][value='{eligible}']").is_selected()
    browser.shot("brand-campaign-refused-vi")
    subject = browser.find("#subject")
    subject.clear()
    subject.send_keys("Giảm 15% hoa Đà Lạt")
    browser.submit("#save")
    assert "Các thay đổi đã được lưu." in browser.wait_for("p.notice").text
    assert f"Khuyến mãi {eligible}: 15%" in browser.text()
    shown = await ok(api.get(f"/campaigns/{campaign}", headers=bearer(brand_key)))
    assert shown["promotion_id"] == eligible and shown["kind"] == "promotion"
    assert shown["subject"] == "Giảm 15% hoa Đà Lạt"

    browser.submit("#cancel")
    browser.wait_for(".campaign-status")
    assert "Đã hủy" in browser.find(".campaign-status").text
    assert "thương hiệu đã hủy" in browser.find("table.history").text
    assert browser.all("#cancel") == [] and browser.all("#edit") == []
    browser.go(f"/brand/campaigns/{campaign}/edit")
    browser.submit("#save")
    errors = browser.wait_for("#form-errors").text
    assert f"chiến dịch {campaign} không thể sửa được nữa" in errors
    browser.language("en")
    assert browser.console_errors() == []


async def test_review_refusals_are_the_rules_and_only_decisions_are_logged(
    relay: Relay, api: httpx.AsyncClient, cfg_file: Path
) -> None:
    admin = await asyncio.to_thread(key, cfg_file, "admin")
    brand_id, product, brand_key = await brand_world(api, cfg_file, admin, "Cần Thơ Rice")
    start = rules.earliest_start(clock.now()) + timedelta(days=1)
    made = await ok(
        api.post("/campaigns", json=draft(brand_id, product, start), headers=bearer(brand_key)),
        201,
    )
    cid = made["campaign_id"]
    await ok(api.post(f"/campaigns/{cid}/submit", headers=bearer(brand_key)))
    await asyncio.to_thread(add_user, cfg_file, "lan", "admin")
    async with httpx.AsyncClient(base_url=base(relay)) as http:
        await http_sign_in(http, "lan")
        page = await http.get("/review")
        assert page.status_code == 200 and f'id="campaign-{cid}"' in page.text
        token = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert token is not None
        csrf = token.group(1)
        forged = await http.post(f"/review/{cid}", data={"decision": "approve"})
        assert forged.status_code == 403
        blank = await http.post(
            f"/review/{cid}", data={"csrf": csrf, "decision": "reject", "reason": "  "}
        )
        assert blank.status_code == 422
        assert "a rejection needs a reason: the brand is told it" in blank.text
        approved = await http.post(
            f"/review/{cid}", data={"csrf": csrf, "decision": "approve"}, follow_redirects=False
        )
        assert (
            approved.status_code == 303 and approved.headers["location"] == "/review?done=approved"
        )
        again = await http.post(f"/review/{cid}", data={"csrf": csrf, "decision": "approve"})
        assert again.status_code == 422
        assert f"campaign {cid} is no longer “In review” (it is “Approved”)" in again.text
        http.cookies.set("lang", "tl")
        again = await http.post(f"/review/{cid}", data={"csrf": csrf, "decision": "approve"})
        assert f"ang kampanya {cid} ay hindi na “Sinusuri” (ito ay “Aprubado”)" in again.text
        missing = await http.post("/review/999999", data={"csrf": csrf, "decision": "approve"})
        assert missing.status_code == 404

    def logged(s: Any) -> list[tuple[str, str]]:
        return [(d.actor, d.action) for d in decisions.about(s, f"campaign {cid}")]

    assert await asyncio.to_thread(relay.db.call, logged) == [("console:lan", "campaign.approve")]
    shown = await ok(api.get(f"/campaigns/{cid}", headers=bearer(brand_key)))
    assert [h["status"] for h in shown["history"]] == ["draft", "in_review", "approved"]
