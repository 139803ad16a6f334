"""The rule engine over moto (SPEC §9.1-9.2): rules CRUD and validation through the HTTP API, the
uplink hook, every action kind, the signed webhook engine with a real loopback receiver,
retries, error actions, dead letters and their replay.

The forward queue is drained in-process by ``drain_forwards`` (tests/integration/helpers.py), which
does what the ``forward`` worker's event source does: receive a batch, run it
(``delivery.run_batch``), delete what succeeded.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import boto3
import pytest

from chalicelib.protocol.events import UplinkMessage
from tests.integration.helpers import Recorder, drain_forwards, expect_error
from tests.receiver import Receiver

SQL = (
    "SELECT room1.temperature AS temp, room1.humidity AS hum FROM '/+/data' "
    "WHERE topic(2) = 'device00' AND room1.temperature > 30"
)


@pytest.fixture()
def device(api: Any, product: dict[str, Any]) -> tuple[str, str]:
    pid = product["product_id"]
    resp = api.post(f"/v1/products/{pid}/devices", {"device_name": "device00"})
    assert resp.status_code == 201, resp.body
    return pid, "device00"


def uplink(pid: str, dn: str, payload: Any, name: str = "data", qos: int = 1) -> Any:
    from chalicelib.services import uplink

    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    msg = UplinkMessage(
        topic=f"{pid}/{dn}/{name}", payload=raw, client_id=f"{pid}{dn}", timestamp_ms=int(time.time() * 1000), qos=qos
    )
    return uplink.process_batch([msg])


def make_rule(
    api: Any,
    name: str,
    actions: list[dict[str, Any]],
    *,
    sql: str = SQL,
    enabled: bool = True,
    error_actions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    resp = api.post(
        "/v1/rules",
        {"name": name, "sql": sql, "actions": actions, "enabled": enabled, "error_actions": error_actions or []},
    )
    assert resp.status_code == 201, resp.body
    return resp.json


# ------------------------------------------------------------------ CRUD and validation


def test_rule_crud_validation_and_debug(api: Any, loopback: None) -> None:
    resp = api.post("/v1/rules", {"name": "bad", "sql": "SELECT a, FROM '/+/data'"})
    err = expect_error(resp, 400, "InvalidParameterValue.SqlInvalid", "sql")
    assert err["details"]["position"] == 11 and "at character 11" in err["message"]
    resp = api.post("/v1/rules", {"name": "bad", "sql": "SELECT a FROM '/+/data' WHERE a IN (1, 2)"})
    err = expect_error(resp, 400, "InvalidParameterValue.SqlInvalid", "sql")
    assert "IN is not supported" in err["message"] and err["details"]["position"] == 33
    resp = api.post("/v1/rules", {"name": "bad", "sql": "SELECT a[1] FROM 'x'"})
    assert (
        "JSON arrays are not supported" in expect_error(resp, 400, "InvalidParameterValue.SqlInvalid", "sql")["message"]
    )
    too_many = [{"type": "republish", "topic": "a/b"}] * 11
    expect_error(
        api.post("/v1/rules", {"name": "r", "sql": SQL, "actions": too_many}),
        400,
        "InvalidParameterValue.ActionInvalid",
        "actions",
    )
    expect_error(
        api.post("/v1/rules", {"name": "r", "sql": SQL, "actions": [{"type": "ftp"}]}),
        400,
        "InvalidParameterValue.ActionInvalid",
        "actions[0].type",
    )
    expect_error(
        api.post("/v1/rules", {"name": "r", "sql": SQL, "actions": [{"type": "dynamodb", "table": "t1x"}]}),
        400,
        "InvalidParameterValue.ActionInvalid",
        "actions[0].fields",
    )

    rule = make_rule(
        api,
        "house",
        [{"type": "republish", "topic": "house_monitor/${house}/app"}],
        enabled=False,
        sql="SELECT house, room1.temperature AS temp FROM '/+/data' WHERE room1.temperature > 30",
    )
    assert rule["enabled"] is False and rule["topic_filter"] == "/+/data"
    assert rule["stats"] == {"hits": 0, "forwards_ok": 0, "failures": 0, "dead_letters": 0}
    expect_error(api.post("/v1/rules", {"name": "house", "sql": SQL}), 409, "ResourceInUse.RuleAlreadyExists", "name")
    assert [r["name"] for r in api.get("/v1/rules").json["items"]] == ["house"]

    resp = api.post(
        "/v1/rules/house/debug", {"topic": "P1/device00/data", "payload": {"house": "h7", "room1": {"temperature": 33}}}
    )
    assert resp.status_code == 200, resp.body
    assert resp.json["matched"] is True and resp.json["output"] == {"house": "h7", "temp": 33}
    resp = api.post("/v1/rules/house/debug", {"topic": "P1/device00/data", "payload": {"room1": {"temperature": 3}}})
    assert resp.json["matched"] is False and resp.json["topic_matched"] is True
    resp = api.post(
        "/v1/rules/house/debug",
        {"topic": "P1/device00/data", "payload_base64": "AAEC", "sql": "SELECT * FROM '+/+/data'"},
    )
    assert resp.json["output_base64"] == "AAEC" and resp.json["payload_json"] is False

    resp = api.put("/v1/rules/house", {"sql": "SELECT * FROM 'a/#/b'"})
    err = expect_error(resp, 400, "InvalidParameterValue.SqlInvalid", "sql")
    assert err["details"]["position"] == 18
    resp = api.put("/v1/rules/house", {"description": "the house"})
    assert resp.json["description"] == "the house"
    assert api.delete("/v1/rules/house").status_code == 204
    expect_error(api.get("/v1/rules/house"), 404, "ResourceNotFound.RuleNotExist", "name")


def test_enabling_a_url_that_does_not_echo_fails(api: Any, loopback: None, receiver: Receiver) -> None:
    receiver.echo = False
    make_rule(api, "hook", [{"type": "http", "url": receiver.url, "token": "tok123"}], enabled=False)
    err = expect_error(
        api.post("/v1/rules/hook/enable"), 400, "InvalidParameterValue.InvalidCallbackUrl", "actions[0].url"
    )
    assert "Echostr" in err["message"]
    assert api.get("/v1/rules/hook").json["enabled"] is False
    # the verification GET was signed with the token
    assert receiver.gets and receiver.gets[-1]["Echostr"] and receiver.gets[-1]["Signature"]
    receiver.echo = True
    assert api.post("/v1/rules/hook/enable").json["enabled"] is True


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/x",
        "http://10.0.0.8/x",
        "http://169.254.169.254/latest",
        "http://[::1]/x",
        "http://192.168.1.4/x",
        "http://[fe80::1]/x",
        "http://[::ffff:10.0.0.1]/x",
        "http://localhost/x",
        "https://example.com:8443/x",
        "ftp://example.com/x",
        "http://0.0.0.0/x",
        "http://224.0.0.1/x",
    ],
)
def test_private_link_local_and_metadata_urls_are_refused(api: Any, url: str) -> None:
    err = expect_error(
        api.post("/v1/rules", {"name": "r", "sql": SQL, "actions": [{"type": "http", "url": url}]}),
        400,
        "InvalidParameterValue.InvalidUrl",
        "actions[0].url",
    )
    assert "not allowed" in err["message"]


def test_loopback_is_allowed_only_where_configured(api: Any, loopback: None) -> None:
    make_rule(api, "lo", [{"type": "http", "url": "http://127.0.0.1:9/x"}], enabled=False)
    expect_error(
        api.post(
            "/v1/rules", {"name": "r2", "sql": SQL, "actions": [{"type": "http", "url": "http://169.254.169.254/x"}]}
        ),
        400,
        "InvalidParameterValue.InvalidUrl",
        "actions[0].url",
    )


# ------------------------------------------------------------------ forwarding


def test_http_forward_signed_envelope_and_every_action_kind(
    api: Any, loopback: None, receiver: Receiver, device: tuple[str, str], recorder: Recorder
) -> None:
    pid, dn = device
    sent = recorder.raw
    sqs, sns, kin, ddb, s3 = (
        boto3.client(s, region_name="us-east-1") for s in ("sqs", "sns", "kinesis", "dynamodb", "s3")
    )
    qurl = sqs.create_queue(QueueName="sink")["QueueUrl"]
    topic_arn = sns.create_topic(Name="sink")["TopicArn"]
    sns_q = sqs.create_queue(QueueName="sns-sink")["QueueUrl"]
    sns_q_arn = sqs.get_queue_attributes(QueueUrl=sns_q, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=sns_q_arn, Attributes={"RawMessageDelivery": "true"})
    kin.create_stream(StreamName="sink", ShardCount=1)
    ddb.create_table(
        TableName="readings",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "device", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "device", "KeyType": "HASH"}],
    )
    s3.create_bucket(Bucket="sink-bucket")
    http = {"type": "http", "url": receiver.url, "token": "tok123"}
    rule = make_rule(
        api,
        "room",
        [
            http,
            {"type": "republish", "topic": "house_monitor/${house}/app"},
            {"type": "sqs", "queue_url": qurl},
            {"type": "sns", "topic_arn": topic_arn},
            {"type": "kinesis", "stream_name": "sink"},
            {
                "type": "dynamodb",
                "table": "readings",
                "fields": {"device": "${deviceName}", "temp": "${temp}", "label": "t=${temp}", "source": "fleetbox"},
            },
            {"type": "s3", "bucket": "sink-bucket"},
        ],
        sql="SELECT house, room1.temperature AS temp, room1.humidity AS hum FROM '/+/data' "
        "WHERE topic(2) = 'device00' AND room1.temperature > 30",
    )
    receiver.secret = rule["actions"][0]["secret"]
    assert receiver.secret.startswith("whsec_")

    payload = {"house": "h1", "room1": {"temperature": 31.5, "humidity": 40}}
    before_ms = int(time.time() * 1000)
    result = uplink(pid, dn, payload)
    assert result.failed == [] and result.processed == 1
    uplink(pid, dn, {"house": "h1", "room1": {"temperature": 20, "humidity": 40}})  # no match
    drain_forwards(lambda: api.get("/v1/rules/room").json["stats"]["forwards_ok"] == 7)

    out = {"house": "h1", "temp": 31.5, "hum": 40}
    (hit,) = receiver.ok_hits()
    assert hit.sha1_valid is True and hit.standard_valid is True
    assert set(hit.body) == {"devicename", "productid", "payload", "seq", "timestamp", "timemills", "topic"}
    assert hit.body["devicename"] == dn and hit.body["productid"] == pid and hit.body["payload"] == out
    assert hit.body["topic"] == f"{pid}/{dn}/data" and isinstance(hit.body["seq"], int)
    assert hit.body["timemills"] >= before_ms and hit.body["timestamp"] == hit.body["timemills"] // 1000
    assert sent == [("house_monitor/h1/app", json.dumps(out, separators=(",", ":")).encode(), 1)]

    def check_queue_envelope(text: str) -> None:
        env = json.loads(text)
        assert set(env) == {"MsgType", "Topic", "Seq", "PayloadLen", "Payload", "ProductId", "DeviceName", "Time"}
        assert env["MsgType"] == "Forward" and env["ProductId"] == pid and env["DeviceName"] == dn
        assert json.loads(base64.b64decode(env["Payload"])) == out
        assert env["PayloadLen"] == len(base64.b64decode(env["Payload"]))
        assert time.strptime(env["Time"], "%Y-%m-%d %H:%M:%S")

    check_queue_envelope(sqs.receive_message(QueueUrl=qurl)["Messages"][0]["Body"])
    check_queue_envelope(sqs.receive_message(QueueUrl=sns_q)["Messages"][0]["Body"])
    shard = kin.get_shard_iterator(StreamName="sink", ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON")[
        "ShardIterator"
    ]
    records = kin.get_records(ShardIterator=shard)["Records"]
    assert len(records) == 1 and records[0]["PartitionKey"] == f"{pid}/{dn}"
    check_queue_envelope(records[0]["Data"].decode())
    item = ddb.get_item(TableName="readings", Key={"device": {"S": dn}})["Item"]
    assert item == {"device": {"S": dn}, "temp": {"N": "31.5"}, "label": {"S": "t=31.5"}, "source": {"S": "fleetbox"}}
    (key,) = [o["Key"] for o in s3.list_objects_v2(Bucket="sink-bucket")["Contents"]]
    assert key.startswith(f"rules/{pid}/{dn}/")
    assert json.loads(s3.get_object(Bucket="sink-bucket", Key=key)["Body"].read()) == out

    stats = api.get("/v1/rules/room").json["stats"]
    assert stats == {"hits": 1, "forwards_ok": 7, "failures": 0, "dead_letters": 0}
    log = api.get("/v1/deliveries?target=rule/room/0").json["items"]
    assert len(log) == 1 and log[0]["ok"] is True and log[0]["status"] == 200
    assert log[0]["webhook_id"] == hit.headers["webhook-id"]


def test_lambda_action_invokes_with_the_queue_envelope(api: Any, loopback: None, device: tuple[str, str]) -> None:
    """moto runs Lambda functions only with docker, which this machine lacks: the invoke call is
    checked with a botocore Stubber on the forwarder's client (request shape and the answer)."""
    from botocore.stub import ANY, Stubber

    from chalicelib.forwarders import base

    pid, dn = device
    client = base.aws("lambda")
    make_rule(api, "fn", [{"type": "lambda", "function_name": "consumer"}], sql="SELECT * FROM '+/+/data'")
    with Stubber(client) as stub:
        stub.add_response(
            "invoke", {"StatusCode": 202}, {"FunctionName": "consumer", "InvocationType": "Event", "Payload": ANY}
        )
        uplink(pid, dn, {"a": 1})
        drain_forwards(lambda: api.get("/v1/rules/fn").json["stats"]["forwards_ok"] == 1)
        stub.assert_no_pending_responses()


