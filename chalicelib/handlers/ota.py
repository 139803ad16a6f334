"""HTTP routes for firmware, OTA upgrade tasks and resource distribution (SPEC §8, §16)."""

from __future__ import annotations

from typing import Any

from chalice import Blueprint, Response

from ..core import errors
from ..core.schema import Array, Boolean, Enum, Integer, Json, Model, Number, String, page_of
from ..services import firmware
from ..services.firmware import FIRMWARE_KIND, RESOURCE_KIND
from ..services.ota import tasks as ota
from . import schemas as s
from .api import Ctx, decode_token, encode_token, route

bp = Blueprint(__name__)
TAG = "ota"

PID = s.PRODUCT_ID
DN_LIST = Array(
    String(min_len=1, max_len=48, code=errors.DEVICE_NAME_INVALID),
    max_items=ota.MAX_DEVICES + 1,
    code=errors.DEVICE_NAMES_INVALID,
    description="DeviceNames (≤ 10,000)",
)
CSV = String(
    min_len=1,
    max_len=600_000,
    code=errors.DEVICES_CSV_INVALID,
    description="CSV text whose first column is the DeviceName (≤ 10,000 rows; header `DeviceName` optional)",
)

FirmwareCreate = Model(
    "FirmwareCreate",
    {
        "product_id": PID,
        "name": String(
            required=True,
            min_len=1,
            max_len=32,
            code=errors.FIRMWARE_NAME_INVALID,
            description="starts with a letter or digit; letters, digits, _ - ( ); ≤ 32",
        ),
        "version": String(
            required=True,
            min_len=1,
            max_len=32,
            code=errors.FIRMWARE_VERSION_INVALID,
            description="[A-Za-z0-9._-]{1,32}, unique per product and type",
        ),
        "fw_type": String(
            min_len=1, max_len=32, code=errors.FIRMWARE_TYPE_INVALID, default="mcu", description="mcu or a module name"
        ),
        "file_name": String(
            required=True,
            min_len=1,
            max_len=128,
            code=errors.FILE_NAME_INVALID,
            description="ends in .bin .dav .tar .gz .zip .gzip .apk .xz .pack",
        ),
        "file_size": Integer(
            required=True, minimum=1, code=errors.FILE_SIZE_INVALID, description="declared size in bytes"
        ),
        "custom_info": Json(description="JSON string (or object), ≤ 1536 bytes serialised; sent as user_defined"),
        "description": String(max_len=100, code=errors.DESCRIPTION_INVALID),
    },
)
Firmware = Model(
    "Firmware",
    {
        "id": String(),
        "product_id": String(),
        "name": String(),
        "version": String(),
        "fw_type": String(),
        "file_name": String(),
        "file_size": Integer(nullable=True),
        "md5": String(nullable=True),
        "custom_info": String(),
        "description": String(),
        "status": Enum(("uploading", "ready")),
        "created_at": Integer(),
        "updated_at": Integer(),
        "created_by": String(),
        "upload_url": String(description="presigned PUT (only when created)"),
        "upload_method": String(),
        "statistics": Json(object_only=True),
    },
    allow_extra=True,
)
FirmwarePatch = Model(
    "FirmwarePatch",
    {
        "name": String(min_len=1, max_len=32, code=errors.FIRMWARE_NAME_INVALID),
        "description": String(max_len=100, code=errors.DESCRIPTION_INVALID),
    },
)
Abort = Model(
    "AbortRule",
    {
        "failure_ratio": Number(required=True, minimum=0, maximum=1, code=errors.ABORT_INVALID),
        "min_devices": Integer(minimum=1, maximum=ota.MAX_DEVICES, default=10, code=errors.ABORT_INVALID),
    },
)
TaskCreate = Model(
    "OtaTaskCreate",
    {
        "firmware_id": String(required=True, min_len=1, max_len=40, code=errors.FIRMWARE_ID_INVALID),
        "method": Enum(("by_version", "by_device"), required=True, code=errors.METHOD_INVALID),
        "source_versions": Array(
            String(min_len=1, max_len=32, code=errors.SOURCE_VERSION_INVALID),
            max_items=20,
            code=errors.SOURCE_VERSION_INVALID,
        ),
        "scope": Enum(("all", "selected"), code=errors.SCOPE_INVALID),
        "device_names": DN_LIST,
        "devices_csv": CSV,
        "mode": Enum(("static", "dynamic"), code=errors.MODE_INVALID),
        "confirm": Enum(("silent", "user_confirm"), code=errors.CONFIRM_INVALID),
        "timeout_minutes": Integer(
            minimum=1, maximum=1440, code=errors.TIMEOUT_INVALID, description="default 15 (silent) or 2 (user_confirm)"
        ),
        "max_retries": Integer(
            minimum=0, maximum=10, code=errors.MAX_RETRIES_INVALID, description="re-dispatches (default 3)"
        ),
        "rate_per_minute": Integer(
            minimum=1, maximum=100_000, code=errors.RATE_INVALID, description="devices per minute"
        ),
        "abort": Abort,
    },
)
Stats = Json(object_only=True, description="total, pending, pushed, upgrading|downloading, succeeded, failed")
Task = Model(
    "OtaTask",
    {
        "id": String(),
        "product_id": String(),
        "firmware_id": String(),
        "resource_id": String(),
        "method": String(),
        "source_versions": Array(String()),
        "scope": String(),
        "mode": String(),
        "confirm": String(),
        "status": Enum(ota.TASK_STATUSES),
        "reason": String(nullable=True),
        "target_version": String(),
        "timeout_minutes": Integer(),
        "max_retries": Integer(),
        "rate_per_minute": Integer(nullable=True),
        "abort": Json(nullable=True),
        "statistics": Stats,
        "rejected_count": Integer(),
        "rejected_devices": Array(Json(object_only=True)),
        "created_at": Integer(),
        "started_at": Integer(nullable=True),
        "ended_at": Integer(nullable=True),
    },
    allow_extra=True,
)
Job = Model(
    "OtaDevice",
    {
        "device_name": String(),
        "task_id": String(),
        "state": String(),
        "detail": String(nullable=True),
        "percent": Integer(nullable=True),
        "result_code": Integer(nullable=True),
        "result_msg": String(nullable=True),
        "reason": String(nullable=True),
        "attempts": Integer(),
        "source_version": String(nullable=True),
        "target_version": String(nullable=True),
        "running_version": String(nullable=True),
        "updated_at": Integer(nullable=True),
        "awaiting_confirmation": Boolean(),
    },
    allow_extra=True,
)
ResourceCreate = Model(
    "ResourceCreate",
    {
        "product_id": PID,
        "name": String(required=True, min_len=1, max_len=32, code=errors.RESOURCE_NAME_INVALID),
        "file_name": String(required=True, min_len=1, max_len=128, code=errors.FILE_NAME_INVALID),
        "file_size": Integer(required=True, minimum=1, code=errors.FILE_SIZE_INVALID),
        "thumbnails": Array(
            String(min_len=1, max_len=128, code=errors.THUMBNAIL_INVALID),
            max_items=6,
            code=errors.THUMBNAIL_INVALID,
            description="up to 6 image file names",
        ),
        "description": String(max_len=100, code=errors.DESCRIPTION_INVALID),
    },
)
ResourceTaskCreate = Model(
    "ResourceTaskCreate",
    {
        "resource_id": String(required=True, min_len=1, max_len=40, code=errors.RESOURCE_ID_INVALID),
        "device_name": String(min_len=1, max_len=48, code=errors.DEVICE_NAME_INVALID),
        "device_names": DN_LIST,
        "devices_csv": CSV,
        "timeout_minutes": Integer(minimum=1, maximum=1440, code=errors.TIMEOUT_INVALID),
        "max_retries": Integer(minimum=0, maximum=10, code=errors.MAX_RETRIES_INVALID),
        "rate_per_minute": Integer(minimum=1, maximum=100_000, code=errors.RATE_INVALID),
    },
)
STATE_Q = Enum(ota.STATES, code=errors.STATE_INVALID)
RES_STATE_Q = Enum(ota.RESOURCE_STATES, code=errors.STATE_INVALID)


