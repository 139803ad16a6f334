"""HTTP routes for devices and the device quota."""

from __future__ import annotations

from typing import Any

from chalice import Blueprint

from ..core import errors
from ..core.schema import Boolean, Enum, String
from ..services import devices
from . import schemas as s
from .api import Ctx, decode_token, encode_token, route

bp = Blueprint(__name__)
TAG = "devices"


def product_res(params: Any, body: Any) -> str:
    return f"product/{params['product_id']}"


def device_res(params: Any, body: Any) -> str:
    return f"product/{params['product_id']}/device/{params['device_name']}"


@route(
    bp,
    "POST",
    "/v1/products/{product_id}/devices",
    action="CreateDevice",
    resource=product_res,
    tag=TAG,
    summary="Create one device (secret generated unless supplied); the secret is in the answer",
    body=s.DeviceCreate,
    response=s.Device,
    status=201,
)
def create_device(ctx: Ctx) -> dict[str, Any]:
    return devices.create(
        ctx.params["product_id"],
        ctx.body["device_name"],
        ctx.body.get("secret"),
        created_by=ctx.principal.principal_id if ctx.principal else None,
    )


@route(
    bp,
    "GET",
    "/v1/products/{product_id}/devices",
    action="GetDeviceList",
    resource=product_res,
    item_action="DescribeDevice",
    tag=TAG,
    summary="List devices: filter by status, firmware version, tag (k=v), enabled; fuzzy q on name and tags",
    response=s.DevicePage,
    query={
        **s.PAGING,
        "status": Enum(devices.STATUSES, code=errors.STATUS_INVALID),
        "firmware_version": String(min_len=1, max_len=32, code=errors.FIRMWARE_VERSION_INVALID),
        "tag": String(
            min_len=3,
            max_len=97,
            pattern=r"[^=:]+[=:].+",
            code=errors.TAG_INVALID,
            rule="must be key=value (or key:value)",
            description="key=value (or key:value)",
        ),
        "q": String(min_len=1, max_len=64, code=errors.QUERY_INVALID, description="fuzzy match on name and tags"),
        "enabled": Boolean(code=errors.ENABLED_INVALID),
    },
)
def list_devices(ctx: Ctx) -> dict[str, Any]:
    items, total, nxt = devices.list_devices(
        ctx.params["product_id"],
        status=ctx.query.get("status"),
        firmware_version=ctx.query.get("firmware_version"),
        tag=ctx.query.get("tag"),
        q=ctx.query.get("q"),
        enabled=ctx.query.get("enabled"),
        limit=ctx.query["limit"],
        start=decode_token(ctx.query.get("next")),
        visible=lambda dn: ctx.allowed("DescribeDevice", f"product/{ctx.params['product_id']}/device/{dn}"),
    )
    return {"items": items, "total": total, "next": encode_token(nxt)}


@route(
    bp,
    "GET",
    "/v1/products/{product_id}/devices/{device_name}",
    action="DescribeDevice",
    resource=device_res,
    tag=TAG,
    summary="Get a device (secret only with include_secret=true and DescribeDeviceSecret)",
    response=s.Device,
    query={"include_secret": Boolean(default=False, code=errors.INCLUDE_SECRET_INVALID)},
)
def get_device(ctx: Ctx) -> dict[str, Any]:
    include = bool(ctx.query.get("include_secret"))
    if include:
        ctx.require("DescribeDeviceSecret", device_res(ctx.params, {}))
    return devices.describe(ctx.params["product_id"], ctx.params["device_name"], include)


def _exists(ctx: Ctx) -> None:
    devices.get_device(ctx.params["product_id"], ctx.params["device_name"])


@route(
    bp,
    "PATCH",
    "/v1/products/{product_id}/devices/{device_name}",
    action="ModifyDevice",
    resource=device_res,
    tag=TAG,
    summary="Enable/disable a device or replace its tags",
    body=s.DevicePatch,
    response=s.Device,
    precheck=_exists,
)
def patch_device(ctx: Ctx) -> dict[str, Any]:
    return devices.modify(ctx.params["product_id"], ctx.params["device_name"], dict(ctx.body))


@route(
    bp,
    "DELETE",
    "/v1/products/{product_id}/devices/{device_name}",
    action="DeleteDevice",
    resource=device_res,
    tag=TAG,
    summary="Delete a device (its secret stops working at once)",
    status=204,
    precheck=_exists,
)
def delete_device(ctx: Ctx) -> None:
    devices.delete(ctx.params["product_id"], ctx.params["device_name"])


@route(
    bp,
    "GET",
    "/v1/quota",
    action="DescribeDeviceQuota",
    resource="account/quota",
    tag=TAG,
    summary="The account's device quota",
    response=s.Quota,
)
def get_quota(ctx: Ctx) -> dict[str, Any]:
    return devices.quota()
