"""The Slack app's endpoints (SPEC §12): ``POST /chat/slack/commands`` (``/fleet …``) and
``POST /chat/slack/interactions`` (confirmation buttons), and the job steps that answer later
through the response URL.

Both endpoints are public routes signed by Slack (no bearer): the signature is checked on the raw
body first (401 ``AuthFailure.SignatureFailure`` / ``…SignatureExpire`` in the product's error
envelope).  Anything after that is answered HTTP 200 with an ephemeral message, because Slack
shows a user nothing else: unknown users, channels off the allow-list, usage mistakes and policy
refusals are friendly messages, never a stack trace.

Every command runs through ``api.invoke`` as the chat user's principal (``chat_commands``); a
confirmation click is re-authorised for the *clicking* user's principal and claimed once with a
conditional write, so a click Slack retries, or the same payload arriving three times, runs once.
Slow commands and follow-ups (batch progress then its link, a video summary) run as jobs
(``chat.run``, ``chat.follow``, ``chat.reply``) within the response URL's budget.
"""

from __future__ import annotations

import json
import time
from typing import Any

from chalice import Blueprint, Response

from ..core import clock, errors, ids
from ..core.config import chat_secret
from ..core.observability import logger
from ..core.schema import Json, Model, String
from ..protocol.chat import Button, Click, Command, Confirm, Message, Where, Who
from ..protocol.slack import SlackAdapter
from ..services import chat, jobs
from . import api
from . import chat_commands as cc
from .api import document, error_response

bp = Blueprint(__name__)

COMMANDS_PATH = "/chat/slack/commands"
INTERACTIONS_PATH = "/chat/slack/interactions"
CONFIRM, CANCEL = "fleet.confirm", "fleet.cancel"
#: follow-ups poll this often, and stop when the response URL dies (30 minutes)
FOLLOW_EVERY_S = 3
FOLLOW_FOR_S = chat.REPLY_WINDOW_S
_FORM = "application/x-www-form-urlencoded"

document(
    "POST",
    COMMANDS_PATH,
    tag="chat",
    summary="Slack slash command /fleet (signed by Slack; answers 200 with an ephemeral Block Kit message)",
    body=Model(
        "SlackCommandForm",
        {
            "team_id": String(required=True),
            "channel_id": String(required=True),
            "user_id": String(required=True),
            "command": String(),
            "text": String(),
            "response_url": String(),
        },
        allow_extra=True,
    ),
    response=Json(object_only=True, description='Block Kit message {"text","blocks","response_type"}'),
    consumes=_FORM,
    errors_=(401,),
)
document(
    "POST",
    INTERACTIONS_PATH,
    tag="chat",
    summary="Slack interactions (confirmation buttons; signed by Slack; the outcome replaces the message)",
    body=Model("SlackInteractionForm", {"payload": String(required=True, description="block_actions JSON")}),
    response=Json(object_only=True, description="the outcome message (also posted to response_url)"),
    consumes=_FORM,
    errors_=(401,),
)


def _adapter() -> SlackAdapter:
    return SlackAdapter(chat_secret("signing_secret"))


def _raw_body(request: Any) -> bytes:
    raw = request.raw_body
    if raw is None:
        return b""
    return raw if isinstance(raw, bytes) else str(raw).encode("utf-8")


def _answer(payload: dict[str, Any] | None, request_id: str) -> Response:
    return Response(
        body=json.dumps(payload or {}, separators=(",", ":"), ensure_ascii=False),
        status_code=200,
        headers={"Content-Type": "application/json", "x-request-id": request_id},
    )


def _verified(request_id: str) -> tuple[SlackAdapter, Any, bytes] | Response:
    request = bp.current_request
    raw = _raw_body(request)
    adapter = _adapter()
    try:
        adapter.verify(request.headers, raw, clock.now())
    except errors.FleetboxError as err:
        logger.warning("chat request refused", extra={"code": err.code})
        return error_response(err, request_id)
    return adapter, request.headers, raw


@bp.route(COMMANDS_PATH, methods=["POST"], content_types=[_FORM, "*/*"])
def slack_command() -> Response:
    request_id = ids.request_id()
    started = time.perf_counter()
    checked = _verified(request_id)
    if isinstance(checked, Response):
        return checked
    adapter, headers, raw = checked
    if adapter.is_ssl_check(raw):
        return _answer(None, request_id)  # Slack checking the certificate of the command URL
    try:
        command = adapter.parse_command(headers, raw)
    except errors.FleetboxError as err:
        return error_response(err, request_id)
    try:
        message = handle_command(command, request_id)
    except Exception:  # noqa: BLE001 - Slack shows the user only a 200's message: a friendly one
        logger.exception("chat command failed", extra={"request_id": request_id})
        message = Message(f"Something went wrong on our side; nothing more was done. (request {request_id})")
    logger.info("chat command", extra={"duration_ms": round((time.perf_counter() - started) * 1000, 1)})
    return _answer(adapter.render(message), request_id)


