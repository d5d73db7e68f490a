"""What every console page shares: who is asking, in which language, safely.

The console is server-rendered HTML (Jinja2, autoescaped) on the API's
application, at ``/``.  Every page is rendered by ``render``, which passes the
user, the language's ``_`` and formats, and the session's CSRF token; every
response carries a Content-Security-Policy with no inline script and no
outside origin (``SecurityHeaders``), so that nothing that came from mail or
from a user can run, even if it slipped past the escaping.

``visitor`` reads the session cookie (a database read, in the thread pool);
``need`` sends a visitor who is not signed in to the sign-in page and answers
403 to one whose role may not see the page; ``posted`` reads a form and checks
its CSRF token.  The decisions' log names the console user who made each one.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relay.console import i18n, sessions
from relay.console.accounts import Account
from relay.storage.db import Database

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
LOGIN_CSRF = "relay_login_csrf"
"""Before a session exists, the sign-in form's CSRF token is a cookie's (double submit)."""

ENV = Environment(
    loader=PackageLoader("relay.console", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


class SecurityHeaders:
    """The console's headers on every answer but the API's own documentation page
    (its Swagger UI is the framework's, with inline script)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/api/v1/docs"):
            await self.app(scope, receive, send)
            return

        async def headed(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [
                    (k.lower().encode(), v.encode())
                    for k, v in HEADERS.items()
                    if k.lower().encode() not in present
                ]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, headed)


@dataclass(frozen=True, slots=True)
class Visitor:
    lang: str
    account: Account | None
    csrf: str | None
    token: str | None

    @property
    def _(self) -> Callable[[str], str]:
        return i18n.gettext(self.lang)


class Refusal(Exception):
    """Answer with an error page (403, 404, 409, 422, 429) saying ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class SignIn(Exception):
    """The visitor must sign in first (then come back to ``next``)."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def db_of(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def visitor(request: Request) -> Visitor:
    lang = i18n.negotiate(request.cookies.get(i18n.COOKIE), request.headers.get("accept-language"))
    token = request.cookies.get(sessions.COOKIE)
    signed = None
    if token:
        signed = await run_in_threadpool(db_of(request).call, sessions.find, token)
    if signed is None:
        return Visitor(lang, None, None, None)
    return Visitor(lang, signed.account, signed.csrf, token)


def need(request: Request, who: Visitor, allowed: Callable[[Account], bool]) -> Account:
    """The signed-in account, if ``allowed``; else sign in, or a 403."""
    if who.account is None:
        raise SignIn(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    if not allowed(who.account):
        raise Refusal(403, who._("This page is not for your account."))
    return who.account


async def posted(request: Request, who: Visitor) -> FormData:
    """The form, once its CSRF token matched the session's (else a 403)."""
    form = await request.form(max_files=5, max_fields=200, max_part_size=2 * 1024 * 1024)
    given = form.get("csrf")
    if who.csrf is None or not isinstance(given, str) or not sessions.same(who.csrf, given):
        raise Refusal(403, who._("The form expired or did not come from this site. Try again."))
    return form


def render(
    request: Request, who: Visitor, template: str, status: int = 200, **context: Any
) -> HTMLResponse:
    page = ENV.get_template(template).render(
        request=request,
        user=who.account,
        csrf=who.csrf or "",
        lang=who.lang,
        languages=i18n.LANGUAGES,
        _=i18n.gettext(who.lang),
        ngettext=i18n.ngettext(who.lang),
        fmt=i18n.Formats(who.lang),
        path=request.url.path,
        **context,
    )
    return HTMLResponse(page, status_code=status)


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def safe_next(value: str | None) -> str:
    """A path on this site to go back to (never another site's URL)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def sign_in_url(next_path: str) -> str:
    return "/login?next=" + quote(next_path, safe="/")


def new_login_csrf() -> str:
    return secrets.token_urlsafe(24)


def set_cookie(response: Response, request: Request, name: str, value: str, **kw: Any) -> None:
    """``HttpOnly`` and ``SameSite=Lax`` always; ``Secure`` behind TLS."""
    secure = request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"
    response.set_cookie(name, value, httponly=True, samesite="lax", secure=secure, path="/", **kw)
