"""Cloud-API device actions (SPEC §5, §6.4) onto the /v1/products/{pid}/devices routes.

Field translation (Tencent ↔ Fleetbox): ``Status`` 0 offline, 1 online, 3 inactive;
``EnableState`` 1/0 ↔ enabled; ``FirstOnlineTime`` ↔ activated_at; ``LoginTime`` ↔ last_online_at;
``Version`` ↔ firmware_version; ``DevicePsk``/``DevicePrivateKey`` ↔ the device's secret, answered
only to callers allowed ``DescribeDeviceSecret`` (as the HTTP route's ``include_secret``), and on
creation.  Tencent carries property data, action input and output as JSON *text* (``Data``,
``InputParams``, ``OutputParams``); the routes take and give JSON objects.  ``Context`` cursors
are the routes' ``next`` tokens; histories are newest first.
"""

from __future__ import annotations

import json
from typing import Any

from ...core import clock, errors
from ...core.schema import Enum, Integer, IntEnum, String
from .. import device_data as data_routes
from .. import devices as device_routes
from .products import OFFSET, PRODUCT_ID, PROJECT_ID, limit_field
from .registry import Invoker, Req, action

#: the route modules these actions call (imported first so their routes are registered)
ROUTES_FROM = (device_routes, data_routes)

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


# ------------------------------------------------------------------ data, control, actions, events


def json_object(req: Req, name: str, code: errors.ErrorCode) -> dict[str, Any]:
    """A Tencent JSON-text parameter that must hold an object."""
    try:
        value = json.loads(req[name])
    except ValueError:
        raise code(f"{name} must be a JSON object as text", name) from None
    if not isinstance(value, dict):
        raise code(f"{name} must be a JSON object as text", name)
    return value


def json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


JSON_TEXT = String(required=True, max_len=64 * 1024, code=errors.PARAMS_INVALID)
DATA_FIELDS = {**DEVICE_FIELDS, "params": "Data", "next": "Context", "start": "MinTime", "end": "MaxTime"}
ACTION_FIELDS = {**DEVICE_FIELDS, "params": "InputParams", "action_id": "ActionId"}


@action(
    "DescribeDeviceData",
    {"ProductId": PRODUCT_ID, "DeviceName": DEVICE_NAME},
    routes=[f"GET {ONE}/properties"],
    summary="Latest reported values: Data is {id: {Value, LastUpdate (ms)}} as JSON text",
    fields=DEVICE_FIELDS,
)
def describe_device_data(req: Req, call: Invoker) -> dict[str, Any]:
    got = call(f"GET {ONE}/properties", params=device_params(req))
    data = {p["id"]: {"Value": p["value"], "LastUpdate": p["time_ms"]} for p in got["properties"]}
    return {"Data": json_text(data)}


@action(
    "DescribeDeviceDataHistory",
    {
        "ProductId": PRODUCT_ID,
        "DeviceName": DEVICE_NAME,
        "MinTime": Integer(required=True, minimum=0, code=errors.START_INVALID),
        "MaxTime": Integer(required=True, minimum=0, code=errors.END_INVALID),
        "FieldName": String(required=True, min_len=1, max_len=32, code=errors.INVALID_PARAMETER),
        "Limit": limit_field(10, 100),
        "Context": String(max_len=2048, code=errors.NEXT_TOKEN_INVALID),
    },
    routes=[f"GET {ONE}/properties/{{property_id}}/history"],
    summary="A property's values between MinTime and MaxTime (ms), newest first; Context pages on",
    fields={**DATA_FIELDS, "property_id": "FieldName"},
)
def describe_device_data_history(req: Req, call: Invoker) -> dict[str, Any]:
    got = call(
        f"GET {ONE}/properties/{{property_id}}/history",
        params={**device_params(req), "property_id": req["FieldName"]},
        query={"start": req["MinTime"], "end": req["MaxTime"], "limit": req["Limit"], "next": req.get("Context")},
    )
    results = [
        {"Time": str(p["time_ms"]), "Value": p["value"] if isinstance(p["value"], str) else json_text(p["value"])}
        for p in got["items"]
    ]
    return {"FieldName": req["FieldName"], "Listover": got["next"] is None, "Context": got["next"], "Results": results}


@action(
    "ControlDeviceData",
    {
        "ProductId": PRODUCT_ID,
        "DeviceName": DEVICE_NAME,
        "Data": JSON_TEXT,
        "Method": Enum(("desired", "reported"), default="desired", code=errors.METHOD_INVALID),
    },
    routes=[f"POST {ONE}/control"],
    summary="Set writable properties: sent to an online device, kept as desired values for an offline one",
    fields=DATA_FIELDS,
)
def control_device_data(req: Req, call: Invoker) -> dict[str, Any]:
    if req["Method"] == "reported":
        # a report is what a device sends over MQTT; the cloud never forges one in its name
        raise errors.METHOD_INVALID("Method reported (simulating a device report) is not supported", "Method")
    got = call(
        f"POST {ONE}/control",
        params=device_params(req),
        body={"params": json_object(req, "Data", errors.PARAMS_INVALID)},
    )
    sent = got.get("delivery") == "published"
    # Tencent's pushResult: 0 sent, 23101 the device is offline or not subscribed (kept as desired)
    result = {"Sent": 1 if sent else 0, "pushResult": 0 if sent else 23101, "clientToken": got["client_token"]}
    return {
        "Data": json_text({"clientToken": got["client_token"], "delivery": got.get("delivery")}),
        "Result": json_text(result),
    }


