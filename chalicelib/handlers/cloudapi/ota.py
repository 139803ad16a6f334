"""Cloud-API firmware and OTA actions (SPEC §8.1-§8.3) onto the /v1/firmware and /v1/ota-tasks routes.

Tencent names a firmware by ``ProductID`` + ``FirmwareVersion`` (+ ``FwType``, default any type,
``mcu`` first); Fleetbox by id: each action finds the id among the product's firmware
(``GET /v1/firmware?product_id=``, so ``DescribeFirmwareList`` is needed too).  A firmware exists
for Tencent once ``UploadFirmware`` registered it: one still being uploaded is not found.

Upload, honestly mapped onto ``POST /v1/firmware`` + ``…/complete``:

* ``GetCOSURL`` declares the firmware (``POST /v1/firmware``) and answers its presigned PUT URL;
  asked again for a version whose file was never registered, it replaces that declaration.
  Tencent's call carries no name or file name, so the firmware is declared with the name
  ``v<version>`` (``.``→``_``) and the file name ``<version>.bin``;
* ``UploadFirmware`` registers the uploaded file (``…/complete``: the platform measures MD5 and
  size), then sets ``FirmwareName``/``FirmwareDescription`` (``PATCH``).  A file whose measured MD5
  or size differs from ``Md5sum``/``FileSize`` is refused and the firmware deleted (upload
  again).  ``FirmwareUserDefined`` cannot be set here (Fleetbox fixes custom information when the
  firmware is declared): a non-empty value is refused — declare such firmware with ``POST /v1/firmware``.

Tasks: ``TaskId`` is Fleetbox's task id, a string (``ota…``), where Tencent's is an integer.
``BatchUpdateFirmware``: ``DeviceNames`` alone → by device list; ``FirmwareOriVersion`` → by
version (with ``DeviceNames``: those devices of it, a grey release); ``UpgradeMethod`` 0/1 ↔
silent/user_confirm; ``TimeoutInterval`` seconds (120-900) ↔ whole minutes; ``Type`` 1 static,
7 dynamic; ``MaxRetryNum``; ``RateLimit`` ↔ rate_per_minute.  Not supported (refused when set):
a device-list file (``FileName``/``FileMd5``/``FileSize``), ``DelayTime``, ``StartTime``,
``EndTime``, ``RetryInterval``, ``OverrideMode`` 1, ``TaskUserDefine``.
``CancelDeviceFirmwareTask`` / ``RetryDeviceFirmwareTask`` (one device of a task; Tencent's OTA
actions of that name, which the 3.1 iotexplorer SDK has no method for — call them with
``CommonClient``) take ``ProductID``, ``FirmwareVersion``, ``TaskId``, ``DeviceName``.
Task ``Status``: 0 not_started, 1 creating or running, 2 done, 3 failed, 4 cancelled.  Device
``Status``: 1 pending, 2 pushed, 20 downloading, 30 burning, 40 succeeded, 50 failed.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ...core import errors
from ...core.config import settings
from ...core.schema import Array, Integer, IntEnum, Model, String
from .. import ota as ota_routes
from .. import products as product_routes
from .devices import DEVICE_NAME
from .products import OFFSET, PRODUCT_ID, limit_field
from .registry import Invoker, Req, action

#: the route modules these actions call (imported first so their routes are registered)
ROUTES_FROM = (ota_routes, product_routes)

FW_CREATE = "POST /v1/firmware"
FW_COMPLETE = "POST /v1/firmware/{firmware_id}/complete"
FW_LIST = "GET /v1/firmware"
FW_ONE = "GET /v1/firmware/{firmware_id}"
FW_EDIT = "PATCH /v1/firmware/{firmware_id}"
FW_DELETE = "DELETE /v1/firmware/{firmware_id}"
FW_DEVICES = "GET /v1/firmware/{firmware_id}/devices"
PRODUCT = "GET /v1/products/{product_id}"
TASK_CREATE = "POST /v1/ota-tasks"
TASK_LIST = "GET /v1/ota-tasks"
TASK_ONE = "GET /v1/ota-tasks/{task_id}"
TASK_DEVICES = "GET /v1/ota-tasks/{task_id}/devices"
DEVICE_CANCEL = "POST /v1/ota-tasks/{task_id}/devices/{device_name}/cancel"
DEVICE_RETRY = "POST /v1/ota-tasks/{task_id}/devices/{device_name}/retry"

VERSION = String(required=True, min_len=1, max_len=32, code=errors.FIRMWARE_VERSION_INVALID)
FW_TYPE = String(min_len=1, max_len=32, code=errors.FIRMWARE_TYPE_INVALID, description="mcu or a module name")
TASK_ID = String(required=True, min_len=1, max_len=40, code=errors.TASK_ID_INVALID, description="Fleetbox's ota… id")
#: a page of something of one firmware (its tasks, its devices)
FIRMWARE_PAGE = {
    "ProductID": PRODUCT_ID,
    "FirmwareVersion": VERSION,
    "Offset": OFFSET,
    "Limit": limit_field(10, 100),
    "FwType": FW_TYPE,
}
FW_FIELDS = {
    "product_id": "ProductID",
    "version": "FirmwareVersion",
    "fw_type": "FwType",
    "name": "FirmwareName",
    "description": "FirmwareDescription",
    "file_size": "FileSize",
    "firmware_id": "FirmwareVersion",
    "task_id": "TaskId",
    "device_name": "DeviceName",
    "device_names": "DeviceNames",
    "source_versions": "FirmwareOriVersion",
    "timeout_minutes": "TimeoutInterval",
    "max_retries": "MaxRetryNum",
    "rate_per_minute": "RateLimit",
    "mode": "Type",
    "confirm": "UpgradeMethod",
}
_TASK_STATUS = {"not_started": 0, "creating": 1, "created": 1, "done": 2, "failed": 3, "cancelled": 4}
_DEVICE_STATUS = {"pending": 1, "pushed": 2, "succeeded": 40, "failed": 50}
_DETAIL_STATUS = {"downloading": 20, "burning": 30}


def _all(call: Invoker, route: str, **kw: Any) -> list[Any]:
    items, _ = call.page(route, offset=0, limit=settings().cloudapi_max_walk, **kw)
    return items


def find_firmware(call: Invoker, pid: str, version: str, fw_type: str | None, *, ready: bool = True) -> dict[str, Any]:
    """The product's firmware of ``version`` (and ``fw_type``; without it ``mcu`` first)."""
    found = [
        f
        for f in _all(call, FW_LIST, query={"product_id": pid})
        if f["version"] == version
        and (fw_type is None or f["fw_type"] == fw_type)
        and (f["status"] == "ready") == ready
    ]
    found.sort(key=lambda f: f["fw_type"] != "mcu")
    if not found:
        state = "" if ready else "awaiting upload "
        raise errors.FIRMWARE_NOT_EXIST(
            f"product {pid} has no {state}firmware {version}{' of type ' + fw_type if fw_type else ''}",
            "FirmwareVersion",
        )
    return dict(found[0])


