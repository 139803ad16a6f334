"""HTTP routes of the rule engine (SPEC §9.1, §16): rules, their debug run, dead letters, delivery log."""

from __future__ import annotations

from typing import Any

from chalice import Blueprint

from ..core import errors
from ..core.schema import Array, Boolean, Enum, Integer, Json, Model, String, page_of
from ..services import delivery, rules
from .api import Ctx, decode_token, encode_token, page_answer, route
from .schemas import PAGING

bp = Blueprint(__name__)
TAG = "rules"

RULE_NAME = String(
    required=True,
    min_len=1,
    max_len=32,
    pattern=rules.NAME_RE.pattern,
    code=errors.RULE_NAME_INVALID,
    rule="must be 1-32 letters, digits or _",
)


def sql_field(required: bool = False) -> String:
    return String(
        required=required,
        min_len=1,
        max_len=300,
        code=errors.SQL_INVALID,
        rule="must be 1-300 characters",
        description="SELECT <fields> FROM '<topic filter>' [WHERE <condition>] (SPEC §9.1)",
        example="SELECT room1.temperature AS temp FROM '/+/data' WHERE room1.temperature > 30",
    )


ACTION = Json(object_only=True, description="{type: republish|http|sqs|sns|kinesis|dynamodb|lambda|s3, …settings}")
ACTIONS = Array(ACTION, max_items=rules.MAX_ACTIONS, code=errors.ACTION_INVALID)
DESCRIPTION = String(max_len=256, code=errors.DESCRIPTION_INVALID, rule="must be at most 256 characters")

RuleCreate = Model(
    "RuleCreate",
    {
        "name": RULE_NAME,
        "description": DESCRIPTION,
        "sql": sql_field(required=True),
        "enabled": Boolean(default=False, description="enabling verifies every HTTP action's URL (Echostr)"),
        "actions": ACTIONS,
        "error_actions": ACTIONS,
    },
)
RulePut = Model(
    "RulePut",
    {
        "description": DESCRIPTION,
        "sql": sql_field(),
        "enabled": Boolean(),
        "actions": ACTIONS,
        "error_actions": ACTIONS,
    },
)
RuleStats = Model("RuleStats", {k: Integer() for k in rules.STAT_NAMES})
Rule = Model(
    "Rule",
    {
        "name": String(),
        "description": String(),
        "sql": String(),
        "enabled": Boolean(),
        "topic_filter": String(),
        "resource": String(
            description="product/{pid}/rule/{name} when the topic filter names one product, else "
            "rule/{name} (what policies grant)"
        ),
        "actions": Array(ACTION),
        "error_actions": Array(ACTION),
        "created_at": Integer(),
        "updated_at": Integer(),
        "note": String(nullable=True),
        "stats": RuleStats,
    },
)
Debug = Model(
    "RuleDebug",
    {
        "topic": String(required=True, min_len=1, max_len=256, code=errors.TOPIC_INVALID),
        "payload": Json(description="sample payload: a JSON value, or a string sent as is"),
        "payload_base64": String(max_len=200_000, code=errors.PAYLOAD_INVALID, description="a binary sample payload"),
        "sql": String(
            min_len=1, max_len=300, code=errors.SQL_INVALID, description="try this SQL instead of the saved one"
        ),
        "product_id": String(max_len=64),
        "device_name": String(max_len=64),
    },
)
DebugResult = Model(
    "RuleDebugResult",
    {
        "topic_matched": Boolean(),
        "matched": Boolean(),
        "payload_json": Boolean(),
        "output": Json(nullable=True),
        "output_base64": String(),
    },
)
DeadLetter = Model(
    "DeadLetter",
    {
        "id": String(),
        "target": String(),
        "rule": String(nullable=True),
        "product_id": String(nullable=True),
        "device_name": String(nullable=True),
        "reason": String(),
        "attempts": Integer(),
        "status": Enum(("dead", "replaying", "replayed")),
        "webhook_id": String(nullable=True),
        "resource": String(description="the rule, stream or callback the delivery was for"),
        "created_at": Integer(),
        "updated_at": Integer(),
        "replays": Integer(),
    },
)
Delivery = Model(
    "Delivery",
    {
        "time": Integer(description="ms"),
        "webhook_id": String(nullable=True),
        "attempt": Integer(),
        "ok": Boolean(),
        "status": Integer(nullable=True),
        "latency_ms": Integer(),
        "error": String(nullable=True),
        "snippet": String(nullable=True),
    },
)


