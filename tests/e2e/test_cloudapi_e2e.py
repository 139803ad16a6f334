"""The Tencent Cloud SDK against the local stack (SPEC §14): every mapped product and device action
driven through the real ``tencentcloud-sdk-python-iotexplorer`` client — its own signing,
unmodified, over HTTP to ``POST /`` — and checked against the HTTP API's view of the same objects.

How to test an action (tests/cloudsdk.py): ``sdk_call(cli, "DescribeDevice", {...})`` runs it
through the SDK's own request model and client method and returns the response as a dict;
``refused(cli, action, {...})`` is the code (``TencentCloudSDKException.get_code()``) it is
refused with."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from tests.cloudsdk import client, endpoint, pair_for, refused, sdk_call
from tests.e2e.fleet import Api
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
    # the older form signature the SDK can still send works too
    for method in ("HmacSHA1", "HmacSHA256"):
        v1 = client(endpoint(local_stack), pair["secret_id"], pair["secret_key"], sign_method=method)
        assert "Products" in sdk_call(v1, "GetStudioProductList", {"Limit": 10})


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
    ]
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