@action(
    "PublishMessage",
    {
        "ProductId": PRODUCT_ID,
        "DeviceName": DEVICE_NAME,
        "Topic": String(required=True, min_len=1, max_len=256, code=errors.TOPIC_INVALID),
        "Payload": String(required=True, code=errors.PAYLOAD_INVALID),
        "Qos": IntEnum((0, 1), default=0, code=errors.QOS_INVALID),
        "PayloadEncoding": String(default="", code=errors.FORMAT_INVALID),
    },
    routes=[f"POST {ONE}/messages"],
    summary="Send a message to one of the device's custom topics (PayloadEncoding base64 for bytes)",
    fields={**DEVICE_FIELDS, "qos": "Qos", "payload_encoding": "PayloadEncoding"},
)
def publish_message(req: Req, call: Invoker) -> dict[str, Any]:
    encoding = req["PayloadEncoding"] or "none"
    if encoding not in ("none", "base64"):
        raise errors.FORMAT_INVALID("PayloadEncoding must be base64 or empty", "PayloadEncoding")
    call(
        f"POST {ONE}/messages",
        params=device_params(req),
        body={"topic": req["Topic"], "payload": req["Payload"], "qos": req["Qos"], "payload_encoding": encoding},
    )
    return {}


def _call_action(req: Req, call: Invoker, mode: str) -> dict[str, Any]:
    return call(
        f"POST {ONE}/actions/{{action_id}}",
        params={**device_params(req), "action_id": req["ActionId"]},
        body={"params": json_object(req, "InputParams", errors.PARAMS_INVALID), "mode": mode},
    )


ACTION_REQUEST = {
    "ProductId": PRODUCT_ID,
    "DeviceName": DEVICE_NAME,
    "ActionId": String(required=True, min_len=1, max_len=32, code=errors.ACTION_INVALID),
    "InputParams": String(required=True, max_len=64 * 1024, code=errors.PARAMS_INVALID),
}


@action(
    "CallDeviceActionSync",
    ACTION_REQUEST,
    routes=[f"POST {ONE}/actions/{{action_id}}"],
    summary="Call an action and wait for the device's action_reply (FailedOperation.ActionTimeout if none)",
    fields=ACTION_FIELDS,
)
def call_device_action_sync(req: Req, call: Invoker) -> dict[str, Any]:
    got = _call_action(req, call, "sync")
    return {
        "ClientToken": got["client_token"],
        "OutputParams": json_text(got.get("response") or {}),
        "Status": got.get("reply_status") or "",
    }


@action(
    "CallDeviceActionAsync",
    ACTION_REQUEST,
    routes=[f"POST {ONE}/actions/{{action_id}}"],
    summary="Send an action to an online device without waiting; ClientToken identifies the call",
    fields=ACTION_FIELDS,
)
def call_device_action_async(req: Req, call: Invoker) -> dict[str, Any]:
    got = _call_action(req, call, "async")
    return {"ClientToken": got["client_token"], "Status": got["status"]}


@action(
    "ListEventHistory",
    {
        "ProductId": PRODUCT_ID,
        "DeviceName": DEVICE_NAME,
        "Type": String(default="", code=errors.EVENT_TYPE_INVALID),
        "StartTime": Integer(minimum=0, default=0, code=errors.START_INVALID),
        "EndTime": Integer(minimum=0, default=0, code=errors.END_INVALID),
        "Context": String(max_len=2048, code=errors.NEXT_TOKEN_INVALID),
        "Size": Integer(minimum=1, maximum=100, default=10, code=errors.LIMIT_INVALID),
        "EventId": String(min_len=1, max_len=32, code=errors.EVENT_ID_INVALID),
    },
    routes=[f"GET {ONE}/events"],
    summary="The device's events, newest first (StartTime 0: 24 hours before EndTime; EndTime 0: now)",
    fields={
        **DEVICE_FIELDS,
        "next": "Context",
        "start": "StartTime",
        "end": "EndTime",
        "type": "Type",
        "limit": "Size",
    },
)
def list_event_history(req: Req, call: Invoker) -> dict[str, Any]:
    # seconds, each inclusive of its whole second (the route takes milliseconds); EndTime 0 is the
    # route's own "now" (which also keeps values from device clocks running a little ahead)
    end_s = req["EndTime"] or clock.now_s()
    start_ms = (req["StartTime"] or end_s - 24 * 3600) * 1000
    query: dict[str, Any] = {"start": start_ms, "limit": req["Size"], "next": req.get("Context")}
    if req["EndTime"]:
        query["end"] = req["EndTime"] * 1000 + 999
    if req["Type"]:
        query["type"] = req["Type"]
    if req.get("EventId"):
        query["event_id"] = req["EventId"]
    got = call(f"GET {ONE}/events", params=device_params(req), query=query)
    history = [
        {
            "TimeStamp": e["time"],
            "ProductId": req["ProductId"],
            "DeviceName": req["DeviceName"],
            "EventId": e["event_id"],
            "Type": e["type"],
            "Data": json_text(e["params"]),
        }
        for e in got["items"]
    ]
    listover = got["next"] is None
    # the route counts nothing: a total is known only when this one page is the whole result
    total = len(history) if listover and not req.get("Context") else None
    return {"Context": got["next"], "Total": total, "Listover": listover, "EventHistory": history}
