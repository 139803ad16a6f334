"""Cloud-API device actions (SPEC §5, §6.4) onto the /v1/products/{pid}/devices routes.

Field translation (Tencent ↔ Fleetbox): ``Status`` 0 offline, 1 online, 3 inactive;
``EnableState`` 1/0 ↔ enabled; ``FirstOnlineTime`` ↔ activated_at; ``LoginTime`` ↔ last_online_at;
``Version`` ↔ firmware_version; ``DevicePsk``/``DevicePrivateKey`` ↔ the device's secret, answered
only to callers allowed ``DescribeDeviceSecret`` (as the HTTP route's ``include_secret``), and on
creation.
"""

from __future__ import annotations

from typing import Any

from ...core import errors
from ...core.schema import String
from .. import devices as device_routes
from .products import OFFSET, PRODUCT_ID, PROJECT_ID, limit_field
from .registry import Invoker, Req, action

#: the route modules these actions call (imported first so their routes are registered)
ROUTES_FROM = (device_routes,)

DEVICE_NAME = String(
    required=True,
    min_len=1,
    max_len=48,
    pattern=r"[A-Za-z0-9_:\-]{1,48}",
    code=errors.DEVICE_NAME_INVALID,
    rule="must be 1-48 characters of A-Z a-z 0-9 _ : -",
)
_STATUS = {"offline": 0, "online": 1, "inactive": 3}
DEVICE_FIELDS = {"secret": "DefinedPsk", "q": "DeviceName"}
ONE = "/v1/products/{product_id}/devices/{device_name}"


def device_info(d: dict[str, Any]) -> dict[str, Any]:
    """A Fleetbox device as Tencent's ``DeviceInfo``."""
    return {
        "DeviceName": d["device_name"],
        "ProductId": d["product_id"],
        "Status": _STATUS.get(d["status"], 2),
        "DevicePsk": d.get("secret"),
        "DeviceCert": d.get("certificate"),
        "FirstOnlineTime": d.get("activated_at"),
        "LoginTime": d.get("last_online_at"),
        "CreateTime": d["created_at"],
        "Version": d.get("firmware_version"),
        "EnableState": 1 if d.get("enabled", True) else 0,
    }


def device_params(req: Req) -> dict[str, str]:
    return {"product_id": req["ProductId"], "device_name": req["DeviceName"]}


@action(
    "CreateDevice",
    {"ProductId": PRODUCT_ID, "DeviceName": DEVICE_NAME, "DefinedPsk": String(code=errors.DEVICE_SECRET_INVALID)},
    routes=["POST /v1/products/{product_id}/devices"],
    summary="Create a device (DefinedPsk: your own PSK); its secret is answered once, here",
    fields=DEVICE_FIELDS,
)
def create_device(req: Req, call: Invoker) -> dict[str, Any]:
    body: dict[str, Any] = {"device_name": req["DeviceName"]}
    if req.get("DefinedPsk"):
        body["secret"] = req["DefinedPsk"]
    made = call("POST /v1/products/{product_id}/devices", params={"product_id": req["ProductId"]}, body=body)
    return {
        "Data": {
            "DeviceName": made["device_name"],
            "DevicePsk": made.get("secret"),
            "DeviceCert": made.get("certificate"),
            "DevicePrivateKey": made.get("private_key"),
        }
    }


@action(
    "DescribeDevice",
    {"ProductId": PRODUCT_ID, "DeviceName": DEVICE_NAME},
    routes=[f"GET {ONE}"],
    summary="One device (DevicePsk only for callers allowed DescribeDeviceSecret)",
    fields=DEVICE_FIELDS,
)
def describe_device(req: Req, call: Invoker) -> dict[str, Any]:
    params = device_params(req)
    include = call.principal.allows("DescribeDeviceSecret", f"product/{req['ProductId']}/device/{req['DeviceName']}")
    return {"Device": device_info(call(f"GET {ONE}", params=params, query={"include_secret": include}))}


@action(
    "DeleteDevice",
    {"ProductId": PRODUCT_ID, "DeviceName": DEVICE_NAME},
    routes=[f"DELETE {ONE}"],
    summary="Delete a device: its secret and session stop working at once",
    fields=DEVICE_FIELDS,
)
def delete_device(req: Req, call: Invoker) -> dict[str, Any]:
    call(f"DELETE {ONE}", params=device_params(req))
    return {"ResultCode": "0", "ResultMessage": "success"}


@action(
    "GetDeviceList",
    {
        "ProductId": PRODUCT_ID,
        "Offset": OFFSET,
        "Limit": limit_field(10, 100),
        "FirmwareVersion": String(min_len=1, max_len=32, code=errors.FIRMWARE_VERSION_INVALID),
        "DeviceName": String(min_len=1, max_len=64, code=errors.QUERY_INVALID, description="fuzzy, as q"),
        "ProjectId": PROJECT_ID,
    },
    routes=["GET /v1/products/{product_id}/devices"],
    summary="A product's devices the caller may see (DeviceName: fuzzy match; FirmwareVersion: exact)",
    fields=DEVICE_FIELDS,
)
def get_device_list(req: Req, call: Invoker) -> dict[str, Any]:
    query: dict[str, Any] = {}
    if req.get("FirmwareVersion"):
        query["firmware_version"] = req["FirmwareVersion"]
    if req.get("DeviceName"):
        query["q"] = req["DeviceName"]
    items, total = call.page(
        "GET /v1/products/{product_id}/devices",
        params={"product_id": req["ProductId"]},
        query=query,
        offset=req["Offset"],
        limit=req["Limit"],
    )
    return {"Devices": [device_info(d) for d in items], "Total": total}
