"""Video summary tasks (SPEC §11): the rules, the analysis job, the result callback.

**Creating** a task validates everything first (the time window, the URL kinds and where they
point, ServiceType, the ``Config`` grammar; the product must exist and have the AI video
function on, the device must exist), writes the task at status 4 and queues one
``video.analyse`` job; ``wait`` (Invoke) then polls the task for up to 20 s.  Nothing is
analysed in the API request.

**The analysis job** (``analyse_step``, on the jobs worker) analyses a task in parts, so no
step approaches the Lambda's time limit (SPEC §15): each step claims an attempt with a
conditional write (``attempts`` + 1 while status is 4), fetches the first URL into a temporary
folder — http(s) through the delivery facade's guarded ``download`` (SSRF guard on every
address, no redirects, bounded time and size; an HLS playlist's segments one by one, each
checked, and only those from the checkpoint on), a local path only inside
``settings().media_root`` — and runs the configured analyser (``media/video``) from the
checkpoint until ``video_step_budget_s`` of wall time is spent.  Then it either checkpoints (the
samples so far and where to go on, attempts back to 0, conditional on the progress it started
from) and queues the next part, or, at the end of the media, writes the result from every
sample.  Media that cannot be analysed fails the task with the reason; a part that breaks (a
bug, a timeout, a crash) is tried again until ``video_max_attempts`` attempts are spent, then the
task fails with the last error.  The ``video.sweep`` tick fails tasks still running after
``video_deadline_s`` (a lost message, a worker that kept dying).  A task is never left at
status 4.  A resumed video file is downloaded again (decoding up to the checkpoint costs about
a hundredth of the video's length); a resumed playlist fetches only the segments it still needs.

**Without a decoder** (AWS: OpenCV is not in the Lambda bundle) the cloud analyser takes images
and MP4/MOV files analysed whole; what would need OpenCV is refused at create time
(:func:`check_decodable`).  An MP4/MOV file for the cloud analyser goes to Rekognition Video
(``_analyse_stored``): the first step copies it to the bucket under ``video-input/`` and starts
the job (its id kept on the task), later steps — each queued :data:`REKOGNITION_POLL_S` after the
last while the job runs — read its result pages (the next page's token kept on the task), and
the copy is deleted when the task is final.

**Finishing** writes the status, result and ``notify`` = 1 in one conditional update; then the
domain event (``video.task.done`` / ``video.task.failed``) is emitted and the product's result
callback queued (``delivery.deliver`` with the ``video`` retry schedule: after 5 s, at most
twice, then a dead letter with the reason; ``User-Agent: IotVideo/1.0``; SHA1 and Standard
Webhooks signatures; one ``webhook-id`` per task), and ``notify`` is cleared.  A redelivered
step finds ``notify`` still set and does the rest again — same ``webhook-id``, so receivers
can deduplicate.

Caps (typed settings): ``video_max_bytes`` fetched per step (256 MiB: a Lambda's /tmp holds
512 MB), ``video_max_duration_s`` of video (900 s), ``video_fetch_timeout_s`` for all downloads of
a step (30 s), plus the webhook connect/read timeouts per request.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pynamodb.exceptions import DoesNotExist, UpdateError

from ..core import clock, errors, ids
from ..core.config import settings
from ..core.observability import logger
from ..media import video as media
from ..media.video import cloud, hls
from ..models.devices import DeviceRecord
from ..models.products import ProductRecord
from ..models.video import ACCOUNT, VideoTaskRecord
from . import delivery, events, files, jobs, products
from .paging import checked_start, expect_key, fill_page

SERVICE_TYPES = ("VideoToText", "RealtimeObjectDetect", "Highlight", "PackageDetect")
RUNNING, FAILED, EMPTY, DONE = 4, 1, 2, 3
STATUSES = (FAILED, EMPTY, DONE, RUNNING)
MAX_WAIT_S = 20
MAX_URLS = 10
MAX_URL_LEN = 2048
START_WINDOW_S = 30 * 86400
END_AHEAD_S = 3600
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".ts", ".flv", ".webm")
HLS_EXTENSION = ".m3u8"
USER_AGENT = "IotVideo/1.0"
CONFIG_KEYS = ("MultiCameraLayout", "IsImage", "IsNightVision")
_LAYOUT_RE = re.compile(r"Vertical(?:,Num=(\d+)(?:,Index=(\d+(?:;\d+)*))?)?")
_TASK_ID_RE = re.compile(r"vt[a-z0-9]{16}")
_POLL_S = 0.25
#: where a video analysed by Rekognition Video is copied (the bucket expires it after a day)
VIDEO_INPUT_PREFIX = "video-input/"
#: how long a step waits before asking Rekognition Video again (the job runs meanwhile)
REKOGNITION_POLL_S = 15


# ===================================================================== input rules


def parse_layout(text: Any) -> media.Layout:
    """``Single`` | ``Vertical`` | ``Vertical,Num=N`` | ``Vertical,Num=N,Index=i[;j…]`` (N = 2 or 3,
    indexes 0-based, distinct).  ``Vertical`` alone is two views, both analysed."""
    fld = "Config.MultiCameraLayout"
    if not isinstance(text, str):
        raise errors.MULTI_CAMERA_LAYOUT_INVALID(f"{fld} must be a string", fld)
    if text == "Single":
        return media.Layout()
    m = _LAYOUT_RE.fullmatch(text)
    if m is None:
        raise errors.MULTI_CAMERA_LAYOUT_INVALID(
            f"{fld} must be Single, Vertical, Vertical,Num=N or Vertical,Num=N,Index=i[;j…]", fld
        )
    views = int(m.group(1) or 2)
    if views not in (2, 3):
        raise errors.MULTI_CAMERA_LAYOUT_INVALID(f"{fld}: Num must be 2 or 3 stacked views", fld)
    if m.group(2) is None:
        return media.Layout(views, tuple(range(views)))
    picked = [int(i) for i in m.group(2).split(";")]
    if len(set(picked)) != len(picked):
        raise errors.MULTI_CAMERA_LAYOUT_INVALID(f"{fld}: Index names a view twice", fld)
    if any(i >= views for i in picked):
        raise errors.MULTI_CAMERA_LAYOUT_INVALID(f"{fld}: Index must be 0-{views - 1} (0 is the top view)", fld)
    return media.Layout(views, tuple(sorted(picked)))


def parse_config(text: str | None) -> tuple[media.Layout, bool, bool]:
    """The ``Config`` JSON string → (layout, IsImage, IsNightVision)."""
    if text is None or text == "":
        return media.Layout(), False, False
    try:
        doc = json.loads(text)
    except ValueError:
        raise errors.CONFIG_INVALID("Config must be a JSON object in a string", "Config") from None
    if not isinstance(doc, dict):
        raise errors.CONFIG_INVALID("Config must be a JSON object in a string", "Config")
    for key in doc:
        if key not in CONFIG_KEYS:
            raise errors.CONFIG_INVALID(
                f"Config.{key} is not a Config field ({', '.join(CONFIG_KEYS)})", f"Config.{key}"
            )
    flags = []
    for key in ("IsImage", "IsNightVision"):
        value = doc.get(key, False)
        if not isinstance(value, bool):
            raise errors.CONFIG_INVALID(f"Config.{key} must be true or false", f"Config.{key}")
        flags.append(value)
    layout = parse_layout(doc["MultiCameraLayout"]) if "MultiCameraLayout" in doc else media.Layout()
    return layout, flags[0], flags[1]


def check_window(start: int, end: int, now: int) -> None:
    """StartTime not earlier than 30 days ago, EndTime not later than an hour ahead, EndTime ≥ StartTime."""
    if start < now - START_WINDOW_S:
        raise errors.START_INVALID("StartTime must not be earlier than 30 days ago", "StartTime")
    if end > now + END_AHEAD_S:
        raise errors.END_INVALID("EndTime must not be later than 1 hour from now", "EndTime")
    if end < start:
        raise errors.TIME_RANGE_INVALID("EndTime must not be earlier than StartTime", "EndTime")


def url_kind(url: str) -> str | None:
    """``hls``, ``video`` or ``image`` by the URL path's extension; None for anything else."""
    path = unquote(urlsplit(url).path if "://" in url else url).lower()
    if path.endswith(HLS_EXTENSION):
        return "hls"
    if path.endswith(VIDEO_EXTENSIONS):
        return "video"
    if path.endswith(media.IMAGE_EXTENSIONS):
        return "image"
    return None


