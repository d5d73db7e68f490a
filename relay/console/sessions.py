"""Signed-in browsers: a random cookie token, its hash in the database, a CSRF token.

The cookie holds 256 random bits; the database keeps only their SHA-256, so a
copy of the database cannot be replayed as a cookie.  Each session has its own
CSRF token, which every form of the console carries and every POST must send
back (the synchronizer-token pattern: SameSite cookies alone leave older
browsers and same-site subdomains open).  A session lasts ``LIFETIME`` from
sign-in; signing out, a password change and removing the user end it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete
from sqlmodel import Session, col, select

from relay.console.accounts import Account, by_id
from relay.core.clock import as_utc
from relay.storage.models import ConsoleSession, utcnow

COOKIE = "relay_console"
LIFETIME = timedelta(hours=12)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True, slots=True)
class Signed:
    account: Account
    csrf: str


def start(session: Session, account: Account) -> str:
    """A new session for ``account``; returns the cookie's token."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(
        ConsoleSession(
            token_hash=_hash(token),
            user_id=account.id,
            csrf=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=now + LIFETIME,
        )
    )
    session.execute(delete(ConsoleSession).where(col(ConsoleSession.expires_at) < now))
    return token


def find(session: Session, token: str) -> Signed | None:
    """The live session the cookie names, or None."""
    if not token or len(token) > 100:
        return None
    row = session.exec(
        select(ConsoleSession).where(ConsoleSession.token_hash == _hash(token))
    ).first()
    if row is None or as_utc(row.expires_at) <= utcnow():
        return None
    account = by_id(session, row.user_id)
    return Signed(account, row.csrf) if account else None


def end(session: Session, token: str) -> None:
    session.execute(delete(ConsoleSession).where(col(ConsoleSession.token_hash) == _hash(token)))


def same(expected: str, given: str | None) -> bool:
    """A CSRF token check, in constant time."""
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())
