"""The console's doors: signing in and out, CSRF, the sign-in limit, the
languages, the security headers; in a real Chromium where a person would be.

The pages of each role have their own test files (test_console_*.py).
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest
from babel.messages.extract import extract_from_dir

from relay.app import Relay
from relay.console import i18n
from relay.console.web import CSP
from tests import test_api
from tests.browser import PASSWORD, Browser, add_user
from tests.helpers import relay_cli

cfg_file = test_api.cfg_file
__all__ = ["cfg_file"]  # a fixture, used by name

CONSOLE = Path(__file__).resolve().parents[1] / "relay" / "console"


def base(relay: Relay) -> str:
    assert relay.api is not None
    return relay.api.base_url


async def test_a_moderator_signs_in_and_out_in_a_browser(
    relay: Relay, browser: Browser, cfg_file: Path
) -> None:
    await asyncio.to_thread(add_user, cfg_file, "mai", "moderator")
    browser.base = base(relay)
    browser.go("/")
    assert "/login" in browser.driver.current_url  # sent to sign in first
    browser.find("#username").send_keys("mai")
    browser.find("#password").send_keys("not the password")
    browser.find("#sign-in").click()
    assert "Wrong user name or password." in browser.wait_for("p.error").text
    browser.shot("console-login-refused")
    browser.find("#username").send_keys("mai")
    browser.find("#password").send_keys(PASSWORD)
    browser.find("#sign-in").click()
    browser.wait_for("form.logout")
    assert browser.driver.current_url.endswith("/review")  # a moderator's start page
    assert "mai (moderator)" in browser.text()
    cookie = browser.driver.get_cookie("relay_console")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    browser.sign_out()
    browser.go("/")
    assert "/login" in browser.driver.current_url
    assert browser.console_errors() == []


async def test_the_language_picker_translates_the_page(relay: Relay, browser: Browser) -> None:
    browser.base = base(relay)
    browser.go("/login")
    assert browser.find("h1").text == "Sign in"
    for code, heading in (("vi", "Đăng nhập"), ("tl", "Mag-sign in")):
        browser.language(code)
        browser.wait_for("#sign-in")
        assert browser.find("h1").text == heading
        assert browser.find("html").get_attribute("lang") == code
        browser.shot(f"console-login-{code}")
    browser.language("en")
    assert browser.find("h1").text == "Sign in"


async def test_forms_without_their_csrf_token_are_refused(relay: Relay, cfg_file: Path) -> None:
    await asyncio.to_thread(add_user, cfg_file, "mai", "moderator")
    async with httpx.AsyncClient(base_url=base(relay)) as http:
        page = await http.get("/login")
        assert page.headers["content-security-policy"] == CSP
        assert page.headers["x-frame-options"] == "DENY"
        token = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert token is not None
        # No token, or a token from elsewhere: refused before the password is looked at.
        for data in (
            {"username": "mai", "password": PASSWORD},
            {"csrf": "forged", "username": "mai", "password": PASSWORD},
        ):
            refused = await http.post("/login", data=data)
            assert refused.status_code == 403 and "did not come from this site" in refused.text
        signed = await http.post(
            "/login", data={"csrf": token.group(1), "username": "mai", "password": PASSWORD}
        )
        assert signed.status_code == 303 and "relay_console" in http.cookies
        # Signed in, a form without the session's token is refused too.
        out = await http.post("/logout", data={})
        assert out.status_code == 403
        out = await http.post("/logout", data={"csrf": token.group(1)})  # the sign-in form's
        assert out.status_code == 403
        assert (await http.get("/", follow_redirects=False)).headers["location"] == "/review"


async def test_failed_sign_ins_are_limited(relay: Relay, cfg_file: Path) -> None:
    await asyncio.to_thread(add_user, cfg_file, "lan", "admin")
    async with httpx.AsyncClient(base_url=base(relay)) as http:

        async def attempt(password: str) -> httpx.Response:
            page = await http.get("/login")
            token = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert token is not None
            data = {"csrf": token.group(1), "username": "lan", "password": password}
            return await http.post("/login", data=data)

        for _ in range(5):
            assert (await attempt("wrong password!")).status_code == 401
        blocked = await attempt(PASSWORD)  # even the right one, for now
        assert blocked.status_code == 429 and "Too many failed sign-ins" in blocked.text


def test_console_users_are_managed_from_the_command_line(cfg_file: Path) -> None:
    def run(*args: str, stdin: str | None = None) -> tuple[int, str]:
        result = relay_cli("-c", str(cfg_file), "console", "user", *args, stdin=stdin)
        return result.code, result.raw.decode() + result.err

    assert run("add", "an", "--role", "brand:3", "--json", stdin=PASSWORD)[0] == 0
    code, said = run("add", "an", "--role", "admin", stdin=PASSWORD)
    assert code == 1 and "user an already exists" in said
    code, said = run("add", "bo", "--role", "owner", stdin=PASSWORD)
    assert code == 1 and "is not a role: use admin, moderator, brand:ID or seller:ID" in said
    code, said = run("add", "bo", "--role", "admin", stdin="short")
    assert code == 1 and "a password has 10 to 1024 characters" in said
    code, said = run("add", "bad name", "--role", "admin", stdin=PASSWORD)
    assert code == 1 and "is not a user name" in said
    assert run("passwd", "an", stdin="another long password")[0] == 0
    code, said = run("list", "--json")
    assert code == 0 and '"role": "brand:3"' in said and PASSWORD not in said
    assert run("remove", "an")[0] == 0
    assert run("remove", "an")[0] == 1


@pytest.mark.parametrize("lang", ["vi", "tl"])
def test_every_console_string_is_translated(lang: str) -> None:
    """Every message of the console's code and templates has a translation."""
    method_map = [("**.py", "python"), ("**/templates/**.html", "jinja2")]
    keywords = {"_": None, "gettext": None, "ngettext": (1, 2)}
    found: set[str] = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(CONSOLE), method_map, keywords=keywords
    ):
        found.update([message] if isinstance(message, str) else list(message))
    assert len(found) > 20
    translate = i18n.gettext(lang)
    missing = sorted(m for m in found if translate(m) == m and m not in UNCHANGED)
    assert missing == [], f"{lang}: {len(missing)} untranslated"


UNCHANGED = {"Password"}
"""Messages whose translation is the English word (Tagalog uses "Password")."""