def local_path(url: str, fld: str) -> Path:
    """The file a local URL (``file:///…`` or a path relative to the media root) names, which must
    exist inside ``settings().media_root`` (resolved: no ``..`` or symlink escapes)."""
    root_setting = settings().media_root
    if not root_setting:
        raise errors.VIDEO_URLS_INVALID(f"{fld} must be an http(s) URL (no media root is configured here)", fld)
    root = Path(root_setting).resolve()
    if url.startswith("file://"):
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise errors.VIDEO_URLS_INVALID(f"{fld}: a file URL names no host (file:///path)", fld)
        candidate = Path(unquote(parts.path))
    elif "://" in url or url.startswith("/"):
        raise errors.VIDEO_URLS_INVALID(f"{fld} must be http(s)://…, file:///… or a path inside the media root", fld)
    else:
        candidate = root / unquote(url)
    resolved = candidate.resolve()
    if not resolved.is_relative_to(root):
        raise errors.VIDEO_URLS_INVALID(f"{fld} is outside the media root", fld)
    if not resolved.is_file():
        raise errors.VIDEO_URLS_INVALID(f"{fld}: no such file in the media root", fld)
    return resolved


def check_urls(urls: list[str], is_image: bool) -> None:
    """Every URL: a known kind (images only with IsImage, and then only images), and where it
    points allowed (the SSRF guard for http(s), the media root for local files)."""
    for i, url in enumerate(urls):
        fld = f"VideoURLs[{i}]"
        kind = url_kind(url)
        if kind is None:
            raise errors.VIDEO_URLS_INVALID(
                f"{fld} must be an HLS playlist (.m3u8), a video file ({' '.join(VIDEO_EXTENSIONS)}) "
                f"or, with Config IsImage, an image ({' '.join(media.IMAGE_EXTENSIONS)})",
                fld,
            )
        if is_image and kind != "image":
            raise errors.VIDEO_URLS_INVALID(f"{fld}: Config IsImage is true, so it must be an image", fld)
        if not is_image and kind == "image":
            raise errors.VIDEO_URLS_INVALID(f"{fld} is an image: set IsImage true in Config", fld)
        if url.lower().startswith(("http://", "https://")):
            delivery.check_url(url, fld)
        else:
            local_path(url, fld)


