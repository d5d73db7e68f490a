"""The moderators' pages in a real Chromium: the quarantine with its safe preview
and its decisions, the archive's search, the rules and their tester, the health.

A held message here is hostile on purpose: its subject, From display name, text
and HTML part carry script, an ``onerror`` image and a ``javascript:`` link.  The
preview must show them as text: no dialog opens, the page logs no error (a
script the Content-Security-Policy refused would be logged), and the decisions
made in the browser reach the sink over SMTP and the decisions' log.
"""

from __future__ import annotations

import asyncio
import re
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.support.ui import Select
from sqlalchemy import func
from sqlmodel import Session, select

from relay.app import Relay
from relay.console import archive_pages, i18n, modlabels
from relay.console.web import CSP
from relay.core.config import RelayConfig
from relay.storage import decisions
from relay.storage.models import Message, MessageStatus
from tests import test_api
from tests.browser import ARTIFACTS, Browser, add_user, keep
from tests.helpers import (
    Parties,
    Sink,
    buyer_writes,
    cli,
    seller_writes,
    send,
    wait_idle,
    wait_until,
)
from tests.test_api_archive import BULK, with_rules

cfg_file = test_api.cfg_file
__all__ = ["cfg_file"]  # a fixture, used by name

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(2)>"
LINK = '<a href="javascript:alert(3)">click me</a>'
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def hostile(parties: Parties) -> EmailMessage:
    """A seller's message made to run script wherever it is shown carelessly."""
    msg = EmailMessage()
    msg["From"] = f'"{SCRIPT}" <{parties.seller}>'
    msg["To"] = parties.buyer_token
    msg["Subject"] = f"Deal {SCRIPT}"
    msg["X-Mailer"] = BULK["X-Mailer"]
    msg.set_content(f"Plain text {IMG} and {SCRIPT}\n")
    msg.add_alternative(
        f"<html><body><p>Hi {SCRIPT}</p>{IMG}<p>{LINK}</p></body></html>\n", subtype="html"
    )
    msg.add_attachment(PDF, maintype="application", subtype="octet-stream", filename="offer.bin")
    return msg


async def hold(relay: Relay, parties: Parties, msg: EmailMessage) -> None:
    await send(relay, msg, sender=parties.seller, recipients=[parties.buyer_token])


def held_ids(relay: Relay) -> list[int]:
    def run(s: Session) -> list[int]:
        rows = s.exec(select(Message.id).where(Message.status == MessageStatus.QUARANTINED)).all()
        return sorted(int(i) for i in rows if i is not None)

    return relay.db.call(run)


def decided(relay: Relay, message_id: int) -> list[tuple[str, str]]:
    rows = relay.db.call(decisions.about, f"message {message_id}")
    return [(d.actor, d.action) for d in rows]


def base(relay: Relay) -> str:
    assert relay.api is not None
    return relay.api.base_url


def whole_page(browser: Browser, name: str) -> Path:
    """A screenshot of the whole page, not only the window's height."""
    driver = browser.driver
    size = driver.get_window_size()
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(size["width"], min(max(height + 140, size["height"]), 4000))
    try:
        return browser.shot(name)
    finally:
        driver.set_window_size(size["width"], size["height"])