def firmware_info(f: dict[str, Any], product_name: str | None) -> dict[str, Any]:
    return {
        "Version": f["version"],
        "Md5sum": f.get("md5"),
        "CreateTime": f["created_at"],
        "ProductName": product_name,
        "Name": f["name"],
        "Description": f.get("description", ""),
        "ProductId": f["product_id"],
        "FwType": f["fw_type"],
        "CreatorNickName": f.get("created_by"),
        "UserDefined": f.get("custom_info", ""),
    }


@action(
    "GetCOSURL",
    {
        "ProductID": PRODUCT_ID,
        "FirmwareVersion": VERSION,
        "FileSize": Integer(required=True, minimum=1, code=errors.FILE_SIZE_INVALID),
        "FwType": FW_TYPE,
    },
    routes=[FW_LIST, FW_DELETE, FW_CREATE],
    summary="Declare a firmware and answer its presigned PUT URL (then UploadFirmware registers it); asked "
    "again for a version still awaiting its file, it replaces that declaration",
    fields=FW_FIELDS,
)
def get_cos_url(req: Req, call: Invoker) -> dict[str, Any]:
    version, fw_type = req["FirmwareVersion"], req.get("FwType") or "mcu"
    for stale in _all(call, FW_LIST, query={"product_id": req["ProductID"]}):
        if (stale["version"], stale["fw_type"], stale["status"]) == (version, fw_type, "uploading"):
            # asked again before UploadFirmware registered a file: this declaration replaces that one
            call(FW_DELETE, params={"firmware_id": stale["id"]})
    made = call(
        FW_CREATE,
        body={
            "product_id": req["ProductID"],
            "name": ("v" + re.sub(r"[^A-Za-z0-9_\-]", "_", version))[:32],
            "version": version,
            "fw_type": fw_type,
            "file_name": f"{version}.bin",
            "file_size": req["FileSize"],
        },
    )
    return {"Url": made["upload_url"]}