def _suffix(url: str) -> str:
    return Path(unquote(urlsplit(url).path if "://" in url else url)).suffix.lower()


def check_decodable(analyser: str, urls: list[str], layout: media.Layout, is_image: bool) -> None:
    """Refuse, when the task is created, what this deployment could only fail later: inputs that
    need a decoder (OpenCV) where there is none — on AWS the cloud analyser reads images as they
    are and hands MP4/MOV files to Rekognition Video, which decodes nothing else and analyses the
    whole frame."""
    if media.decodes():
        return
    if not is_image and len(layout.selected) != layout.views:
        fld = "Config.MultiCameraLayout"
        raise errors.MULTI_CAMERA_LAYOUT_UNSUPPORTED(
            f"{fld}: this deployment analyses a video whole with Amazon Rekognition Video, which cannot "
            "crop one view of a stacked frame; use Single or Vertical (every view), or send stills with IsImage",
            fld,
        )
    for i, url in enumerate(urls):
        if media.needs_decoder(analyser, _suffix(url), layout, is_image=is_image):
            fld = f"VideoURLs[{i}]"
            what = "an HLS playlist" if url_kind(url) == "hls" else f"a {_suffix(url) or 'extension-less'} file"
            raise errors.VIDEO_FORMAT_UNSUPPORTED(
                f"{fld} is {what}: this deployment has no video decoder, and Amazon Rekognition Video "
                f"reads only MP4 and MOV files ({' '.join(cloud.STORED_VIDEO)}); give the URL of "
                "an MP4 or MOV recording",
                fld,
            )


# ===================================================================== tasks


def resource_of(product_id: str, device_name: str) -> str:
    """A task is a resource of its device (SPEC §2): ``product/{pid}/device/{dn}``."""
    return f"product/{product_id}/device/{device_name}"


def view(rec: VideoTaskRecord) -> dict[str, Any]:
    """The task as SPEC §11 names its fields."""
    return {
        "TaskId": rec.task_id,
        "ProductId": rec.product_id,
        "DeviceName": rec.device_name,
        "ChannelId": int(rec.channel_id or 0),
        "CustomId": rec.custom_id or "",
        "ServiceType": rec.service_type,
        "StartTime": int(rec.start_time),
        "EndTime": int(rec.end_time),
        "VideoURLs": list(rec.video_urls or []),
        "Config": rec.config or "",
        "Status": int(rec.status),
        "Result": rec.result or "",
        "Files": list(rec.files or []),
        "Reason": rec.reason,
        "Analyser": rec.analyser,
        "CreateTime": int(rec.created_at),
        "UpdateTime": int(rec.updated_at),
    }