def body_product(params: Any, body: Any) -> str:
    pid = body.get("product_id") if isinstance(body, dict) else None
    return f"product/{pid}" if isinstance(pid, str) and pid else "product/*"


# Routes naming a firmware, resource or task by id are decided on the product the stored item
# belongs to: the kit reads it (``owner``) once the caller is known, then authorises.
def _fw_res(params: Any, body: Any) -> str:
    return "product/*"


def _task_res(params: Any, body: Any) -> str:
    return "product/*"


def _item_owner(get: Any, id_of: Any, kind: str) -> Any:
    def owner(params: Any, body: Any) -> tuple[str, dict[str, Any]]:
        item = get(id_of(params, body), kind)
        return f"product/{item['product_id']}", item

    return owner


FW_OWNER = _item_owner(firmware.get_item, lambda p, b: p["firmware_id"], FIRMWARE_KIND)
RES_OWNER = _item_owner(firmware.get_item, lambda p, b: p["resource_id"], RESOURCE_KIND)
TASK_OWNER = _item_owner(ota.get_task, lambda p, b: p["task_id"], FIRMWARE_KIND)
RES_TASK_OWNER = _item_owner(ota.get_task, lambda p, b: p["task_id"], RESOURCE_KIND)
BODY_FW_OWNER = _item_owner(firmware.get_item, lambda p, b: b["firmware_id"], FIRMWARE_KIND)
BODY_RES_OWNER = _item_owner(firmware.get_item, lambda p, b: b["resource_id"], RESOURCE_KIND)


