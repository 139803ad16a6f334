"""The Tencent Cloud SDK against the local stack (SPEC §14): every mapped product and device action
driven through the real ``tencentcloud-sdk-python-iotexplorer`` client — its own signing,
unmodified, over HTTP to ``POST /`` — and checked against the HTTP API's view of the same objects.

How to test an action (tests/cloudsdk.py): ``sdk_call(cli, "DescribeDevice", {...})`` runs it
through the SDK's own request model and client method and returns the response as a dict;
``refused(cli, action, {...})`` is the code (``TencentCloudSDKException.get_code()``) it is
refused with."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import pytest

from tests.cloudsdk import client, endpoint, pair_for, refused, sdk_call
from tests.e2e.fleet import Api, Device
from tests.helpers import partner_policy


@pytest.fixture(scope="module")
def cli(api: Api, local_stack: dict[str, Any]) -> Any:
    """The SDK client of root's pair."""
    pair = pair_for(api)
    return client(endpoint(local_stack), pair["secret_id"], pair["secret_key"])


def fresh_name(prefix: str = "sdk") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------ products


def test_product_actions_through_the_sdk(api: Api, cli: Any) -> None:
    name = fresh_name("lamp")
    made = sdk_call(
        cli,
        "CreateStudioProduct",
        {
            "ProductName": name,
            "CategoryId": 1,
            "ProductType": 0,
            "EncryptionType": "2",
            "NetType": "wifi",
            "DataProtocol": 1,
            "ProductDesc": "made by the SDK",
            "ProjectId": "0",
        },
    )["Product"]
    pid = made["ProductId"]
    http = api.call("GET", f"/v1/products/{pid}", 200).json()
    assert (http["name"], http["auth_type"], http["comm_method"], http["data_protocol"]) == (
        name,
        "key",
        "wifi",
        "thing_model",
    )
    assert made["ProductName"] == name and made["DevStatus"] == "dev" and made["ProductType"] == 0

    got = sdk_call(cli, "DescribeStudioProduct", {"ProductId": pid})["Product"]
    assert got["ProductDesc"] == "made by the SDK" and got["CreateTime"] == http["created_at"]

    listed = sdk_call(cli, "GetStudioProductList", {"Offset": 0, "Limit": 100})
    assert pid in {p["ProductId"] for p in listed["Products"]}
    assert listed["Total"] == len(api.call("GET", "/v1/products", 200, params={"limit": 100}).json()["items"])

    renamed = sdk_call(cli, "ModifyStudioProduct", {"ProductId": pid, "ProductName": name + "x", "BindStrategy": 2})
    assert renamed["Product"]["ProductName"] == name + "x" and renamed["Product"]["BindStrategy"] == 2
    assert api.call("GET", f"/v1/products/{pid}", 200).json()["binding_strategy"] == "exclusive"

    model = (
        '{"version":"1.0","properties":[{"id":"power_switch","name":"switch","desc":"","mode":"rw","required":false,'
        '"define":{"type":"bool","mapping":{"0":"off","1":"on"}}}],"events":[],"actions":[]}'
    )
    sdk_call(cli, "ModifyModelDefinition", {"ProductId": pid, "ModelSchema": model})
    assert [p["id"] for p in api.call("GET", f"/v1/products/{pid}/thing-model", 200).json()["properties"]] == [
        "power_switch"
    ]
    defined = sdk_call(cli, "DescribeModelDefinition", {"ProductId": pid})["Model"]
    assert '"power_switch"' in defined["ModelDefine"] and defined["ProductId"] == pid
    assert refused(cli, "ModifyModelDefinition", {"ProductId": pid, "ModelSchema": "{oops"}) == (
        "InvalidParameterValue.ModelDefineInvalid"
    )

    reg = sdk_call(cli, "ModifyProductDynamicRegister", {"ProductId": pid, "RegisterType": 2, "RegisterLimit": 50})
    assert reg["RegisterType"] == 2 and reg["RegisterLimit"] == 50 and len(reg["ProductSecret"]) == 24
    seen = sdk_call(cli, "DescribeProductDynamicRegister", {"ProductId": pid})
    assert seen["ProductSecret"] == reg["ProductSecret"]  # root may read the secret
    assert api.call("GET", f"/v1/products/{pid}/dynamic-registration", 200).json()["register_limit"] == 50

    sdk_call(cli, "ReleaseStudioProduct", {"ProductId": pid, "DevStatus": "released"})
    assert api.call("GET", f"/v1/products/{pid}", 200).json()["status"] == "released"
    assert refused(cli, "ModifyStudioProduct", {"ProductId": pid, "ProductDesc": "no"}) == (
        "UnsupportedOperation.ProductReleased"
    )
    sdk_call(cli, "ReleaseStudioProduct", {"ProductId": pid, "DevStatus": "dev"})
    assert api.call("GET", f"/v1/products/{pid}", 200).json()["status"] == "developing"

    sdk_call(cli, "DeleteStudioProduct", {"ProductId": pid})
    api.call("GET", f"/v1/products/{pid}", 404)
    assert refused(cli, "DescribeStudioProduct", {"ProductId": pid}) == "ResourceNotFound.ProductNotExist"


