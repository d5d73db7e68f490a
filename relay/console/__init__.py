"""The web console (README, "The web console"): brands, moderators and sellers
in a browser, in English, Vietnamese or Tagalog, on the API's application at ``/``.

- ``accounts``: console users, roles and Argon2id password hashes;
- ``sessions``: session cookies (only their hashes kept) and CSRF tokens;
- ``i18n``: the gettext catalogues and the locale's dates and numbers;
- ``web``: what every page shares: the visitor, rendering, the security headers;
- ``pages``: sign-in, sign-out, the language picker, each role's home;
- ``brand: a brand's campaigns (with ``month``, the start-date calendar), followers,
  products and promotions; ``review``: the moderators' campaign review queue;
- ``wording``: the campaign rules' English sentences in the reader's language;
- ``quarantine_pages``, ``archive_pages``, ``rules_pages``, ``health_page``: the
  moderators' pages (``mailview``: a message as text only; ``ruletester``: the
  rules tried on a message without sending or writing; ``modlabels``: the
  relay's English words in the reader's language);
- ``responses``: the seller's response-time dashboard.

May import: everything the API may, and ``relay.api``.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from relay.console import (
    archive_pages,
    brand,
    health_page,
    pages,
    quarantine_pages,
    responses,
    review,
    rules_pages,
)
from relay.console.web import (
    Refusal,
    SecurityHeaders,
    SignIn,
    redirect,
    render,
    sign_in_url,
    visitor,
)

STATIC = Path(__file__).resolve().parent / "static"
ROUTERS = (
    pages.router,
    brand.router,
    review.router,
    quarantine_pages.router,
    archive_pages.router,
    rules_pages.router,
    health_page.router,
    responses.router,
)
"""Every router of the console, mounted at ``/``."""


def install(app: FastAPI) -> None:
    """Serve the console on ``app`` (the API's application)."""
    app.state.login_limit = pages.LoginLimit()
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Refusal)
        who = await visitor(request)
        return render(request, who, "error.html", status=exc.status, message=exc.message)

    async def sign_in(_request: Request, exc: Exception) -> Any:
        assert isinstance(exc, SignIn)
        return redirect(sign_in_url(exc.next_path))

    api_http = app.exception_handlers[StarletteHTTPException]

    async def http(request: Request, exc: Exception) -> Response:
        """A page for the console's paths (an unknown one: 404); the API keeps its problems."""
        if request.url.path.startswith("/api/"):
            answer = api_http(request, exc)
            return await answer if inspect.isawaitable(answer) else answer
        assert isinstance(exc, StarletteHTTPException)
        who = await visitor(request)
        message = who._("There is no such page.") if exc.status_code == 404 else str(exc.detail)
        return render(request, who, "error.html", status=exc.status_code, message=message)

    app.add_exception_handler(Refusal, refused)
    app.add_exception_handler(SignIn, sign_in)
    app.add_exception_handler(StarletteHTTPException, http)
    app.add_middleware(SecurityHeaders)