def rule_res(params: Any, body: Any) -> str:
    name = params.get("name") or (body or {}).get("name") or "*"
    return rules.resource_of_sql(name, (body or {}).get("sql")) if "name" not in params else f"rule/{name}"


def rule_owner(params: Any, body: Any) -> tuple[str, Any]:
    return rules.owner(params["name"])


INCLUDE_SECRET = {
    "include_secret": Boolean(
        default=False,
        description="return the HTTP actions' tokens and signing secrets (needs iotexplorer:DescribeTopicRuleSecret)",
    )
}


@route(
    bp,
    "POST",
    "/v1/rules",
    action="CreateTopicRule",
    resource=rule_res,
    tag=TAG,
    summary="Create a rule (its HTTP actions' tokens and signing secrets are shown in this answer only)",
    body=RuleCreate,
    response=Rule,
    status=201,
)
def create_rule(ctx: Ctx) -> dict[str, Any]:
    return rules.create(ctx.body)


@route(
    bp,
    "GET",
    "/v1/rules",
    action="DescribeTopicRules",
    resource="rule/*",
    listing=True,
    item_action="DescribeTopicRule",
    tag=TAG,
    summary="List the rules the caller may read, with their statistics",
    response=page_of(Rule),
    query=PAGING,
)
def list_rules(ctx: Ctx) -> dict[str, Any]:
    items, nxt = rules.list_rules(
        visible=ctx.visible, limit=ctx.query["limit"], start=decode_token(ctx.query.get("next"))
    )
    return page_answer(ctx, items, nxt)


@route(
    bp,
    "GET",
    "/v1/rules/{name}",
    action="DescribeTopicRule",
    resource=rule_res,
    owner=rule_owner,
    tag=TAG,
    summary="Get a rule and its statistics",
    response=Rule,
    query=INCLUDE_SECRET,
)
def get_rule(ctx: Ctx) -> dict[str, Any]:
    if ctx.query["include_secret"]:
        ctx.require("DescribeTopicRuleSecret", ctx.resource)
    return rules.describe(ctx.params["name"], include_secret=ctx.query["include_secret"])


@route(
    bp,
    "PUT",
    "/v1/rules/{name}",
    action="ModifyTopicRule",
    resource=rule_res,
    owner=rule_owner,
    tag=TAG,
    summary="Modify a rule (SQL recompiled, actions revalidated; an action re-sent without its token or "
    "secret keeps them)",
    body=RulePut,
    response=Rule,
)
def put_rule(ctx: Ctx) -> dict[str, Any]:
    if "sql" in ctx.body:
        moved = rules.resource_of_sql(ctx.params["name"], ctx.body["sql"])
        if moved != ctx.resource:  # pointing a rule at another product needs that product too
            ctx.require("ModifyTopicRule", moved)
    return rules.modify(ctx.params["name"], dict(ctx.body))


@route(
    bp,
    "DELETE",
    "/v1/rules/{name}",
    action="DeleteTopicRule",
    resource=rule_res,
    owner=rule_owner,
    tag=TAG,
    summary="Delete a rule",
    status=204,
)
def delete_rule(ctx: Ctx) -> None:
    rules.delete(ctx.params["name"])


@route(
    bp,
    "POST",
    "/v1/rules/{name}/enable",
    action="EnableTopicRule",
    resource=rule_res,
    owner=rule_owner,
    tag=TAG,
    summary="Enable a rule (HTTP targets must pass the Echostr verification)",
    response=Rule,
)
def enable_rule(ctx: Ctx) -> dict[str, Any]:
    return rules.set_enabled(ctx.params["name"], True)