def test_binary_payload_is_forwarded_only_by_select_star(
    api: Any, loopback: None, receiver: Receiver, device: tuple[str, str]
) -> None:
    pid, dn = device
    make_rule(api, "bin", [{"type": "http", "url": receiver.url, "token": "tok123"}], sql="SELECT * FROM '+/+/data'")
    uplink(pid, dn, b"\x00\x01\xfe")
    drain_forwards(lambda: len(receiver.ok_hits()) == 1)
    assert receiver.ok_hits()[0].body["payload"] == base64.b64encode(b"\x00\x01\xfe").decode()


def test_missing_republish_field_is_a_payload_no_field_diagnostic(
    api: Any, loopback: None, device: tuple[str, str]
) -> None:
    pid, dn = device
    make_rule(api, "rp", [{"type": "republish", "topic": "out/${nothere}"}], sql="SELECT a FROM '+/+/data'")
    uplink(pid, dn, {"a": 1})
    drain_forwards(lambda: api.get("/v1/rules/rp").json["stats"]["dead_letters"] == 1)
    now = int(time.time() * 1000)
    logs = api.get(f"/v1/products/{pid}/devices/{dn}/logs?kind=diagnostic&start=0&end={now + 1000}").json["items"]
    assert [entry["code"] for entry in logs] == ["Payload_No_Field"]
    (letter,) = api.get("/v1/dead-letters").json["items"]
    assert "nothere" in letter["reason"] and letter["rule"] == "rp"


