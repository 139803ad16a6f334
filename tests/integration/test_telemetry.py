"""The thing-model protocol on the uplink path (SPEC §6.4, §6.6): reports, status, controls,
events, actions, the time service — driven through ``uplink.process_batch`` with a
recording device publisher, and checked through the HTTP API a user would read.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any

from chalicelib.core import clock
from chalicelib.models.devices import ShadowRecord
from chalicelib.protocol.events import kinesis_event, presence_event
from tests.helpers import wait_until
from tests.integration.helpers import (
    DynamoCounter,
    Recorder,
    connect,
    logs,
    make_device,
    make_product,
    props,
    report,
    run,
    up,
)

# ------------------------------------------------------------------ reports


def test_a_valid_report_is_stored_and_answered_exactly(api, lamp, recorder):
    # Given a lamp, when it reports two valid values
    run(report(lamp, "dev1", {"brightness": 42, "power_switch": 1}, token="tok-7"))
    # Then the reply carries method, the echoed clientToken, a numeric code and status — nothing else
    reply = recorder.last(f"thing/down/property/{lamp}/dev1")
    assert reply == {"method": "report_reply", "clientToken": "tok-7", "code": 0, "status": "success"}
    # And the latest values and their history are readable
    latest = {p["id"]: p for p in props(api, lamp)["properties"]}
    assert latest["brightness"]["value"] == 42 and latest["power_switch"]["value"] == 1
    assert latest["brightness"]["time_ms"] // 1000 == latest["brightness"]["time"]
    hist = api.get(f"/v1/products/{lamp}/devices/dev1/properties/brightness/history").json
    assert [h["value"] for h in hist["items"]] == [42]
    # And the content log holds the uplink and the reply
    content = logs(api, lamp, "dev1", "content")
    assert {c["direction"] for c in content} == {"up", "down"}
    assert any(c["direction"] == "down" and json.loads(c["payload"])["method"] == "report_reply" for c in content)


def test_an_out_of_range_value_is_refused_by_name_and_its_neighbours_kept(api, lamp, recorder):
    run(report(lamp, "dev1", {"brightness": 120, "power_switch": 0}, token="x"))
    reply = recorder.last(f"thing/down/property/{lamp}/dev1")
    assert reply["method"] == "report_reply" and reply["clientToken"] == "x"
    assert isinstance(reply["code"], int) and reply["code"] != 0
    assert "brightness" in reply["status"] and "120 above max 100" in reply["status"]
    latest = {p["id"]: p["value"] for p in props(api, lamp)["properties"]}
    assert "brightness" not in latest and latest["power_switch"] == 0
    hist = api.get(f"/v1/products/{lamp}/devices/dev1/properties/brightness/history").json
    assert hist["items"] == []
    diags = logs(api, lamp, "dev1", "diagnostic")
    assert any(d["message"] == "brightness: 120 above max 100" for d in diags), diags


def test_dollar_topics_are_answered_on_the_dollar_form(api, lamp, recorder):
    run(report(lamp, "dev1", {"brightness": 5}, dollar=True))
    assert recorder.on(f"$thing/down/property/{lamp}/dev1")
    assert not recorder.on(f"thing/down/property/{lamp}/dev1")


def test_only_newer_times_win_the_latest_value_but_history_keeps_all(api, lamp, recorder):
    now = clock.now_ms()
    run(
        up(
            lamp,
            "dev1",
            "thing/up/property",
            {"method": "report", "clientToken": "a", "params": {"brightness": 10}, "timestamp": now},
        )
    )
    # an older (buffered) value arrives later: in seconds this time
    # (a report-only batch reads nothing: the stored time guards the write, which is retried without it)
    run(
        up(
            lamp,
            "dev1",
            "thing/up/property",
            {
                "method": "report",
                "clientToken": "b",
                "params": {"brightness": 20, "power_switch": 1},
                "timestamp": now // 1000 - 60,
            },
        )
    )
    latest = {p["id"]: p for p in props(api, lamp)["properties"]}
    assert latest["brightness"]["value"] == 10 and latest["brightness"]["time_ms"] == now
    assert latest["power_switch"]["value"] == 1
    hist = api.get(f"/v1/products/{lamp}/devices/dev1/properties/brightness/history").json["items"]
    assert [h["value"] for h in hist] == [10, 20]  # newest first


def test_client_tokens_are_never_deduplicated(api, lamp, recorder):
    # a rebooted SDK device restarts its tokens at {pid}-0
    run(report(lamp, "dev1", {"brightness": 1}, token=f"{lamp}-0"))
    run(report(lamp, "dev1", {"brightness": 2}, token=f"{lamp}-0"))
    replies = recorder.on(f"thing/down/property/{lamp}/dev1")
    assert [r["clientToken"] for r in replies] == [f"{lamp}-0", f"{lamp}-0"]
    assert {p["id"]: p["value"] for p in props(api, lamp)["properties"]}["brightness"] == 2


def test_a_poison_message_never_blocks_its_neighbours(api, lamp, recorder):
    make_device(api, lamp, "dev2")
    result = run(
        up(lamp, "dev1", "thing/up/property", b"\xff{not json"),
        report(lamp, "dev2", {"brightness": 7}),
        up(lamp, "dev1", "thing/up/property", ["a", "list"]),
        report(lamp, "dev1", {"brightness": 8}),
    )
    assert result.failed == [] and result.processed == 4
    assert {p["id"]: p["value"] for p in props(api, lamp, "dev2")["properties"]} == {"brightness": 7}
    assert {p["id"]: p["value"] for p in props(api, lamp, "dev1")["properties"]} == {"brightness": 8}
    codes = [d["code"] for d in logs(api, lamp, "dev1", "diagnostic")]
    assert codes.count("Payload_Not_JSON") == 2


def test_unknown_and_disabled_devices_are_dropped(api, lamp, recorder):
    for dn in ("off", "off2"):
        make_device(api, lamp, dn)
        assert api.patch(f"/v1/products/{lamp}/devices/{dn}", {"enabled": False}).status_code == 200
    result = run(
        report(lamp, "ghost", {"brightness": 1}),
        report(lamp, "off", {"brightness": 1}),
        up(lamp, "off", "thing/up/property", {"method": "get_status", "clientToken": "g"}),
        report(lamp, "off2", {"brightness": 2}),
        report("ZZZZZZZZZZ", "dev1", {"brightness": 1}),
    )
    assert result.dropped == 5 and recorder.sent == []
    for dn, count in (("off", 2), ("off2", 1)):
        assert props(api, lamp, dn)["properties"] == []
        diags = logs(api, lamp, dn, "diagnostic")
        assert len(diags) == count and all("disabled" in d["message"] for d in diags)
        assert len(logs(api, lamp, dn, "content")) == count


# ------------------------------------------------------------------ status and control


def test_get_status_answers_reported_and_pending_control(api, lamp, recorder):
    run(report(lamp, "dev1", {"brightness": 30}))
    # offline: a control is kept as desired
    r = api.post(f"/v1/products/{lamp}/devices/dev1/control", {"params": {"brightness": 80}})
    assert r.status_code == 200, r.body
    assert r.json["delivery"] == "desired" and r.json["client_token"].startswith("clientToken-")
    assert recorder.on(f"thing/down/property/{lamp}/dev1")[-1]["method"] == "report_reply"  # nothing published
    assert [d["value"] for d in props(api, lamp)["desired"]] == [80]
    run(
        up(lamp, "dev1", "thing/up/property", {"method": "get_status", "clientToken": "s1", "type": "report"}),
        up(lamp, "dev1", "thing/up/property", {"method": "get_status", "clientToken": "s2", "type": "control"}),
    )
    first, second = recorder.on(f"thing/down/property/{lamp}/dev1")[-2:]
    assert first == {
        "method": "get_status_reply",
        "clientToken": "s1",
        "code": 0,
        "status": "success",
        "type": "report",
        "data": {"reported": {"brightness": 30}},
    }
    assert second == {
        "method": "get_status_reply",
        "clientToken": "s2",
        "code": 0,
        "status": "success",
        "type": "control",
        "data": {"control": {"brightness": 80}},
    }
    # clear_control empties the pending values
    run(up(lamp, "dev1", "thing/up/property", {"method": "clear_control", "clientToken": "c"}))
    assert recorder.last(f"thing/down/property/{lamp}/dev1") == {
        "method": "clear_control_reply",
        "clientToken": "c",
        "code": 0,
        "status": "success",
    }
    assert props(api, lamp)["desired"] == []


def test_a_report_then_get_status_in_one_batch_sees_the_new_value(api, lamp, recorder):
    run(
        report(lamp, "dev1", {"brightness": 55}),
        up(lamp, "dev1", "thing/up/property", {"method": "get_status", "clientToken": "s"}),
    )
    reply = recorder.last(f"thing/down/property/{lamp}/dev1")
    assert reply["data"]["reported"] == {"brightness": 55}


def test_control_to_an_online_device_and_its_sdk_style_reply(api, lamp, recorder):
    connect(lamp, "dev1")
    run(report(lamp, "dev1", {"brightness": 1}, dollar=True))  # the device uses $-topics
    r = api.post(f"/v1/products/{lamp}/devices/dev1/control", {"params": {"brightness": 64, "power_switch": True}})
    assert r.status_code == 200, r.body
    assert r.json["delivery"] == "published" and r.json["status"] == "pending"
    token = r.json["client_token"]
    sent = recorder.last(f"$thing/down/property/{lamp}/dev1")
    assert sent == {"method": "control", "clientToken": token, "params": {"brightness": 64, "power_switch": 1}}
    assert not [p for p in recorder.on(f"thing/down/property/{lamp}/dev1") if p.get("method") == "control"]
    # the SDK answers without a method and with a NUL status
    run(up(lamp, "dev1", "thing/up/property", {"clientToken": token, "code": 0, "status": "\u0000"}, dollar=True))
    call = api.get(f"/v1/products/{lamp}/devices/dev1/calls/{token}").json
    assert call["status"] == "replied" and call["code"] == 0 and call["kind"] == "control"


def test_control_publishes_both_forms_when_the_form_is_unknown(api, lamp, recorder):
    connect(lamp, "dev1")
    r = api.post(f"/v1/products/{lamp}/devices/dev1/control", {"params": {"brightness": 3}})
    assert r.json["delivery"] == "published"
    assert recorder.on(f"thing/down/property/{lamp}/dev1") and recorder.on(f"$thing/down/property/{lamp}/dev1")


def test_control_with_wait_returns_the_reply(api, lamp, recorder):
    connect(lamp, "dev1")
    replier = _reply_when_published(
        recorder,
        f"thing/down/property/{lamp}/dev1",
        lambda sent: up(
            lamp,
            "dev1",
            "thing/up/property",
            {"method": "control_reply", "clientToken": sent["clientToken"], "code": 0, "status": "ok"},
        ),
    )
    r = api.post(f"/v1/products/{lamp}/devices/dev1/control", {"params": {"brightness": 9}, "timeout": 5})
    replier.join(5)
    assert r.status_code == 200, r.body
    assert r.json["status"] == "replied" and r.json["code"] == 0 and r.json["reply_status"] == "ok"


def test_report_info_sets_firmware_and_module_information(api, lamp, recorder):
    run(
        up(
            lamp,
            "dev1",
            "thing/up/property",
            {
                "method": "report_info",
                "clientToken": "i",
                "params": {
                    "fw_ver": "1.2.3",
                    "module_hardinfo": "ESP8266",
                    "module_softinfo": "v2",
                    "mac": "aa:bb",
                    "imei": "123",
                    "lat": "31.2",
                    "lon": "121.5",
                    "device_label": {"region": "Shanghai"},
                },
            },
        )
    )
    assert recorder.last(f"thing/down/property/{lamp}/dev1") == {
        "method": "report_info_reply",
        "clientToken": "i",
        "code": 0,
        "status": "success",
    }
    assert api.get(f"/v1/products/{lamp}/devices/dev1").json["firmware_version"] == "1.2.3"
    run(up(lamp, "dev1", "thing/up/property", {"method": "report_info", "clientToken": "j", "params": {"mac": "x"}}))
    bad = recorder.last(f"thing/down/property/{lamp}/dev1")
    assert bad["code"] != 0 and "fw_ver" in bad["status"]


# ------------------------------------------------------------------ events


def test_events_in_both_shapes_and_an_unknown_event(api, lamp, recorder):
    topic = f"thing/down/event/{lamp}/dev1"
    run(
        up(
            lamp,
            "dev1",
            "thing/up/event",
            {
                "method": "event_post",
                "clientToken": "e1",
                "eventId": "low_voltage",
                "type": "alert",
                "timestamp": 0,
                "params": {"voltage": 3.3},
            },
        )
    )
    assert recorder.last(topic) == {
        "method": "event_reply",
        "clientToken": "e1",
        "code": 0,
        "status": "success",
        "data": {},
    }
    run(
        up(
            lamp,
            "dev1",
            "thing/up/event",
            {
                "method": "event_post",
                "clientToken": "e2",
                "events": [
                    {"eventId": "boot", "type": "info", "timestamp": clock.now_ms(), "params": {}},
                    {
                        "eventId": "low_voltage",
                        "type": "alert",
                        "timestamp": clock.now_ms(),
                        "params": {"voltage": 1.0},
                    },
                ],
            },
        )
    )
    assert recorder.last(topic)["code"] == 0 and recorder.last(topic)["method"] == "event_reply"
    run(
        up(
            lamp,
            "dev1",
            "thing/up/event",
            {
                "method": "events_post",
                "clientToken": "e3",
                "events": [{"eventId": "boot", "type": "info", "timestamp": 0, "params": {}}],
            },
        )
    )
    assert recorder.last(topic) == {
        "method": "events_reply",
        "clientToken": "e3",
        "code": 0,
        "status": "success",
        "data": {},
    }
    run(
        up(
            lamp,
            "dev1",
            "thing/up/event",
            {
                "method": "event_post",
                "clientToken": "e4",
                "eventId": "nope",
                "type": "info",
                "timestamp": 0,
                "params": {},
            },
        )
    )
    assert recorder.last(topic) == {
        "method": "event_reply",
        "clientToken": "e4",
        "code": 404,
        "status": "nope not defined",
        "data": {},
    }
    events = api.get(f"/v1/products/{lamp}/devices/dev1/events").json["items"]
    assert sorted(e["event_id"] for e in events) == ["boot", "boot", "low_voltage", "low_voltage"]
    assert {e["type"] for e in events if e["event_id"] == "low_voltage"} == {"alert"}
    only = api.get(f"/v1/products/{lamp}/devices/dev1/events?event_id=low_voltage").json["items"]
    assert len(only) == 2 and {e["params"]["voltage"] for e in only} == {3.3, 1.0}


# ------------------------------------------------------------------ actions


def _reply_when_published(recorder: Recorder, topic: str, answer: Any) -> threading.Thread:
    """A device in a thread: when the cloud publishes on ``topic``, answer through process_batch."""
    from chalicelib.services import uplink

    def device() -> None:
        found = wait_until(lambda: recorder.on(topic), timeout=10, interval=0.01)
        if found:
            uplink.process_batch([answer(found[-1])])

    thread = threading.Thread(target=device, daemon=True)
    thread.start()
    return thread


def test_a_sync_action_returns_the_device_reply(api, lamp, recorder):
    connect(lamp, "dev1")
    replier = _reply_when_published(
        recorder,
        f"thing/down/action/{lamp}/dev1",
        lambda sent: up(
            lamp,
            "dev1",
            "thing/up/action",
            {
                "method": "action_reply",
                "clientToken": sent["clientToken"],
                "code": 0,
                "status": "done",
                "response": {"code": 7},
            },
        ),
    )
    r = api.post(f"/v1/products/{lamp}/devices/dev1/actions/unlock", {"params": {"order_id": "A1"}, "timeout": 5})
    replier.join(5)
    assert r.status_code == 200, r.body
    assert r.json["status"] == "replied" and r.json["response"] == {"code": 7} and r.json["code"] == 0
    sent = recorder.last(f"thing/down/action/{lamp}/dev1")
    assert set(sent) == {"method", "clientToken", "actionId", "timestamp", "params"}
    assert sent["method"] == "action" and sent["actionId"] == "unlock" and sent["params"] == {"order_id": "A1"}
    assert isinstance(sent["timestamp"], int)


def test_a_silent_device_times_the_sync_action_out(api, lamp, recorder, monkeypatch):
    from chalicelib.core.config import reload_settings

    monkeypatch.setenv("FLEETBOX_ACTION_TIMEOUT_S", "0.3")
    reload_settings()
    try:
        connect(lamp, "dev1")
        started = time.monotonic()
        r = api.post(f"/v1/products/{lamp}/devices/dev1/actions/unlock", {"params": {"order_id": "A1"}})
        assert time.monotonic() - started < 3
        assert r.status_code == 504, r.body
        assert r.json["error"]["code"] == "FailedOperation.ActionTimeout"
        token = r.json["error"]["details"]["client_token"]
        assert api.get(f"/v1/products/{lamp}/devices/dev1/calls/{token}").json["status"] == "timeout"
    finally:
        monkeypatch.delenv("FLEETBOX_ACTION_TIMEOUT_S")
        reload_settings()


def test_an_async_action_is_queryable_later(api, lamp, recorder):
    connect(lamp, "dev1")
    r = api.post(f"/v1/products/{lamp}/devices/dev1/actions/unlock", {"params": {"order_id": "B"}, "mode": "async"})
    assert r.status_code == 200, r.body
    token = r.json["client_token"]
    assert r.json["status"] == "pending"
    run(
        up(
            lamp,
            "dev1",
            "thing/up/action",
            {"method": "action_reply", "clientToken": token, "code": 0, "status": "ok", "response": {"code": 1}},
        )
    )
    call = api.get(f"/v1/products/{lamp}/devices/dev1/calls/{token}").json
    assert call["status"] == "replied" and call["response"] == {"code": 1} and call["action_id"] == "unlock"


# ------------------------------------------------------------------ time, custom topics, the handler


def test_the_time_service(api, lamp, recorder):
    before = clock.now_ms()
    run(up(lamp, "dev1", "sys/operation", {"type": "get", "resource": ["time"]}, dollar=True))
    reply = recorder.last(f"$sys/operation/result/{lamp}/dev1")
    assert set(reply) == {"type", "time", "ntptime1", "ntptime2"} and reply["type"] == "get"
    assert before // 1000 - 1 <= reply["time"] <= clock.now_s() + 1
    assert reply["ntptime1"] <= reply["ntptime2"] and abs(reply["ntptime2"] - before) < 60_000


def test_custom_topics_pass_through_to_the_content_log(api, recorder):
    pid = make_product(api, "Meter", data_protocol="custom", model=None)
    make_device(api, pid, "m1")
    run(up(pid, "m1", f"{pid}/m1/data", b"\x01\x02 raw bytes"))
    assert recorder.sent == []
    content = logs(api, pid, "m1", "content")
    assert len(content) == 1 and content[0]["topic"] == f"{pid}/m1/data"
    assert logs(api, pid, "m1", "diagnostic") == []


def test_the_lambda_handlers_take_kinesis_and_lifecycle_events(api, lamp, recorder):
    from app import app

    event = kinesis_event([report(lamp, "dev1", {"brightness": 11})], "arn:aws:kinesis:us-east-1:1:stream/x")
    event["Records"].append(
        {
            **event["Records"][0],
            "kinesis": {
                **event["Records"][0]["kinesis"],
                "data": base64.b64encode(b"garbage").decode(),
                "sequenceNumber": "9",
            },
        }
    )
    assert app.handler_map["uplink"](event, None) == {"batchItemFailures": []}
    assert {p["id"]: p["value"] for p in props(api, lamp)["properties"]} == {"brightness": 11}
    out = app.handler_map["presence"](
        presence_event(f"{lamp}dev1", True, timestamp_ms=clock.now_ms(), ip="1.2.3.4"), None
    )
    assert out["applied"] is True
    assert api.get(f"/v1/products/{lamp}/devices/dev1").json["status"] == "online"


def test_no_subscriber_is_a_diagnostic(api, lamp, recorder):
    recorder.deaf.add(f"thing/down/property/{lamp}/dev1")
    run(report(lamp, "dev1", {"brightness": 4}))
    assert "Pub_To_Dev_No_Subscriber" in [d["code"] for d in logs(api, lamp, "dev1", "diagnostic")]


# ------------------------------------------------------------------ DynamoDB requests per report


def item_kb(item: dict) -> int:
    """DynamoDB's write units for one item: its size (names + values) in started kilobytes."""
    size = sum(len(name.encode()) + len(json.dumps(value).encode()) for name, value in item.items())
    return max(1, -(-size // 1024))


def test_a_one_property_report_writes_the_shadow_and_one_row_and_reads_nothing(api, lamp, recorder):
    run(report(lamp, "dev1", {"brightness": 1}))  # warm the product cache; the first report makes the shadow
    counter = DynamoCounter()
    with counter.counting():
        run(report(lamp, "dev1", {"brightness": 2}))
    assert sorted(counter.calls) == ["BatchWriteItem", "UpdateItem", "UpdateItem"], counter.calls
    updates = [params["TableName"] for op, params in counter.requests if op == "UpdateItem"]
    assert sorted(t.rsplit("-", 1)[-1] for t in updates) == ["counters", "shadows"]
    (writes,) = [params["RequestItems"] for op, params in counter.requests if op == "BatchWriteItem"]
    assert [t.rsplit("-", 1)[-1] for t in writes] == ["device_logs"]
    (row,) = writes[next(iter(writes))]
    item = row["PutRequest"]["Item"]
    # one row: the report, its reply and the history value, well under one write unit
    assert item["props"]["M"]["brightness"] == {"S": "2"}
    assert json.loads(item["reply_payload"]["S"])["method"] == "report_reply"
    assert item_kb(item) == 1
    shadow = ShadowRecord.get(lamp, "dev1")
    assert item_kb(json.loads(json.dumps(shadow.serialize()))) == 1


def test_a_batch_of_reports_amortises_to_well_under_three_requests(api, lamp, recorder):
    names = [f"d{i:02d}" for i in range(40)]
    for n in names:
        make_device(api, lamp, n)
    # each device's first message notes its topic form on its record (once per device)
    run(*[report(lamp, n, {"brightness": 0}) for n in names])
    counter = DynamoCounter()
    with counter.counting():
        run(*[report(lamp, n, {"brightness": i % 100, "power_switch": i % 2}) for i, n in enumerate(names)])
    per_report = len(counter.calls) / len(names)
    print(
        f"\nDynamoDB requests for {len(names)} reports: {len(counter.calls)} ({per_report:.2f} per report): "
        f"{sorted(set(counter.calls))}"
    )
    assert per_report <= 1.5, counter.calls
