"""``/api/v1/brands``, their followers and products.

The same functions as ``relay brand``, ``follower`` and ``product``
(``relay.campaigns.catalog``), so the rules and the refusals'
words are the CLI's: a refusal of the catalogue is a 422 ``refused`` in its
own words.  A brand key sees its own brand and what hangs off it; another
brand's ids are a 404, as if they did not exist (the lookups here are shared
with ``promotions`` and ``campaigns``).  A follower's
address is a customer's real address, which campaigns never show the brand
(README, "Brand campaigns"): only an admin key reads it; a brand key sees its
followers without it.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, BeforeValidator, Field, Strict, StrictBool
from sqlmodel import Session, col, select

from relay.api.auth import Admin, Caller
from relay.api.directory import Body, Email, Name
from relay.api.problems import Kind, Problem
from relay.campaigns import catalog
from relay.campaigns.models import (
    Brand,
    Product,
    Promotion,
)
from relay.core import clock
from relay.core.scopes import Role, Scope
from relay.storage.db import Database
from relay.storage.directory import NotFound

router = APIRouter(tags=["campaigns"])

Text = Annotated[str, Field(max_length=20_000)]


def _text(value: Any) -> Any:
    """JSON carries dates and choices as strings: a number or a boolean there is
    a mistake, which the lax parsing below would otherwise take."""
    if not isinstance(value, str):
        raise ValueError("give it as a string")
    return value


AsText = BeforeValidator(_text)
IsoDateTime = Annotated[datetime, Strict(False), AsText]
"""An ISO 8601 date-time (UTC unless it says)."""
IsoDate = Annotated[date, Strict(False), AsText]
"""An ISO 8601 date, YYYY-MM-DD."""


def db(request: Request) -> Database:
    found: Database = request.app.state.db
    return found


def brands_role(scope: Scope) -> None:
    """What only an admin or a brand may list: a seller key gets a 403."""
    if scope.role is Role.SELLER:
        raise Problem(Kind.FORBIDDEN, "a seller key may not do this")


def visible_brand(s: Session, scope: Scope, brand_id: int) -> Brand:
    """The brand, if the key sees it; else "no brand", in the catalogue's words."""
    brand = s.get(Brand, brand_id) if scope.sees_brand(brand_id) else None
    if brand is None:
        raise NotFound(f"no brand with id {brand_id}")
    return brand


def visible_product(s: Session, scope: Scope, product_id: int) -> Product:
    product = s.get(Product, product_id)
    if product is None or not scope.sees_brand(product.brand_id):
        raise NotFound(f"no product with id {product_id}")
    return product


def visible_promotion(s: Session, scope: Scope, promotion_id: int) -> Promotion:
    promotion = s.get(Promotion, promotion_id)
    product = s.get(Product, promotion.product_id) if promotion is not None else None
    if promotion is None or product is None or not scope.sees_brand(product.brand_id):
        raise NotFound(f"no promotion with id {promotion_id}")
    return promotion


# --- brands -----------------------------------------------------------------------


class NewBrand(Body):
    name: Name
    registered: StrictBool = False
    """In the brand registry."""
    store_page: StrictBool = False


class BrandChange(Body):
    registered: StrictBool | None = None
    store_page: StrictBool | None = None


class BrandOut(BaseModel):
    brand_id: int
    name: str
    registered: bool
    store_page: bool
    followers: int
    """Active followers (not unsubscribed)."""


def _brand_out(s: Session, brand: Brand) -> BrandOut:
    assert brand.id is not None
    return BrandOut(
        brand_id=brand.id,
        name=brand.name,
        registered=brand.registered,
        store_page=brand.store_page,
        followers=catalog.active_followers(s, brand.id),
    )


@router.post("/brands", status_code=201, response_model=BrandOut)
def create_brand(body: NewBrand, request: Request, _scope: Admin) -> BrandOut:
    """Register a brand (``relay brand add``); campaigns need it registered, with a
    store page and followers."""

    def run(s: Session) -> BrandOut:
        brand = catalog.add_brand(
            s, name=body.name, registered=body.registered, store_page=body.store_page
        )
        return _brand_out(s, brand)

    return db(request).write(run)


@router.get("/brands", response_model=list[BrandOut])
def list_brands(request: Request, scope: Caller) -> list[BrandOut]:
    """Every brand for an admin; a brand key's own brand only."""
    brands_role(scope)

    def run(s: Session) -> list[BrandOut]:
        query = select(Brand).order_by(col(Brand.id))
        if not scope.is_admin:
            query = query.where(Brand.id == scope.id)
        return [_brand_out(s, b) for b in s.exec(query).all()]

    return db(request).call(run)


@router.get("/brands/{brand_id}", response_model=BrandOut)
def read_brand(brand_id: int, request: Request, scope: Caller) -> BrandOut:
    return db(request).call(lambda s: _brand_out(s, visible_brand(s, scope, brand_id)))


