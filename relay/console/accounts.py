"""Console users: who they are, what they may do, how their passwords are kept.

A user has one role: ``admin`` (everything), ``moderator`` (campaign review,
the quarantine, the archive, the rules), ``brand:ID`` (that brand's campaigns,
followers, products and promotions) or ``seller:ID`` (that seller's response
times).  Passwords are hashed with Argon2id (argon2-cffi's defaults: 64 MiB,
3 passes), so that a copy of the database does not give them away; users are
made, changed and removed with ``relay console user``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete
from sqlmodel import Session, col, select

from relay.core.scopes import Role, Scope
from relay.storage.directory import Conflict, DirectoryError, NotFound
from relay.storage.models import ConsoleSession, ConsoleUser

_hasher = PasswordHasher()
_USERNAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
_DUMMY_HASH = _hasher.hash("a password nobody has")
"""Verified against when the user does not exist, so that an unknown name takes
as long to refuse as a wrong password (no way to list users by timing)."""


class ConsoleRole(enum.StrEnum):
    ADMIN = "admin"
    MODERATOR = "moderator"
    BRAND = "brand"
    SELLER = "seller"


@dataclass(frozen=True, slots=True)
class Account:
    """A signed-in user: name and role (with the brand's or seller's id)."""

    id: int
    username: str
    role: ConsoleRole
    subject_id: int | None = None

    @classmethod
    def parse_role(cls, text: str) -> tuple[ConsoleRole, int | None]:
        """``admin``, ``moderator``, ``brand:ID`` or ``seller:ID``; raises ValueError."""
        name, sep, number = text.strip().partition(":")
        if name in (ConsoleRole.ADMIN, ConsoleRole.MODERATOR) and not sep:
            return ConsoleRole(name), None
        numbered = number.isascii() and number.isdigit() and 0 < int(number) < 2**63
        if name in (ConsoleRole.BRAND, ConsoleRole.SELLER) and numbered:
            return ConsoleRole(name), int(number)
        raise ValueError(f"{text!r} is not a role: use admin, moderator, brand:ID or seller:ID")

    @property
    def role_text(self) -> str:
        return (
            self.role.value if self.subject_id is None else f"{self.role.value}:{self.subject_id}"
        )

    @property
    def moderates(self) -> bool:
        """Reviews campaigns and promotions, the quarantine, the archive, the rules."""
        return self.role in (ConsoleRole.ADMIN, ConsoleRole.MODERATOR)

    @property
    def scope(self) -> Scope:
        """What the user may read, in the API's terms (the same visibility rules)."""
        if self.role is ConsoleRole.BRAND:
            return Scope(Role.BRAND, self.subject_id)
        if self.role is ConsoleRole.SELLER:
            return Scope(Role.SELLER, self.subject_id)
        return Scope(Role.ADMIN)

    @property
    def actor(self) -> str:
        """How the decisions' log names this user."""
        return f"console:{self.username}"


def _account(user: ConsoleUser) -> Account:
    role, subject = Account.parse_role(user.role)
    assert user.id is not None
    return Account(user.id, user.username, role, subject)


def check_username(name: str) -> str:
    if not _USERNAME.match(name):
        raise DirectoryError(
            f"{name!r} is not a user name: 1 to 64 letters, digits, '.', '_', '@' or '-'"
        )
    return name


def check_password(password: str) -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise DirectoryError(
            f"a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters"
            f" (this one has {len(password)})"
        )
    return password


def add(session: Session, username: str, role: str, password: str) -> Account:
    """A new user; raises DirectoryError (Conflict if the name is taken)."""
    check_username(username)
    try:
        parsed, subject = Account.parse_role(role)
    except ValueError as exc:
        raise DirectoryError(str(exc)) from None
    check_password(password)
    if session.exec(select(ConsoleUser).where(ConsoleUser.username == username)).first():
        raise Conflict(f"user {username} already exists")
    role_text = parsed.value if subject is None else f"{parsed.value}:{subject}"
    user = ConsoleUser(username=username, role=role_text, password_hash=_hasher.hash(password))
    session.add(user)
    session.flush()
    return _account(user)


def _user(session: Session, username: str) -> ConsoleUser:
    user = session.exec(select(ConsoleUser).where(ConsoleUser.username == username)).first()
    if user is None:
        raise NotFound(f"no user {username}")
    return user


def set_password(session: Session, username: str, password: str) -> Account:
    """A new password; every session of the user ends (sign in again)."""
    user = _user(session, username)
    user.password_hash = _hasher.hash(check_password(password))
    session.add(user)
    session.execute(delete(ConsoleSession).where(col(ConsoleSession.user_id) == user.id))
    return _account(user)


def remove(session: Session, username: str) -> Account:
    user = _user(session, username)
    account = _account(user)
    session.execute(delete(ConsoleSession).where(col(ConsoleSession.user_id) == user.id))
    session.delete(user)
    return account


def listed(session: Session) -> list[Account]:
    users = session.exec(select(ConsoleUser).order_by(col(ConsoleUser.username))).all()
    return [_account(u) for u in users]


def authenticate(session: Session, username: str, password: str) -> Account | None:
    """The account if the password is right, else None (as slowly either way)."""
    user = session.exec(select(ConsoleUser).where(ConsoleUser.username == username)).first()
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
        session.add(user)
    return _account(user)


def by_id(session: Session, user_id: int) -> Account | None:
    user = session.get(ConsoleUser, user_id)
    return _account(user) if user else None