async def test_a_hostile_message_is_previewed_as_text_and_released(
    relay: Relay,
    config: RelayConfig,
    sink: Sink,
    parties: Parties,
    browser: Browser,
    cfg_file: Path,
) -> None:
    with_rules(relay, config)
    await asyncio.to_thread(add_user, cfg_file, "mai", "moderator")
    await hold(relay, parties, hostile(parties))
    await wait_idle(relay)
    assert sink.messages == []
    (held,) = await asyncio.to_thread(held_ids, relay)

    browser.base = base(relay)
    browser.sign_in("mai")
    browser.go("/quarantine")
    assert not browser.alert_shown()
    row = browser.find("table.held tbody tr")
    assert SCRIPT in row.find_element("css selector", "td.subject").text
    assert "bulk-mailer" in row.text and "quarantine" in row.text and "header X-Mailer" in row.text
    browser.shot("moderation-quarantine")
    browser.find("a.preview-link").click()
    browser.wait_for("#mail-subject")
    assert browser.driver.current_url.endswith(f"/quarantine/{held}")

    # Nothing ran: no dialog, nothing refused or failing in the console.
    assert not browser.alert_shown()
    assert browser.console_errors() == []
    # The payloads are there, as text.
    assert browser.find("#mail-subject").text == f"Deal {SCRIPT}"
    assert SCRIPT in browser.find("#mail-from").text
    assert IMG in browser.find("pre.text-body").text
    html = browser.find("pre.html-source").text
    assert SCRIPT in html and IMG in html and LINK in html
    # ... and not as elements: no image, frame, or link to script on the page.
    assert browser.all("main img, main iframe, main script, main object, main embed") == []
    assert browser.all('a[href^="javascript"]') == []
    attachments = browser.find("table.attachments").text
    assert "offer.bin" in attachments and "application/pdf" in attachments
    assert "application/octet-stream" in attachments
    assert browser.all("table.attachments a") == []  # listed, never offered
    keep(whole_page(browser, "moderation-preview"), "quarantine-preview.png")
    browser.language("vi")
    browser.wait_for("#mail-subject")
    page = browser.text()
    assert "Thư như lúc nhận" in page and "dòng tiêu đề X-Mailer" in page
    assert "\"BulkMailer 3.0\" khớp với 'Bulk'" in page  # the hit's detail, translated
    assert browser.find("#mail-subject").text == f"Deal {SCRIPT}"
    assert not browser.alert_shown() and browser.console_errors() == []
    whole_page(browser, "moderation-preview-vi")
    browser.language("en")
    browser.wait_for("#mail-subject")

    # The page's headers, fetched as the browser's session.
    cookie = browser.driver.get_cookie("relay_console")
    assert cookie is not None
    async with httpx.AsyncClient(
        base_url=base(relay), cookies={"relay_console": cookie["value"]}
    ) as http:
        page = await http.get(f"/quarantine/{held}")
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == CSP
    assert SCRIPT not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text

    browser.submit("#release")
    assert "Released" in browser.wait_for("p.notice").text
    assert browser.all("#release") == []
    assert "console:mai" in browser.find("ul.decisions").text
    (got,) = await sink.wait_for(1)
    assert parties.buyer in got.rcpt_tos and b"alert(2)" in got.data
    assert await asyncio.to_thread(decided, relay, held) == [("console:mai", "quarantine.release")]
    await wait_idle(relay)
    assert (await cli(cfg_file, "archive", "show", str(held)))["status_reason"] == (
        "released from quarantine"
    )
    browser.go("/quarantine")
    assert "No message is held." in browser.text()
    assert browser.console_errors() == []


async def test_a_held_message_is_rejected_and_its_sender_told(
    relay: Relay,
    config: RelayConfig,
    sink: Sink,
    parties: Parties,
    browser: Browser,
    cfg_file: Path,
) -> None:
    with_rules(relay, config)
    await asyncio.to_thread(add_user, cfg_file, "lan", "admin")
    await seller_writes(relay, parties, subject="Flash sale", headers=BULK)
    await wait_idle(relay)
    (held,) = await asyncio.to_thread(held_ids, relay)

    browser.base = base(relay)
    browser.sign_in("lan")
    browser.go(f"/quarantine/{held}")
    browser.submit("#reject")
    assert "Rejected" in browser.wait_for("p.notice").text
    assert "console:lan" in browser.find("ul.decisions").text
    assert "rule bulk-mailer, by an admin" in browser.text()
    await wait_until(lambda: len(sink.to(parties.seller)) == 1)
    notice = " ".join(sink.to(parties.seller)[0].message.get_content().split())
    assert "Messages sent with bulk-mail tools are not passed on." in notice
    assert sink.to(parties.buyer) == []
    assert await asyncio.to_thread(decided, relay, held) == [("console:lan", "quarantine.reject")]

    # Deciding again is refused with a page that says why; nothing more is logged.
    browser.go(f"/quarantine/{held}")
    assert browser.all("#reject") == []
    async with httpx.AsyncClient(base_url=base(relay)) as http:
        cookie = browser.driver.get_cookie("relay_console")
        assert cookie is not None
        http.cookies.set("relay_console", cookie["value"])
        page = await http.get(f"/quarantine/{held}")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert token is not None
        again = await http.post(f"/quarantine/{held}/release", data={"csrf": token.group(1)})
        assert again.status_code == 409 and "no longer held" in again.text
        forged = await http.post(f"/quarantine/{held}/release", data={"csrf": "forged"})
        assert forged.status_code == 403
    assert await asyncio.to_thread(decided, relay, held) == [("console:lan", "quarantine.reject")]


