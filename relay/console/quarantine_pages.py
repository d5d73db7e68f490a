"""The quarantine: held messages, a safe preview of each, release and reject.

The decisions go through the same code as ``POST /api/v1/quarantine/{id}/release``
and ``.../reject`` and ``relay quarantine``: ``relay.pipeline.quarantine``, in one
transaction of the database's writer, with the rules as their file says now.
The decisions' log (``relay.storage.decisions``) gets the console user's name in
that same transaction, so a message's page says who released or rejected it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from relay.console import mailview, modlabels
from relay.console.accounts import Account
from relay.console.web import Refusal, Visitor, db_of, need, posted, redirect, render, visitor
from relay.core.config import RelayConfig
from relay.core.yamlload import ConfigError
from relay.filters import Role, RuleSet, load_rules
from relay.pipeline import quarantine
from relay.pipeline.verdicts import Outcome
from relay.storage import archive as archive_mod
from relay.storage import decisions
from relay.storage.archive import Archive, ArchiveError, MessageSummary
from relay.storage.directory import Conflict, DirectoryError, NotFound
from relay.storage.models import Direction, MessageStatus

router = APIRouter(include_in_schema=False)
Who = Depends(visitor)
PAGE = 50


def moderates(account: Account) -> bool:
    return account.moderates


def config_of(request: Request) -> RelayConfig:
    config: RelayConfig = request.app.state.config
    return config


def parse_id(text: str | None) -> int | None:
    """A positive id from a query parameter; anything else is no id."""
    if text and text.isascii() and text.isdigit() and len(text) < 20 and 0 < int(text) < 2**63:
        return int(text)
    return None


def message_number(who: Visitor, text: str) -> int:
    """The message id in a page's path; anything but one is the missing page's 404."""
    number = parse_id(text)
    if number is None:
        raise Refusal(404, who._("There is no message with this number."))
    return number


@router.get("/quarantine")
async def held(request: Request, who: Visitor = Who, before: str | None = None) -> Response:
    need(request, who, moderates)
    before_id = parse_id(before)

    def run(s: Session) -> list[MessageSummary]:
        return archive_mod.list_messages(
            s, status=MessageStatus.QUARANTINED, before_id=before_id, limit=PAGE + 1
        )

    found = await run_in_threadpool(db_of(request).call, run)
    more = len(found) > PAGE
    found = found[:PAGE]
    older = f"/quarantine?before={found[-1].message.id}" if more else ""
    return render(
        request,
        who,
        "quarantine.html",
        messages=found,
        older=older,
        label=modlabels.labels(who._),
    )


def _sender_role(direction: Direction) -> Role:
    return Role.BUYER if direction is Direction.BUYER_TO_SELLER else Role.SELLER


@router.get("/quarantine/{number}")
async def held_message(request: Request, number: str, who: Visitor = Who) -> Response:
    """One message's safe preview: the copy as received, as text only."""
    need(request, who, moderates)
    message_id = message_number(who, number)
    config = config_of(request)

    def run(s: Session) -> tuple[dict[str, Any], list[Any]] | None:
        detail = archive_mod.message_detail(s, message_id)
        if detail is None:
            return None
        return detail, decisions.about(s, decisions.message_subject(message_id))

    found = await run_in_threadpool(db_of(request).call, run)
    if found is None:
        raise Refusal(404, who._("There is no message with this number."))
    detail, decided = found
    view: mailview.Preview | None = None
    missing = ""
    if detail["received_copy"]:
        try:
            archive = Archive(config.archive.path)
            raw = await run_in_threadpool(archive.read, detail["received_copy"])
        except ArchiveError:
            missing = who._("The copy as received cannot be read from the archive.")
        else:
            role = _sender_role(Direction(detail["direction"]))
            view = await run_in_threadpool(mailview.preview, raw, role=role)
    else:
        missing = who._("The archive holds no copy of this message as received.")
    return render(
        request,
        who,
        "quarantine_message.html",
        m=detail,
        view=view,
        missing=missing,
        decided=decided,
        held=detail["status"] == MessageStatus.QUARANTINED.value,
        done=request.query_params.get("done", ""),
        label=modlabels.labels(who._),
    )


def _decide(
    s: Session,
    message_id: int,
    *,
    release: bool,
    actor: str,
    config: RelayConfig,
    rules: RuleSet,
) -> Outcome:
    """The API's decision, and its line in the decisions' log, in one transaction."""
    archive = Archive(config.archive.path)
    decide = quarantine.release if release else quarantine.reject
    outcome = decide(s, message_id, config=config, archive=archive, rules=rules)
    decisions.record(
        s,
        actor=actor,
        action=decisions.Action.QUARANTINE_RELEASE
        if release
        else decisions.Action.QUARANTINE_REJECT,
        subject=decisions.message_subject(message_id),
        detail=f"status {outcome.status.value}",
    )
    return outcome


async def _decision(request: Request, number: str, who: Visitor, *, release: bool) -> Response:
    account = need(request, who, moderates)
    message_id = message_number(who, number)
    await posted(request, who)
    config = config_of(request)
    try:
        # As the API and ``relay quarantine``: the rules as their file says now.
        rules = await run_in_threadpool(load_rules, config.filters.rules)
    except ConfigError:
        raise Refusal(
            409, who._("The rules file does not load: fix it, then decide again.")
        ) from None
    try:
        await run_in_threadpool(
            db_of(request).write,
            _decide,
            message_id,
            release=release,
            actor=account.actor,
            config=config,
            rules=rules,
        )
    except NotFound:
        raise Refusal(404, who._("There is no message with this number.")) from None
    except Conflict:
        gone = who._("This message is no longer held: someone decided already.")
        raise Refusal(409, gone) from None
    except DirectoryError as exc:
        raise Refusal(
            409, who._("This message cannot be released: %(reason)s") % {"reason": str(exc)}
        ) from None
    return redirect(f"/quarantine/{message_id}?done={'released' if release else 'rejected'}")


@router.post("/quarantine/{number}/release")
async def release(request: Request, number: str, who: Visitor = Who) -> Response:
    return await _decision(request, number, who, release=True)


@router.post("/quarantine/{number}/reject")
async def reject(request: Request, number: str, who: Visitor = Who) -> Response:
    return await _decision(request, number, who, release=False)