def test_wrong_keys_stale_signatures_and_unmapped_actions(api: Api, local_stack: dict[str, Any], cli: Any) -> None:
    pair = pair_for(api)
    wrong = client(endpoint(local_stack), pair["secret_id"], "x" * 32)
    assert refused(wrong, "GetStudioProductList", {}) == "AuthFailure.SignatureFailure"
    unknown = client(endpoint(local_stack), "AKID" + "0" * 32, pair["secret_key"])
    assert refused(unknown, "GetStudioProductList", {}) == "AuthFailure.SecretIdNotFound"
    # the SDK signs with time.time(): patched, it signs six minutes in the past
    assert refused(cli, "GetStudioProductList", {}, at=time.time() - 360) == "AuthFailure.SignatureExpire"
    # an action the SDK has and this endpoint does not map
    assert refused(cli, "DescribeGatewayBindDevices", {"GatewayProductId": "AAAAAAAAAA"}) == "InvalidAction"
    # the older form signature the SDK can still send works too, and GET requests of both kinds
    for method in ("HmacSHA1", "HmacSHA256", None):
        for verb in ("POST", "GET"):
            other = client(endpoint(local_stack), pair["secret_id"], pair["secret_key"], method, req_method=verb)
            assert "Products" in sdk_call(other, "GetStudioProductList", {"Limit": 10}), (method, verb)
            assert refused(other, "DescribeDevice", {"ProductId": "AAAAAAAAAA", "DeviceName": "x"}) == (
                "ResourceNotFound.ProductNotExist"
            )


def test_a_partner_pair_sees_and_touches_only_its_product(api: Api, local_stack: dict[str, Any], cli: Any) -> None:
    mine, theirs = api.product(name="Partner A"), api.product(name="Partner B")
    dn_a, _ = api.device(mine)
    dn_b, _ = api.device(theirs)
    pair = pair_for(api, partner_policy(mine))
    partner = client(endpoint(local_stack), pair["secret_id"], pair["secret_key"])
    # lists show only product A
    listed = sdk_call(partner, "GetStudioProductList", {"Limit": 100})
    assert [p["ProductId"] for p in listed["Products"]] == [mine] and listed["Total"] == 1
    assert sdk_call(partner, "DescribeDevice", {"ProductId": mine, "DeviceName": dn_a})["Device"]["DeviceName"] == dn_a
    # and no action reaches product B
    denied = "UnauthorizedOperation.PermissionDenied"
    b_calls: list[tuple[str, dict[str, Any]]] = [
        ("DescribeStudioProduct", {"ProductId": theirs}),
        ("ModifyStudioProduct", {"ProductId": theirs, "ProductDesc": "x"}),
        ("DeleteStudioProduct", {"ProductId": theirs}),
        ("ReleaseStudioProduct", {"ProductId": theirs}),
        ("DescribeModelDefinition", {"ProductId": theirs}),
        ("ModifyModelDefinition", {"ProductId": theirs, "ModelSchema": "{}"}),
        ("DescribeProductDynamicRegister", {"ProductId": theirs}),
        ("ModifyProductDynamicRegister", {"ProductId": theirs, "RegisterType": 0}),
        ("CreateDevice", {"ProductId": theirs, "DeviceName": "intruder"}),
        ("DescribeDevice", {"ProductId": theirs, "DeviceName": dn_b}),
        ("DeleteDevice", {"ProductId": theirs, "DeviceName": dn_b}),
        ("GetDeviceList", {"ProductId": theirs}),
        ("DescribeDeviceData", {"ProductId": theirs, "DeviceName": dn_b}),
        (
            "DescribeDeviceDataHistory",
            {"ProductId": theirs, "DeviceName": dn_b, "FieldName": "brightness", "MinTime": 0, "MaxTime": 1},
        ),
        ("ControlDeviceData", {"ProductId": theirs, "DeviceName": dn_b, "Data": '{"brightness": 1}'}),
        (
            "PublishMessage",
            {"ProductId": theirs, "DeviceName": dn_b, "Topic": f"{theirs}/{dn_b}/control", "Payload": "x"},
        ),
        ("CallDeviceActionSync", {"ProductId": theirs, "DeviceName": dn_b, "ActionId": "blink", "InputParams": "{}"}),
        ("CallDeviceActionAsync", {"ProductId": theirs, "DeviceName": dn_b, "ActionId": "blink", "InputParams": "{}"}),
        ("ListEventHistory", {"ProductId": theirs, "DeviceName": dn_b}),
    ]
    # every product and device action is tried (a new one must be added here)
    from chalicelib.handlers.cloudapi import devices, products, registry

    ours = {n for n, spec in registry.ACTIONS.items() if spec.run.__module__ in (products.__name__, devices.__name__)}
    assert ours - {a for a, _ in b_calls} == {"GetStudioProductList", "CreateStudioProduct"}  # checked apart
    for action, params in b_calls:
        assert refused(partner, action, params) == denied, action
    # nothing changed on B
    assert api.call("GET", f"/v1/products/{theirs}/devices/{dn_b}", 200).json()["device_name"] == dn_b
    api.call("GET", f"/v1/products/{theirs}/devices/intruder", 404)
    # a product-creating partner is refused too (its policy covers product A only)
    assert (
        refused(
            partner,
            "CreateStudioProduct",
            {
                "ProductName": fresh_name(),
                "CategoryId": 1,
                "ProductType": 0,
                "EncryptionType": "2",
                "NetType": "wifi",
                "DataProtocol": 1,
            },
        )
        == denied
    )


