"""Errors as ``application/problem+json`` (RFC 9457), and nothing else.

Every refusal of the API is a problem object with ``type``, ``title``,
``status`` and ``detail``; a validation problem adds ``errors``, one entry per
field (``{"field": "emails.0", "problem": "..."}``).  ``type`` is a relative
URI under ``/api/v1/problems/`` whose last segment is the ``Kind``, so that a
client can branch on it.  An unexpected exception is logged and answered 500
with no detail: no traceback, no internals ever reach a client.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from relay.storage.db import StorageUnavailable
from relay.storage.directory import Conflict, DirectoryError, NotFound

log = logging.getLogger("relay.api")

MEDIA_TYPE = "application/problem+json"


class Kind(enum.StrEnum):
    """The problem types; each has its HTTP status and title."""

    MALFORMED = "malformed-request"
    VALIDATION = "validation-error"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not-found"
    METHOD = "method-not-allowed"
    CONFLICT = "conflict"
    REFUSED = "refused"
    TOO_LARGE = "payload-too-large"
    RATE_LIMITED = "rate-limited"
    UNAVAILABLE = "storage-unavailable"
    INTERNAL = "internal-error"

    @property
    def status(self) -> int:
        return _STATUS[self]

    @property
    def heading(self) -> str:
        """The problem's ``title`` (RFC 9457)."""
        return _TITLE[self]


_STATUS = {
    Kind.MALFORMED: 400,
    Kind.VALIDATION: 422,
    Kind.UNAUTHORIZED: 401,
    Kind.FORBIDDEN: 403,
    Kind.NOT_FOUND: 404,
    Kind.METHOD: 405,
    Kind.CONFLICT: 409,
    Kind.REFUSED: 422,
    Kind.TOO_LARGE: 413,
    Kind.RATE_LIMITED: 429,
    Kind.UNAVAILABLE: 503,
    Kind.INTERNAL: 500,
}
_TITLE = {
    Kind.MALFORMED: "The request cannot be read",
    Kind.VALIDATION: "The request has invalid fields",
    Kind.UNAUTHORIZED: "A valid API key is required",
    Kind.FORBIDDEN: "This key may not do that",
    Kind.NOT_FOUND: "Not found",
    Kind.METHOD: "Method not allowed",
    Kind.CONFLICT: "It conflicts with what exists",
    Kind.REFUSED: "The request breaks a rule",
    Kind.TOO_LARGE: "The request body is too large",
    Kind.RATE_LIMITED: "Too many requests",
    Kind.UNAVAILABLE: "The database is not available",
    Kind.INTERNAL: "Internal error",
}


class Problem(Exception):
    """Raised by a route to answer with a problem of ``kind``."""

    def __init__(
        self,
        kind: Kind,
        detail: str,
        *,
        errors: Sequence[dict[str, str]] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.errors = list(errors)
        self.headers = headers or {}


def response(problem: Problem) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"/api/v1/problems/{problem.kind.value}",
        "title": problem.kind.heading,
        "status": problem.kind.status,
        "detail": problem.detail,
    }
    if problem.errors:
        body["errors"] = problem.errors
    headers = dict(problem.headers)
    if problem.kind is Kind.UNAUTHORIZED:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return JSONResponse(
        body, status_code=problem.kind.status, media_type=MEDIA_TYPE, headers=headers
    )


def from_directory(exc: DirectoryError) -> Problem:
    """The directory's refusals, in its own words (the same as the CLI prints)."""
    if isinstance(exc, NotFound):
        return Problem(Kind.NOT_FOUND, str(exc))
    if isinstance(exc, Conflict):
        return Problem(Kind.CONFLICT, str(exc))
    return Problem(Kind.REFUSED, str(exc))


def _field(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:] if parts[0] == "body" else parts
    return ".".join(parts) or "body"


def from_validation(exc: RequestValidationError) -> Problem:
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        return Problem(Kind.MALFORMED, "the body is not valid JSON")
    listed = [
        {"field": _field(e.get("loc", ())), "problem": str(e.get("msg", "invalid"))} for e in errors
    ]
    fields = ", ".join(sorted({item["field"] for item in listed}))
    return Problem(Kind.VALIDATION, f"invalid fields: {fields}", errors=listed)


def install(app: FastAPI) -> None:
    """Make every error of ``app`` a problem response."""

    async def problem(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return response(exc)

    async def directory(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DirectoryError)
        return response(from_directory(exc))

    async def validation(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return response(from_validation(exc))

    async def http(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        kind = {404: Kind.NOT_FOUND, 405: Kind.METHOD, 413: Kind.TOO_LARGE}.get(
            exc.status_code, Kind.MALFORMED
        )
        detail = "no such resource" if kind is Kind.NOT_FOUND else str(exc.detail)
        return response(Problem(kind, detail))

    async def unavailable(_request: Request, exc: Exception) -> JSONResponse:
        log.warning("API: database unavailable: %s", exc)
        return response(Problem(Kind.UNAVAILABLE, "try again later", headers={"Retry-After": "5"}))

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("API: %s %s failed", request.method, request.url.path, exc_info=exc)
        return response(Problem(Kind.INTERNAL, "the request failed; it is logged"))

    app.add_exception_handler(Problem, problem)
    app.add_exception_handler(DirectoryError, directory)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(StarletteHTTPException, http)
    app.add_exception_handler(StorageUnavailable, unavailable)
    app.add_exception_handler(Exception, unexpected)