def test_retries_error_action_dead_letter_and_replay(
    api: Any, loopback: None, receiver: Receiver, device: tuple[str, str]
) -> None:
    """Receiver down: attempts at +0, +1, +3, +10 s, the error action (also down) once, then a dead
    letter with the reason; replayed once the receiver is back: delivered once, same webhook-id."""
    pid, dn = device
    port = receiver.port
    rule = make_rule(
        api,
        "down",
        [{"type": "http", "url": receiver.url, "token": "tok123"}],
        error_actions=[{"type": "http", "url": receiver.url.replace("/hook", "/errors"), "token": "tok123"}],
        sql="SELECT * FROM '+/+/data'",
    )
    receiver.stop()
    uplink(pid, dn, {"a": 1})
    drain_forwards(lambda: api.get("/v1/rules/down").json["stats"]["dead_letters"] == 1, timeout=40)
    attempts = sorted(api.get("/v1/deliveries?target=rule/down/0").json["items"], key=lambda e: e["time"])
    assert [a["attempt"] for a in attempts] == [1, 2, 3, 4] and not any(a["ok"] for a in attempts)
    assert len({a["webhook_id"] for a in attempts}) == 1
    offsets = [(a["time"] - attempts[0]["time"]) / 1000 for a in attempts]
    for got, want in zip(offsets[1:], (1, 3, 10), strict=True):
        assert want - 0.05 <= got <= want + 2.5, offsets
    err_log = api.get("/v1/deliveries?target=rule/down/error/0").json["items"]
    assert len(err_log) == 1 and err_log[0]["time"] >= attempts[-1]["time"]
    (letter,) = api.get("/v1/dead-letters").json["items"]
    assert letter["status"] == "dead" and letter["attempts"] == 4 and "the connection was refused" in letter["reason"]
    assert "error actions failed" in letter["reason"]
    assert api.get("/v1/rules/down").json["stats"] == {"hits": 1, "forwards_ok": 0, "failures": 4, "dead_letters": 1}
    now = int(time.time() * 1000)
    codes = [
        e["code"]
        for e in api.get(f"/v1/products/{pid}/devices/{dn}/logs?kind=diagnostic&start=0&end={now + 1000}").json["items"]
    ]
    assert codes == ["Forward_Third_Not_Responding"]

    back = Receiver(token="tok123", secret=rule["actions"][0]["secret"], port=port).start()
    try:
        resp = api.post(f"/v1/dead-letters/{letter['id']}/replay")
        assert resp.status_code == 202 and resp.json["status"] == "replaying"
        expect_error(
            api.post(f"/v1/dead-letters/{letter['id']}/replay"),
            409,
            "FailedOperation.DeadLetterNotReplayable",
            "letter_id",
        )
        drain_forwards(lambda: api.get("/v1/dead-letters").json["items"][0]["status"] == "replayed")
        (hit,) = back.hits
        assert hit.status == 200 and hit.sha1_valid and hit.standard_valid
        assert hit.headers["webhook-id"] == attempts[0]["webhook_id"]
        assert hit.body["payload"] == {"a": 1}
    finally:
        back.stop()


