"""The decisions' log in the API: who a request's decision is recorded as, and
how a subject's decisions are answered (``relay.storage.decisions``)."""

from __future__ import annotations

from datetime import datetime

from fastapi import Request
from pydantic import BaseModel

from relay.storage import decisions
from relay.storage.decisions import Action


class DecisionOut(BaseModel):
    """One moderation or quarantine decision: when, by whom, what."""

    at: datetime
    actor: str
    """``console:USERNAME``, ``api-key:ID`` or ``cli`` for an admin key; else
    ``moderation``."""
    action: Action
    detail: str


def actor(request: Request) -> str:
    """The API key of the request (``auth.caller`` put its id on the request)."""
    key_id: int = request.state.api_key_id
    return decisions.api_key_actor(key_id)
