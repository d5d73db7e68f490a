"""API keys: made, listed and revoked by ``relay api-key``, checked on each request.

A key is ``rk_`` and 43 characters of ``secrets.token_urlsafe`` (256 bits).  The
database keeps its SHA-256 only, so the key is shown once, when it is made; a
request's key is hashed and looked up by that hash.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy
from sqlmodel import Session, col, select

from relay.core.scopes import Scope
from relay.storage.directory import NotFound, checked_name
from relay.storage.models import ApiKey, utcnow

PREFIX = "rk_"


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True, slots=True)
class NewKey:
    id: int
    key: str
    """Shown this once; only its hash is kept."""
    scope: Scope
    name: str


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: int
    name: str
    scope: str
    created_at: datetime
    revoked_at: datetime | None


def create(session: Session, *, scope: Scope, name: str = "") -> NewKey:
    """A new key for ``scope``; raises DirectoryError for a bad name."""
    name = checked_name("key name", name) if name.strip() else ""
    key = PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name, scope=str(scope), key_hash=key_hash(key))
    session.add(row)
    session.flush()
    assert row.id is not None
    return NewKey(row.id, key, scope, name)


def listed(session: Session) -> list[KeyInfo]:
    rows = session.exec(select(ApiKey).order_by(col(ApiKey.id))).all()
    return [KeyInfo(r.id or 0, r.name, r.scope, r.created_at, r.revoked_at) for r in rows]


def revoke(session: Session, key_id: int) -> KeyInfo:
    """Revoke a key (at once: the next request with it gets 401); raises NotFound."""
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFound(f"no API key with id {key_id}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(row)
    return KeyInfo(key_id, row.name, row.scope, row.created_at, row.revoked_at)


def scope_of(session: Session, key: str) -> tuple[int, Scope] | None:
    """The id and scope of a valid, unrevoked key, or None."""
    if not key.startswith(PREFIX) or len(key) > 200:
        return None
    row = session.exec(select(ApiKey).where(ApiKey.key_hash == key_hash(key))).first()
    if row is None or row.revoked_at is not None or row.id is None:
        return None
    return row.id, Scope.parse(row.scope)


_REVOKED_AT = sqlalchemy.select(ApiKey.__table__.c.revoked_at).where(  # type: ignore[attr-defined]
    ApiKey.__table__.c.id == sqlalchemy.bindparam("key_id")  # type: ignore[attr-defined]
)


def check_unrevoked(session: Session, key_id: int) -> None:
    """Raises Revoked unless key ``key_id`` exists and is not revoked.

    For a write job whose caller's key came from ``auth.KeyCache``: in the
    job's transaction, so that no write is made with a key whose revocation
    was committed before it."""
    row = session.connection().execute(_REVOKED_AT, {"key_id": key_id}).first()
    if row is None or row[0] is not None:
        raise Revoked(key_id)


class Revoked(Exception):
    """The key was revoked (or deleted) since the caller's scope was read."""

    def __init__(self, key_id: int) -> None:
        super().__init__(f"API key {key_id} is revoked")
        self.key_id = key_id
