"""Signing in and out, the language picker, and the home page of each role."""

from __future__ import annotations

import threading

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from relay.console import accounts, i18n, sessions
from relay.console.accounts import Account, ConsoleRole
from relay.console.web import (
    LOGIN_CSRF,
    Refusal,
    Visitor,
    db_of,
    need,
    new_login_csrf,
    posted,
    redirect,
    render,
    safe_next,
    set_cookie,
    visitor,
)
from relay.core.window import SlidingWindow

router = APIRouter(include_in_schema=False)
Who = Depends(visitor)


class LoginLimit:
    """Failed sign-ins: at most 5 per user name and 30 per address in 15 minutes.
    Past either, sign-in is refused (429) without checking the password."""

    def __init__(self) -> None:
        self.per_user = SlidingWindow(5, 900)
        self.per_address = SlidingWindow(30, 900)
        self._lock = threading.Lock()

    def blocked(self, username: str, address: str) -> bool:
        with self._lock:
            return self.per_user.exceeded(username.lower()) or self.per_address.exceeded(address)

    def failed(self, username: str, address: str) -> None:
        with self._lock:
            self.per_user.record(username.lower())
            self.per_address.record(address)


def home_of(account: Account) -> str:
    if account.role is ConsoleRole.BRAND:
        return "/brand/campaigns"
    if account.role is ConsoleRole.SELLER:
        return "/responses"
    return "/review"


@router.get("/")
async def home(request: Request, who: Visitor = Who) -> Response:
    account = need(request, who, lambda _a: True)
    return redirect(home_of(account))


@router.get("/login")
async def login_page(request: Request, who: Visitor = Who, next: str = "/") -> Response:
    token = new_login_csrf()
    response = render(request, who, "login.html", login_csrf=token, next=safe_next(next), error="")
    set_cookie(response, request, LOGIN_CSRF, token, max_age=3600)
    return response


@router.post("/login")
async def login(request: Request, who: Visitor = Who) -> Response:
    form = await request.form(max_files=0, max_fields=10)
    username = str(form.get("username", ""))[:100]
    password = str(form.get("password", ""))[: accounts.MAX_PASSWORD]
    next_path = safe_next(str(form.get("next", "/")))
    expected = request.cookies.get(LOGIN_CSRF, "")
    if not expected or not sessions.same(expected, str(form.get("csrf", ""))):
        raise Refusal(403, who._("The form expired or did not come from this site. Try again."))
    address = request.client.host if request.client else "-"
    limit: LoginLimit = request.app.state.login_limit
    if limit.blocked(username, address):
        raise Refusal(429, who._("Too many failed sign-ins. Wait a few minutes and try again."))
    db = db_of(request)
    account = await run_in_threadpool(db.write, accounts.authenticate, username, password)
    if account is None:
        limit.failed(username, address)
        token = new_login_csrf()
        response = render(
            request,
            who,
            "login.html",
            status=401,
            login_csrf=token,
            next=next_path,
            error=who._("Wrong user name or password."),
        )
        set_cookie(response, request, LOGIN_CSRF, token, max_age=3600)
        return response
    token = await run_in_threadpool(db.write, sessions.start, account)
    signed_in = redirect(next_path if next_path != "/" else home_of(account))
    lifetime = int(sessions.LIFETIME.total_seconds())
    set_cookie(signed_in, request, sessions.COOKIE, token, max_age=lifetime)
    signed_in.delete_cookie(LOGIN_CSRF, path="/")
    return signed_in


@router.post("/logout")
async def logout(request: Request, who: Visitor = Who) -> Response:
    need(request, who, lambda _a: True)
    await posted(request, who)
    if who.token:
        await run_in_threadpool(db_of(request).write, sessions.end, who.token)
    response = redirect("/login")
    response.delete_cookie(sessions.COOKIE, path="/")
    return response


@router.get("/language")
async def language(request: Request, lang: str = i18n.DEFAULT, next: str = "/") -> Response:
    """The language picker (a GET form: choosing a language changes nothing else)."""
    response = redirect(safe_next(next))
    if lang in i18n.LANGUAGES:
        set_cookie(response, request, i18n.COOKIE, lang, max_age=365 * 86400)
    return response
