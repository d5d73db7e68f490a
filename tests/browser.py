"""A real headless Chromium (Debian's chromium and chromium-driver), driven by Selenium.

``make test`` installs both packages when they are missing; nothing is
downloaded at run time.  Each test gets a fresh browser profile's cookies;
``shot`` saves a screenshot under ``tests/artifacts/`` (kept as the test's
artifact, and looked at), and ``console_errors`` reads what the page's
JavaScript console said: a page that ran injected script, or was refused
something by its Content-Security-Policy, says it there.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests.helpers import relay_cli

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "console"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
PASSWORD = "a long console password"


def add_user(config: Path, username: str, role: str, password: str = PASSWORD) -> None:
    """``relay console user add``, as an operator makes a user."""
    result = relay_cli(
        "-c", str(config), "console", "user", "add", username, "--role", role, stdin=password
    )
    assert result.code == 0, result.err


class Browser:
    def __init__(self, driver: webdriver.Chrome) -> None:
        self.driver = driver
        self.base = ""

    def go(self, path: str) -> None:
        self.driver.get(self.base + path)

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def wait_for(self, css: str, timeout: float = 10) -> WebElement:
        element: WebElement = WebDriverWait(self.driver, timeout).until(
            expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css))
        )
        return element

    def submit(self, css: str, timeout: float = 15) -> None:
        """Click what ``css`` finds (a link or a form's button) and wait for the
        page it leads to, loaded: an element of the old page may have the same
        name, so waiting for it is no proof that the new one is there.  The old
        page is marked in its window; a new page has a new window object."""
        self.driver.execute_script("window.relayOldPage = true")
        self.find(css).click()

        def loaded(driver: webdriver.Chrome) -> bool:
            return bool(
                driver.execute_script(
                    "return window.relayOldPage !== true && document.readyState === 'complete'"
                )
            )

        WebDriverWait(self.driver, timeout, ignored_exceptions=(WebDriverException,)).until(loaded)

    def text(self) -> str:
        return str(self.driver.find_element(By.TAG_NAME, "body").text)

    def sign_in(self, username: str, password: str = PASSWORD) -> None:
        self.go("/login")
        self.find("#username").send_keys(username)
        self.find("#password").send_keys(password)
        self.find("#sign-in").click()
        self.wait_for("form.logout")

    def sign_out(self) -> None:
        self.find("form.logout button").click()
        self.wait_for("#sign-in")

    def language(self, code: str) -> None:
        """Pick a language with the page's own picker."""
        path = self.driver.execute_script("return location.pathname + location.search")
        self.go(f"/language?lang={code}&next={path}")

    def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def console_errors(self) -> list[dict[str, Any]]:
        """Script errors and Content-Security-Policy refusals the page logged
        (a 404 of a page the test opened on purpose is the network's, not these)."""
        entries: list[dict[str, Any]] = self.driver.get_log("browser")
        return [
            e
            for e in entries
            if e.get("level") in ("SEVERE", "WARNING")
            and (e.get("source") != "network" or "Content Security Policy" in e.get("message", ""))
        ]

    def alert_shown(self) -> bool:
        try:
            self.driver.switch_to.alert.dismiss()
        except Exception:
            return False
        return True


def keep(shot: Path, name: str) -> None:
    """A screenshot the README shows: copied to docs/console/ only when
    ``RELAY_UPDATE_DOCS=1`` (a normal run leaves the working tree as it was)."""
    if os.environ.get("RELAY_UPDATE_DOCS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOCS / (name if name.endswith(".png") else f"{name}.png"))


@pytest.fixture(scope="session")
def chromium() -> Iterator[webdriver.Chrome]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip(
            "Debian's chromium and chromium-driver are not installed (make test installs them)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="relay-chromium-")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        f"--user-data-dir={profile}",
        "--lang=en-US",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def browser(chromium: webdriver.Chrome) -> Iterator[Browser]:
    """The session's Chromium with no cookies, and its console log emptied."""
    chromium.delete_all_cookies()
    chromium.get("about:blank")
    chromium.get_log("browser")
    yield Browser(chromium)
    chromium.delete_all_cookies()