def create(body: dict[str, Any], created_by: str | None) -> tuple[dict[str, Any], bool]:
    """Validate and store a task, queue its analysis; with ``wait`` poll it for up to that many
    seconds.  Returns (task, completed)."""
    now = clock.now_s()
    pid, dn = body["ProductId"], body["DeviceName"]
    check_window(body["StartTime"], body["EndTime"], now)
    layout, is_image, night = parse_config(body.get("Config"))
    urls = body["VideoURLs"]
    check_urls(urls, is_image)
    product = products.get_product(pid, "ProductId")
    if not product.ai_video:
        raise errors.AI_VIDEO_NOT_ENABLED(
            f"product {pid} has not enabled the AI video analysis function (PATCH ai_video_enabled)", "ProductId"
        )
    try:
        DeviceRecord.get(pid, dn)
    except DoesNotExist:
        raise errors.DEVICE_NOT_EXIST(f"device {pid}/{dn} does not exist", "DeviceName") from None
    analyser = settings().video_analyser  # one of media.BACKENDS: the typed config refuses others
    absent = media.missing(analyser)
    if absent:
        raise errors.VIDEO_ANALYSER_UNAVAILABLE(
            f"the {analyser} video analyser needs {', '.join(absent)}, which this deployment does not include "
            "(OpenCV does not fit in the Lambda bundle): set FLEETBOX_VIDEO_ANALYSER=cloud here"
        )
    check_decodable(analyser, urls, layout, is_image)
    if body["ServiceType"] == media.PACKAGE_DETECT and not set(media.PACKAGE_KINDS) & set(media.detects(analyser)):
        raise errors.SERVICE_TYPE_UNSUPPORTED(
            f"the {analyser} analyser cannot detect packages (it detects: {', '.join(media.detects(analyser))})",
            "ServiceType",
        )
    rec = VideoTaskRecord(
        task_id=ids.short_id("vt", 16),
        product_id=pid,
        device_name=dn,
        service_type=body["ServiceType"],
        channel_id=body.get("ChannelId") or 0,
        custom_id=body.get("CustomId") or "",
        start_time=body["StartTime"],
        end_time=body["EndTime"],
        video_urls=urls,
        config=body.get("Config") or "",
        views=layout.views,
        selected=list(layout.selected),
        is_image=int(is_image),
        night=int(night),
        status=RUNNING,
        files=urls[:1],
        created_at=now,
        updated_at=now,
        created_by=created_by,
        analyser=analyser,
        running="1",
    )
    rec.save(condition=VideoTaskRecord.task_id.does_not_exist())
    try:
        jobs.enqueue("video.analyse", {"task_id": rec.task_id})
    except Exception:  # noqa: BLE001 - recorded as failed with why: nothing accepted is lost silently
        logger.exception("video task not queued", extra={"task_id": rec.task_id})
        _finish(rec.task_id, FAILED, reason="the analysis could not be queued; create the task again")
    wait = body.get("wait")
    if wait is None:
        return view(_read(rec.task_id) or rec), False
    deadline = time.monotonic() + min(MAX_WAIT_S, wait)
    while True:
        current = _read(rec.task_id) or rec
        if current.status != RUNNING or time.monotonic() >= deadline:
            return view(current), current.status != RUNNING
        time.sleep(min(_POLL_S, max(0.0, deadline - time.monotonic())))


def _read(task_id: str) -> VideoTaskRecord | None:
    try:
        return VideoTaskRecord.get(task_id, consistent_read=True)
    except DoesNotExist:
        return None


def owner(task_id: str) -> tuple[str, VideoTaskRecord]:
    """(resource, record) of a task, for the route kit's per-item decision."""
    rec = _read(task_id) if _TASK_ID_RE.fullmatch(task_id or "") else None
    if rec is None:
        raise errors.VIDEO_TASK_NOT_EXIST(f"video task {task_id} does not exist", "TaskId")
    return resource_of(rec.product_id, rec.device_name), rec


