"""HTTP routes for device data (SPEC §5, §6.4, §16): latest values, history, control, actions,
calls, events, logs and gateway topology.

Time ranges (``start``/``end``) take Unix seconds or milliseconds (values ≥ 10^11 are
milliseconds); the default range is the 7 days before ``end`` (default: now, plus a day so
values from device clocks running ahead still show).  Lists are newest first.
"""

from __future__ import annotations

from typing import Any

from chalice import Blueprint

from ..core import errors
from ..core.schema import Array, Boolean, Enum, Integer, IntEnum, Json, Model, Number, String, page_of
from ..services import device_data, device_logs, devices, gateways
from ..services.thing_model import EVENT_TYPES
from . import schemas as s
from .api import Ctx, decode_token, encode_token, route
from .devices import device_res

bp = Blueprint(__name__)
#: 2100-01-01 in milliseconds: the latest time a range may name
MAX_TIME = 4_102_444_800_000
TAG = "device data"
DEVICE = "/v1/products/{product_id}/devices/{device_name}"
_IDENT = r"[A-Za-z_][A-Za-z0-9_]{0,31}"

# ------------------------------------------------------------------ models

TIME_RANGE = {
    "start": Integer(
        minimum=0,
        maximum=MAX_TIME,
        code=errors.START_INVALID,
        description="Unix seconds or milliseconds (≥ 10^11 means ms); default: 7 days before end",
    ),
    "end": Integer(
        minimum=0,
        maximum=MAX_TIME,
        code=errors.END_INVALID,
        description="Unix seconds or milliseconds; default: now (plus a day for clocks running ahead)",
    ),
}
TIMES = {
    "time": Integer(required=True, description="Unix seconds"),
    "time_ms": Integer(required=True, description="Unix milliseconds"),
}

PropertyValue = Model(
    "PropertyValue",
    {
        "id": String(required=True),
        "name": String(nullable=True, required=True),
        "value": Json(required=True, nullable=True, description="the latest reported value"),
        **TIMES,
    },
    allow_extra=True,
)
DesiredValue = Model(
    "DesiredValue",
    {
        "id": String(required=True),
        "value": Json(required=True, nullable=True),
        "client_token": String(nullable=True, required=True, description="the control that set it"),
        **TIMES,
    },
    allow_extra=True,
)
DeviceProperties = Model(
    "DeviceProperties",
    {
        "product_id": String(required=True),
        "device_name": String(required=True),
        "status": Enum(devices.STATUSES, required=True),
        "properties": Array(PropertyValue, required=True),
        "desired": Array(
            DesiredValue,
            required=True,
            description="control values pending for the device, delivered on its next get_status",
        ),
    },
    allow_extra=True,
)
HistoryPoint = Model("PropertyHistoryPoint", {"value": Json(required=True, nullable=True), **TIMES}, allow_extra=True)
HistoryPage = page_of(HistoryPoint)

ControlBody = Model(
    "DeviceControl",
    {
        "params": Json(
            object_only=True,
            required=True,
            code=errors.PARAMS_INVALID,
            description="property id → value (writable properties of the thing model)",
        ),
        "timeout": Number(
            minimum=0,
            maximum=30,
            default=0,
            code=errors.TIMEOUT_INVALID,
            description="seconds to wait for the device's control_reply (0: do not wait)",
        ),
    },
)
ActionBody = Model(
    "DeviceActionCall",
    {
        "params": Json(
            object_only=True, default=dict, code=errors.PARAMS_INVALID, description="the action's input params"
        ),
        "mode": Enum(("sync", "async"), default="sync", code=errors.MODE_INVALID),
        "timeout": Number(
            minimum=0.1,
            maximum=60,
            code=errors.TIMEOUT_INVALID,
            description="sync: seconds to wait for action_reply (default FLEETBOX_ACTION_TIMEOUT_S, 5)",
        ),
    },
)
Call = Model(
    "DeviceCall",
    {
        "client_token": String(required=True),
        "kind": Enum(("control", "action"), required=True),
        "action_id": String(nullable=True, required=True),
        "params": Json(object_only=True, required=True),
        "status": Enum(("pending", "replied", "timeout"), required=True),
        "code": Integer(nullable=True, required=True, description="the device's reply code (0 = success)"),
        "reply_status": String(nullable=True, required=True, description="the device's reply status text"),
        "response": Json(object_only=True, nullable=True, required=True, description="action_reply response"),
        "created_at": Integer(required=True),
        "replied_at": Integer(nullable=True, required=True),
        "delivery": Enum(
            ("published", "desired"),
            description="control: published to the online device, or stored as desired (offline)",
        ),
    },
    allow_extra=True,
)