@action(
    "UploadFirmware",
    {
        "ProductID": PRODUCT_ID,
        "FirmwareVersion": VERSION,
        "Md5sum": String(
            required=True, pattern=r"[0-9a-fA-F]{32}", code=errors.MD5_MISMATCH, rule="must be 32 hex digits"
        ),
        "FileSize": Integer(required=True, minimum=1, code=errors.FILE_SIZE_INVALID),
        "FirmwareName": String(required=True, min_len=1, max_len=32, code=errors.FIRMWARE_NAME_INVALID),
        "FirmwareDescription": String(max_len=100, code=errors.DESCRIPTION_INVALID),
        "FwType": FW_TYPE,
        "FirmwareUserDefined": String(
            max_len=0,
            code=errors.CUSTOM_INFO_INVALID,
            rule="cannot be set here: declare such firmware with POST /v1/firmware",
        ),
    },
    routes=[FW_LIST, FW_COMPLETE, FW_EDIT, FW_DELETE],
    summary="Register the file uploaded to GetCOSURL's URL (MD5 and size checked) and name it",
    fields=FW_FIELDS,
)
def upload_firmware(req: Req, call: Invoker) -> dict[str, Any]:
    fw = find_firmware(call, req["ProductID"], req["FirmwareVersion"], req.get("FwType"), ready=False)
    params = {"firmware_id": fw["id"]}
    done = call(FW_COMPLETE, params=params)
    if done["md5"] != req["Md5sum"].lower() or done["file_size"] != req["FileSize"]:
        call(FW_DELETE, params=params)
        raise errors.MD5_MISMATCH(
            f"the uploaded file is {done['file_size']} bytes with MD5 {done['md5']}, not the FileSize and Md5sum "
            "given: the firmware was removed; upload it again (GetCOSURL)",
            "Md5sum",
        )
    body: dict[str, Any] = {"name": req["FirmwareName"]}
    if "FirmwareDescription" in req:
        body["description"] = req["FirmwareDescription"]
    call(FW_EDIT, params=params, body=body)
    return {}


@action(
    "DescribeFirmware",
    {"ProductID": PRODUCT_ID, "FirmwareVersion": VERSION, "FwType": FW_TYPE},
    routes=[FW_LIST, FW_ONE, PRODUCT],
    summary="One firmware by product and version",
    fields=FW_FIELDS,
)
def describe_firmware(req: Req, call: Invoker) -> dict[str, Any]:
    pid = req["ProductID"]
    fw = find_firmware(call, pid, req["FirmwareVersion"], req.get("FwType"))
    got = call(FW_ONE, params={"firmware_id": fw["id"]})
    info = firmware_info(got, call(PRODUCT, params={"product_id": pid})["name"])
    info["Createtime"] = info.pop("CreateTime")
    info.pop("CreatorNickName")
    return info


@action(
    "ListFirmwares",
    {
        "PageNum": Integer(required=True, minimum=1, code=errors.INVALID_PARAMETER),
        "PageSize": Integer(required=True, minimum=1, maximum=100, code=errors.LIMIT_INVALID),
        "ProductID": String(pattern=r"[A-Z0-9]{10}", code=errors.PRODUCT_ID_INVALID, rule="must be a ProductId"),
        "Filters": Array(
            Model("SearchKeyword", {"Key": String(required=True), "Value": String(required=True)}),
            max_items=5,
            code=errors.INVALID_PARAMETER,
            description="Key FirmwareName (search by name) or FirmwareVersion (exact)",
        ),
    },
    routes=[FW_LIST, "GET /v1/products"],
    summary="The registered firmware the caller may see, newest first (PageNum/PageSize)",
    fields=FW_FIELDS,
)
def list_firmwares(req: Req, call: Invoker) -> dict[str, Any]:
    query: dict[str, Any] = {}
    if req.get("ProductID"):
        query["product_id"] = req["ProductID"]
    version = None
    for i, kw in enumerate(req.get("Filters") or []):
        if kw["Key"] == "FirmwareName":
            query["q"] = kw["Value"]
        elif kw["Key"] == "FirmwareVersion":
            version = kw["Value"]
        else:
            raise errors.INVALID_PARAMETER(
                f"Filters[{i}].Key must be FirmwareName or FirmwareVersion", f"Filters[{i}].Key"
            )
    found = [f for f in _all(call, FW_LIST, query=query) if f["status"] == "ready" and version in (None, f["version"])]
    names = {p["product_id"]: p["name"] for p in _all(call, "GET /v1/products")}
    start = (req["PageNum"] - 1) * req["PageSize"]
    return {
        "TotalCount": len(found),
        "Firmwares": [firmware_info(f, names.get(f["product_id"])) for f in found[start : start + req["PageSize"]]],
    }