@bp.route(INTERACTIONS_PATH, methods=["POST"], content_types=[_FORM, "*/*"])
def slack_interaction() -> Response:
    request_id = ids.request_id()
    checked = _verified(request_id)
    if isinstance(checked, Response):
        return checked
    adapter, headers, raw = checked
    try:
        click = adapter.parse_click(headers, raw)
    except errors.FleetboxError as err:
        return error_response(err, request_id)
    try:
        message = handle_click(click, request_id)
    except Exception:  # noqa: BLE001 - as above
        logger.exception("chat click failed", extra={"request_id": request_id})
        message = Message(f"Something went wrong on our side. (request {request_id})")
    return _answer(adapter.render(message) if message else None, request_id)


# ------------------------------------------------------------------ commands


def _how_to_get_access(who: Who) -> Message:
    body = json.dumps(
        {"platform": who.platform, "team_id": who.team, "user_id": who.user, "principal_id": "<principal id>"}
    )
    return Message(
        "You are not set up to run Fleetbox commands from chat yet.",
        sections=[
            f"Ask a Fleetbox admin to map your chat user (team {who.team}, user {who.user}) to a principal:\n"
            f"curl -X POST $FLEETBOX_API/v1/chat/identities -H 'Authorization: Bearer <admin key>' "
            f"-H 'Content-Type: application/json' -d '{body}'"
        ],
    )


def _refusal(err: errors.FleetboxError, spec: cc.Spec | None) -> Message:
    if err.status == 403:
        text = f"Not allowed: {err.message}. Your principal's policy decides this (ask an admin)."
    elif err.status >= 500:
        text = "Something went wrong on our side; nothing more was done."
    else:
        text = err.message + (f" (field {err.field})" if err.field else "")
    sections = [f"usage: {spec.usage}"] if spec is not None and err.status == 400 else []
    return Message(f"{text} [{err.code}]", sections=sections)


def _who_where(who: Who, where: Where) -> dict[str, Any]:
    return {
        "who": [who.platform, who.team, who.user],
        "where": [where.platform, where.team, where.channel],
    }


def _unpack(body: dict[str, Any]) -> tuple[Who, Where]:
    return Who(*body["who"]), Where(*body["where"])


def _safe_url(url: str | None) -> str | None:
    try:
        chat.check_response_url(url)
        return url
    except errors.FleetboxError:
        logger.warning("chat response_url refused")
        return None


def _admit(who: Who, where: Where, text: str, request_id: str, event: str) -> tuple[Any, Message | None]:
    """The chat user's principal, or the refusal (unknown user, deleted principal, channel off the
    allow-list), audited."""
    principal_id, principal = chat.principal_for(who)
    reason = None
    if principal_id is None:
        reason, message = "UnknownIdentity", _how_to_get_access(who)
    elif principal is None:
        reason = "PrincipalNotExist"
        message = Message("Your chat user is mapped to a principal that no longer exists; ask an admin.")
    elif not chat.channel_allowed(where):
        reason = "ChannelNotAllowed"
        message = Message(
            f"Fleetbox commands are not enabled in this channel ({where.ref}); "
            "an admin can add it with PUT /v1/chat/allowed-channels."
        )
    if reason is None:
        return principal, None
    chat.note("ChatRefused", who, where, principal_id=principal_id, result=reason, status=403,
              detail=f"{event}: {text}", request_id=request_id)  # fmt: skip
    return None, message


def handle_command(command: Command, request_id: str) -> Message:
    who, where = command.who, command.where
    principal, refusal = _admit(who, where, command.text, request_id, "command")
    if refusal is not None:
        return refusal
    try:
        parsed = cc.parse(command.text)
    except cc.UsageError as exc:
        chat.note("ChatCommand", who, where, principal_id=principal.principal_id, result="UsageError",
                  status=400, detail=command.text, request_id=request_id)  # fmt: skip
        return Message(exc.reason, sections=[f"usage: {exc.spec.usage}"] if exc.spec else ["try /fleet help"])
    url = _safe_url(command.response_url)
    if parsed.spec.slow and url:
        jobs.enqueue("chat.run", {**_who_where(who, where), "text": command.text, "url": url})
        chat.note("ChatCommand", who, where, principal_id=principal.principal_id, result="Queued", status=202,
                  detail=command.text, request_id=request_id)  # fmt: skip
        return Message(f"Working on /fleet {' '.join(parsed.spec.words)}…; the answer follows here.")
    return run_command(who, where, principal, parsed, url, request_id)