def list_tasks(
    *,
    visible: Callable[[str], bool],
    product_id: str | None,
    device_names: list[str] | None,
    service_type: str | None,
    status: int | None,
    start: int | None,
    end: int | None,
    limit: int,
    next_key: dict[str, Any] | None,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Tasks newest first that ``visible(resource)`` lets the caller read, filtered."""
    if start is not None and end is not None and start > end:
        raise errors.TIME_RANGE_INVALID("start must not be after end", "start")
    index: Any
    if product_id:
        expect_key(next_key, {"task_id": "S", "product_id": "S", "created_at": "N"}, {"product_id": product_id})
        index, hash_key = VideoTaskRecord.by_product, product_id
    else:
        expect_key(next_key, {"task_id": "S", "account": "S", "created_at": "N"}, {"account": ACCOUNT})
        index, hash_key = VideoTaskRecord.by_account, ACCOUNT
    lo, hi = start if start is not None else 0, end if end is not None else 2**40
    cond = None
    for c in (
        VideoTaskRecord.device_name.is_in(*device_names) if device_names else None,
        VideoTaskRecord.service_type == service_type if service_type else None,
        VideoTaskRecord.status == status if status is not None else None,
    ):
        if c is not None:
            cond = c if cond is None else cond & c

    def fetch(key: dict[str, Any] | None) -> tuple[list[VideoTaskRecord], Any]:
        res = index.query(
            hash_key,
            VideoTaskRecord.created_at.between(lo, hi),
            filter_condition=cond,
            scan_index_forward=False,
            last_evaluated_key=key,
            limit=max(limit, 25),
        )
        return list(res), res.last_evaluated_key

    def key_of(r: VideoTaskRecord) -> dict[str, Any]:
        k = {"task_id": {"S": r.task_id}, "created_at": {"N": str(int(r.created_at))}}
        k.update({"product_id": {"S": r.product_id}} if product_id else {"account": {"S": ACCOUNT}})
        return k

    with checked_start(next_key):
        recs, nxt = fill_page(
            fetch, lambda r: visible(resource_of(r.product_id, r.device_name)), key_of, limit, next_key
        )
    return [view(r) for r in recs], nxt


# ===================================================================== the result callback


def _callback_view(pid: str, cb: dict[str, Any] | None, reveal: frozenset[str] = frozenset()) -> dict[str, Any]:
    out: dict[str, Any] = {"product_id": pid, "url": None, "token_set": False, "secret_set": False}
    if cb:
        out.update(delivery.masked(cb, reveal))
    return out


def get_callback(pid: str, *, include_secret: bool = False) -> dict[str, Any]:
    cb = products.get_product(pid).video_callback
    return _callback_view(pid, cb, frozenset(delivery.secrets_of([cb])) if cb and include_secret else frozenset())


def set_callback(pid: str, body: dict[str, Any]) -> dict[str, Any]:
    """Save the product's result callback once its URL passes the Echostr check (SPEC §9.2); the
    token (and the Standard Webhooks secret, made here) are shown in this answer only."""
    rec = products.get_product(pid)
    previous = [rec.video_callback] if rec.video_callback else []
    url = delivery.check_url(body["url"], "url")
    token = delivery.kept_secret(
        {"url": url, **({"token": body["token"]} if "token" in body else {})}, previous, "token"
    )
    delivery.verify_callback(url, token or None, "url", user_agent=USER_AGENT)
    secret = delivery.kept_secret({"url": url}, previous, "secret") or delivery.new_secret()
    cb = {"url": url, "secret": secret, **({"token": token} if token else {})}
    try:
        rec.update(
            actions=[ProductRecord.video_callback.set(cb), ProductRecord.updated_at.set(clock.now_s())],
            condition=ProductRecord.product_id.exists(),
        )
    except UpdateError:
        raise errors.PRODUCT_NOT_EXIST(f"product {pid} does not exist", "product_id") from None
    made = delivery.secrets_of([cb]) - delivery.secrets_of(previous)
    return _callback_view(pid, cb, frozenset(made))


def delete_callback(pid: str) -> None:
    rec = products.get_product(pid)
    rec.update(actions=[ProductRecord.video_callback.remove()], condition=ProductRecord.product_id.exists())


def _webhook_id(task_id: str) -> str:
    """One id per task's result: every attempt and every re-notification carries it."""
    return "msg_" + hashlib.sha256(task_id.encode()).hexdigest()[:24]


def callback_body(rec: VideoTaskRecord) -> dict[str, Any]:
    return {
        "MsgType": "ai_analytics_result",
        "ProductId": rec.product_id,
        "DeviceName": rec.device_name,
        "ServiceType": rec.service_type,
        "TaskId": rec.task_id,
        "Status": int(rec.status),
        "Result": rec.result or "",
        "Files": list(rec.files or []),
        "Time": clock.now_s(),
        "StartTime": int(rec.start_time),
        "EndTime": int(rec.end_time),
    }


def _notify(rec: VideoTaskRecord) -> None:
    """The finished task's event and callback, then ``notify`` cleared (re-run if it is not)."""
    failed = int(rec.status) == FAILED
    facts: dict[str, Any] = (
        {"reason": rec.reason} if failed else {"status": int(rec.status), "classes": list(rec.classes or [])}
    )
    events.emit(
        "video.task.failed" if failed else "video.task.done",
        rec.product_id,
        task_id=rec.task_id,
        device_name=rec.device_name,
        service_type=rec.service_type,
        **facts,
    )
    try:
        cb = ProductRecord.get(rec.product_id).video_callback
    except DoesNotExist:
        cb = None  # the product is gone: nobody to tell
    if cb:
        delivery.deliver(
            {**cb, "user_agent": USER_AGENT},
            callback_body(rec),
            target_id=f"video/{rec.product_id}",
            webhook_id=_webhook_id(rec.task_id),
            product_id=rec.product_id,
            device_name=rec.device_name,
            resource=f"product/{rec.product_id}",
            retry="video",
        )
    rec.update(actions=[VideoTaskRecord.notify.remove()])


def _finish(
    task_id: str,
    status: int,
    *,
    result: str = "",
    classes: list[str] | None = None,
    reason: str | None = None,
) -> None:
    """Move a running task to its final status (once: a task already finished stays as it is),
    then tell its event and callback."""
    actions: list[Any] = [
        VideoTaskRecord.result.set(result),
        VideoTaskRecord.classes.set(classes or []),
        VideoTaskRecord.updated_at.set(clock.now_s()),
        VideoTaskRecord.running.remove(),
        VideoTaskRecord.notify.set("1"),
    ]
    if reason is not None:
        actions.append(VideoTaskRecord.reason.set(reason[:1000]))
    # the status last: one UpdateItem is atomic on DynamoDB, moto applies its clauses in order
    actions.append(VideoTaskRecord.status.set(status))
    try:
        VideoTaskRecord(task_id=task_id).update(actions=actions, condition=VideoTaskRecord.status == RUNNING)
    except UpdateError as exc:
        if _conditional_failed(exc):
            return
        raise
    rec = _read(task_id)
    if rec is not None:
        _discard_copy(rec)
        _notify(rec)


# ===================================================================== the analysis job


class _Retry(Exception):
    """An attempt that may succeed later (a download that timed out, a 5xx)."""


def _from(segments: list[hls.Segment], start_s: float) -> tuple[list[hls.Segment], float]:
    """The segments a resumed analysis still needs — those ending after ``start_s``, and the one
    before them (its last sample is what the first new one is compared with for motion) — and
    the time the first of them starts at."""
    _check_duration(segments)
    starts = [0.0]
    for seg in segments:
        starts.append(starts[-1] + seg.duration_s)
    first = next((i for i, seg in enumerate(segments) if starts[i] + seg.duration_s > start_s), len(segments) - 1)
    first = max(0, first - 1)
    return segments[first:], starts[first]


def _stage_local(url: str, folder: Path, kind: str, start_s: float) -> tuple[str, float]:
    path = local_path(url, "VideoURLs[0]")
    if kind != "hls":
        media.refuse_playlist(str(path))
        return str(path), 0.0
    root = Path(settings().media_root or "/").resolve()
    segments, offset = _from(hls.parse(_read_text(path), str(path)), start_s)
    files = []
    for seg in segments:
        if "://" in seg.uri:
            raise media.MediaError("a local playlist may name only local segments")
        seg_path = Path(unquote(seg.uri)).resolve()
        if not seg_path.is_relative_to(root) or not seg_path.is_file():
            raise media.MediaError("a playlist segment is missing or outside the media root")
        media.refuse_playlist(str(seg_path))
        files.append(str(seg_path))
    local = folder / "local.m3u8"
    local.write_text(hls.local_playlist(segments, files))
    return str(local), offset


def _read_text(path: Path) -> str:
    data = path.read_bytes()[: hls.MAX_PLAYLIST_BYTES + 1]
    if len(data) > hls.MAX_PLAYLIST_BYTES:
        raise media.MediaError(f"the playlist is larger than {hls.MAX_PLAYLIST_BYTES} bytes")
    return data.decode("utf-8", errors="replace")


def _check_duration(segments: list[hls.Segment]) -> None:
    cap = settings().video_max_duration_s
    if hls.total_s(segments) > cap + 1:
        raise media.MediaError(f"the playlist lasts {hls.total_s(segments):.0f} s; at most {cap} s can be analysed")


def _fetch(url: str, path: Path, budget: list[int], deadline: float, media_file: bool = True) -> None:
    try:
        budget[0] -= delivery.download(url, str(path), max_bytes=budget[0], deadline=deadline)
    except delivery.FetchError as exc:
        if exc.transient:
            raise _Retry(str(exc)) from None
        raise media.MediaError(str(exc)) from None
    if media_file:
        media.refuse_playlist(str(path))


def _stage_remote(url: str, folder: Path, kind: str, start_s: float) -> tuple[str, float]:
    s = settings()
    budget = [s.video_max_bytes]
    deadline = time.monotonic() + s.video_fetch_timeout_s
    if kind != "hls":
        suffix = Path(urlsplit(url).path).suffix.lower()
        target = folder / f"media{suffix}"
        _fetch(url, target, budget, deadline)
        return str(target), 0.0
    playlist = folder / "remote.m3u8"
    _fetch(url, playlist, [min(budget[0], hls.MAX_PLAYLIST_BYTES)], deadline, media_file=False)
    segments, offset = _from(hls.parse(_read_text(playlist), url), start_s)
    files = []
    for i, seg in enumerate(segments):
        if not seg.uri.lower().startswith(("http://", "https://")):
            raise media.MediaError("a playlist segment is not an http(s) URL")
        target = folder / f"seg{i:05d}{Path(urlsplit(seg.uri).path).suffix.lower() or '.ts'}"
        _fetch(seg.uri, target, budget, deadline)  # each segment's address checked by the guard
        files.append(str(target))
    local = folder / "local.m3u8"
    local.write_text(hls.local_playlist(segments, files))
    return str(local), offset


@dataclass
class _Part:
    """What one step of the analysis produced: new samples (or, with ``whole``, every sample of
    the task), where the next part starts (None: the media is done), how long the next step
    should wait, and what else the checkpoint records."""

    samples: list[media.Sample]
    resume: float | None
    delay_s: int = 0
    state: list[Any] = field(default_factory=list)
    whole: bool = False


def _layout(rec: VideoTaskRecord) -> media.Layout:
    return media.Layout(int(rec.views or 1), tuple(rec.selected or [0]))


def _stage(url: str, folder: Path, kind: str, start_s: float) -> tuple[str, float]:
    remote = url.lower().startswith(("http://", "https://"))
    return (_stage_remote if remote else _stage_local)(url, folder, kind, start_s)


def _analyse(rec: VideoTaskRecord, deadline: float) -> _Part:
    """One part of the task's analysis, from its checkpoint until ``deadline``."""
    url = rec.video_urls[0]
    key = _copy_key(rec)
    if key is not None:
        return _analyse_stored(rec, key, deadline)
    kind = url_kind(url) or "video"
    start_s = float(rec.progress_s or 0)
    folder = Path(tempfile.mkdtemp(prefix="fleetbox-video-"))
    try:
        path, offset_s = _stage(url, folder, kind, start_s)
        samples, resume = media.observe(
            rec.analyser,
            path,
            _layout(rec),
            is_image=bool(rec.is_image),
            night=bool(rec.night),
            max_duration_s=settings().video_max_duration_s,
            start_s=start_s,
            offset_s=offset_s,
            deadline=deadline,
        )
        return _Part(samples, resume)
    except errors.FleetboxError as exc:  # the URL's rules no longer hold (a file removed since)
        raise media.MediaError(exc.message) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _copy_key(rec: VideoTaskRecord) -> str | None:
    """The S3 key of the copy Rekognition Video reads, for tasks analysed that way."""
    url = rec.video_urls[0] if rec.video_urls else ""
    if not media.stored_video(rec.analyser, _suffix(url), _layout(rec), is_image=bool(rec.is_image)):
        return None
    return f"{VIDEO_INPUT_PREFIX}{rec.task_id}{_suffix(url)}"


def _analyse_stored(rec: VideoTaskRecord, key: str, deadline: float) -> _Part:
    """An MP4/MOV file through Rekognition Video, one short step at a time: the first step
    fetches the file (same guard and caps as every fetch), copies it to the bucket and starts
    the job (remembered on the task); later steps read the job's result pages, each re-queued
    :data:`REKOGNITION_POLL_S` later while the job runs — no step waits for Rekognition."""
    if not rec.video_job:
        folder = Path(tempfile.mkdtemp(prefix="fleetbox-video-"))
        try:
            path, _ = _stage(rec.video_urls[0], folder, "video", 0.0)
            with open(path, "rb") as fh:
                files.put_object(key, fh, "video/quicktime" if key.endswith(".mov") else "video/mp4")
        except errors.FleetboxError as exc:
            raise media.MediaError(exc.message) from None
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        job = cloud.start_video(settings().bucket, key, rec.task_id)
        return _Part([], 0.0, REKOGNITION_POLL_S, [VideoTaskRecord.video_job.set(job)])
    status, samples, token, duration_s = cloud.video_labels(rec.video_job, rec.video_token, deadline)
    if status != "SUCCEEDED":
        return _Part([], 0.0, REKOGNITION_POLL_S)
    if token is not None:  # more pages than this step had time for
        return _Part(samples, 0.0, 0, [VideoTaskRecord.video_token.set(token)])
    cap = settings().video_max_duration_s
    if duration_s > cap + 1:
        raise media.MediaError(f"the video lasts {duration_s:.0f} s; at most {cap} s can be analysed")
    return _Part(cloud.per_second(media.unpack(rec.timeline or []) + samples, duration_s), None, whole=True)


def _discard_copy(rec: VideoTaskRecord) -> None:
    """Delete a finished task's S3 copy (the bucket's lifecycle rule on ``video-input/`` removes
    any this misses)."""
    key = _copy_key(rec)
    if key is None:
        return
    try:
        files.delete_object(key)
    except Exception:  # noqa: BLE001 - the lifecycle rule is the safety net; the task is final
        logger.warning("video input copy not deleted", extra={"task_id": rec.task_id})


def _conditional_failed(exc: UpdateError) -> bool:
    return getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException"


def analyse_step(body: dict[str, Any]) -> None:
    """Job ``video.analyse``: one part of a task's analysis (see the module doc)."""
    task_id = body["task_id"]
    rec = _read(task_id)
    if rec is None:
        return
    if int(rec.status) != RUNNING:
        if rec.notify:
            _notify(rec)  # finished, but its event or callback was not confirmed
        return
    attempts, limit = int(rec.attempts or 0), settings().video_max_attempts
    if attempts >= limit:
        _finish(
            task_id,
            FAILED,
            reason=f"the analysis stopped {attempts} times without finishing; "
            f"last error: {rec.last_error or 'the worker stopped (crash or timeout)'}",
        )
        return
    started = time.monotonic()
    progress = float(rec.progress_s or 0)
    try:
        rec.update(
            actions=[VideoTaskRecord.attempts.add(1), VideoTaskRecord.updated_at.set(clock.now_s())],
            condition=(VideoTaskRecord.status == RUNNING) & (VideoTaskRecord.attempts == attempts),
        )
    except UpdateError as exc:
        if _conditional_failed(exc):
            return  # another delivery of this message claimed the attempt
        raise
    try:
        part = _analyse(rec, started + settings().video_step_budget_s)
    except media.MediaError as exc:
        _finish(task_id, FAILED, reason=str(exc))
        return
    except Exception as exc:  # noqa: BLE001 - a transient failure or a bug: tried again, counted
        plain = isinstance(exc, (_Retry, cloud.CloudBusy))
        why = str(exc)[:300] if plain else f"{type(exc).__name__}: {str(exc)[:300]}"
        logger.warning("video analysis attempt failed", extra={"task_id": task_id, "attempt": attempts + 1})
        rec.update(actions=[VideoTaskRecord.last_error.set(why)])
        jobs.enqueue("video.analyse", {"task_id": task_id}, delay_s=10 * (attempts + 1))
        return
    timeline = part.samples if part.whole else media.unpack(rec.timeline or []) + part.samples
    logger.info(
        "video part analysed",
        extra={"task_id": task_id, "samples": len(part.samples), "seconds": round(time.monotonic() - started, 2)},
    )
    if part.resume is not None:
        # a checkpoint: the samples so far, where to go on; the next part starts afresh (attempts 0)
        try:
            rec.update(
                actions=[
                    VideoTaskRecord.timeline.set(media.pack(timeline)),
                    VideoTaskRecord.progress_s.set(part.resume),
                    VideoTaskRecord.attempts.set(0),
                    VideoTaskRecord.updated_at.set(clock.now_s()),
                    *part.state,
                ],
                condition=(VideoTaskRecord.status == RUNNING)
                & (VideoTaskRecord.attempts == attempts + 1)
                & (VideoTaskRecord.progress_s == progress),
            )
        except UpdateError as exc:
            if _conditional_failed(exc):
                return  # a concurrent delivery moved the task on: its part counts
            raise
        jobs.enqueue("video.analyse", {"task_id": task_id}, delay_s=part.delay_s)
        return
    outcome = media.conclude(rec.analyser, timeline, is_image=bool(rec.is_image), service_type=rec.service_type)
    if outcome.empty:
        _finish(task_id, EMPTY, classes=outcome.classes)
    else:
        result = json.dumps(
            {"Summary": outcome.summary, "DetectedClassifications": outcome.classes}, ensure_ascii=False
        )
        _finish(task_id, DONE, result=result, classes=outcome.classes)


def sweep() -> int:
    """Tick ``video.sweep``: fail the tasks still running ``video_deadline_s`` after creation."""
    deadline = settings().video_deadline_s
    cutoff = clock.now_s() - deadline
    failed = 0
    for rec in VideoTaskRecord.by_running.query("1", VideoTaskRecord.created_at < cutoff, limit=200):
        last = f"; last error: {rec.last_error}" if rec.last_error else ""
        _finish(
            rec.task_id,
            FAILED,
            reason=f"the analysis did not finish within {deadline} s ({int(rec.attempts or 0)} attempt(s)){last}",
        )
        failed += 1
    if failed:
        logger.warning("video tasks failed by the sweep", extra={"tasks": failed})
    return failed


# a video callback's dead letters and delivery log are decided on its product
delivery.register_owner("video", lambda pid: f"product/{pid}")
