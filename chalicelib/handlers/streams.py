"""HTTP routes of the message push data streams (SPEC §9.3, §16)."""

from __future__ import annotations

from typing import Any

from chalice import Blueprint

from ..core import errors
from ..core.schema import Array, Boolean, Enum, Integer, Json, Model, String, page_of
from ..services import chat_alerts, streams
from .api import Ctx, decode_token, page_answer, route
from .schemas import PAGING

bp = Blueprint(__name__)
TAG = "streams"

NAME = String(min_len=1, max_len=64, code=errors.STREAM_NAME_INVALID, rule="must be 1-64 characters")
OUTPUT = Json(
    object_only=True,
    description='{"type":"custom_push","url","token"?,"title","content"} or '
    '{"type":"chat","channel":"slack:T…:C…"|"feishu:<id>","title"?,"content"?} '
    "(templates: ${property}, ${ProductId}, ${DeviceName}, ${Alias})",
)
CONDITION = Json(object_only=True, description='{"property","op": = != > >= < <= contains,"value"}')
FIELDS = {
    "properties": Array(
        String(min_len=1, max_len=64),
        max_items=100,
        code=errors.PROPERTIES_INVALID,
        description="properties fed to the stream (none = all)",
    ),
    "match": Enum(("all", "any"), code=errors.MATCH_INVALID, description="all-AND or all-OR of the conditions"),
    "conditions": Array(CONDITION, max_items=streams.MAX_CONDITIONS, code=errors.CONDITION_INVALID),
    "outputs": Array(OUTPUT, min_items=1, max_items=streams.MAX_OUTPUTS, code=errors.OUTPUT_INVALID),
    "enabled": Boolean(description="enabling verifies every output URL (Echostr)"),
}
StreamCreate = Model(
    "StreamCreate",
    {
        "name": String(
            required=True, min_len=1, max_len=64, code=errors.STREAM_NAME_INVALID, rule="must be 1-64 characters"
        ),
        "product_id": String(required=True, min_len=1, max_len=32, code=errors.PRODUCT_ID_INVALID),
        **{k: v for k, v in FIELDS.items() if k != "outputs"},
        "outputs": Array(OUTPUT, required=True, min_items=1, max_items=streams.MAX_OUTPUTS, code=errors.OUTPUT_INVALID),
    },
)
StreamPut = Model("StreamPut", {"name": NAME, **FIELDS})
Stream = Model(
    "Stream",
    {
        "id": String(),
        "name": String(),
        "product_id": String(),
        "resource": String(description="product/{pid}/stream/{id} (what policies grant)"),
        "properties": Array(String()),
        "match": String(),
        "conditions": Array(CONDITION),
        "outputs": Array(OUTPUT),
        "enabled": Boolean(),
        "created_at": Integer(),
        "updated_at": Integer(),
    },
)


def stream_res(params: Any, body: Any) -> str:
    if "stream_id" in params:
        return f"stream/{params['stream_id']}"
    pid = (body or {}).get("product_id")
    return f"product/{pid}/stream/*" if isinstance(pid, str) and pid else "stream/*"


def _may_post_to_bots(ctx: Ctx) -> None:
    """A chat push into a registered bot (an account resource) needs the right to see the bot, as
    a chat subscription does."""
    for out in ctx.body.get("outputs") or []:
        bot = chat_alerts.bot_resource_of(out.get("channel") if isinstance(out, dict) else None)
        if bot:
            ctx.require("DescribeChatBot", bot)


def stream_owner(params: Any, body: Any) -> tuple[str, Any]:
    return streams.owner(params["stream_id"])


@route(
    bp,
    "POST",
    "/v1/streams",
    action="CreateDataStream",
    resource=stream_res,
    tag=TAG,
    summary="Create a message push data stream (output tokens and signing secrets are shown in this answer only)",
    body=StreamCreate,
    response=Stream,
    status=201,
)
def create_stream(ctx: Ctx) -> dict[str, Any]:
    _may_post_to_bots(ctx)
    return streams.create(ctx.body)


@route(
    bp,
    "GET",
    "/v1/streams",
    action="DescribeDataStreams",
    resource="stream/*",
    listing=True,
    item_action="DescribeDataStream",
    tag=TAG,
    summary="List the data streams the caller may read",
    response=page_of(Stream),
    query=PAGING,
)
def list_streams(ctx: Ctx) -> dict[str, Any]:
    items, nxt = streams.list_streams(
        visible=ctx.visible, limit=ctx.query["limit"], start=decode_token(ctx.query.get("next"))
    )
    return page_answer(ctx, items, nxt)


@route(
    bp,
    "GET",
    "/v1/streams/{stream_id}",
    action="DescribeDataStream",
    resource=stream_res,
    owner=stream_owner,
    tag=TAG,
    summary="Get a data stream",
    response=Stream,
    query={
        "include_secret": Boolean(
            default=False,
            description="return output tokens and signing secrets (needs iotexplorer:DescribeDataStreamSecret)",
        )
    },
)
def get_stream(ctx: Ctx) -> dict[str, Any]:
    if ctx.query["include_secret"]:
        ctx.require("DescribeDataStreamSecret", ctx.resource)
    return streams.describe(ctx.params["stream_id"], include_secret=ctx.query["include_secret"])


@route(
    bp,
    "PUT",
    "/v1/streams/{stream_id}",
    action="ModifyDataStream",
    resource=stream_res,
    owner=stream_owner,
    tag=TAG,
    summary="Edit a data stream (an output re-sent without its token or secret keeps them)",
    body=StreamPut,
    response=Stream,
)
def put_stream(ctx: Ctx) -> dict[str, Any]:
    _may_post_to_bots(ctx)
    return streams.modify(ctx.params["stream_id"], dict(ctx.body))


@route(
    bp,
    "DELETE",
    "/v1/streams/{stream_id}",
    action="DeleteDataStream",
    resource=stream_res,
    owner=stream_owner,
    tag=TAG,
    summary="Delete a data stream",
    status=204,
)
def delete_stream(ctx: Ctx) -> None:
    streams.delete(ctx.params["stream_id"])


@route(
    bp,
    "POST",
    "/v1/streams/{stream_id}/enable",
    action="EnableDataStream",
    resource=stream_res,
    owner=stream_owner,
    tag=TAG,
    summary="Enable a data stream (its URLs must pass the Echostr verification)",
    response=Stream,
)
def enable_stream(ctx: Ctx) -> dict[str, Any]:
    return streams.set_enabled(ctx.params["stream_id"], True)


@route(
    bp,
    "POST",
    "/v1/streams/{stream_id}/disable",
    action="DisableDataStream",
    resource=stream_res,
    owner=stream_owner,
    tag=TAG,
    summary="Disable a data stream (it processes nothing)",
    response=Stream,
)
def disable_stream(ctx: Ctx) -> dict[str, Any]:
    return streams.set_enabled(ctx.params["stream_id"], False)