# ------------------------------------------------------------------ devices


def test_device_actions_through_the_sdk(api: Api, cli: Any) -> None:
    pid = api.product()
    made = sdk_call(cli, "CreateDevice", {"ProductId": pid, "DeviceName": "sdk_dev1"})["Data"]
    assert made["DeviceName"] == "sdk_dev1" and len(made["DevicePsk"]) == 24
    http = api.call("GET", f"/v1/products/{pid}/devices/sdk_dev1", 200, params={"include_secret": "true"}).json()
    assert http["secret"] == made["DevicePsk"]
    own = sdk_call(cli, "CreateDevice", {"ProductId": pid, "DeviceName": "sdk_dev2", "DefinedPsk": http["secret"]})
    assert own["Data"]["DevicePsk"] == http["secret"]
    assert refused(cli, "CreateDevice", {"ProductId": pid, "DeviceName": "sdk_dev1"}) == (
        "ResourceInUse.DeviceAlreadyExists"
    )
    assert refused(cli, "CreateDevice", {"ProductId": pid, "DeviceName": "bad name"}) == (
        "InvalidParameterValue.DeviceNameInvalid"
    )

    dev = sdk_call(cli, "DescribeDevice", {"ProductId": pid, "DeviceName": "sdk_dev1"})["Device"]
    assert dev["Status"] == 3 and dev["EnableState"] == 1 and dev["CreateTime"] == http["created_at"]
    assert dev["DevicePsk"] == made["DevicePsk"]  # root may read device secrets

    for i in range(3, 15):
        api.device(pid, f"sdk_dev{i}")
    names = {d["device_name"] for d in api.call("GET", f"/v1/products/{pid}/devices", 200).json()["items"]}
    first = sdk_call(cli, "GetDeviceList", {"ProductId": pid, "Offset": 0, "Limit": 10})
    rest = sdk_call(cli, "GetDeviceList", {"ProductId": pid, "Offset": 10, "Limit": 10})
    assert first["Total"] == rest["Total"] == len(names) == 14
    assert len(first["Devices"]) == 10 and len(rest["Devices"]) == 4
    assert {d["DeviceName"] for d in first["Devices"] + rest["Devices"]} == names
    assert all(d.get("DevicePsk") is None for d in first["Devices"])  # lists never carry secrets
    fuzzy = sdk_call(cli, "GetDeviceList", {"ProductId": pid, "DeviceName": "dev1", "Limit": 100})
    assert {d["DeviceName"] for d in fuzzy["Devices"]} == {
        "sdk_dev1",
        "sdk_dev10",
        "sdk_dev11",
        "sdk_dev12",
        "sdk_dev13",
        "sdk_dev14",
    }

    assert sdk_call(cli, "DeleteDevice", {"ProductId": pid, "DeviceName": "sdk_dev2"})["ResultCode"] == "0"
    api.call("GET", f"/v1/products/{pid}/devices/sdk_dev2", 404)
    assert refused(cli, "DeleteDevice", {"ProductId": pid, "DeviceName": "sdk_dev2"}) == (
        "ResourceNotFound.DeviceNotExist"
    )