def _by(ctx: Ctx) -> str | None:
    return ctx.principal.principal_id if ctx.principal else None


def _page(items: list[Any], nxt: Any, ctx: Ctx) -> dict[str, Any]:
    complete = nxt is None and "next" not in ctx.query
    return {"items": items, "total": len(items) if complete else None, "next": encode_token(nxt)}


# ------------------------------------------------------------------ firmware


@route(
    bp,
    "POST",
    "/v1/firmware",
    action="CreateFirmware",
    resource=body_product,
    tag=TAG,
    summary="Declare a firmware (validated) and get a presigned upload URL; PUT the bytes, then …/complete",
    body=FirmwareCreate,
    response=Firmware,
    status=201,
    errors_=(413,),
)
def create_firmware(ctx: Ctx) -> dict[str, Any]:
    return firmware.create(ctx.body, _by(ctx))


@route(
    bp,
    "POST",
    "/v1/firmware/{firmware_id}/complete",
    action="CreateFirmware",
    resource=_fw_res,
    owner=FW_OWNER,
    tag=TAG,
    summary="Register the uploaded file: the platform measures its size and MD5",
    response=Firmware,
    errors_=(413,),
)
def complete_firmware(ctx: Ctx) -> dict[str, Any]:
    return firmware.complete(ctx.params["firmware_id"])


@route(
    bp,
    "GET",
    "/v1/firmware",
    action="DescribeFirmwareList",
    resource="product/*",
    listing=True,
    item_action="DescribeFirmware",
    tag=TAG,
    summary="List firmware, newest first (filter by product, search by name)",
    response=page_of(Firmware),
    query={
        **s.PAGING,
        "product_id": s.PRODUCT_FILTER,
        "q": String(min_len=1, max_len=32, code=errors.QUERY_INVALID),
    },
)
def list_firmware(ctx: Ctx) -> dict[str, Any]:
    pid = ctx.query.get("product_id")
    if pid:
        ctx.require("DescribeFirmwareList", f"product/{pid}")
    items, nxt = firmware.list_items(
        FIRMWARE_KIND,
        product_id=pid,
        q=ctx.query.get("q"),
        limit=ctx.query["limit"],
        start=decode_token(ctx.query.get("next")),
        visible=lambda i: ctx.visible(f"product/{i['product_id']}"),
    )
    return _page(items, nxt, ctx)


