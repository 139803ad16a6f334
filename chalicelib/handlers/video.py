"""HTTP routes of the video summary tasks (SPEC §11, §16): tasks and the product's result callback."""

from __future__ import annotations

from typing import Any

from chalice import Blueprint

from ..core import errors
from ..core.schema import Array, Boolean, Enum, Integer, IntEnum, Model, String, page_of
from ..services import video
from .api import Ctx, decode_token, encode_token, json_response, route
from .schemas import DEVICE_NAME, PAGING, PRODUCT_FILTER, PRODUCT_ID

bp = Blueprint(__name__)
TAG = "video"

TIME = {"minimum": 0, "maximum": 4_102_444_800, "description": "Unix seconds"}

TaskCreate = Model(
    "VideoTaskCreate",
    {
        "ProductId": PRODUCT_ID,
        "DeviceName": DEVICE_NAME,
        "ServiceType": Enum(
            video.SERVICE_TYPES,
            required=True,
            code=errors.SERVICE_TYPE_INVALID,
            description="VideoToText (semantic summary), RealtimeObjectDetect, Highlight, PackageDetect",
        ),
        "StartTime": Integer(required=True, code=errors.START_INVALID, **TIME),
        "EndTime": Integer(required=True, code=errors.END_INVALID, **TIME),
        "VideoURLs": Array(
            String(min_len=1, max_len=video.MAX_URL_LEN, code=errors.VIDEO_URLS_INVALID),
            required=True,
            min_items=1,
            max_items=video.MAX_URLS,
            code=errors.VIDEO_URLS_INVALID,
            description="HLS .m3u8, video files, or images with Config IsImage; only the first is analysed. "
            "http(s) URLs, or (where a media root is configured) file:///… or a path inside it",
        ),
        "ChannelId": Integer(minimum=0, maximum=2**31 - 1, code=errors.CHANNEL_ID_INVALID),
        "CustomId": String(max_len=64, code=errors.CUSTOM_ID_INVALID, rule="must be at most 64 characters"),
        "Config": String(
            max_len=1024,
            code=errors.CONFIG_INVALID,
            description='JSON string: {"MultiCameraLayout":"Single|Vertical|Vertical,Num=N,Index=i[;j…]",'
            '"IsImage":bool,"IsNightVision":bool}',
        ),
        "wait": Integer(
            minimum=0,
            maximum=video.MAX_WAIT_S,
            code=errors.WAIT_INVALID,
            description="Invoke: wait up to this many seconds (≤ 20) for the result",
        ),
    },
)
Task = Model(
    "VideoTask",
    {
        "TaskId": String(required=True),
        "ProductId": String(required=True),
        "DeviceName": String(required=True),
        "ChannelId": Integer(),
        "CustomId": String(),
        "ServiceType": Enum(video.SERVICE_TYPES),
        "StartTime": Integer(),
        "EndTime": Integer(),
        "VideoURLs": Array(String()),
        "Config": String(),
        "Status": IntEnum(video.STATUSES, description="4 running, 1 failed, 2 done with an empty result, 3 done"),
        "Result": String(description='JSON string {"Summary","DetectedClassifications"} ("" unless status 3)'),
        "Files": Array(String(), description="the file the result covers (the first VideoURL)"),
        "Reason": String(nullable=True, description="why the task failed"),
        "Analyser": Enum(("local", "cloud")),
        "CreateTime": Integer(),
        "UpdateTime": Integer(),
        "Completed": Boolean(description="(with wait) whether the task finished within the wait"),
    },
)
CallbackPut = Model(
    "VideoCallbackPut",
    {
        "url": String(required=True, min_len=1, max_len=1024, code=errors.INVALID_CALLBACK_URL),
        "token": String(
            nullable=True,
            pattern=r"[A-Za-z0-9_\-]{1,64}",
            code=errors.CALLBACK_TOKEN_INVALID,
            rule="must be 1-64 letters, digits, _ or -",
            description="signs each POST (SPEC §9.2); left out on an edit of the same URL, the saved one is kept",
        ),
    },
)
Callback = Model(
    "VideoCallback",
    {
        "product_id": String(),
        "url": String(nullable=True),
        "token_set": Boolean(),
        "secret_set": Boolean(),
        "token": String(description="only in the answer that saved it, or with include_secret"),
        "secret": String(description="Standard Webhooks signing secret: only when made, or with include_secret"),
    },
)


def task_resource(params: Any, body: Any) -> str:
    pid = body.get("ProductId") if isinstance(body, dict) else None
    dn = body.get("DeviceName") if isinstance(body, dict) else None
    if isinstance(pid, str) and pid and isinstance(dn, str) and dn:
        return video.resource_of(pid, dn)
    return "product/*"


def task_owner(params: Any, body: Any) -> tuple[str, Any]:
    return video.owner(params["task_id"])


def product_res(params: Any, body: Any) -> str:
    return f"product/{params['product_id']}"


