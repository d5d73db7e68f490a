"""The seller's response-time dashboard (``/responses``) in a real Chromium.

Buyer messages and seller replies go through real SMTP; time moves with
``relay.core.clock.advance``; the page must say what ``relay responses --json``
says about the same data (the CLI runs in this process, on the same clock).
"""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from sqlmodel import Session, select

from relay.app import Relay
from relay.console import i18n
from relay.core import clock
from relay.core.config import RelayConfig
from relay.ops import response_times
from relay.storage.models import ResponseMark
from tests import test_api
from tests.browser import PASSWORD, Browser, add_user
from tests.helpers import Parties, Sink, buyer_writes, register, seller_writes
from tests.test_responses import Cli, another_buyer

cfg_file = test_api.cfg_file
__all__ = ["cfg_file"]  # a fixture, used by name

HOSTILE = '<b>Size & "colour"?</b>'
"""A subject that would be markup if it were not escaped."""
FIGURES = ("buyer_messages", "within_24h", "late", "open", "open_late", "no_response_needed")


def hours(n: float) -> None:
    clock.advance(timedelta(hours=n))


def shown(browser: Browser) -> dict[str, Any]:
    """The dashboard's figures, as the page carries them (``data-value``)."""
    values: dict[str, Any] = {}
    for name in FIGURES:
        values[name] = int(browser.find(f"#{name}").get_attribute("data-value") or "")
    for name, css in (
        ("share_within_24h", "#share"),
        ("median_seconds", "#median"),
        ("p90_seconds", "#p90"),
    ):
        raw = browser.find(css).get_attribute("data-value") or ""
        values[name] = float(raw) if raw else None
    return values


def expected(cli_figures: list[dict[str, Any]]) -> dict[str, Any]:
    (one,) = cli_figures
    return {k: one[k] for k in (*FIGURES, "share_within_24h", "median_seconds", "p90_seconds")}


def waiting_conversations(browser: Browser) -> list[int]:
    return [int(e.get_attribute("id").split("-")[1]) for e in browser.all("div.waiting")]


async def timeline(relay: Relay, sink: Sink, parties: Parties) -> dict[str, Parties]:
    """Answered in 2 h, answered in 30 h, never answered (31 h), asked an hour ago."""
    convs = {
        "soon": parties,
        "late": another_buyer(relay, parties, "ana@buyer.example", "ORD-2"),
        "never": another_buyer(relay, parties, "ben@buyer.example", "ORD-3"),
        "recent": another_buyer(relay, parties, "cy@buyer.example", "ORD-4"),
    }
    await buyer_writes(relay, convs["soon"], subject="Engraving?")
    await buyer_writes(relay, convs["late"], subject="Delivery to Cebu?")
    await buyer_writes(relay, convs["never"], subject=HOSTILE)
    await sink.wait_for(3)
    hours(2)
    await seller_writes(relay, convs["soon"], subject="Re: Engraving?")
    await sink.wait_for(4)
    hours(28)  # 30 h
    await seller_writes(relay, convs["late"], subject="Re: Delivery to Cebu?")
    await buyer_writes(relay, convs["recent"], subject="Gift wrap?")
    await sink.wait_for(6)
    hours(1)  # 31 h
    return convs


async def test_the_dashboard_shows_what_relay_responses_says(
    relay: Relay,
    sink: Sink,
    parties: Parties,
    browser: Browser,
    cfg_file: Path,
    config: RelayConfig,
    tmp_path: Path,
) -> None:
    cli = Cli(config, tmp_path)
    convs = await timeline(relay, sink, parties)
    sid = str(parties.seller_id)
    await asyncio.to_thread(add_user, cfg_file, "shop", f"seller:{sid}")
    assert relay.api is not None
    browser.base = relay.api.base_url
    browser.sign_in("shop")
    assert browser.driver.current_url.endswith("/responses")  # a seller's start page

    said = await cli.json("responses", "--seller", sid)
    assert shown(browser) == expected(said)
    assert (said[0]["within_24h"], said[0]["late"], said[0]["open"], said[0]["open_late"]) == (
        1,
        1,
        1,
        1,
    )
    assert browser.find("#share").text == "33%"
    assert browser.find("#median").text == "2 h 0 min"
    assert browser.find("#p90").text == "30 h 0 min"
    assert browser.find("#seller-name").text == "Hà Nội Crafts"

    # The running clocks, oldest first; the mail's subject is text, not markup.
    never, recent = convs["never"].conversation_id, convs["recent"].conversation_id
    assert waiting_conversations(browser) == [never, recent]
    subject = browser.find(f"#conversation-{never} td.subject")
    assert subject.text == HOSTILE
    assert subject.find_elements(By.TAG_NAME, "b") == []
    assert "late" in browser.find(f"#conversation-{never}").text
    # The weekly trend: the three messages of the first day, one of them within 24 h.
    bars = browser.all("svg.trend rect.bar")
    assert 1 <= len(bars) <= 2
    shares = [e.get_attribute("data-value") for e in browser.all("td.week-share")]
    assert len(shares) == response_times_weeks(browser)
    assert [float(s) for s in shares if s] == [said[0]["share_within_24h"]]

    # Screenshots in the three languages: labels translated, numbers and dates the locale's.
    sent_at = relay.db.call(response_times.waiting, seller_id=parties.seller_id)[0].sent_at
    size = browser.driver.get_window_size()
    browser.driver.set_window_size(1280, 1700)  # the whole page in the screenshots
    browser.shot("seller-dashboard-en")  # docs/console/seller-dashboard.png is a copy
    for lang, share_label, median in (
        ("vi", "Trả lời trong vòng 24 giờ", "2 giờ 0 phút"),
        ("tl", "Nasagot sa loob ng 24 oras", "2 oras 0 minuto"),
    ):
        browser.language(lang)
        browser.wait_for("#share")
        assert browser.find("html").get_attribute("lang") == lang
        label = browser.find("dl.figures dt").text
        assert label == share_label == i18n.gettext(lang)("Answered within 24 hours")
        assert browser.find("#median").text == median
        assert browser.find("#share").text == i18n.Formats(lang).percent(1 / 3)
        received = browser.find(f"#conversation-{never} tbody td:nth-child(2)").text
        assert received == i18n.Formats(lang).datetime(sent_at)
        assert shown(browser) == expected(said)
        browser.shot(f"seller-dashboard-{lang}")
    browser.language("en")
    browser.wait_for("#share")
    browser.driver.set_window_size(size["width"], size["height"])

    # The "since" filter: the same figures as ``--since`` on the command line.
    day = clock.now().date().isoformat()
    field = browser.find("#since")
    browser.driver.execute_script("arguments[0].value = arguments[1]", field, day)
    browser.submit("#since-show")
    WebDriverWait(browser.driver, 10).until(lambda d: f"since={day}" in d.current_url)
    browser.wait_for("#share")
    assert shown(browser) == expected(await cli.json("responses", "--seller", sid, "--since", day))
    browser.go("/responses")

    # "No response needed" from the browser stops the clock of the unanswered one.
    browser.submit(f"#conversation-{never} button.no-response")
    assert browser.wait_for("#done").text.endswith(": 1")
    assert waiting_conversations(browser) == [recent]
    after = await cli.json("responses", "--seller", sid)
    assert (after[0]["open_late"], after[0]["no_response_needed"]) == (0, 1)
    assert after[0]["share_within_24h"] == 0.5
    assert shown(browser) == expected(after)
    assert browser.console_errors() == []


