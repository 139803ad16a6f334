"""HTTP routes of the chat alerts (SPEC §12): subscriptions of channels to alert kinds, and the
registered send-only channels (Feishu/Lark custom bots).  The chat's ``subscribe`` /
``unsubscribe`` commands run these same routes through ``api.invoke``."""

from __future__ import annotations

from typing import Any

from chalice import Blueprint

from ..core import errors
from ..core.schema import Boolean, Enum, Integer, Model, String, page_of
from ..services import chat_alerts
from .api import Ctx, decode_token, page_answer, route
from .schemas import PAGING, PRODUCT_FILTER

bp = Blueprint(__name__)
TAG = "chat"


def _channel_ref(required: bool) -> String:
    return String(
        required=required,
        min_len=1,
        max_len=64,
        code=errors.CHAT_CHANNEL_INVALID,
        rule="must be slack:<team id>:<channel id> or feishu:<bot id>",
        description="slack:T…:C… (no registration) or feishu:<id of a bot registered at /v1/chat/bots>",
    )


SubscriptionCreate = Model(
    "ChatSubscriptionCreate",
    {
        "channel": _channel_ref(True),
        "kind": Enum(
            tuple(chat_alerts.ALERT_KINDS),
            required=True,
            code=errors.CHAT_ALERT_KIND_INVALID,
            description="alarms (fence alarms), ota (failed devices, tasks done/aborted), batch, "
            "rules (dead letters), video (summary tasks done/failed)",
        ),
        "product_id": String(
            pattern=r"[A-Z0-9]{10}",
            code=errors.PRODUCT_ID_INVALID,
            rule="must be a ProductId",
            description="only this product's alerts (omitted: every product's, an account-level subscription)",
        ),
    },
)
Subscription = Model(
    "ChatSubscription",
    {
        "id": String(),
        "channel": String(),
        "kind": String(),
        "product_id": String(nullable=True),
        "resource": String(description="product/{pid}, or * for every product (what policies grant)"),
        "created_at": Integer(),
        "created_by": String(nullable=True),
    },
)
ChannelCreate = Model(
    "ChatBotCreate",
    {
        "platform": Enum(("feishu",), required=True, code=errors.CHAT_PLATFORM_INVALID),
        "name": String(
            required=True, min_len=1, max_len=64, code=errors.CHAT_CHANNEL_NAME_INVALID, rule="must be 1-64 characters"
        ),
        "webhook_url": String(
            required=True, min_len=1, max_len=1024, description="the custom bot's webhook URL (public https)"
        ),
        "secret": String(
            min_len=1,
            max_len=128,
            pattern=r"[A-Za-z0-9_\-+/=]+",
            code=errors.CHAT_SECRET_INVALID,
            rule="must be the bot's signing secret (letters, digits, _ - + / =)",
            description="the bot's signature-verification secret (write-only: never shown again)",
        ),
    },
)
Channel = Model(
    "ChatBot",
    {
        "id": String(),
        "ref": String(description="what subscriptions and stream outputs name: feishu:<id>"),
        "platform": String(),
        "name": String(),
        "webhook_url": String(),
        "secret_set": Boolean(),
        "resource": String(),
        "created_at": Integer(),
    },
)


def _sub_res(params: Any, body: Any) -> str:
    pid = (body or {}).get("product_id")
    return chat_alerts.subscription_resource(pid if isinstance(pid, str) and pid else None)


def _sub_owner(params: Any, body: Any) -> tuple[str, Any]:
    return chat_alerts.subscription_owner(params["id"])


def _channel_owner(params: Any, body: Any) -> tuple[str, Any]:
    return chat_alerts.channel_owner(params["bot_id"])


@route(
    bp,
    "POST",
    "/v1/chat/subscriptions",
    action="CreateChatSubscription",
    resource=_sub_res,
    tag=TAG,
    summary="Subscribe a chat channel to an alert kind (idempotent: the same channel, kind and product "
    "answer the existing subscription)",
    body=SubscriptionCreate,
    response=Subscription,
    status=201,
)
def create_subscription(ctx: Ctx) -> dict[str, Any]:
    bot = chat_alerts.bot_resource_of(ctx.body["channel"])
    if bot:
        ctx.require("DescribeChatBot", bot)
    return chat_alerts.subscribe(ctx.body, ctx.caller.principal_id)


@route(
    bp,
    "GET",
    "/v1/chat/subscriptions",
    action="ListChatSubscriptions",
    resource="*",
    listing=True,
    item_action="DescribeChatSubscription",
    tag=TAG,
    summary="List the chat subscriptions the caller may read (optionally of one channel)",
    response=page_of(Subscription),
    query={**PAGING, "channel": _channel_ref(False), "product_id": PRODUCT_FILTER},
)
def list_subscriptions(ctx: Ctx) -> dict[str, Any]:
    items, nxt = chat_alerts.list_subscriptions(
        visible=ctx.visible,
        channel=ctx.query.get("channel"),
        limit=ctx.query["limit"],
        start=decode_token(ctx.query.get("next")),
    )
    pid = ctx.query.get("product_id")
    if pid:
        items = [i for i in items if i["product_id"] == pid]
    return page_answer(ctx, items, nxt)


@route(
    bp,
    "DELETE",
    "/v1/chat/subscriptions/{id}",
    action="DeleteChatSubscription",
    resource="*",
    owner=_sub_owner,
    tag=TAG,
    summary="Unsubscribe (delete a chat subscription)",
    status=204,
)
def delete_subscription(ctx: Ctx) -> None:
    chat_alerts.unsubscribe(ctx.params["id"])


@route(
    bp,
    "POST",
    "/v1/chat/bots",
    action="CreateChatBot",
    resource="chat-bot/*",
    tag=TAG,
    summary="Register a send-only chat channel (a Feishu/Lark custom bot); its secret is never shown again",
    body=ChannelCreate,
    response=Channel,
    status=201,
)
def create_channel(ctx: Ctx) -> dict[str, Any]:
    return chat_alerts.create_channel(ctx.body)


@route(
    bp,
    "GET",
    "/v1/chat/bots",
    action="ListChatBots",
    resource="chat-bot/*",
    listing=True,
    item_action="DescribeChatBot",
    tag=TAG,
    summary="List the registered chat channels the caller may read",
    response=page_of(Channel),
    query=PAGING,
)
def list_channels(ctx: Ctx) -> dict[str, Any]:
    items, nxt = chat_alerts.list_channels(
        visible=ctx.visible, limit=ctx.query["limit"], start=decode_token(ctx.query.get("next"))
    )
    return page_answer(ctx, items, nxt)


@route(
    bp,
    "GET",
    "/v1/chat/bots/{bot_id}",
    action="DescribeChatBot",
    resource="chat-bot/*",
    owner=_channel_owner,
    tag=TAG,
    summary="Get a registered chat channel (its secret only as secret_set)",
    response=Channel,
)
def get_channel(ctx: Ctx) -> dict[str, Any]:
    return chat_alerts.channel_view(ctx.item)


@route(
    bp,
    "DELETE",
    "/v1/chat/bots/{bot_id}",
    action="DeleteChatBot",
    resource="chat-bot/*",
    owner=_channel_owner,
    tag=TAG,
    summary="Delete a registered chat channel (refused while subscriptions use it)",
    status=204,
)
def delete_channel(ctx: Ctx) -> None:
    chat_alerts.delete_channel(ctx.params["bot_id"])