async def test_a_rules_file_that_does_not_load_is_said(
    relay: Relay,
    config: RelayConfig,
    sink: Sink,
    parties: Parties,
    browser: Browser,
    cfg_file: Path,
) -> None:
    with_rules(relay, config)
    await asyncio.to_thread(add_user, cfg_file, "mai", "moderator")
    await seller_writes(relay, parties, subject="Flash sale", headers=BULK)
    await wait_idle(relay)
    (held,) = await asyncio.to_thread(held_ids, relay)
    config.filters.rules.write_text("rules:\n  - id: broken\n    action: explode\n")

    browser.base = base(relay)
    browser.sign_in("mai")
    browser.go("/rules")
    assert "The rules file does not load:" in browser.find("p.error").text
    assert "explode" in browser.find("pre.preview").text
    browser.go(f"/quarantine/{held}")
    browser.submit("#release")
    assert "The rules file does not load" in browser.wait_for("p.error").text
    assert await asyncio.to_thread(held_ids, relay) == [held]  # still held
    assert await asyncio.to_thread(decided, relay, held) == []
    await wait_idle(relay)
    assert sink.messages == []


async def test_moderation_pages_are_for_moderators_only(
    relay: Relay, parties: Parties, browser: Browser, cfg_file: Path
) -> None:
    await asyncio.to_thread(add_user, cfg_file, "shop", f"seller:{parties.seller_id}")
    browser.base = base(relay)
    browser.sign_in("shop")
    for path in ("/quarantine", "/quarantine/1", "/archive", "/archive/1", "/rules", "/health"):
        browser.go(path)
        assert "This page is not for your account." in browser.find("p.error").text, path
    browser.sign_out()
    browser.go("/rules")
    assert "/login" in browser.driver.current_url


@pytest.mark.parametrize(
    ("found", "at", "said"),
    [
        ('keyword "sale": "Big SALE"', "subject", 'từ khóa "sale": "Big SALE"'),
        ("pattern '\\d{4}': \"1234\"", "text body", "mẫu '\\d{4}': \"1234\""),
        ("link to evil.example", "HTML body", "liên kết tới evil.example"),
        (
            'attachment "a.pdf": content is application/x-dosexec, disguised (named .pdf)',
            'attachment "a.pdf"',
            'tệp đính kèm "a.pdf": nội dung là application/x-dosexec,'
            " được ngụy trang (đặt tên .pdf)",
        ),
        (
            'attachment "d.docx": content is application/zip: claims to be'
            " application/vnd.openxmlformats-officedocument.wordprocessingml.document"
            " but is a plain ZIP archive",
            'attachment "d.docx"',
            'tệp đính kèm "d.docx": nội dung là application/zip: tự nhận là'
            " application/vnd.openxmlformats-officedocument.wordprocessingml.document"
            " nhưng chỉ là một tệp nén ZIP thông thường",
        ),
        ("a plugin's own words", "subject", "a plugin's own words"),
    ],
)
def test_what_a_rule_found_is_said_in_the_readers_language(found: str, at: str, said: str) -> None:
    assert modlabels.detail(i18n.gettext("vi"), found, at) == said