@action(
    "BatchUpdateFirmware",
    {
        "ProductID": PRODUCT_ID,
        "FirmwareVersion": VERSION,
        "FirmwareOriVersion": String(min_len=1, max_len=32, code=errors.SOURCE_VERSION_INVALID),
        "UpgradeMethod": IntEnum((0, 1), default=0, code=errors.CONFIRM_INVALID),
        "FileName": String(
            max_len=0, code=errors.INVALID_PARAMETER, rule="(a device-list file) is not supported: give DeviceNames"
        ),
        "FileMd5": String(max_len=0, code=errors.INVALID_PARAMETER, rule="is not supported: give DeviceNames"),
        "FileSize": Integer(maximum=0, code=errors.INVALID_PARAMETER),
        "DeviceNames": Array(DEVICE_NAME, max_items=10_000, code=errors.DEVICE_NAMES_INVALID),
        "TimeoutInterval": Integer(minimum=120, maximum=900, code=errors.TIMEOUT_INVALID),
        "Type": IntEnum((1, 7), code=errors.MODE_INVALID),
        "DelayTime": Integer(maximum=0, code=errors.INVALID_PARAMETER),
        "OverrideMode": IntEnum((0,), code=errors.INVALID_PARAMETER),
        "MaxRetryNum": Integer(minimum=0, maximum=10, code=errors.MAX_RETRIES_INVALID),
        "RetryInterval": Integer(maximum=0, code=errors.INVALID_PARAMETER),
        "FwType": FW_TYPE,
        "TaskUserDefine": String(max_len=0, code=errors.INVALID_PARAMETER, rule="is not supported"),
        "RateLimit": Integer(minimum=1, maximum=100_000, code=errors.RATE_INVALID),
        "EndTime": Integer(maximum=0, code=errors.INVALID_PARAMETER),
        "StartTime": Integer(maximum=0, code=errors.INVALID_PARAMETER),
    },
    routes=[FW_LIST, TASK_CREATE],
    summary="Create an upgrade task: by source version (FirmwareOriVersion) and/or a device list (DeviceNames)",
    fields=FW_FIELDS,
)
def batch_update_firmware(req: Req, call: Invoker) -> dict[str, Any]:
    fw = find_firmware(call, req["ProductID"], req["FirmwareVersion"], req.get("FwType"))
    names = list(req.get("DeviceNames") or [])
    body: dict[str, Any] = {
        "firmware_id": fw["id"],
        "confirm": "user_confirm" if req["UpgradeMethod"] == 1 else "silent",
        "mode": "dynamic" if req.get("Type") == 7 else "static",
    }
    if req.get("FirmwareOriVersion"):
        body.update(method="by_version", source_versions=[req["FirmwareOriVersion"]])
        body["scope"] = "selected" if names else "all"
        if names:
            body["device_names"] = names
    elif names:
        body.update(method="by_device", device_names=names)
    else:
        raise errors.missing("FirmwareOriVersion")
    if "TimeoutInterval" in req:
        body["timeout_minutes"] = math.ceil(req["TimeoutInterval"] / 60)
    if "MaxRetryNum" in req:
        body["max_retries"] = req["MaxRetryNum"]
    if "RateLimit" in req:
        body["rate_per_minute"] = req["RateLimit"]
    return {"TaskId": call(TASK_CREATE, body=body)["id"]}


def _task_of(call: Invoker, req: Req) -> tuple[dict[str, Any], dict[str, Any]]:
    """(firmware, task) of a request naming ProductID + FirmwareVersion + TaskId."""
    task = call(TASK_ONE, params={"task_id": req["TaskId"]})
    fw = find_firmware(call, req["ProductID"], req["FirmwareVersion"], None)
    if task["product_id"] != req["ProductID"] or task.get("target_version") != req["FirmwareVersion"]:
        raise errors.OTA_TASK_NOT_EXIST(
            f"task {req['TaskId']} is not an upgrade of {req['ProductID']} to {req['FirmwareVersion']}", "TaskId"
        )
    return fw, task