@router.patch("/brands/{brand_id}", response_model=BrandOut)
def update_brand(brand_id: int, body: BrandChange, request: Request, scope: Admin) -> BrandOut:
    """Registry enrolment or store page on or off (``relay brand update``)."""

    def run(s: Session) -> BrandOut:
        visible_brand(s, scope, brand_id)
        brand = catalog.update_brand(
            s, brand_id, registered=body.registered, store_page=body.store_page
        )
        return _brand_out(s, brand)

    return db(request).write(run)


# --- followers ----------------------------------------------------------------------


class NewFollower(Body):
    email: Email
    name: Annotated[str, Field(max_length=1000)] = ""
    since: IsoDateTime | None = None
    """Followed since (default: now)."""


class FollowerRef(BaseModel):
    follower_id: int
    brand_id: int
    unsubscribed: bool


class FollowerOut(BaseModel):
    follower_id: int
    email: str | None
    """The customer's address: for an admin key only (null for a brand key)."""
    name: str | None
    followed_since: datetime
    unsubscribed_at: datetime | None
    opted_out: bool


@router.post("/brands/{brand_id}/followers", status_code=201, response_model=FollowerRef)
def add_follower(brand_id: int, body: NewFollower, request: Request, scope: Caller) -> FollowerRef:
    """A customer follows the brand (again, after unsubscribing): ``relay follower add``."""

    def run(s: Session) -> FollowerRef:
        visible_brand(s, scope, brand_id)
        f = catalog.follow(s, brand_id, body.email, name=body.name, since=body.since)
        assert f.id is not None
        return FollowerRef(follower_id=f.id, brand_id=brand_id, unsubscribed=False)

    return db(request).write(run)


@router.delete("/brands/{brand_id}/followers/{email}", response_model=FollowerRef)
def remove_follower(brand_id: int, email: str, request: Request, scope: Caller) -> FollowerRef:
    """Unsubscribe a follower from the brand's campaigns, as the link does
    (``relay follower remove``)."""

    def run(s: Session) -> FollowerRef:
        visible_brand(s, scope, brand_id)
        f = catalog.unfollow(s, brand_id, email)
        assert f.id is not None
        return FollowerRef(follower_id=f.id, brand_id=brand_id, unsubscribed=True)

    return db(request).write(run)


@router.get("/brands/{brand_id}/followers", response_model=list[FollowerOut])
def list_followers(brand_id: int, request: Request, scope: Caller) -> list[FollowerOut]:
    """The brand's followers, as ``relay follower list`` (an admin command) shows
    them; for a brand key, without their addresses."""

    def run(s: Session) -> list[FollowerOut]:
        visible_brand(s, scope, brand_id)
        return [
            FollowerOut(
                follower_id=f.id or 0,
                email=b.email if scope.is_admin else None,
                name=b.name,
                followed_since=clock.as_utc(f.followed_since),
                unsubscribed_at=clock.as_utc(f.unsubscribed_at) if f.unsubscribed_at else None,
                opted_out=b.opted_out,
            )
            for f, b in catalog.followers(s, brand_id)
        ]

    return db(request).call(run)


# --- products -----------------------------------------------------------------------


class NewProduct(Body):
    sku: Annotated[str, Field(min_length=1, max_length=200)]
    """The marketplace's product id."""
    title: Name
    price: Annotated[str, Field(max_length=200)] = ""
    """As shown, currency included."""
    description: Text = ""


class ProductOut(BaseModel):
    product_id: int
    brand_id: int
    sku: str
    title: str
    price: str
    description: str


def _product_out(p: Product) -> ProductOut:
    assert p.id is not None
    return ProductOut(
        product_id=p.id,
        brand_id=p.brand_id,
        sku=p.sku,
        title=p.title,
        price=p.price,
        description=p.description,
    )


@router.post("/brands/{brand_id}/products", status_code=201, response_model=ProductOut)
def add_product(brand_id: int, body: NewProduct, request: Request, scope: Caller) -> ProductOut:
    """Add a product to the brand's catalogue (``relay product add``)."""

    def run(s: Session) -> ProductOut:
        visible_brand(s, scope, brand_id)
        p = catalog.add_product(
            s,
            brand_id,
            sku=body.sku,
            title=body.title,
            price=body.price,
            description=body.description,
        )
        return _product_out(p)

    return db(request).write(run)


@router.get("/brands/{brand_id}/products", response_model=list[ProductOut])
def list_products(brand_id: int, request: Request, scope: Caller) -> list[ProductOut]:
    def run(s: Session) -> list[ProductOut]:
        visible_brand(s, scope, brand_id)
        return [_product_out(p) for p in catalog.products(s, brand_id)]

    return db(request).call(run)
