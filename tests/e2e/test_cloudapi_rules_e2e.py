"""Topic-rule actions (SPEC §9.1, §14) through the real Tencent Cloud SDK client against the session's
local stack: the rule the SDK makes is the one ``/v1/rules`` shows (SQL base64-encoded as Tencent
carries it, ``forward`` ↔ an HTTP action verified with the Echostr check on a loopback receiver),
and a partner pair reaches only the rules of its own product."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cloudsdk import client, endpoint, pair_for, refused, sdk_call
from tests.e2e.fleet import Api
from tests.helpers import partner_policy
from tests.receiver import Receiver

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cli(api: Api, local_stack: dict[str, Any]) -> Any:
    pair = pair_for(api)
    return client(endpoint(local_stack), pair["secret_id"], pair["secret_key"])


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver(token="sdkTok").start()
    yield r
    r.stop()


def b64(sql: str) -> str:
    return base64.b64encode(sql.encode()).decode()


def name() -> str:
    return f"sdk{uuid.uuid4().hex[:8]}"


def test_rule_actions_through_the_sdk(api: Api, cli: Any, receiver: Receiver, local_stack: dict[str, Any]) -> None:
    pid = api.product(name="SDK rules")
    rule = name()
    sql = f"SELECT temp FROM '{pid}/+/data' WHERE temp > 30"
    actions = [{"forward": {"api": receiver.url, "token": "sdkTok"}}, {"republish": {"topic": f"{pid}/x/alerts"}}]
    params = {
        "RuleName": rule,
        "TopicRulePayload": {"Sql": b64(sql), "Actions": json.dumps(actions), "Description": "d1"},
    }
    receiver.echo = False  # enabling verifies the forward target (Echostr): a wrong answer refuses the rule
    try:
        assert refused(cli, "CreateTopicRule", params) == "InvalidParameterValue.InvalidCallbackUrl"
    finally:
        receiver.echo = True
    api.call("GET", f"/v1/rules/{rule}", 404)
    sdk_call(cli, "CreateTopicRule", params)
    http = api.call("GET", f"/v1/rules/{rule}", 200).json()
    assert (http["sql"], http["enabled"], http["description"]) == (sql, True, "d1")  # Tencent: enabled by default
    assert [a["type"] for a in http["actions"]] == ["http", "republish"] and http["actions"][0]["url"] == receiver.url
    assert http["actions"][0]["token_set"] and http["resource"] == f"product/{pid}/rule/{rule}"

    got = sdk_call(cli, "DescribeTopicRule", {"RuleName": rule})["Rule"]
    assert base64.b64decode(got["Sql"]).decode() == sql and got["RuleDisabled"] is False and got["Description"] == "d1"
    shown = json.loads(got["Actions"])
    assert shown == [{"forward": {"api": receiver.url}}, {"republish": {"topic": f"{pid}/x/alerts"}}]  # no token

    sdk_call(cli, "DisableTopicRule", {"RuleName": rule})
    assert api.call("GET", f"/v1/rules/{rule}", 200).json()["enabled"] is False
    sdk_call(cli, "EnableTopicRule", {"RuleName": rule})
    assert api.call("GET", f"/v1/rules/{rule}", 200).json()["enabled"] is True

    new_sql = f"SELECT * FROM '{pid}/+/event'"
    sdk_call(
        cli,
        "ModifyTopicRule",
        {
            "RuleName": rule,
            "TopicRulePayload": {
                "Sql": b64(new_sql),
                "Actions": json.dumps([{"republish": {"topic": f"{pid}/x/events"}}]),
                "Description": "d2",
                "RuleDisabled": True,
            },
        },
    )
    http = api.call("GET", f"/v1/rules/{rule}", 200).json()
    assert (http["sql"], http["enabled"], http["description"]) == (new_sql, False, "d2")
    assert http["actions"] == [{"type": "republish", "topic": f"{pid}/x/events"}]

    other = name()
    sdk_call(cli, "CreateTopicRule", {"RuleName": other, "TopicRulePayload": {"Sql": b64(sql), "RuleDisabled": True}})
    assert api.call("GET", f"/v1/rules/{other}", 200).json()["enabled"] is False
    every = [r["name"] for r in api.call("GET", "/v1/rules", 200, params={"limit": 100}).json()["items"]]
    listed = sdk_call(cli, "GetTopicRuleList", {"PageNum": 1, "PageSize": 500})
    assert [r["RuleName"] for r in listed["Rules"]] == every and listed["TotalCnt"] == len(every)
    one = sdk_call(cli, "GetTopicRuleList", {"PageNum": 2, "PageSize": 1})
    assert [r["RuleName"] for r in one["Rules"]] == every[1:2]

    for bad, code in (
        ({"Sql": "not base64!"}, "InvalidParameterValue.SqlInvalid"),
        ({"Sql": b64("SELECT FROM nowhere")}, "InvalidParameterValue.SqlInvalid"),
        ({"Sql": b64(sql), "Actions": '[{"ckafka":{}}]'}, "InvalidParameterValue.ActionInvalid"),
        ({"Sql": b64(sql), "Actions": "{"}, "InvalidParameterValue.ActionInvalid"),
    ):
        assert refused(cli, "CreateTopicRule", {"RuleName": name(), "TopicRulePayload": bad}) == code, bad

    # the older form signatures carry the nested payload too (Items.0.x / TopicRulePayload.Sql flattened)
    pair = pair_for(api)
    for method in ("HmacSHA1", "HmacSHA256"):
        v1 = client(endpoint(local_stack), pair["secret_id"], pair["secret_key"], sign_method=method)
        third = name()
        sdk_call(
            v1,
            "CreateTopicRule",
            {"RuleName": third, "TopicRulePayload": {"Sql": b64(sql), "RuleDisabled": True, "Description": method}},
        )
        assert api.call("GET", f"/v1/rules/{third}", 200).json()["description"] == method
        assert sdk_call(v1, "DescribeTopicRule", {"RuleName": third})["Rule"]["RuleDisabled"] is True
        sdk_call(v1, "DeleteTopicRule", {"RuleName": third})
    sdk_call(cli, "DeleteTopicRule", {"RuleName": other})
    api.call("GET", f"/v1/rules/{other}", 404)
    assert refused(cli, "DescribeTopicRule", {"RuleName": other}) == "ResourceNotFound.RuleNotExist"
    sdk_call(cli, "DeleteTopicRule", {"RuleName": rule})


def test_a_partner_pair_reaches_only_its_products_rules(api: Api, local_stack: dict[str, Any], cli: Any) -> None:
    mine, theirs = api.product(name="rules A"), api.product(name="rules B")
    their_rule = name()
    sdk_call(
        cli,
        "CreateTopicRule",
        {"RuleName": their_rule, "TopicRulePayload": {"Sql": b64(f"SELECT * FROM '{theirs}/+/data'")}},
    )
    pair = pair_for(api, partner_policy(mine))
    partner = client(endpoint(local_stack), pair["secret_id"], pair["secret_key"])
    own = name()
    sdk_call(
        partner,
        "CreateTopicRule",
        {"RuleName": own, "TopicRulePayload": {"Sql": b64(f"SELECT * FROM '{mine}/+/data'")}},
    )
    listed = sdk_call(partner, "GetTopicRuleList", {"PageNum": 1, "PageSize": 100})
    assert [r["RuleName"] for r in listed["Rules"]] == [own] and listed["TotalCnt"] == 1
    assert sdk_call(partner, "DescribeTopicRule", {"RuleName": own})["Rule"]["RuleName"] == own

    denied = "UnauthorizedOperation.PermissionDenied"
    their_sql = {"Sql": b64(f"SELECT * FROM '{theirs}/+/event'")}
    for action, params in (
        ("CreateTopicRule", {"RuleName": name(), "TopicRulePayload": their_sql}),
        ("DescribeTopicRule", {"RuleName": their_rule}),
        ("ModifyTopicRule", {"RuleName": their_rule, "TopicRulePayload": their_sql}),
        ("ModifyTopicRule", {"RuleName": own, "TopicRulePayload": their_sql}),  # pointing A's rule at B
        ("DisableTopicRule", {"RuleName": their_rule}),
        ("EnableTopicRule", {"RuleName": their_rule}),
        ("DeleteTopicRule", {"RuleName": their_rule}),
    ):
        assert refused(partner, action, params) == denied, action
    assert api.call("GET", f"/v1/rules/{their_rule}", 200).json()["sql"] == f"SELECT * FROM '{theirs}/+/data'"
    assert api.call("GET", f"/v1/rules/{own}", 200).json()["sql"] == f"SELECT * FROM '{mine}/+/data'"