def test_410_stops_the_target_and_429_honours_retry_after(
    api: Any, loopback: None, receiver: Receiver, device: tuple[str, str]
) -> None:
    pid, dn = device
    receiver.fail_rate, receiver.status_on_fail = 1.0, 410
    make_rule(api, "gone", [{"type": "http", "url": receiver.url, "token": "tok123"}], sql="SELECT * FROM '+/+/data'")
    uplink(pid, dn, {"a": 1})
    drain_forwards(lambda: api.get("/v1/rules/gone").json["stats"]["dead_letters"] == 1)
    rule = api.get("/v1/rules/gone").json
    assert "410" in rule["actions"][0]["disabled"] and "410" in rule["note"]
    assert len(receiver.hits) == 1  # no retry after 410
    uplink(pid, dn, {"a": 2})  # the stopped target gets nothing more
    drain_forwards(lambda: True, timeout=3)
    assert len(receiver.hits) == 1


BURST = 200


def test_a_burst_with_half_failing_counts_in_equal_delivered_plus_dead(
    api: Any, loopback: None, receiver: Receiver, device: tuple[str, str]
) -> None:
    """200 matches queued by the rule engine at once (the uplink hook's evaluate + enqueue);
    the receiver fails half of the requests; every message ends delivered or dead-lettered.
    (The 1,000-message burst runs end to end through MQTT in tests/e2e/test_rules_e2e.py.)"""
    from chalicelib.forwarders import engine
    from chalicelib.services import rules

    pid, dn = device
    receiver.fail_rate = 0.5
    make_rule(
        api,
        "burst",
        [{"type": "http", "url": receiver.url, "token": "tok123"}],
        sql="SELECT n FROM '+/+/data' WHERE n >= 0",
    )
    now = int(time.time() * 1000)
    batch = [
        rules.Inbound(pid, dn, f"{pid}/{dn}/data", json.dumps({"n": i}).encode(), 1, now + i) for i in range(BURST)
    ]
    assert rules.on_uplink(batch) == []

    def settled() -> bool:
        s = api.get("/v1/rules/burst").json["stats"]
        return s["forwards_ok"] + s["dead_letters"] == BURST

    drain_forwards(settled, timeout=60)
    stats = api.get("/v1/rules/burst").json["stats"]
    delivered = receiver.delivered_ids()
    assert stats["hits"] == BURST and stats["forwards_ok"] == len(delivered)
    letters: list[dict[str, Any]] = []
    page = api.get("/v1/dead-letters?limit=100").json
    letters += page["items"]
    while page["next"]:
        page = api.get(f"/v1/dead-letters?limit=100&next={page['next']}").json
        letters += page["items"]
    assert len(letters) == stats["dead_letters"] > 0
    assert len(delivered) + len(letters) == BURST
    assert not delivered & {letter["webhook_id"] for letter in letters}
    numbers = {h.body["payload"]["n"] for h in receiver.ok_hits()}
    assert len(numbers) == len(delivered)
    assert engine.enqueue([]) == []