def response_times_weeks(browser: Browser) -> int:
    """How many weeks the page's trend shows (its default)."""
    return len(browser.all("svg.trend g.week"))


async def test_a_seller_sees_only_its_own_dashboard(
    relay: Relay, parties: Parties, browser: Browser, cfg_file: Path
) -> None:
    other = register(
        relay,
        buyer="eve@buyer.example",
        seller=("desk@other.example",),
        seller_name="Other <Shop>",
        order_id="ORD-9",
    )
    await asyncio.to_thread(add_user, cfg_file, "shop", f"seller:{parties.seller_id}")
    await asyncio.to_thread(add_user, cfg_file, "mai", "moderator")
    assert relay.api is not None
    browser.base = relay.api.base_url
    browser.sign_in("shop")
    browser.go(f"/responses?seller={other.seller_id}")
    assert "There is no such page." in browser.find("p.error").text
    assert "Other" not in browser.text()
    browser.go(f"/responses?seller={parties.seller_id}")  # its own id is fine
    assert browser.find("#seller-name").text == "Hà Nội Crafts"
    assert browser.find("#nothing-waiting")
    # The trend's length: 8 weeks unless asked (4 to 26).
    assert response_times_weeks(browser) == 8
    for asked, weeks in (("12", 12), ("2", 4), ("99", 26), ("many", 8)):
        browser.go(f"/responses?weeks={asked}")
        assert response_times_weeks(browser) == weeks
    browser.sign_out()

    # A moderator picks any seller, from the list or by number.
    browser.sign_in("mai")
    browser.go("/responses")
    browser.find("#seller").send_keys(str(other.seller_id))
    browser.find("form.since button").click()
    assert browser.wait_for("#seller-name").text == "Other <Shop>"
    browser.go("/responses?seller=99999")
    assert "There is no such page." in browser.find("p.error").text


async def test_no_response_needed_only_on_the_sellers_own_conversations(
    relay: Relay, parties: Parties, cfg_file: Path
) -> None:
    """The form's POST, as any client could send it: another seller's conversation
    is a 404 and marks nothing; a POST without the session's CSRF token is a 403."""
    other = register(
        relay,
        buyer="eve@buyer.example",
        seller=("desk@other.example",),
        seller_name="Other",
        order_id="ORD-9",
    )
    await asyncio.to_thread(add_user, cfg_file, "shop", f"seller:{parties.seller_id}")
    assert relay.api is not None
    async with httpx.AsyncClient(base_url=relay.api.base_url) as http:
        login = await http.get("/login")
        token = re.search(r'name="csrf" value="([^"]+)"', login.text)
        assert token is not None
        data = {"csrf": token.group(1), "username": "shop", "password": PASSWORD}
        assert (await http.post("/login", data=data)).status_code == 303
        page = await http.get("/responses")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert page.status_code == 200 and csrf is not None

        def mark(conversation_id: int) -> str:
            return f"/responses/conversations/{conversation_id}/no-response-needed"

        theirs = await http.post(mark(other.conversation_id), data={"csrf": csrf.group(1)})
        assert theirs.status_code == 404 and "There is no such conversation." in theirs.text
        forged = await http.post(mark(parties.conversation_id), data={"csrf": "forged"})
        assert forged.status_code == 403
        own = await http.post(mark(parties.conversation_id), data={"csrf": csrf.group(1)})
        assert own.status_code == 303 and own.headers["location"] == "/responses?done=0"

    def marks(s: Session) -> list[int]:
        return [m.conversation_id for m in s.exec(select(ResponseMark)).all()]

    assert relay.db.call(marks) == [parties.conversation_id]
