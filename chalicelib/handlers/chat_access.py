"""HTTP routes that give chat users access (SPEC §12): identities → principals, and the channel
allow-list.

A chat identity acts with its principal's policy, so mapping one is handing out that principal's
powers: ``CreateChatIdentity`` is decided on ``principal/{principal_id}`` (like ``CreateApiKey``),
and an identity is read and deleted as its principal's resource.
"""

from __future__ import annotations

from typing import Any

from chalice import Blueprint

from ..core import errors
from ..core.schema import Array, Enum, Integer, Model, String, page_of
from ..protocol.slack import SLACK_ID
from ..services import chat
from . import schemas as s
from .api import Ctx, decode_token, encode_token, route

bp = Blueprint(__name__)
TAG = "chat"

_ID_RULE = "must be a Slack id (2-32 upper-case letters and digits)"
ChatIdentityCreate = Model(
    "ChatIdentityCreate",
    {
        "platform": Enum(chat.PLATFORMS, required=True, code=errors.CHAT_PLATFORM_INVALID),
        "team_id": String(required=True, pattern=SLACK_ID.pattern, rule=_ID_RULE, code=errors.CHAT_TEAM_ID_INVALID),
        "user_id": String(required=True, pattern=SLACK_ID.pattern, rule=_ID_RULE, code=errors.CHAT_USER_ID_INVALID),
        "principal_id": String(required=True, min_len=1, max_len=64, code=errors.PRINCIPAL_ID_INVALID),
        "name": String(max_len=80, default="", code=errors.CHAT_IDENTITY_NAME_INVALID),
    },
)
ChatIdentity = Model(
    "ChatIdentity",
    {
        "id": String(required=True, description="{platform}:{team_id}:{user_id}"),
        "platform": String(required=True),
        "team_id": String(required=True),
        "user_id": String(required=True),
        "principal_id": String(required=True),
        "name": String(required=True),
        "created_at": Integer(required=True),
    },
)
ChatIdentityPage = page_of(ChatIdentity)
CHANNEL = String(
    pattern=r"slack:[A-Z0-9]{2,32}:[A-Z0-9]{2,32}",
    rule="must be slack:{team_id}:{channel_id}",
    code=errors.CHAT_CHANNEL_INVALID,
)
ChatChannelsPut = Model("ChatChannelsPut", {"channels": Array(CHANNEL, max_items=500, required=True)})
ChatChannels = Model(
    "ChatChannels",
    {
        "channels": Array(String(), required=True, description="empty: every channel may run commands"),
        "updated_at": Integer(nullable=True),
    },
)


def _owner(params: Any, body: Any) -> tuple[str, Any]:
    return chat.identity_owner(params["identity_id"])


def _target(params: Any, body: Any) -> str:
    pid = body.get("principal_id") if isinstance(body, dict) else None
    return f"principal/{pid}" if isinstance(pid, str) and pid else "principal/*"


@route(
    bp, "POST", "/v1/chat/identities", action="CreateChatIdentity", resource=_target, tag=TAG,
    summary="Map a chat user (platform + team + user) to a principal: its commands run with that principal's policy",
    body=ChatIdentityCreate, response=ChatIdentity, status=201,
)  # fmt: skip
def create_identity(ctx: Ctx) -> dict[str, Any]:
    b = ctx.body
    return chat.create_identity(b["platform"], b["team_id"], b["user_id"], b["principal_id"], b.get("name", ""))


@route(
    bp, "GET", "/v1/chat/identities", action="ListChatIdentities", resource="principal/*", listing=True,
    item_action="DescribeChatIdentity", tag=TAG, summary="Chat identities (each shown only if its route would be)",
    response=ChatIdentityPage, query=s.PAGING,
)  # fmt: skip
def list_identities(ctx: Ctx) -> dict[str, Any]:
    items, nxt = chat.list_identities(ctx.query["limit"], decode_token(ctx.query.get("next")))
    shown = [chat.identity_view(r) for r in items if ctx.visible(f"principal/{r.principal_id}")]
    return {"items": shown, "total": None, "next": encode_token(nxt)}


@route(
    bp, "GET", "/v1/chat/identities/{identity_id}", action="DescribeChatIdentity", resource="principal/*",
    owner=_owner, tag=TAG, summary="One chat identity", response=ChatIdentity,
)  # fmt: skip
def get_identity(ctx: Ctx) -> dict[str, Any]:
    return chat.identity_view(ctx.item)


@route(
    bp, "DELETE", "/v1/chat/identities/{identity_id}", action="DeleteChatIdentity", resource="principal/*",
    owner=_owner, tag=TAG, summary="Unmap a chat user: its next command is refused", status=204,
)  # fmt: skip
def delete_identity(ctx: Ctx) -> None:
    chat.delete_identity(ctx.params["identity_id"])


@route(
    bp, "GET", "/v1/chat/allowed-channels", action="DescribeChatChannels", resource="account/chat", tag=TAG,
    summary="The channels allowed to run commands (empty: all)", response=ChatChannels,
)  # fmt: skip
def get_channels(ctx: Ctx) -> dict[str, Any]:
    return chat.channels_view()


@route(
    bp, "PUT", "/v1/chat/allowed-channels", action="ModifyChatChannels", resource="account/chat", tag=TAG,
    summary="Replace the channel allow-list (slack:{team}:{channel} each; [] lets every channel run commands)",
    body=ChatChannelsPut, response=ChatChannels,
)  # fmt: skip
def put_channels(ctx: Ctx) -> dict[str, Any]:
    return chat.set_allowed_channels(list(ctx.body["channels"]))