def _listed(browser: Browser) -> list[int]:
    return [int(str(r.get_attribute("data-id"))) for r in browser.all("tr.entry")]


async def test_archive_search_matches_the_cli(
    relay: Relay,
    config: RelayConfig,
    sink: Sink,
    parties: Parties,
    browser: Browser,
    cfg_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with_rules(relay, config)
    await asyncio.to_thread(add_user, cfg_file, "mai", "moderator")
    for n in range(2):
        await buyer_writes(relay, parties, subject=f"Question {n}")
    await seller_writes(relay, parties, subject="Answer", body="Call 555-1234.")
    await seller_writes(relay, parties, subject="Bulk", headers=BULK)
    await sink.wait_for(3)
    await wait_idle(relay)

    browser.base = base(relay)
    browser.sign_in("mai")
    browser.go("/archive")
    everything = await cli(cfg_file, "archive", "list")
    assert _listed(browser) == [m["id"] for m in everything] and len(everything) == 4
    browser.shot("moderation-archive")

    for status, direction in (
        ("delivered", ""),
        ("delivered", "buyer_to_seller"),
        ("delivered", "seller_to_buyer"),
        ("quarantined", "seller_to_buyer"),
        ("rejected", ""),
        ("", "seller_to_buyer"),
    ):
        browser.go("/archive")
        Select(browser.find("#f-status")).select_by_value(status)
        Select(browser.find("#f-direction")).select_by_value(direction)
        browser.submit("#search")
        shown = _listed(browser)
        # relay archive list filters by status; the direction is each entry's own field.
        by_cli = await cli(cfg_file, "archive", "list", *(["--status", status] if status else []))
        expected = [m["id"] for m in by_cli if not direction or m["direction"] == direction]
        assert shown == expected, (status, direction)
    assert len(_listed(browser)) == 2  # the seller's two

    # Page by page (two to a page here): every message once, newest first.
    monkeypatch.setattr(archive_pages, "PAGE", 2)
    browser.go("/archive")
    walked = _listed(browser)
    assert len(walked) == 2
    browser.submit("#older")
    browser.wait_for("tr.entry")
    walked += _listed(browser)
    assert browser.all("#older") == []
    assert walked == [m["id"] for m in everything]
    monkeypatch.undo()

    browser.go("/archive?rule=no-phone")
    (redacted,) = _listed(browser)
    browser.find(f'a[href="/archive/{redacted}"]').click()
    browser.wait_for("table.attempts")
    page = browser.text()
    assert "no-phone" in page and "redact" in page and "text body" in page
    assert parties.buyer in page and "delivered" in browser.find("table.attempts").text

    for path in ("/archive/999999", "/archive/abc", f"/archive/{2**70}", "/quarantine/-1"):
        browser.go(path)
        assert "There is no message with this number." in browser.find("p.error").text, path

    browser.go("/archive?since=yesterday")
    assert "Write dates as YYYY-MM-DD." in browser.find("p.error").text
    browser.language("vi")
    browser.go("/archive")
    assert browser.find("h1").text == "Lưu trữ"
    browser.shot("moderation-archive-vi")
    assert browser.console_errors() == []


def _count_rows(relay: Relay) -> int:
    def run(s: Session) -> int:
        return int(s.exec(select(func.count()).select_from(Message)).one())

    return relay.db.call(run)


def _archive_files(config: RelayConfig) -> list[Path]:
    return sorted(p for p in config.archive.path.rglob("*") if p.is_file())


CLEAN = """\
From: Shop <shop@seller.example>
To: someone@buyer.example
Subject: Your parcel

It left this morning.
"""
BREAKS = """\
From: Shop <shop@seller.example>
To: someone@buyer.example
Subject: Call me

Call 555-1234 for a discount.
"""


async def test_the_rule_tester_shows_hits_and_writes_nothing(
    relay: Relay,
    config: RelayConfig,
    sink: Sink,
    parties: Parties,
    browser: Browser,
    cfg_file: Path,
    tmp_path: Path,
) -> None:
    with_rules(relay, config)
    await asyncio.to_thread(add_user, cfg_file, "mai", "moderator")
    await buyer_writes(relay, parties, subject="Before")
    await sink.wait_for(1)
    await wait_idle(relay)
    rows = await asyncio.to_thread(_count_rows, relay)
    files = _archive_files(config)

    browser.base = base(relay)
    browser.sign_in("mai")
    browser.go("/rules")
    rules = browser.find("table.rules").text
    assert "bulk-mailer" in rules and "no-phone" in rules and "quarantine" in rules

    def test(text: str, side: str = "seller") -> None:
        browser.go("/rules")
        browser.find("#t-message").send_keys(text)
        browser.find(f"#side-{side}").click()
        browser.submit("#test")
        browser.wait_for("#result, #tester-error")

    test(BREAKS)
    hits = browser.find("#result table.hits").text
    assert "no-phone" in hits and "redact" in hits and "text body" in hits
    body = browser.find("pre.delivered-body").text
    assert "[redacted]" in body and "555-1234" not in body
    assert "seller-sample@" in browser.find("#result").text  # the made-up sender's token
    keep(whole_page(browser, "moderation-rule-tester"), "rule-tester.png")

    test(CLEAN)
    assert "No rule hit this message." in browser.find("#result").text
    assert "It left this morning." in browser.find("pre.delivered-body").text

    # The same message from the buyer's side: the rules apply to sellers only.
    test(BREAKS, side="buyer")
    assert "No rule hit this message." in browser.find("#result").text

    # An .eml file, held by a header rule.
    eml = tmp_path / "bulk.eml"
    eml.write_text(CLEAN.replace("Subject:", "X-Mailer: BulkMailer 3.0\nSubject:"))
    browser.go("/rules")
    browser.find("#t-eml").send_keys(str(eml))
    browser.submit("#test")
    result = browser.wait_for("#result").text
    assert "Held for a moderator by rule bulk-mailer." in result

    # Bad input is said on the page.
    test("just some words, no headers")
    assert "This is not an email message" in browser.find("#tester-error").text
    browser.go("/rules")
    browser.submit("#test")
    assert "Paste a message" in browser.wait_for("#tester-error").text
    looped = "".join(f"Received: from hop{n}.example\n" for n in range(40)) + CLEAN
    test(looped)
    error = browser.find("#tester-error").text
    assert "would refuse this message" in error and "mail loop" in error
    big = tmp_path / "big.eml"
    big.write_bytes(CLEAN.encode() + b"x" * (600 * 1024))
    browser.go("/rules")
    browser.find("#t-eml").send_keys(str(big))
    browser.submit("#test")
    assert "too big" in browser.wait_for("#tester-error").text
    assert browser.console_errors() == []

    await wait_idle(relay)
    assert await asyncio.to_thread(_count_rows, relay) == rows
    assert _archive_files(config) == files
    assert len(sink.messages) == 1


async def test_health_in_the_users_language(
    relay: Relay, sink: Sink, browser: Browser, cfg_file: Path
) -> None:
    await asyncio.to_thread(add_user, cfg_file, "mai", "moderator")
    browser.base = base(relay)
    browser.sign_in("mai")
    # In a thread: the check greets the sink, which answers on this test's event loop.
    await asyncio.to_thread(browser.go, "/health")
    assert "The relay can do its job." in browser.find("#overall").text
    assert "answers" in browser.find("#check-database").text
    assert "greets with 220" in browser.find("#check-downstream").text
    assert browser.find("#queue-depth").text.endswith("0")
    browser.shot("moderation-health")
    for lang, said in (("vi", "Hệ thống chuyển thư đang hoạt động"), ("tl", "Nagagawa ng relay")):
        await asyncio.to_thread(browser.language, lang)
        assert said in browser.find("#overall").text
        assert "greets with" not in browser.text()  # the check's detail is translated too
        browser.shot(f"moderation-health-{lang}")
    assert browser.console_errors() == []
    assert (ARTIFACTS / "moderation-health-vi.png").exists()