def run_command(who: Who, where: Where, principal: Any, parsed: cc.Parsed, url: str | None, request_id: str) -> Message:
    run = cc.Run(who, where, principal, request_id)
    try:
        outcome = parsed.spec.run(run, parsed)
        if isinstance(outcome, cc.Ask):
            return _ask(run, parsed, outcome)
    except cc.UsageError as exc:
        chat.note("ChatCommand", who, where, principal_id=principal.principal_id, result="UsageError",
                  status=400, detail=parsed.text, request_id=request_id)  # fmt: skip
        return Message(exc.reason, sections=[f"usage: {parsed.spec.usage}"])
    except errors.FleetboxError as err:
        chat.note("ChatCommand", who, where, principal_id=principal.principal_id, result=err.code,
                  status=err.status, detail=parsed.text, request_id=request_id)  # fmt: skip
        return _refusal(err, parsed.spec)
    chat.note("ChatCommand", who, where, principal_id=principal.principal_id, result="Success",
              detail=parsed.text, request_id=request_id)  # fmt: skip
    message = outcome.message
    # a download link goes only to the caller, whatever --public says
    message.in_channel = parsed.public and not any("Download" in s for s in message.sections)
    if outcome.follow and url:
        _follow(who, where, url, *outcome.follow)
    return message


