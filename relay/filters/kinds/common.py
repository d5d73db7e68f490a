"""Settings parsing shared by the match kinds: small, strict, with clear errors."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def looks_at(where: str, places: tuple[str, ...]) -> bool:
    """Whether a rule limited to ``places`` (subject, body) looks at ``where``."""
    return ("subject" in places) if where == "subject" else ("body" in places)


def places(view_texts: list[tuple[str, str]], where: tuple[str, ...]) -> list[tuple[str, str]]:
    """The (where, text) pairs a rule limited to ``where`` looks at."""
    want_subject = "subject" in where
    want_body = "body" in where
    return [
        (w, t)
        for w, t in view_texts
        if (w == "subject" and want_subject) or (w != "subject" and want_body)
    ]


def as_mapping(value: Any, key: str) -> Any:
    """A bare list (or string) is shorthand for ``{key: value}``."""
    if isinstance(value, str):
        return {key: [value]}
    if isinstance(value, list):
        return {key: value}
    return value


def excerpt(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