@route(
    bp,
    "GET",
    "/v1/firmware/{firmware_id}",
    action="DescribeFirmware",
    resource=_fw_res,
    owner=FW_OWNER,
    tag=TAG,
    summary="A firmware, with its upgrade statistics over all its tasks",
    response=Firmware,
)
def get_firmware(ctx: Ctx) -> dict[str, Any]:
    item = ctx.item
    out = firmware.view(item)
    out["statistics"] = ota.firmware_statistics(item["firmware_id"])
    return out


@route(
    bp,
    "GET",
    "/v1/firmware/{firmware_id}/devices",
    action="DescribeFirmware",
    resource=_fw_res,
    owner=FW_OWNER,
    tag=TAG,
    summary="Devices upgraded (or being upgraded) to this firmware, filterable by state",
    response=page_of(Job),
    query={**s.PAGING, "state": STATE_Q},
)
def firmware_devices(ctx: Ctx) -> dict[str, Any]:
    items, nxt = ota.list_firmware_jobs(
        ctx.params["firmware_id"],
        state=ctx.query.get("state"),
        limit=ctx.query["limit"],
        start=decode_token(ctx.query.get("next")),
    )
    return _page(items, nxt, ctx)


@route(
    bp,
    "PATCH",
    "/v1/firmware/{firmware_id}",
    action="EditFirmware",
    resource=_fw_res,
    owner=FW_OWNER,
    tag=TAG,
    summary="Edit a firmware's name or description",
    body=FirmwarePatch,
    response=Firmware,
)
def patch_firmware(ctx: Ctx) -> dict[str, Any]:
    return firmware.modify(ctx.params["firmware_id"], dict(ctx.body))


@route(
    bp,
    "DELETE",
    "/v1/firmware/{firmware_id}",
    action="DeleteFirmware",
    resource=_fw_res,
    owner=FW_OWNER,
    tag=TAG,
    summary="Delete a firmware (refused while one of its tasks runs)",
    status=204,
)
def delete_firmware(ctx: Ctx) -> None:
    firmware.delete(ctx.params["firmware_id"])


# ------------------------------------------------------------------ upgrade tasks


@route(
    bp,
    "POST",
    "/v1/ota-tasks",
    action="PublishFirmwareUpdateMessage",
    resource=_task_res,
    owner=BODY_FW_OWNER,
    tag=TAG,
    summary="Create an upgrade task (by source version or device list); targets are resolved asynchronously",
    body=TaskCreate,
    response=Task,
    status=202,
    precheck=lambda ctx: ota.check_task(ctx.body),
)
def create_task(ctx: Ctx) -> dict[str, Any]:
    return ota.create_task(ctx.body, _by(ctx))


@route(
    bp,
    "GET",
    "/v1/ota-tasks",
    action="DescribeFirmwareTasks",
    resource="product/*",
    listing=True,
    item_action="DescribeFirmwareTask",
    tag=TAG,
    summary="List upgrade tasks, newest first",
    response=page_of(Task),
    query={
        **s.PAGING,
        "firmware_id": String(min_len=1, max_len=40, code=errors.FIRMWARE_ID_INVALID),
        "product_id": s.PRODUCT_FILTER,
        "status": Enum(ota.TASK_STATUSES, code=errors.STATUS_INVALID),
    },
)
def list_tasks(ctx: Ctx) -> dict[str, Any]:
    items, nxt = ota.list_tasks(
        FIRMWARE_KIND,
        firmware_id=ctx.query.get("firmware_id"),
        product_id=ctx.query.get("product_id"),
        status=ctx.query.get("status"),
        limit=ctx.query["limit"],
        start=decode_token(ctx.query.get("next")),
        visible=lambda t: ctx.visible(f"product/{t['product_id']}"),
    )
    return _page(items, nxt, ctx)


