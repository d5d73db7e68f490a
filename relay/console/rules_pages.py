"""The filter rules in force, read-only, and the rule tester.

The rules are read as the relay reads them (``relay.filters.load_rules`` on
``filters.rules``), so the page shows what a reload would put in force; a file
that does not load is said on the page with the loader's own words.  The
tester (``relay.console.ruletester``) runs the relay's stages on a pasted or
uploaded message and shows the hits and the copy the recipient would get;
it sends nothing and writes nothing.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from relay.console import mailview, modlabels, ruletester
from relay.console.quarantine_pages import config_of, moderates
from relay.console.ruletester import Problem, TestFailed, Trial
from relay.console.web import Visitor, db_of, need, posted, render, visitor
from relay.core.refusals import Refusal
from relay.core.yamlload import ConfigError
from relay.filters import Role, RuleSet, load_rules

router = APIRouter(include_in_schema=False)
Who = Depends(visitor)


async def _rules(request: Request) -> tuple[RuleSet | None, str]:
    """The rules, or None and why they do not load."""
    try:
        return await run_in_threadpool(load_rules, config_of(request).filters.rules), ""
    except ConfigError as exc:  # the loader's errors name the file and the line
        return None, str(exc)


def _problem_text(who: Visitor, failed: TestFailed) -> str:
    _ = who._
    if failed.problem is Problem.EMPTY:
        return _("Paste a message or choose an .eml file first.")
    if failed.problem is Problem.TOO_BIG:
        return _("This message is too big to test: at most %(size)s KiB.") % {
            "size": ruletester.MAX_BYTES // 1024
        }
    if failed.problem is Problem.NOT_A_MESSAGE:
        return _(
            "This is not an email message: it needs headers (From, To, Subject), an empty line,"
            " then the text."
        )
    if failed.problem is Problem.TIMEOUT:
        return _("The rules took too long on this message; its sender would be asked to retry.")
    reasons = {
        Refusal.HEADER_TOO_BIG: _("its header is too large"),
        Refusal.MAIL_LOOP: _("it has gone round a mail loop"),
        Refusal.TOO_DEEP: _("its parts are nested too deeply"),
    }
    reason = reasons.get(failed.refusal, failed.detail) if failed.refusal else failed.detail
    return _("The relay would refuse this message when it arrives: %(reason)s") % {"reason": reason}


async def _page(
    request: Request,
    who: Visitor,
    *,
    status: int = 200,
    trial: Trial | None = None,
    error: str = "",
    pasted: str = "",
    side: str = Role.SELLER.value,
) -> Response:
    rules, broken = await _rules(request)
    delivered = None
    if trial is not None and trial.delivered:
        delivered = await run_in_threadpool(mailview.preview, trial.delivered, role=Role(side))
    return render(
        request,
        who,
        "rules.html",
        status=status,
        rules=rules.rules if rules else (),
        broken=broken,
        trial=trial,
        trial_hits=[
            {"rule_id": h.rule_id, "action": h.action.label, "where": h.where, "detail": h.detail}
            for h in (trial.hits if trial else ())
        ],
        delivered=delivered,
        error=error,
        pasted=pasted,
        side=side,
        sides=[r.value for r in Role],
        label=modlabels.labels(who._),
    )


@router.get("/rules")
async def rules_page(request: Request, who: Visitor = Who) -> Response:
    need(request, who, moderates)
    return await _page(request, who)


@router.post("/rules/test")
async def test_rules(request: Request, who: Visitor = Who) -> Response:
    need(request, who, moderates)
    form = await posted(request, who)
    try:
        side = str(form.get("side", Role.SELLER.value))
        if side not in {r.value for r in Role}:
            side = Role.SELLER.value
        pasted = form.get("message", "")
        pasted = pasted if isinstance(pasted, str) else ""
        upload = form.get("eml")
        raw = b""
        if isinstance(upload, UploadFile) and upload.filename:
            raw = await upload.read(ruletester.MAX_BYTES + 1)
    finally:
        await form.close()
    if not raw.strip():
        raw = pasted.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")
    rules, broken = await _rules(request)
    if rules is None:
        return await _page(request, who, status=409, error=broken, pasted=pasted, side=side)
    config = config_of(request)
    try:
        trial = await run_in_threadpool(
            db_of(request).call, ruletester.run, raw, side=Role(side), rules=rules, config=config
        )
    except TestFailed as failed:
        return await _page(
            request, who, status=422, error=_problem_text(who, failed), pasted=pasted, side=side
        )
    return await _page(request, who, trial=trial, pasted=pasted, side=side)
