"""The operator chat's state (SPEC §12): identities → principals, the channel allow-list,
pending confirmations, response-URL budgets, map pictures, and the chat-level audit records.

Commands themselves never run here: ``handlers/chat`` runs each one through ``api.invoke`` as
the identity's principal, so the policy engine decides a command exactly as the HTTP route.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Any

from pynamodb.exceptions import DoesNotExist, PutError, UpdateError

from ..core import clock, errors, ids
from ..core.auth import Principal
from ..core.config import settings
from ..forwarders import chat_reply
from ..models.chat import ChatChannelsRecord, ChatIdentityRecord, PendingActionRecord, ReplyBudgetRecord
from ..protocol.chat import Message, Where, Who
from ..protocol.slack import SlackAdapter
from . import access, audit, files
from .paging import checked_start, expect_key

PLATFORMS = ("slack",)
#: an identity id: {platform}:{team}:{user}
IDENTITY_ID = re.compile(r"[a-z]{2,16}:[A-Z0-9]{2,32}:[A-Z0-9]{2,32}")
#: Slack: a response URL takes 5 posts within 30 minutes of the command
REPLY_LIMIT, REPLY_WINDOW_S = 5, 1800
#: the picture links (track maps) live as long as a download link
PICTURE_PREFIX = "chat/pictures"


def _conditional_failed(exc: Exception) -> bool:
    cause = getattr(exc, "cause_response_code", None)
    return cause == "ConditionalCheckFailedException"


# ------------------------------------------------------------------ identities


def identity_id(platform: str, team: str, user: str) -> str:
    return f"{platform}:{team}:{user}"


def identity_view(rec: ChatIdentityRecord) -> dict[str, Any]:
    return {
        "id": rec.sk,
        "platform": rec.platform,
        "team_id": rec.team_id,
        "user_id": rec.user_id,
        "principal_id": rec.principal_id,
        "name": rec.name,
        "created_at": int(rec.created_at),
    }


def create_identity(platform: str, team_id: str, user_id: str, principal_id: str, name: str = "") -> dict[str, Any]:
    access.get_principal(principal_id)  # ResourceNotFound.PrincipalNotExist, field principal_id
    rec = ChatIdentityRecord(
        "identity",
        identity_id(platform, team_id, user_id),
        platform=platform,
        team_id=team_id,
        user_id=user_id,
        principal_id=principal_id,
        name=name,
        created_at=clock.now_s(),
    )
    try:
        rec.save(condition=ChatIdentityRecord.sk.does_not_exist())
    except PutError as exc:
        if _conditional_failed(exc):
            raise errors.CHAT_IDENTITY_EXISTS(
                f"{rec.sk} is already mapped; delete it first to map it to another principal", "user_id"
            ) from None
        raise
    return identity_view(rec)


def get_identity(ident: str) -> ChatIdentityRecord:
    if not IDENTITY_ID.fullmatch(ident or ""):
        raise errors.CHAT_IDENTITY_NOT_EXIST(f"chat identity {ident[:120]} does not exist", "identity_id")
    try:
        return ChatIdentityRecord.get("identity", ident, consistent_read=True)
    except DoesNotExist:
        raise errors.CHAT_IDENTITY_NOT_EXIST(f"chat identity {ident[:120]} does not exist", "identity_id") from None


def identity_owner(ident: str) -> tuple[str, ChatIdentityRecord]:
    """(the resource an identity is guarded as, the identity): mapping a chat user to a principal
    hands out that principal's powers, so it is the principal's resource, like its API keys."""
    rec = get_identity(ident)
    return f"principal/{rec.principal_id}", rec


def list_identities(limit: int, start: dict[str, Any] | None) -> tuple[list[ChatIdentityRecord], Any]:
    expect_key(start, {"pk": "S", "sk": "S"}, {"pk": "identity"})
    with checked_start(start):
        page = ChatIdentityRecord.query("identity", limit=limit, last_evaluated_key=start)
        items = list(page)
    return items, page.last_evaluated_key


def delete_identity(ident: str) -> None:
    get_identity(ident).delete()


def principal_for(who: Who) -> tuple[str | None, Principal | None]:
    """(principal id, principal) the chat user acts as; (None, None) when unmapped, (id, None)
    when the mapped principal was deleted."""
    try:
        rec = ChatIdentityRecord.get("identity", who.ref, consistent_read=True)
    except DoesNotExist:
        return None, None
    return rec.principal_id, access.principal_by_id(rec.principal_id, via=who.ref)


# ------------------------------------------------------------------ channel allow-list


def allowed_channels() -> list[str]:
    try:
        return list(ChatChannelsRecord.get("channels", "allowed", consistent_read=True).channels or [])
    except DoesNotExist:
        return []


def set_allowed_channels(channels: list[str]) -> dict[str, Any]:
    unique = sorted(set(channels))
    now = clock.now_s()
    ChatChannelsRecord("channels", "allowed", channels=unique, updated_at=now).save()
    return {"channels": unique, "updated_at": now}


def channels_view() -> dict[str, Any]:
    try:
        rec = ChatChannelsRecord.get("channels", "allowed", consistent_read=True)
        return {"channels": list(rec.channels or []), "updated_at": int(rec.updated_at)}
    except DoesNotExist:
        return {"channels": [], "updated_at": None}


def channel_allowed(where: Where) -> bool:
    """Every channel may run commands until an allow-list is set; then only the listed ones."""
    listed = allowed_channels()
    return not listed or where.ref in listed


# ------------------------------------------------------------------ pending confirmations


def ask(who: Who, where: Where, command: str, call: dict[str, Any], blast: str) -> PendingActionRecord:
    """Store a command waiting for its confirmation click; its id goes into the button."""
    now = clock.now_s()
    rec = PendingActionRecord(
        f"pending#{secrets.token_urlsafe(18)}",
        "-",
        state="pending",
        asked_by=who.ref,
        where=where.ref,
        command=command[:300],
        call=call,
        blast=blast,
        created_at=now,
        expires_at=now + settings().chat_confirm_ttl_s,
    )
    rec.save()
    return rec


def pending_id(rec: PendingActionRecord) -> str:
    return rec.pk.split("#", 1)[1]


def claim(action: str, clicker: Who, where: Where) -> tuple[str, PendingActionRecord | None, str | None]:
    """Claim a pending action for one click: ("claimed", rec, claim id) exactly once however
    often the click is delivered; else ("expired" | "taken" | "unknown", rec or None, None).
    The claim is a conditional write, so two deliveries racing cannot both win; a click from
    another channel than the one the command was asked in claims nothing ("unknown")."""
    if not action or len(action) > 64:
        return "unknown", None, None
    now = clock.now_s()
    claim_id = ids.short_id("clk", 16)
    rec = PendingActionRecord(f"pending#{action}", "-")
    try:
        rec.update(
            actions=[
                PendingActionRecord.state.set("claimed"),
                PendingActionRecord.claimed_by.set(clicker.ref),
                PendingActionRecord.claim_id.set(claim_id),
            ],
            condition=(PendingActionRecord.state == "pending")
            & (PendingActionRecord.expires_at > now)
            & (PendingActionRecord.where == where.ref),
        )
        return "claimed", rec, claim_id
    except UpdateError as exc:
        if not _conditional_failed(exc):
            raise
    try:
        stored = PendingActionRecord.get(f"pending#{action}", "-", consistent_read=True)
    except DoesNotExist:
        return "unknown", None, None  # never existed, or expired and deleted by the TTL
    if stored.where != where.ref:
        return "unknown", None, None
    if stored.state == "pending":
        return "expired", stored, None
    return "taken", stored, None


def release(rec: PendingActionRecord, claim_id: str) -> None:
    """Give the action back (the clicker was refused): another, allowed user may still confirm it."""
    try:
        rec.update(
            actions=[PendingActionRecord.state.set("pending"), PendingActionRecord.claim_id.remove()],
            condition=(PendingActionRecord.state == "claimed") & (PendingActionRecord.claim_id == claim_id),
        )
    except UpdateError as exc:
        if not _conditional_failed(exc):
            raise


def finish(rec: PendingActionRecord, claim_id: str, outcome: str) -> None:
    try:
        rec.update(
            actions=[PendingActionRecord.state.set("done"), PendingActionRecord.outcome.set(outcome[:200])],
            condition=(PendingActionRecord.state == "claimed") & (PendingActionRecord.claim_id == claim_id),
        )
    except UpdateError as exc:
        if not _conditional_failed(exc):
            raise


# ------------------------------------------------------------------ replies through response URLs


def _budget_key(url: str) -> str:
    return "reply#" + hashlib.sha256(url.encode()).hexdigest()[:40]


def spend_reply(url: str, *, final: bool) -> bool:
    """Take one post of ``url``'s budget (5 within 30 minutes of its first use).  The last post
    is kept for a final answer: progress updates stop at 4, so "done, here is the link" always
    gets through."""
    now = clock.now_s()
    limit = REPLY_LIMIT if final else REPLY_LIMIT - 1
    rec = ReplyBudgetRecord(_budget_key(url), "-")
    try:
        rec.update(
            actions=[
                ReplyBudgetRecord.used.add(1),
                ReplyBudgetRecord.first_at.set(ReplyBudgetRecord.first_at | now),
                ReplyBudgetRecord.expires_at.set(ReplyBudgetRecord.expires_at | now + REPLY_WINDOW_S),
            ],
            condition=ReplyBudgetRecord.pk.does_not_exist()
            | ((ReplyBudgetRecord.used < limit) & (ReplyBudgetRecord.first_at > now - REPLY_WINDOW_S)),
        )
        return True
    except UpdateError as exc:
        if _conditional_failed(exc):
            return False
        raise


def replies_used(url: str) -> int:
    try:
        return int(ReplyBudgetRecord.get(_budget_key(url), "-", consistent_read=True).used)
    except DoesNotExist:
        return 0


def reply(url: str | None, payload: dict[str, Any], *, final: bool = True) -> bool:
    """Post a rendered message to a response URL within its budget; False when it was not sent
    (no URL, budget spent, the platform refused)."""
    if not url:
        return False
    chat_reply.check_response_url(url)
    if not spend_reply(url, final=final):
        return False
    return chat_reply.post(url, payload).ok


def check_response_url(url: str | None) -> None:
    if url is not None:
        chat_reply.check_response_url(url)


# ------------------------------------------------------------------ pictures


def store_picture(data: bytes, content_type: str = "image/png") -> str:
    """Keep a picture (a trajectory map) and return a time-limited link the chat platform can
    fetch (a presigned S3 URL on AWS; the local stack's own signed download link locally)."""
    name = f"{ids.short_id('map', 16)}.png"
    key = f"{PICTURE_PREFIX}/{name}"
    files.put_object(key, data, content_type)
    return files.attachment_url(key, name)


# ------------------------------------------------------------------ audit


def note(
    event: str,
    who: Who,
    where: Where,
    *,
    principal_id: str | None,
    result: str,
    status: int = 200,
    detail: str,
    request_id: str,
    resource: str | None = None,
) -> None:
    """A chat-level audit record (``ChatCommand``, ``ChatRefused``, ``ChatConfirmationAsked``,
    ``…Clicked``, ``…Expired``): who (principal and chat user), where (the channel), what
    (``detail``: the command's words, never a secret) and the decision."""
    audit.record(
        principal_id=principal_id or f"unmapped:{who.ref}",
        key_id=who.ref,
        action=f"iotexplorer:{event}",
        resource=resource or f"chat/{where.ref}",
        status=status,
        result=result,
        request_id=request_id,
        source_ip=None,
        channel=where.ref,
        detail=detail[:300],
    )


def render_for(message: Message) -> dict[str, Any]:
    """The payload of ``message`` for Slack (the only inbound platform today)."""
    return SlackAdapter(None).render(message)