@route(
    bp,
    "POST",
    "/v1/rules/{name}/disable",
    action="DisableTopicRule",
    resource=rule_res,
    owner=rule_owner,
    tag=TAG,
    summary="Disable a rule",
    response=Rule,
)
def disable_rule(ctx: Ctx) -> dict[str, Any]:
    return rules.set_enabled(ctx.params["name"], False)


@route(
    bp,
    "POST",
    "/v1/rules/{name}/debug",
    action="DebugTopicRule",
    resource=rule_res,
    owner=rule_owner,
    tag=TAG,
    summary="Run the rule on a sample topic and payload (nothing is forwarded)",
    body=Debug,
    response=DebugResult,
)
def debug_rule(ctx: Ctx) -> dict[str, Any]:
    return rules.debug(ctx.params["name"], ctx.body)


def letter_owner(params: Any, body: Any) -> tuple[str, Any]:
    return delivery.letter_owner(params["letter_id"])


@route(
    bp,
    "GET",
    "/v1/dead-letters",
    action="DescribeDeadLetters",
    resource="deadletter/*",
    listing=True,
    item_action="DescribeDeadLetter",
    tag=TAG,
    summary="Failed deliveries the caller may read, with their reason, newest first",
    response=page_of(DeadLetter),
    query={
        **PAGING,
        "status": Enum(("dead", "replaying", "replayed"), code=errors.STATUS_INVALID),
        "rule": String(max_len=32, code=errors.RULE_NAME_INVALID),
    },
)
def list_dead_letters(ctx: Ctx) -> dict[str, Any]:
    items, nxt = delivery.list_letters(
        visible=ctx.visible,
        status=ctx.query.get("status"),
        rule=ctx.query.get("rule"),
        limit=ctx.query["limit"],
        start=decode_token(ctx.query.get("next")),
    )
    return {"items": items, "total": None, "next": encode_token(nxt)}


@route(
    bp,
    "GET",
    "/v1/dead-letters/{letter_id}",
    action="DescribeDeadLetter",
    resource=lambda p, b: f"deadletter/{p['letter_id']}",
    owner=letter_owner,
    tag=TAG,
    summary="One failed delivery with its reason",
    response=DeadLetter,
)
def get_dead_letter(ctx: Ctx) -> dict[str, Any]:
    return delivery.view_letter(ctx.item)


@route(
    bp,
    "POST",
    "/v1/dead-letters/{letter_id}/replay",
    action="ReplayDeadLetter",
    resource=lambda p, b: f"deadletter/{p['letter_id']}",
    owner=letter_owner,
    tag=TAG,
    summary="Deliver a dead letter again (same webhook-id)",
    response=DeadLetter,
    status=202,
)
def replay_dead_letter(ctx: Ctx) -> dict[str, Any]:
    return delivery.replay(ctx.params["letter_id"])


@route(
    bp,
    "GET",
    "/v1/deliveries",
    action="DescribeDeliveries",
    resource="delivery/*",
    listing=True,
    tag=TAG,
    summary="Delivery log of one target (rule/{name}/{action}, rule/{name}/error/{i}, stream/{id}…), newest first",
    response=page_of(Delivery),
    query={**PAGING, "target": String(required=True, min_len=1, max_len=200, code=errors.TARGET_INVALID)},
)
def list_deliveries(ctx: Ctx) -> dict[str, Any]:
    # one target's log: the decision is the one about the rule or stream the target belongs to
    ctx.require("DescribeDeliveries", delivery.owner_of_target(ctx.query["target"]))
    items, nxt = delivery.deliveries(
        ctx.query["target"], limit=ctx.query["limit"], start=decode_token(ctx.query.get("next"))
    )
    return {"items": items, "total": None, "next": encode_token(nxt)}
