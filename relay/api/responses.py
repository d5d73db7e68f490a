"""``/api/v1/responses``: how fast sellers answer their buyers.

The twin of ``relay responses``: the same query (``relay.ops.response_times``),
so the figures are those ``relay responses --json`` prints.  A seller key gets
its own figures only (another seller's id is a 404, as if it did not exist); a
brand key gets 403.  The figures name sellers, never a buyer.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from relay.api.archive import date_param
from relay.api.auth import Caller
from relay.api.problems import Kind, Problem
from relay.core import clock
from relay.core.scopes import Role
from relay.ops import response_times
from relay.storage.db import Database

router = APIRouter()


class SellerResponsesOut(BaseModel):
    """One seller's figures (README, "Response times")."""

    seller_id: int
    seller_name: str
    buyer_messages: int
    within_24h: int
    late: int
    open: int
    open_late: int
    no_response_needed: int
    share_within_24h: float | None
    median_seconds: float | None
    """Over the answered messages; null when none was answered."""
    p90_seconds: float | None


@router.get("/responses", response_model=list[SellerResponsesOut], tags=["responses"])
def responses(
    request: Request,
    scope: Caller,
    seller: Annotated[int | None, Query(ge=1, description="Only this seller.")] = None,
    since: Annotated[
        str | None,
        Query(description="Only buyer messages sent at or after: YYYY-MM-DD or ISO datetime, UTC."),
    ] = None,
) -> list[SellerResponsesOut]:
    """Sellers' response times: buyer messages answered within 24 h, late, open;
    median and 90th percentile, in seller id order (``relay responses``).
    Without ``seller`` an admin gets every seller with buyer messages, a seller
    key its own figures alone."""
    if scope.role is Role.BRAND:
        raise Problem(Kind.FORBIDDEN, f"a {scope.role.value} key may not do this")
    if not scope.is_admin:
        if seller is not None and not scope.sees_seller(seller):
            raise Problem(Kind.NOT_FOUND, f"no seller with id {seller}")
        seller = scope.id
    start = date_param("since", since)
    db: Database = request.app.state.db
    figures = db.call(response_times.response_stats, now=clock.now(), seller_id=seller, since=start)
    return [SellerResponsesOut.model_validate(f.as_json()) for f in figures]