MessageBody = Model(
    "DeviceMessage",
    {
        "topic": String(
            required=True,
            min_len=1,
            max_len=256,
            code=errors.TOPIC_INVALID,
            description="{ProductId}/{DeviceName}/<custom topic the device subscribes to (sub or pubsub)>",
        ),
        "payload": String(
            required=True,
            max_len=2 * device_data.MAX_MESSAGE_BYTES,
            code=errors.PAYLOAD_INVALID,
            description=f"the message (at most {device_data.MAX_MESSAGE_BYTES} bytes once decoded)",
        ),
        "qos": IntEnum((0, 1), default=0, code=errors.QOS_INVALID),
        "payload_encoding": Enum(
            device_data.PAYLOAD_ENCODINGS,
            default="none",
            code=errors.FORMAT_INVALID,
            description="base64: the payload is base64 of the bytes to send",
        ),
    },
)
MessageSent = Model(
    "DeviceMessageSent",
    {
        "product_id": String(required=True),
        "device_name": String(required=True),
        "topic": String(required=True),
        "qos": Integer(required=True),
        "size": Integer(required=True, description="bytes sent"),
        "delivered": Boolean(
            required=True, description="false when it is known no subscriber received it (the device is offline)"
        ),
    },
)

DeviceEvent = Model(
    "DeviceEvent",
    {
        "event_id": String(nullable=True, required=True),
        "type": String(nullable=True, required=True),
        "params": Json(object_only=True, required=True),
        **TIMES,
    },
    allow_extra=True,
)
EventPage = page_of(DeviceEvent)

LogEntry = Model(
    "DeviceLogEntry",
    {
        "kind": Enum(device_logs.KINDS, required=True),
        "direction": String(nullable=True, required=True, description="up | down (content log)"),
        "topic": String(nullable=True, required=True),
        "payload": String(nullable=True, required=True, description="the message (first 4096 characters)"),
        "code": String(nullable=True, required=True, description="diagnostic code, or the presence event"),
        "message": String(nullable=True, required=True),
        **TIMES,
    },
    allow_extra=True,
)
LogPage = page_of(LogEntry)

Subdevice = Model(
    "Subdevice",
    {
        "product_id": String(required=True),
        "device_name": String(required=True),
        "bound_at": Integer(required=True),
        "online": Boolean(required=True),
    },
    allow_extra=True,
)
SubdevicePage = page_of(Subdevice)


def _page(items: list[dict[str, Any]], nxt: dict[str, Any] | None) -> dict[str, Any]:
    return {"items": items, "total": None, "next": encode_token(nxt)}


def _range(ctx: Ctx) -> tuple[int, int]:
    return device_data.time_range(ctx.query.get("start"), ctx.query.get("end"))


# ------------------------------------------------------------------ routes


@route(
    bp,
    "GET",
    DEVICE + "/properties",
    action="DescribeDeviceData",
    resource=device_res,
    tag=TAG,
    summary="Latest reported value and time of each property, and the control values pending",
    response=DeviceProperties,
)
def get_properties(ctx: Ctx) -> dict[str, Any]:
    return device_data.properties(ctx.params["product_id"], ctx.params["device_name"])


@route(
    bp,
    "GET",
    DEVICE + "/properties/{property_id}/history",
    action="DescribeDeviceDataHistory",
    resource=device_res,
    tag=TAG,
    summary="A property's reported values in a time range, newest first",
    query={**s.PAGING, **TIME_RANGE},
    response=HistoryPage,
)
def get_history(ctx: Ctx) -> dict[str, Any]:
    start, end = _range(ctx)
    items, nxt = device_data.property_history(
        ctx.params["product_id"],
        ctx.params["device_name"],
        ctx.params["property_id"],
        start,
        end,
        ctx.query["limit"],
        decode_token(ctx.query.get("next")),
    )
    return _page(items, nxt)