@route(
    bp,
    "GET",
    "/v1/ota-device-list-template",
    action="DescribeFirmwareTasks",
    resource="product/*",
    listing=True,
    tag=TAG,
    summary="The device-list CSV template for by-device tasks (first column DeviceName)",
    response=String(),
    produces="text/csv",
)
def device_list_template(ctx: Ctx) -> Response:
    return Response(
        body=ota.DEVICE_LIST_TEMPLATE,
        status_code=200,
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": 'attachment; filename="ota-devices.csv"',
        },
    )


@route(
    bp,
    "GET",
    "/v1/ota-tasks/{task_id}",
    action="DescribeFirmwareTask",
    resource=_task_res,
    owner=TASK_OWNER,
    tag=TAG,
    summary="An upgrade task with its statistics",
    response=Task,
)
def get_task(ctx: Ctx) -> dict[str, Any]:
    return ota.view_task(ctx.item)


@route(
    bp,
    "GET",
    "/v1/ota-tasks/{task_id}/devices",
    action="DescribeFirmwareTaskDevices",
    resource=_task_res,
    owner=TASK_OWNER,
    tag=TAG,
    summary="The task's devices, filterable by state",
    response=page_of(Job),
    query={**s.PAGING, "state": STATE_Q},
)
def task_devices(ctx: Ctx) -> dict[str, Any]:
    items, nxt = ota.list_jobs(
        ctx.params["task_id"],
        FIRMWARE_KIND,
        state=ctx.query.get("state"),
        limit=ctx.query["limit"],
        start=decode_token(ctx.query.get("next")),
    )
    return _page(items, nxt, ctx)


@route(
    bp,
    "POST",
    "/v1/ota-tasks/{task_id}/cancel",
    action="CancelFirmwareTask",
    resource=_task_res,
    owner=TASK_OWNER,
    tag=TAG,
    summary="Cancel a running task (its unfinished devices fail with reason cancelled)",
    response=Task,
)
def cancel_task(ctx: Ctx) -> dict[str, Any]:
    return ota.cancel_task(ctx.params["task_id"])


@route(
    bp,
    "POST",
    "/v1/ota-tasks/{task_id}/devices/{device_name}/cancel",
    action="CancelDeviceFirmwareTask",
    resource=_task_res,
    owner=TASK_OWNER,
    tag=TAG,
    summary="Cancel one device's upgrade (failed, reason cancelled)",
    response=Job,
)
def cancel_device(ctx: Ctx) -> dict[str, Any]:
    return ota.cancel_device(ctx.params["task_id"], ctx.params["device_name"])


@route(
    bp,
    "POST",
    "/v1/ota-tasks/{task_id}/devices/{device_name}/retry",
    action="RetryDeviceFirmwareTask",
    resource=_task_res,
    owner=TASK_OWNER,
    tag=TAG,
    summary="Retry one failed device (back to pending)",
    response=Job,
)
def retry_device(ctx: Ctx) -> dict[str, Any]:
    return ota.retry_device(ctx.params["task_id"], ctx.params["device_name"])


@route(
    bp,
    "POST",
    "/v1/ota-tasks/{task_id}/devices/{device_name}/confirm",
    action="ConfirmDeviceFirmwareTask",
    resource=_task_res,
    owner=TASK_OWNER,
    tag=TAG,
    summary="Approve a user-confirm upgrade for one device",
    response=Job,
)
def confirm_device(ctx: Ctx) -> dict[str, Any]:
    return ota.confirm_device(ctx.params["task_id"], ctx.params["device_name"])


# ------------------------------------------------------------------ resources (SPEC §8.6)