@route(
    bp,
    "POST",
    "/v1/video-tasks",
    action="CreateCloudStorageAIServiceTask",
    resource=task_resource,
    tag=TAG,
    summary="Create a video summary task (202, analysed on the queue); with `wait` (Invoke, also needs "
    "InvokeCloudStorageAIServiceTask) answer 200 once done within the wait, else 202 with Completed=false",
    body=TaskCreate,
    response=Task,
    status=202,
)
def create_task(ctx: Ctx) -> Any:
    invoke = ctx.body.get("wait") is not None
    if invoke:
        ctx.require("InvokeCloudStorageAIServiceTask", ctx.resource)
    task, completed = video.create(ctx.body, ctx.principal.principal_id if ctx.principal else None)
    if not invoke:
        return task
    task["Completed"] = completed
    # Invoke: 200 once the task finished within the wait, 202 while it goes on
    return json_response(200, task, ctx.request_id) if completed else task


@route(
    bp,
    "GET",
    "/v1/video-tasks/{task_id}",
    action="DescribeCloudStorageAIServiceTask",
    resource=lambda p, b: "product/*",
    owner=task_owner,
    tag=TAG,
    summary="One video summary task",
    response=Task,
)
def get_task(ctx: Ctx) -> dict[str, Any]:
    return video.view(ctx.item)


@route(
    bp,
    "GET",
    "/v1/video-tasks",
    action="DescribeCloudStorageAIServiceTasks",
    resource="product/*",
    listing=True,
    item_action="DescribeCloudStorageAIServiceTask",
    tag=TAG,
    summary="Video summary tasks the caller may read, newest first (by product, devices, service type, "
    "status, creation time)",
    response=page_of(Task),
    query={
        **PAGING,
        "product_id": PRODUCT_FILTER,
        "device_names": String(
            min_len=1,
            max_len=48 * 20 + 19,
            pattern=r"[A-Za-z0-9_:\-]{1,48}(,[A-Za-z0-9_:\-]{1,48}){0,19}",
            code=errors.DEVICE_NAMES_INVALID,
            rule="must be 1-20 DeviceNames separated by commas",
        ),
        "service_type": Enum(video.SERVICE_TYPES, code=errors.SERVICE_TYPE_INVALID),
        "status": Integer(minimum=1, maximum=4, code=errors.STATUS_INVALID),
        "start": Integer(code=errors.START_INVALID, **TIME),
        "end": Integer(code=errors.END_INVALID, **TIME),
    },
)
def list_tasks(ctx: Ctx) -> dict[str, Any]:
    q = ctx.query
    if q.get("product_id"):
        ctx.require("DescribeCloudStorageAIServiceTasks", f"product/{q['product_id']}")
    items, nxt = video.list_tasks(
        visible=ctx.visible,
        product_id=q.get("product_id"),
        device_names=q["device_names"].split(",") if q.get("device_names") else None,
        service_type=q.get("service_type"),
        status=q.get("status"),
        start=q.get("start"),
        end=q.get("end"),
        limit=q["limit"],
        next_key=decode_token(q.get("next")),
    )
    return {"items": items, "total": len(items) if nxt is None and "next" not in q else None, "next": encode_token(nxt)}


@route(
    bp,
    "PUT",
    "/v1/products/{product_id}/video-callback",
    action="ModifyCloudStorageAIServiceCallback",
    resource=product_res,
    tag=TAG,
    summary="Set where the product's video results are POSTed (verified with the Echostr GET first; the token "
    "and signing secret are shown in this answer only)",
    body=CallbackPut,
    response=Callback,
)
def put_callback(ctx: Ctx) -> dict[str, Any]:
    return video.set_callback(ctx.params["product_id"], ctx.body)


@route(
    bp,
    "GET",
    "/v1/products/{product_id}/video-callback",
    action="DescribeCloudStorageAIServiceCallback",
    resource=product_res,
    tag=TAG,
    summary="The product's video result callback (token and secret only with include_secret=true, which needs "
    "DescribeCloudStorageAIServiceCallbackSecret)",
    response=Callback,
    query={"include_secret": Boolean(default=False, code=errors.INCLUDE_SECRET_INVALID)},
)
def get_callback(ctx: Ctx) -> dict[str, Any]:
    if ctx.query["include_secret"]:
        ctx.require("DescribeCloudStorageAIServiceCallbackSecret", ctx.resource)
    return video.get_callback(ctx.params["product_id"], include_secret=ctx.query["include_secret"])


@route(
    bp,
    "DELETE",
    "/v1/products/{product_id}/video-callback",
    action="ModifyCloudStorageAIServiceCallback",
    resource=product_res,
    tag=TAG,
    summary="Remove the product's video result callback",
    status=204,
)
def delete_callback(ctx: Ctx) -> None:
    video.delete_callback(ctx.params["product_id"])
