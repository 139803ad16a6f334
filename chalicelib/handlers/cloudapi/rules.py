"""Cloud-API topic-rule actions (SPEC §9.1) onto the /v1/rules routes.

Field translation (Tencent ↔ Fleetbox): ``TopicRulePayload.Sql`` is the rule's SQL **base64-encoded**
(as Tencent's API takes and answers it); ``RuleDisabled`` ↔ not enabled (enabling verifies every
HTTP action's URL, SPEC §9.2); ``Actions`` is a JSON array text of one-key objects:
``{"republish":{"topic":…}}`` ↔ a republish action, ``{"forward":{"api":URL,"token":…}}`` ↔ an HTTP
action (``api`` ↔ url); Fleetbox's own sinks are written the same way under their kind
(``{"sqs":{…}}``, ``sns``, ``kinesis``, ``dynamodb``, ``lambda``, ``s3``).  Tencent's other sinks
(ckafka, cmqqueue, mysql, …) have no Fleetbox counterpart and are refused.  Answers never carry an
HTTP action's token or signing secret (Fleetbox shows them once, to the HTTP route that made them).
Error actions are set through ``/v1/rules`` only; a Modify keeps the rule's.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from ...core import errors
from ...core.config import settings
from ...core.schema import Boolean, Integer, Model, String
from ...services import delivery
from .. import rules as rule_routes
from .registry import Invoker, Req, Run, action

#: the route modules these actions call (imported first so their routes are registered)
ROUTES_FROM = (rule_routes,)

CREATE = "POST /v1/rules"
LIST = "GET /v1/rules"
ONE = "/v1/rules/{name}"

RULE_NAME = rule_routes.RULE_NAME
PAYLOAD_FIELDS = {
    "Sql": String(required=True, min_len=1, max_len=1024, code=errors.SQL_INVALID, description="base64 of the SQL"),
    "Actions": String(max_len=65536, code=errors.ACTION_INVALID, description="JSON array text"),
    "Description": String(max_len=256, code=errors.DESCRIPTION_INVALID),
    "RuleDisabled": Boolean(code=errors.INVALID_PARAMETER),
}
PAYLOAD = Model("TopicRulePayload", PAYLOAD_FIELDS, required=True)
RULE_FIELDS = {
    "name": "RuleName",
    "sql": "TopicRulePayload.Sql",
    "description": "TopicRulePayload.Description",
    "actions": "TopicRulePayload.Actions",
    "enabled": "TopicRulePayload.RuleDisabled",
}
_TENCENT_HTTP = "forward"


def _sql(text: str) -> str:
    try:
        return base64.b64decode(text, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise errors.SQL_INVALID(
            "TopicRulePayload.Sql must be the rule's SQL, base64-encoded (UTF-8)", "TopicRulePayload.Sql"
        ) from None


def _actions(text: str) -> list[dict[str, Any]]:
    where = "TopicRulePayload.Actions"
    try:
        items = json.loads(text) if text.strip() else []
    except ValueError:
        raise errors.ACTION_INVALID(f"{where} must be a JSON array text", where) from None
    if not isinstance(items, list):
        raise errors.ACTION_INVALID(f"{where} must be a JSON array", where)
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        if not (isinstance(item, dict) and len(item) == 1 and isinstance(next(iter(item.values())), dict)):
            raise errors.ACTION_INVALID(f'{where}[{i}] must be one object like {{"republish":{{…}}}}', where)
        kind, settings_ = next(iter(item.items()))
        conf = dict(settings_)
        if kind == _TENCENT_HTTP:
            kind = "http"
            if "api" in conf:
                conf["url"] = conf.pop("api")
        elif kind == "http" or kind not in delivery.ACTION_KINDS:
            known = ", ".join([_TENCENT_HTTP, *(k for k in delivery.ACTION_KINDS if k != "http")])
            raise errors.ACTION_INVALID(f"{where}[{i}]: {kind[:32]} is not supported here; use one of {known}", where)
        out.append({"type": kind, **conf})
    return out


def _actions_text(actions: list[dict[str, Any]]) -> str:
    out = []
    for a in actions:
        conf = {k: v for k, v in a.items() if k != "type" and not k.endswith("_set")}  # secrets: write-only
        if a["type"] == "http":
            conf["api"] = conf.pop("url", None)
            out.append({_TENCENT_HTTP: conf})
        else:
            out.append({a["type"]: conf})
    return json.dumps(out, ensure_ascii=False, separators=(",", ":"))


def _body(payload: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"sql": _sql(payload["Sql"])}
    if "Actions" in payload:
        body["actions"] = _actions(payload["Actions"])
    if "Description" in payload:
        body["description"] = payload["Description"]
    if "RuleDisabled" in payload:
        body["enabled"] = not payload["RuleDisabled"]
    return body


def topic_rule(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "RuleName": r["name"],
        "Sql": base64.b64encode(r["sql"].encode("utf-8")).decode("ascii"),
        "Description": r.get("description", ""),
        "Actions": _actions_text(r.get("actions") or []),
        "RuleDisabled": not r["enabled"],
    }


@action(
    "CreateTopicRule",
    {"RuleName": RULE_NAME, "TopicRulePayload": PAYLOAD},
    routes=[CREATE],
    summary="Create a rule (Sql base64; RuleDisabled false enables it, verifying HTTP targets)",
    fields=RULE_FIELDS,
)
def create_topic_rule(req: Req, call: Invoker) -> dict[str, Any]:
    body = _body(req["TopicRulePayload"])
    body.setdefault("enabled", True)  # Tencent: a rule is enabled unless RuleDisabled
    call(CREATE, body={"name": req["RuleName"], **body})
    return {}


@action(
    "ModifyTopicRule",
    {"RuleName": RULE_NAME, "TopicRulePayload": PAYLOAD},
    routes=[f"PUT {ONE}"],
    summary="Replace a rule's SQL, actions, description (and enabled state when RuleDisabled is given)",
    fields=RULE_FIELDS,
)
def modify_topic_rule(req: Req, call: Invoker) -> dict[str, Any]:
    body = _body(req["TopicRulePayload"])
    body.setdefault("actions", [])
    body.setdefault("description", "")
    call(f"PUT {ONE}", params={"name": req["RuleName"]}, body=body)
    return {}


@action(
    "DescribeTopicRule",
    {"RuleName": RULE_NAME},
    routes=[f"GET {ONE}"],
    summary="One rule (Sql base64; Actions without tokens or secrets)",
    fields=RULE_FIELDS,
)
def describe_topic_rule(req: Req, call: Invoker) -> dict[str, Any]:
    return {"Rule": topic_rule(call(f"GET {ONE}", params={"name": req["RuleName"]})), "CamTag": []}


def _on_rule(route: str) -> Run:
    """An action that runs one route on the rule ``RuleName`` and answers nothing more."""

    def run(req: Req, call: Invoker) -> dict[str, Any]:
        call(route, params={"name": req["RuleName"]})
        return {}

    return run


for _name, _route, _summary in (
    ("DeleteTopicRule", f"DELETE {ONE}", "Delete a rule"),
    ("EnableTopicRule", f"POST {ONE}/enable", "Enable a rule (HTTP targets must pass the Echostr verification)"),
    ("DisableTopicRule", f"POST {ONE}/disable", "Disable a rule"),
):
    action(_name, {"RuleName": RULE_NAME}, routes=[_route], summary=_summary, fields=RULE_FIELDS)(_on_rule(_route))


@action(
    "GetTopicRuleList",
    {
        "PageNum": Integer(required=True, minimum=1, code=errors.INVALID_PARAMETER),
        "PageSize": Integer(required=True, minimum=1, maximum=500, code=errors.LIMIT_INVALID),
    },
    routes=[LIST],
    summary="The rules the caller may read (PageNum/PageSize over the route's pages)",
    fields=RULE_FIELDS,
)
def get_topic_rule_list(req: Req, call: Invoker) -> dict[str, Any]:
    size = req["PageSize"]
    start = (req["PageNum"] - 1) * size
    if start + size > settings().cloudapi_max_walk:
        raise errors.LIMIT_INVALID("PageNum × PageSize is beyond what one list walks", "PageNum")
    items, total = call.page(LIST, offset=start, limit=size)
    return {
        "TotalCnt": total,
        "Rules": [
            {
                "RuleName": r["name"],
                "Description": r.get("description", ""),
                "CreatedAt": r["created_at"],
                "RuleDisabled": not r["enabled"],
            }
            for r in items
        ],
    }