def test_fleetbox_own_resources_are_never_rule_targets(api: Any, loopback: None) -> None:
    for action, field in (
        [{"type": "dynamodb", "table": "fleetbox-test-api_keys", "fields": {"a": "${a}"}}, "table"],
        [{"type": "s3", "bucket": "fleetbox-test-files"}, "bucket"],
        [{"type": "sqs", "queue_url": "https://sqs.us-east-1.amazonaws.com/1/fleetbox-test-jobs"}, "queue_url"],
    ):
        err = expect_error(
            api.post("/v1/rules", {"name": "own", "sql": SQL, "actions": [action]}),
            400,
            "InvalidParameterValue.ActionInvalid",
            f"actions[0].{field}",
        )
        assert "sink-" in err["message"]
    make_rule(api, "sink", [{"type": "dynamodb", "table": "fleetbox-test-sink-readings", "fields": {"a": "${a}"}}])


def test_status_changes_reach_rules_as_status_change_messages(
    api: Any, loopback: None, device: tuple[str, str]
) -> None:
    from chalicelib.protocol.events import presence_event
    from chalicelib.services import lifecycle

    pid, dn = device
    sqs = boto3.client("sqs", region_name="us-east-1")
    qurl = sqs.create_queue(QueueName="status-sink")["QueueUrl"]
    make_rule(api, "status", [{"type": "sqs", "queue_url": qurl}], sql="SELECT * FROM '$status/+/+'")
    now = int(time.time() * 1000)
    lifecycle.handle(presence_event(f"{pid}{dn}", True, timestamp_ms=now, ip="10.0.0.9", session_id="s1"))
    lifecycle.handle(presence_event(f"{pid}{dn}", False, timestamp_ms=now + 1000, session_id="s1"))
    drain_forwards(lambda: api.get("/v1/rules/status").json["stats"]["forwards_ok"] == 2)
    bodies = [json.loads(m["Body"]) for m in sqs.receive_message(QueueUrl=qurl, MaxNumberOfMessages=10)["Messages"]]
    assert sorted(b["Event"] for b in bodies) == ["Offline", "Online"]
    for b in bodies:
        assert b["MsgType"] == "StatusChange" and b["ProductId"] == pid and b["DeviceName"] == dn
        assert b["Topic"] == f"$status/{pid}/{dn}"
        assert json.loads(base64.b64decode(b["Payload"]))["event"] == b["Event"]