@route(
    bp,
    "POST",
    DEVICE + "/control",
    action="ControlDeviceData",
    resource=device_res,
    tag=TAG,
    summary="Set properties: published to an online device (control), else kept as desired values",
    body=ControlBody,
    response=Call,
)
def post_control(ctx: Ctx) -> dict[str, Any]:
    return device_data.control(
        ctx.params["product_id"], ctx.params["device_name"], ctx.body["params"], float(ctx.body.get("timeout") or 0)
    )


@route(
    bp,
    "POST",
    DEVICE + "/actions/{action_id}",
    action="CallDeviceAction",
    resource=device_res,
    tag=TAG,
    summary="Call an action: sync waits for action_reply (504 FailedOperation.ActionTimeout), "
    "async returns the clientToken",
    body=ActionBody,
    response=Call,
    errors_=(504,),
)
def post_action(ctx: Ctx) -> dict[str, Any]:
    timeout = ctx.body.get("timeout")
    return device_data.call_action(
        ctx.params["product_id"],
        ctx.params["device_name"],
        ctx.params["action_id"],
        ctx.body.get("params") or {},
        ctx.body["mode"],
        float(timeout) if timeout is not None else None,
    )


@route(
    bp,
    "POST",
    DEVICE + "/messages",
    action="PublishMessage",
    resource=device_res,
    tag=TAG,
    summary="Send a message to one of the device's custom topics (custom-protocol products)",
    body=MessageBody,
    response=MessageSent,
)
def post_message(ctx: Ctx) -> dict[str, Any]:
    return device_data.publish_message(
        ctx.params["product_id"],
        ctx.params["device_name"],
        ctx.body["topic"],
        ctx.body["payload"],
        ctx.body["qos"],
        ctx.body["payload_encoding"],
    )


@route(
    bp,
    "GET",
    DEVICE + "/calls/{client_token}",
    action="DescribeDeviceCall",
    resource=device_res,
    tag=TAG,
    summary="A control or action by clientToken: pending, replied (with the device's answer) or timeout",
    response=Call,
)
def get_call(ctx: Ctx) -> dict[str, Any]:
    return device_data.get_call(ctx.params["product_id"], ctx.params["device_name"], ctx.params["client_token"])


@route(
    bp,
    "GET",
    DEVICE + "/events",
    action="ListEventHistory",
    resource=device_res,
    tag=TAG,
    summary="The device's events in a time range, newest first",
    query={
        **s.PAGING,
        **TIME_RANGE,
        "event_id": String(min_len=1, max_len=32, pattern=_IDENT, code=errors.EVENT_ID_INVALID),
        "type": Enum(EVENT_TYPES, code=errors.EVENT_TYPE_INVALID),
    },
    response=EventPage,
)
def get_events(ctx: Ctx) -> dict[str, Any]:
    start, end = _range(ctx)
    items, nxt = device_data.events(
        ctx.params["product_id"],
        ctx.params["device_name"],
        start,
        end,
        ctx.query.get("event_id"),
        ctx.query.get("type"),
        ctx.query["limit"],
        decode_token(ctx.query.get("next")),
    )
    return _page(items, nxt)


@route(
    bp,
    "GET",
    DEVICE + "/logs",
    action="ListDeviceLog",
    resource=device_res,
    tag=TAG,
    summary="Content, online/offline or cloud diagnostic log in a time range, newest first (kept 30 days)",
    query={**s.PAGING, **TIME_RANGE, "kind": Enum(device_logs.KINDS, default="content", code=errors.LOG_KIND_INVALID)},
    response=LogPage,
)
def get_logs(ctx: Ctx) -> dict[str, Any]:
    start, end = _range(ctx)
    items, nxt = device_data.logs(
        ctx.params["product_id"],
        ctx.params["device_name"],
        ctx.query["kind"],
        start,
        end,
        ctx.query["limit"],
        decode_token(ctx.query.get("next")),
    )
    return _page(items, nxt)


@route(
    bp,
    "GET",
    DEVICE + "/subdevices",
    action="DescribeGatewayBindDevices",
    resource=device_res,
    tag=TAG,
    summary="Subdevices bound to this gateway (topology) and whether each is online",
    query=s.PAGING,
    response=SubdevicePage,
)
def get_subdevices(ctx: Ctx) -> dict[str, Any]:
    items, nxt = gateways.subdevices(
        ctx.params["product_id"], ctx.params["device_name"], ctx.query["limit"], decode_token(ctx.query.get("next"))
    )
    return _page(items, nxt)