# ------------------------------------------------------------------ device data, control, actions, events


@pytest.fixture()
def lamp(local_stack: dict[str, Any], api: Api) -> Any:
    """A thing-model lamp connected over MQTT, subscribed to its downlinks."""
    pid = api.product()
    dn, secret = api.device(pid)
    dev = Device(local_stack, pid, dn, secret).connect()
    for family in ("thing/down/property", "thing/down/event", "thing/down/action"):
        dev.subscribe(dev.topic(family, dollar=True))
    yield dev
    dev.close()


def report(dev: Any, token: str, params: dict[str, Any]) -> None:
    dev.publish(
        dev.topic("thing/up/property", dollar=True), {"method": "report", "clientToken": token, "params": params}
    )
    reply = dev.reply_to(token, "report_reply")
    assert reply is not None and reply[1]["code"] == 0, reply


def test_device_data_and_history_through_the_sdk(api: Api, cli: Any, lamp: Any) -> None:
    ids = {"ProductId": lamp.pid, "DeviceName": lamp.dn}
    for i, value in enumerate((10, 20, 30)):
        report(lamp, f"r{i}", {"brightness": value, "power_switch": 1})
    data = json.loads(sdk_call(cli, "DescribeDeviceData", ids)["Data"])
    http = api.reported(lamp.pid, lamp.dn)
    assert data["brightness"]["Value"] == http["brightness"]["value"] == 30
    assert data["brightness"]["LastUpdate"] == http["brightness"]["time_ms"]
    assert data["power_switch"]["Value"] == 1

    now_ms = int(time.time() * 1000)
    window = {**ids, "FieldName": "brightness", "MinTime": now_ms - 3_600_000, "MaxTime": now_ms + 60_000}
    first = sdk_call(cli, "DescribeDeviceDataHistory", {**window, "Limit": 2})
    assert [r["Value"] for r in first["Results"]] == ["30", "20"] and first["Listover"] is False
    rest = sdk_call(cli, "DescribeDeviceDataHistory", {**window, "Limit": 2, "Context": first["Context"]})
    assert [r["Value"] for r in rest["Results"]] == ["10"] and rest["Listover"] is True
    http_history = api.call(
        "GET", f"/v1/products/{lamp.pid}/devices/{lamp.dn}/properties/brightness/history", 200
    ).json()["items"]
    assert [int(r["Time"]) for r in first["Results"] + rest["Results"]] == [p["time_ms"] for p in http_history]
    assert refused(cli, "DescribeDeviceDataHistory", {**window, "Context": "garbage"}) == (
        "InvalidParameterValue.NextTokenInvalid"
    )
    assert refused(cli, "DescribeDeviceData", {**ids, "DeviceName": "ghost"}) == "ResourceNotFound.DeviceNotExist"


def test_control_and_actions_through_the_sdk(api: Api, cli: Any, lamp: Any) -> None:
    ids = {"ProductId": lamp.pid, "DeviceName": lamp.dn}
    got = sdk_call(cli, "ControlDeviceData", {**ids, "Data": '{"brightness": 55}'})
    result = json.loads(got["Result"])
    assert result["Sent"] == 1 and result["pushResult"] == 0
    control = lamp.reply_to(result["clientToken"], "control")
    assert control is not None and control[1]["params"] == {"brightness": 55}
    call = api.call("GET", f"/v1/products/{lamp.pid}/devices/{lamp.dn}/calls/{result['clientToken']}", 200).json()
    assert call["kind"] == "control" and call["params"] == {"brightness": 55}
    assert refused(cli, "ControlDeviceData", {**ids, "Data": '{"volume": 1}'}) == (
        "InvalidParameterValue.PropertyNotDefined"
    )
    assert refused(cli, "ControlDeviceData", {**ids, "Data": "not json"}) == "InvalidParameterValue.ParamsInvalid"
    assert refused(cli, "ControlDeviceData", {**ids, "Data": "{}", "Method": "reported"}) == (
        "InvalidParameterValue.MethodInvalid"
    )

    responder = lamp.answer_next_action({"done": 1}, status="blinked")
    sync = sdk_call(cli, "CallDeviceActionSync", {**ids, "ActionId": "blink", "InputParams": '{"times": 2}'})
    responder.join()
    assert json.loads(sync["OutputParams"]) == {"done": 1} and sync["Status"] == "blinked"
    replied = api.call("GET", f"/v1/products/{lamp.pid}/devices/{lamp.dn}/calls/{sync['ClientToken']}", 200).json()
    assert replied["status"] == "replied" and replied["params"] == {"times": 2}

    asynchronous = sdk_call(cli, "CallDeviceActionAsync", {**ids, "ActionId": "blink", "InputParams": '{"times": 3}'})
    assert asynchronous["Status"] == "pending"
    sent = lamp.reply_to(asynchronous["ClientToken"], "action")
    assert sent is not None and sent[1]["params"] == {"times": 3}
    assert refused(cli, "CallDeviceActionAsync", {**ids, "ActionId": "explode", "InputParams": "{}"}) == (
        "ResourceNotFound.ActionNotExist"
    )
    # nobody answers: the sync call times out with Tencent's spelling of our code
    started = time.monotonic()
    assert refused(cli, "CallDeviceActionSync", {**ids, "ActionId": "blink", "InputParams": '{"times": 1}'}) == (
        "FailedOperation.ActionTimeout"
    )
    assert time.monotonic() - started < 15