Resource = Model(
    "Resource",
    {
        "id": String(),
        "product_id": String(),
        "name": String(),
        "file_name": String(),
        "file_size": Integer(nullable=True),
        "md5": String(nullable=True),
        "description": String(),
        "status": Enum(("uploading", "ready")),
        "thumbnails": Integer(),
        "created_at": Integer(),
        "upload_url": String(),
        "thumbnail_upload_urls": Array(String()),
    },
    allow_extra=True,
)


@route(
    bp,
    "POST",
    "/v1/resources",
    action="CreateResource",
    resource=body_product,
    tag=TAG,
    summary="Declare a resource (≤ 1024 MB, 1 GB per account) and get presigned upload URLs",
    body=ResourceCreate,
    response=Resource,
    status=201,
    errors_=(413,),
)
def create_resource(ctx: Ctx) -> dict[str, Any]:
    return firmware.create_resource(ctx.body, _by(ctx))


@route(
    bp,
    "POST",
    "/v1/resources/{resource_id}/complete",
    action="CreateResource",
    resource=_fw_res,
    owner=RES_OWNER,
    tag=TAG,
    summary="Register the uploaded resource file (size and MD5 measured)",
    response=Resource,
    errors_=(413,),
)
def complete_resource(ctx: Ctx) -> dict[str, Any]:
    return firmware.complete(ctx.params["resource_id"], RESOURCE_KIND)


@route(
    bp,
    "GET",
    "/v1/resources/{resource_id}",
    action="DescribeResource",
    resource=_fw_res,
    owner=RES_OWNER,
    tag=TAG,
    summary="A resource",
    response=Resource,
)
def get_resource(ctx: Ctx) -> dict[str, Any]:
    return firmware.view(ctx.item)


@route(
    bp,
    "DELETE",
    "/v1/resources/{resource_id}",
    action="DeleteResource",
    resource=_fw_res,
    owner=RES_OWNER,
    tag=TAG,
    summary="Delete a resource (refused while one of its tasks runs)",
    status=204,
)
def delete_resource(ctx: Ctx) -> None:
    firmware.delete(ctx.params["resource_id"], RESOURCE_KIND)


@route(
    bp,
    "POST",
    "/v1/resource-tasks",
    action="CreateResourceTask",
    resource=_task_res,
    owner=BODY_RES_OWNER,
    tag=TAG,
    summary="Send a resource to one device or a device list",
    body=ResourceTaskCreate,
    response=Task,
    status=202,
)
def create_resource_task(ctx: Ctx) -> dict[str, Any]:
    return ota.create_resource_task(ctx.body, _by(ctx))


@route(
    bp,
    "GET",
    "/v1/resource-tasks/{task_id}",
    action="DescribeResourceTask",
    resource=_task_res,
    owner=RES_TASK_OWNER,
    tag=TAG,
    summary="A resource task with its statistics",
    response=Task,
)
def get_resource_task(ctx: Ctx) -> dict[str, Any]:
    return ota.view_task(ctx.item)


@route(
    bp,
    "GET",
    "/v1/resource-tasks/{task_id}/devices",
    action="DescribeResourceTask",
    resource=_task_res,
    owner=RES_TASK_OWNER,
    tag=TAG,
    summary="The resource task's devices, filterable by state",
    response=page_of(Job),
    query={**s.PAGING, "state": RES_STATE_Q},
)
def resource_task_devices(ctx: Ctx) -> dict[str, Any]:
    items, nxt = ota.list_jobs(
        ctx.params["task_id"],
        RESOURCE_KIND,
        state=ctx.query.get("state"),
        limit=ctx.query["limit"],
        start=decode_token(ctx.query.get("next")),
    )
    return _page(items, nxt, ctx)


@route(
    bp,
    "POST",
    "/v1/resource-tasks/{task_id}/cancel",
    action="CancelResourceTask",
    resource=_task_res,
    owner=RES_TASK_OWNER,
    tag=TAG,
    summary="Cancel a resource task",
    response=Task,
)
def cancel_resource_task(ctx: Ctx) -> dict[str, Any]:
    return ota.cancel_task(ctx.params["task_id"], RESOURCE_KIND)
