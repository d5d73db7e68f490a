"""What an API key may see: everything (admin), one seller's, or one brand's.

A scope is written ``admin``, ``seller:ID`` or ``brand:ID``, on the command line
(``relay api-key create --scope``) and in the key's row.  Code asks a scope
questions (``sees_seller``) instead of comparing strings, and anything outside
a scope is answered as if it did not exist: a 404, never a hint that it does.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(enum.StrEnum):
    ADMIN = "admin"
    SELLER = "seller"
    BRAND = "brand"


class ScopeError(ValueError):
    """A scope that cannot be read; ``str()`` says what is expected."""


@dataclass(frozen=True, slots=True)
class Scope:
    role: Role
    id: int | None = None
    """The seller's or brand's id; None for admin."""

    @classmethod
    def parse(cls, text: str) -> Scope:
        """``admin``, ``seller:ID`` or ``brand:ID``; raises ScopeError."""
        role, sep, number = text.strip().partition(":")
        if role == Role.ADMIN and not sep:
            return cls(Role.ADMIN)
        if role in (Role.SELLER, Role.BRAND) and number.isascii() and number.isdigit():
            value = int(number)
            if 0 < value < 2**63:
                return cls(Role(role), value)
        raise ScopeError(f"{text!r} is not a scope: use admin, seller:ID or brand:ID")

    def __str__(self) -> str:
        return self.role.value if self.id is None else f"{self.role.value}:{self.id}"

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def sees_seller(self, seller_id: int) -> bool:
        return self.is_admin or (self.role is Role.SELLER and self.id == seller_id)

    def sees_brand(self, brand_id: int) -> bool:
        return self.is_admin or (self.role is Role.BRAND and self.id == brand_id)
