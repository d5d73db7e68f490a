"""The API as an ASGI application: FastAPI, under ``/api/v1/``.

``create_app`` is what ``relay serve`` and ``relay api`` serve
(``relay.api.server``).  Routes are plain functions (``def``), which the
framework runs in its thread pool: database work and JSON building never run
on the event loop that reads requests.  The OpenAPI document is generated from
the pydantic models, at ``/api/v1/openapi.json``, and browsable at
``/api/v1/docs``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relay.api import (
    archive,
    campaigns,
    catalog,
    directory,
    problems,
    promotions,
    responses,
    webhooks,
)
from relay.api.auth import Admin, KeyCache, RateLimit
from relay.api.problems import Kind, Problem
from relay.core.config import RelayConfig
from relay.ops.health import check
from relay.storage.db import Database

PREFIX = "/api/v1"


class BodyLimit:
    """Refuses a body over ``max_bytes`` with 413: at once when Content-Length
    says so, else as soon as the bytes read pass it (a chunked body has none)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            problem = Problem(Kind.TOO_LARGE, f"at most {self.max_bytes} bytes")
            await problems.response(problem)(scope, receive, send)
            return
        seen = 0
        too_big = False

        async def limited() -> Message:
            # Past the limit the app is told the client left, and its answer
            # (a 400 for a body it could not read) is replaced by the 413.
            nonlocal seen, too_big
            if too_big:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    too_big = True
                    return {"type": "http.disconnect"}
            return message

        async def answer(message: Message) -> None:
            if not too_big:
                await send(message)

        try:
            await self.app(scope, limited, answer)
        except Exception:
            if not too_big:
                raise
        if too_big:
            problem = Problem(Kind.TOO_LARGE, f"at most {self.max_bytes} bytes")
            await problems.response(problem)(scope, receive, send)


ops = APIRouter()


@ops.get("/health", tags=["ops"])
def health(request: Request, _scope: Admin) -> dict[str, Any]:
    """What ``/healthz`` and ``relay status`` say: database, downstream, queue."""
    return check(request.app.state.config, request.app.state.db).as_dict()


ROUTERS = (
    directory.router,
    archive.router,
    responses.router,
    catalog.router,
    promotions.router,
    campaigns.router,
    webhooks.router,
    ops,
)
"""Every router of the API, mounted under ``PREFIX``."""


def create_app(config: RelayConfig, db: Database) -> FastAPI:
    app = FastAPI(
        title="Marketplace mail relay",
        version="1",
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=f"{PREFIX}/docs",
        redoc_url=None,
    )
    app.state.config = config
    app.state.db = db
    app.state.rate_limit = RateLimit(config.api.requests_per_minute)
    app.state.keys = KeyCache(db)
    problems.install(app)
    for router in ROUTERS:
        app.include_router(router, prefix=PREFIX)

    app.add_middleware(BodyLimit, max_bytes=config.api.max_body_bytes)
    return app