def test_republish_qos1_retries_after_3_6_9_s_then_dead_letter(
    api: Any, loopback: None, device: tuple[str, str], recorder: Recorder
) -> None:
    pid, dn = device
    recorder.listening = False  # nobody subscribes: every QoS 1 attempt fails
    tries = recorder.times
    make_rule(api, "repub", [{"type": "republish", "topic": f"{pid}/{dn}/control"}], sql="SELECT a FROM '+/+/data'")
    uplink(pid, dn, {"a": 1}, qos=1)
    drain_forwards(lambda: api.get("/v1/rules/repub").json["stats"]["dead_letters"] == 1, timeout=30)
    offsets = [t - tries[0] for t in tries]
    assert len(tries) == 4, offsets
    for got, want in zip(offsets[1:], (3, 6, 9), strict=True):
        assert want - 0.1 <= got <= want + 2.5, offsets
    now = int(time.time() * 1000)
    codes = [
        e["code"]
        for e in api.get(f"/v1/products/{pid}/devices/{dn}/logs?kind=diagnostic&start=0&end={now + 1000}").json["items"]
    ]
    assert codes == ["Rule_Repub_System_Err"]
    tries.clear()
    uplink(pid, dn, {"a": 2}, qos=0)  # QoS 0: one attempt, nobody listening is not a failure
    drain_forwards(lambda: api.get("/v1/rules/repub").json["stats"]["forwards_ok"] == 1)
    assert len(tries) == 1


def test_refused_forward_jobs_are_dead_lettered_not_lost(
    api: Any, loopback: None, device: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.forwarders import engine

    pid, dn = device
    make_rule(api, "refused", [{"type": "republish", "topic": "x/y"}], sql="SELECT a FROM '+/+/data'")
    real = engine._sqs()

    class Refusing:
        """The forward queue refuses every entry (throttled, or an outage)."""

        def get_queue_url(self, **kw: Any) -> Any:
            return real.get_queue_url(**kw)

        def send_message_batch(self, **kw: Any) -> Any:
            return {
                "Successful": [],
                "Failed": [{"Id": e["Id"], "Code": "ThrottlingException", "SenderFault": False} for e in kw["Entries"]],
            }

    monkeypatch.setattr(engine, "_sqs", lambda: Refusing())
    result = uplink(pid, dn, {"a": 1})
    assert result.failed == [] and result.processed == 1
    (letter,) = api.get("/v1/dead-letters").json["items"]
    assert "forward queue refused" in letter["reason"] and letter["rule"] == "refused"
    assert api.get("/v1/rules/refused").json["stats"]["dead_letters"] == 1
