"""Cloud-API video summary actions (SPEC §11) onto the /v1/video-tasks routes.

SPEC §11 already uses Tencent's names, so the request models are the route's own
(``video.TaskCreate`` without ``wait``).  Translation: ``InvokeCloudStorageAIServiceTask`` is
``POST /v1/video-tasks`` with ``wait=20`` (its ``Completed`` says whether the task finished within
the wait); ``StartTimeMs``/``EndTimeMs`` are the second times ×1000; ``Files`` are the analysed URL
as given (``FileURLExpireTime`` is accepted and has no effect: nothing is re-signed).  Not
supported (refused as ``UnknownParameter``): ``ROI``, and ``UserId``/``ChannelId`` as list filters.
"""

from __future__ import annotations

from typing import Any

from ...core import errors
from ...core.schema import Array, Enum, Integer, IntEnum, String
from ...services import video as video_service
from .. import video as video_routes
from .devices import DEVICE_NAME
from .products import OFFSET, PRODUCT_ID, limit_field
from .registry import Invoker, Req, action

#: the route module these actions call (imported first so its routes are registered)
ROUTES_FROM = (video_routes,)

CREATE = "POST /v1/video-tasks"
ONE = "GET /v1/video-tasks/{task_id}"
LIST = "GET /v1/video-tasks"

#: the route's own request model (Tencent's names), without the route-only ``wait``
TASK_REQUEST = {name: f for name, f in video_routes.TaskCreate.fields.items() if name != "wait"}
TASK_ID = String(required=True, min_len=1, max_len=64, code=errors.TASK_ID_INVALID)
#: a DeviceName filter (optional)
ONE_NAME = String(
    pattern=DEVICE_NAME.pattern.pattern if DEVICE_NAME.pattern else None,
    max_len=48,
    code=errors.DEVICE_NAME_INVALID,
    rule=DEVICE_NAME.rule,
)
EXPIRE = Integer(minimum=0, code=errors.INVALID_PARAMETER, description="accepted; Files are the URLs as given")


def task_info(t: dict[str, Any]) -> dict[str, Any]:
    """A Fleetbox video task as Tencent's ``CloudStorageAIServiceTask``."""
    return {
        "TaskId": t["TaskId"],
        "ProductId": t["ProductId"],
        "DeviceName": t["DeviceName"],
        "ChannelId": t.get("ChannelId"),
        "ServiceType": t.get("ServiceType"),
        "StartTime": t.get("StartTime"),
        "StartTimeMs": t["StartTime"] * 1000 if isinstance(t.get("StartTime"), int) else None,
        "EndTime": t.get("EndTime"),
        "EndTimeMs": t["EndTime"] * 1000 if isinstance(t.get("EndTime"), int) else None,
        "Status": t.get("Status"),
        "Result": t.get("Result", ""),
        "Files": t.get("Files") or [],
        "CreateTime": t.get("CreateTime"),
        "UpdateTime": t.get("UpdateTime"),
        "CustomId": t.get("CustomId"),
    }


def _task_body(req: Req) -> dict[str, Any]:
    return {name: req[name] for name in TASK_REQUEST if name in req}


@action("CreateCloudStorageAIServiceTask", TASK_REQUEST, routes=[CREATE], summary="Create a video summary task")
def create_task(req: Req, call: Invoker) -> dict[str, Any]:
    return {"TaskId": call(CREATE, body=_task_body(req))["TaskId"]}


@action(
    "InvokeCloudStorageAIServiceTask",
    TASK_REQUEST,
    routes=[CREATE],
    summary="Create a video summary task and wait up to 20 s: Completed with TaskInfo, or Completed false",
)
def invoke_task(req: Req, call: Invoker) -> dict[str, Any]:
    task = call(CREATE, body={**_task_body(req), "wait": video_service.MAX_WAIT_S})
    completed = bool(task.get("Completed"))
    return {"Completed": completed, "TaskId": task["TaskId"], "TaskInfo": task_info(task) if completed else None}


@action(
    "DescribeCloudStorageAIServiceTask",
    {"TaskId": TASK_ID, "FileURLExpireTime": EXPIRE},
    routes=[ONE],
    summary="One video summary task",
)
def describe_task(req: Req, call: Invoker) -> dict[str, Any]:
    return {"TaskInfo": task_info(call(ONE, params={"task_id": req["TaskId"]}))}


@action(
    "DescribeCloudStorageAIServiceTasks",
    {
        "ProductId": PRODUCT_ID,
        "DeviceName": ONE_NAME,
        "DeviceNames": Array(ONE_NAME, max_items=20, code=errors.DEVICE_NAMES_INVALID),
        "ServiceType": Enum(video_service.SERVICE_TYPES, code=errors.SERVICE_TYPE_INVALID),
        "Status": IntEnum(video_service.STATUSES, code=errors.STATUS_INVALID),
        "StartTime": Integer(minimum=0, code=errors.START_INVALID),
        "EndTime": Integer(minimum=0, code=errors.END_INVALID),
        "Offset": OFFSET,
        "Limit": limit_field(10, 100),
        "FileURLExpireTime": EXPIRE,
    },
    routes=[LIST],
    summary="A product's video summary tasks the caller may read, newest first",
)
def describe_tasks(req: Req, call: Invoker) -> dict[str, Any]:
    query: dict[str, Any] = {"product_id": req["ProductId"]}
    names = list(req.get("DeviceNames") or [])
    if req.get("DeviceName"):
        names.append(req["DeviceName"])
    if names:
        query["device_names"] = ",".join(dict.fromkeys(names))
    for tencent, route_name in (
        ("ServiceType", "service_type"),
        ("Status", "status"),
        ("StartTime", "start"),
        ("EndTime", "end"),
    ):
        if req.get(tencent) is not None:
            query[route_name] = req[tencent]
    items, total = call.page(LIST, query=query, offset=req["Offset"], limit=req["Limit"])
    return {"Tasks": [task_info(t) for t in items], "Total": total}