@action(
    "DescribeFirmwareTask",
    {"ProductID": PRODUCT_ID, "FirmwareVersion": VERSION, "TaskId": TASK_ID},
    routes=[TASK_ONE, FW_LIST, PRODUCT],
    summary="One upgrade task",
    fields=FW_FIELDS,
)
def describe_firmware_task(req: Req, call: Invoker) -> dict[str, Any]:
    fw, t = _task_of(call, req)
    by_version = t["method"] == "by_version"
    return {
        "TaskId": t["id"],
        "Status": _TASK_STATUS[t["status"]],
        "CreateTime": t["created_at"],
        "Type": 7 if t.get("mode") == "dynamic" else 1,
        "ProductName": call(PRODUCT, params={"product_id": t["product_id"]})["name"],
        "UpgradeMode": "originalVersion" if by_version else "devicenames",
        "ProductId": t["product_id"],
        "OriginalVersion": ",".join(t.get("source_versions") or []) if by_version else None,
        "DelayTime": 0,
        "TimeoutInterval": t["timeout_minutes"] * 60,
        "UpgradeMethod": 1 if t.get("confirm") == "user_confirm" else 0,
        "MaxRetryNum": t["max_retries"],
        "FwType": fw["fw_type"],
        "RateLimit": t.get("rate_per_minute"),
    }


@action(
    "DescribeFirmwareTasks",
    FIRMWARE_PAGE,
    routes=[FW_LIST, TASK_LIST],
    summary="The upgrade tasks of one firmware, newest first",
    fields=FW_FIELDS,
)
def describe_firmware_tasks(req: Req, call: Invoker) -> dict[str, Any]:
    fw = find_firmware(call, req["ProductID"], req["FirmwareVersion"], req.get("FwType"))
    items, total = call.page(TASK_LIST, query={"firmware_id": fw["id"]}, offset=req["Offset"], limit=req["Limit"])
    return {
        "TaskInfos": [
            {
                "TaskId": t["id"],
                "Status": _TASK_STATUS[t["status"]],
                "Type": 7 if t.get("mode") == "dynamic" else 1,
                "CreateTime": t["created_at"],
                "CronTime": t.get("started_at"),
                "FwType": fw["fw_type"],
            }
            for t in items
        ],
        "Total": total,
    }


def device_status(j: dict[str, Any]) -> dict[str, Any]:
    """An OTA device job as Tencent's ``DeviceUpdateStatus``."""
    status = _DETAIL_STATUS.get(j.get("detail") or "", 20) if j["state"] == "upgrading" else _DEVICE_STATUS[j["state"]]
    return {
        "DeviceName": j["device_name"],
        "LastProcessTime": j.get("updated_at"),
        "Status": status,
        "ErrMsg": j.get("result_msg") or j.get("reason") or "",
        "Retcode": j.get("result_code") or 0,
        "DstVersion": j.get("target_version"),
        "Percent": j.get("percent"),
        "OriVersion": j.get("source_version"),
        "TaskId": j["task_id"],
        "RetryNum": j.get("attempts", 0),
    }


@action(
    "DescribeFirmwareTaskDevices",
    FIRMWARE_PAGE,
    routes=[FW_LIST, FW_DEVICES],
    summary="The devices upgraded (or being upgraded) to one firmware, over all its tasks",
    fields=FW_FIELDS,
)
def describe_firmware_task_devices(req: Req, call: Invoker) -> dict[str, Any]:
    fw = find_firmware(call, req["ProductID"], req["FirmwareVersion"], req.get("FwType"))
    items, total = call.page(FW_DEVICES, params={"firmware_id": fw["id"]}, offset=req["Offset"], limit=req["Limit"])
    return {"Devices": [{**device_status(j), "FwType": fw["fw_type"]} for j in items], "Total": total}


#: one device of one upgrade task
ONE_DEVICE = {"ProductID": PRODUCT_ID, "FirmwareVersion": VERSION, "TaskId": TASK_ID, "DeviceName": DEVICE_NAME}


def _one_device(call: Invoker, req: Req, route: str) -> dict[str, Any]:
    _task_of(call, req)
    call(route, params={"task_id": req["TaskId"], "device_name": req["DeviceName"]})
    return {}


@action(
    "CancelDeviceFirmwareTask",
    ONE_DEVICE,
    routes=[TASK_ONE, FW_LIST, DEVICE_CANCEL],
    summary="Cancel one device's upgrade in a task (it fails with reason cancelled)",
    fields=FW_FIELDS,
)
def cancel_device_firmware_task(req: Req, call: Invoker) -> dict[str, Any]:
    return _one_device(call, req, DEVICE_CANCEL)


@action(
    "RetryDeviceFirmwareTask",
    ONE_DEVICE,
    routes=[TASK_ONE, FW_LIST, DEVICE_RETRY],
    summary="Retry one failed device of a task (back to pending; a done task runs again)",
    fields=FW_FIELDS,
)
def retry_device_firmware_task(req: Req, call: Invoker) -> dict[str, Any]:
    return _one_device(call, req, DEVICE_RETRY)