def test_event_history_through_the_sdk(api: Api, cli: Any, lamp: Any) -> None:
    ids = {"ProductId": lamp.pid, "DeviceName": lamp.dn}
    for i, level in enumerate((15, 5)):
        lamp.publish(
            lamp.topic("thing/up/event", dollar=True),
            {
                "method": "event_post",
                "clientToken": f"e{i}",
                "eventId": "low_battery",
                "type": "alert",
                "timestamp": 0,
                "params": {"level": level},
            },
        )
        assert lamp.reply_to(f"e{i}", "event_reply") is not None
    got = sdk_call(cli, "ListEventHistory", {**ids, "Type": "alert"})
    http = api.call("GET", f"/v1/products/{lamp.pid}/devices/{lamp.dn}/events", 200).json()["items"]
    assert [json.loads(e["Data"]) for e in got["EventHistory"]] == [e["params"] for e in http]
    assert [e["TimeStamp"] for e in got["EventHistory"]] == [e["time"] for e in http]
    assert got["Total"] == 2 and got["Listover"] is True
    assert {e["EventId"] for e in got["EventHistory"]} == {"low_battery"}
    page = sdk_call(cli, "ListEventHistory", {**ids, "Size": 1})
    assert len(page["EventHistory"]) == 1 and page["Listover"] is False and page["Total"] is None
    more = sdk_call(cli, "ListEventHistory", {**ids, "Size": 1, "Context": page["Context"]})
    assert json.loads(more["EventHistory"][0]["Data"]) == {"level": 15}
    assert sdk_call(cli, "ListEventHistory", {**ids, "Type": "fault"})["EventHistory"] == []
    assert refused(cli, "ListEventHistory", {**ids, "Type": "gossip"}) == "InvalidParameterValue.EventTypeInvalid"


def test_publish_message_through_the_sdk(api: Api, cli: Any, local_stack: dict[str, Any]) -> None:
    pid = api.call(
        "POST",
        "/v1/products",
        201,
        json={
            "name": fresh_name("raw"),
            "category": "custom",
            "device_type": "device",
            "comm_method": "wifi",
            "auth_type": "key",
            "data_protocol": "custom",
        },
    ).json()["product_id"]
    dn, secret = api.device(pid)
    dev = Device(local_stack, pid, dn, secret).connect()
    try:
        dev.subscribe(f"{pid}/{dn}/control")
        ids = {"ProductId": pid, "DeviceName": dn}
        sdk_call(cli, "PublishMessage", {**ids, "Topic": f"{pid}/{dn}/control", "Payload": "hello", "Qos": 1})
        assert dev.wait_message(lambda t, b: t == f"{pid}/{dn}/control" and b == b"hello") is not None
        blob = b"\x00\x01\xfebinary"
        sdk_call(
            cli,
            "PublishMessage",
            {
                **ids,
                "Topic": f"{pid}/{dn}/control",
                "Payload": base64.b64encode(blob).decode(),
                "PayloadEncoding": "base64",
            },
        )
        assert dev.wait_message(lambda t, b: b == blob) is not None
        assert refused(cli, "PublishMessage", {**ids, "Topic": f"{pid}/{dn}/event", "Payload": "x"}) == (
            "InvalidParameterValue.TopicPermissionInvalid"
        )
        assert refused(cli, "PublishMessage", {**ids, "Topic": f"{pid}/{dn}/nothere", "Payload": "x"}) == (
            "ResourceNotFound.TopicNotExist"
        )
        logs = api.logs(pid, dn, "content")
        assert any(e["topic"] == f"{pid}/{dn}/control" and e["direction"] == "down" for e in logs)
    finally:
        dev.close()