def _ask(run: cc.Run, parsed: cc.Parsed, ask: cc.Ask) -> Message:
    for call in ask.calls:
        # nobody is offered a button for what the route would refuse now — their policy, a missing
        # item, a bad value, the service's own checks (the click decides everything again)
        api.check(call["method"], call["path"], run.principal, params=call["params"], body=call.get("body"))
    rec = chat.ask(run.who, run.where, parsed.text, {"calls": ask.calls, "then": ask.then}, ask.blast)
    pending = chat.pending_id(rec)
    chat.note("ChatConfirmationAsked", run.who, run.where, principal_id=run.principal.principal_id,
              result="Pending", status=202, detail=f"{parsed.text} -> {ask.blast}", request_id=run.request_id)  # fmt: skip
    minutes = max(1, (int(rec.expires_at) - int(rec.created_at)) // 60)
    return Message(
        f"{ask.title} This {ask.blast}.",
        sections=[f"Confirm within {minutes} min; whoever clicks must be allowed to do it."],
        buttons=[
            Button(CONFIRM, "Confirm", pending, style="danger", confirm=Confirm(ask.title, f"This {ask.blast}.")),
            Button(CANCEL, "Cancel", pending),
        ],
        in_channel=parsed.public,
    )


def _follow(who: Who, where: Where, url: str, what: str, ident: str) -> None:
    body = {**_who_where(who, where), "url": url, "what": what, "id": ident, "last": None,
            "until": clock.now_s() + FOLLOW_FOR_S}  # fmt: skip
    jobs.enqueue("chat.follow", body, delay_s=FOLLOW_EVERY_S)


# ------------------------------------------------------------------ confirmation clicks


def handle_click(click: Click, request_id: str) -> Message | None:
    who, where = click.who, click.where
    if click.action_id not in (CONFIRM, CANCEL):
        return None  # a link button or an unknown action: nothing to do
    principal, refusal = _admit(who, where, f"click {click.action_id}", request_id, "click")
    if refusal is not None:
        return refusal
    url = _safe_url(click.response_url)
    state, rec, claim_id = chat.claim(click.value, who, where)
    if state in ("unknown", "expired"):
        chat.note("ChatConfirmationExpired", who, where, principal_id=principal.principal_id, result="Expired",
                  status=409, detail=rec.command if rec else "unknown confirmation", request_id=request_id)  # fmt: skip
        message = Message("This confirmation has expired; run the command again.", replace_original=True)
        _post(url, message)
        return message
    if state == "taken":
        # Slack retried the click, or it arrived again: it ran (or is running) once already
        chat.note("ChatConfirmationRepeated", who, where, principal_id=principal.principal_id,
                  result="AlreadyHandled", detail=rec.command if rec else "", request_id=request_id)  # fmt: skip
        return None
    if rec is None or claim_id is None:  # chat.claim answers "claimed" only with both
        raise errors.internal()
    if click.action_id == CANCEL:
        chat.finish(rec, claim_id, f"cancelled by {who.ref}")
        chat.note("ChatConfirmationCancelled", who, where, principal_id=principal.principal_id,
                  result="Cancelled", detail=rec.command, request_id=request_id)  # fmt: skip
        message = Message(f"Cancelled: {rec.command} (by {_name(who)}).", replace_original=True)
        _post(url, message)
        return message
    return _confirmed(who, where, principal, rec, claim_id, url, request_id)


def _confirmed(
    who: Who, where: Where, principal: Any, rec: Any, claim_id: str, url: str | None, request_id: str
) -> Message:
    calls, then = rec.call["calls"], rec.call.get("then", "plain")
    done: list[str] = []
    failed: list[str] = []
    results: list[Any] = []
    for i, call in enumerate(calls):
        try:
            outcome = api.invoke(
                call["method"], call["path"], principal, params=call["params"], body=call.get("body"),
                channel=where.ref, request_id=request_id,
            )  # fmt: skip
            results.append(outcome.body)
            done.append(call.get("label") or call["path"])
        except errors.FleetboxError as err:
            if i == 0 and err.status == 403:
                # nothing ran: give the action back so an allowed colleague can still confirm it
                chat.release(rec, claim_id)
                chat.note("ChatConfirmationClicked", who, where, principal_id=principal.principal_id,
                          result=err.code, status=403, detail=rec.command, request_id=request_id)  # fmt: skip
                message = _refusal(err, None)
                message.text = f"You may not confirm this. {message.text}"
                _post(url, message)
                return message
            failed.append(f"{call.get('label') or call['path']}: {err.message} [{err.code}]")
    summary = f"{len(done)} done, {len(failed)} failed"
    chat.finish(rec, claim_id, summary)
    chat.note("ChatConfirmationClicked", who, where, principal_id=principal.principal_id,
              result="Success" if not failed else "PartialFailure", detail=f"{rec.command} -> {summary}",
              request_id=request_id)  # fmt: skip
    text = f"{_name(who)} confirmed: {rec.command}. {summary}."
    sections = ["\n".join(failed)] if failed else []
    fields: list[tuple[str, str]] = []
    if then == "batch" and results and isinstance(results[0], dict) and results[0].get("id"):
        batch_id = str(results[0]["id"])
        progress, _finished = cc.batch_message(cc.Run(who, where, principal, request_id), batch_id)
        text = f"{_name(who)} confirmed: batch {batch_id} started ({rec.blast}); progress and the link follow here."
        sections, fields = [progress.text], progress.fields
        if url:
            _follow(who, where, url, "batch", batch_id)
    message = Message(text, sections=sections, fields=fields, replace_original=True)
    _post(url, message)
    return message


def _name(who: Who) -> str:
    return who.user_name or who.user


def _post(url: str | None, message: Message, final: bool = True) -> None:
    if url:
        jobs.enqueue("chat.reply", {"url": url, "payload": chat.render_for(message), "final": final})


# ------------------------------------------------------------------ job steps (services/jobs.KINDS)


def reply_step(body: dict[str, Any]) -> None:
    """Post one rendered message to a response URL (within its budget)."""
    chat.reply(body["url"], body["payload"], final=bool(body.get("final", True)))


def run_step(body: dict[str, Any]) -> None:
    """A slow command, run as its user (re-admitted now: a user unmapped meanwhile gets a refusal)."""
    who, where = _unpack(body)
    request_id = ids.request_id()
    principal, refusal = _admit(who, where, body["text"], request_id, "queued command")
    if refusal is None:
        try:
            parsed = cc.parse(body["text"])
            message = run_command(who, where, principal, parsed, body["url"], request_id)
        except cc.UsageError as exc:
            message = Message(exc.reason)
    else:
        message = refusal
    chat.reply(body["url"], chat.render_for(message), final=True)


def follow_step(body: dict[str, Any]) -> None:
    """Report a batch's progress (then its link) or a video task's result through the response URL."""
    who, where = _unpack(body)
    principal_id, principal = chat.principal_for(who)
    if principal is None:
        return  # the user was unmapped: nobody to answer for any more
    run = cc.Run(who, where, principal, ids.request_id())
    try:
        if body["what"] == "batch":
            message, finished = cc.batch_message(run, body["id"])
        else:
            message, finished = cc.video_message(run, body["id"])
    except errors.FleetboxError as err:
        chat.reply(body["url"], chat.render_for(_refusal(err, None)), final=True)
        return
    if finished:
        chat.reply(body["url"], chat.render_for(message), final=True)
        return
    if message.text != body.get("last"):
        chat.reply(body["url"], chat.render_for(message), final=False)
    if clock.now_s() < int(body["until"]):
        jobs.enqueue("chat.follow", {**body, "last": message.text}, delay_s=FOLLOW_EVERY_S)
