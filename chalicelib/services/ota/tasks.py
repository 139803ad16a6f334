"""OTA for people (SPEC §8.2, §8.3, §8.6): create, read, cancel, retry and confirm upgrade tasks.

A task is created in status ``creating`` (validated, its device list saved to S3) and its first
``ota.plan`` step queued; the rollout steps (``ota/rollout.py``) do the long work.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from ...core import clock, errors, ids
from ...models import dynamo
from ...models.ota import FIRMWARE_KIND, RESOURCE_KIND
from .. import files, firmware, jobs
from . import store
from .store import DEVICE_LIST_TEMPLATE, MAX_DEVICES, RESOURCE_STATES, STATES, TASK_STATUSES  # noqa: F401 - the API's vocabulary


def _parse_names(body: dict[str, Any]) -> list[str]:
    names: list[str] = list(body.get("device_names") or [])
    text = body.get("devices_csv")
    if text:
        first = True
        for row in csv.reader(io.StringIO(text)):
            if not row or not row[0].strip():
                continue
            cell = row[0].strip().lstrip("\ufeff")
            if first and cell.lower() in ("devicename", "device_name"):
                first = False
                continue  # the template's header row
            first = False
            names.append(cell)
    seen: set[str] = set()
    unique = [n for n in names if not (n in seen or seen.add(n))]  # type: ignore[func-returns-value]
    if len(unique) > store.MAX_DEVICES:
        raise errors.DEVICE_LIST_EXCEED_LIMIT(
            f"the device list holds {len(unique)} names; at most {store.MAX_DEVICES}",
            "devices_csv" if text else "device_names",
        )
    return unique


def _common_settings(body: dict[str, Any], confirm: str) -> dict[str, Any]:
    timeout = body.get("timeout_minutes") or (2 if confirm == "user_confirm" else 15)
    abort = body.get("abort") or None
    return {
        "timeout_minutes": timeout,
        "max_retries": body.get("max_retries", 3),
        "rate_per_minute": body.get("rate_per_minute") or 0,
        "abort_ratio": abort["failure_ratio"] if abort else None,
        "abort_min": abort.get("min_devices", 1) if abort else None,
    }


def create_task(body: dict[str, Any], created_by: str | None) -> dict[str, Any]:
    """An upgrade task (SPEC §8.2); answers 202-style: the targets are resolved by queued steps."""
    return _start(*_plan_task(body), created_by)


def check_task(body: dict[str, Any]) -> None:
    """Every check :func:`create_task` makes before it stores the task."""
    _plan_task(body)


def _plan_task(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """(task, firmware, device names) of a valid upgrade-task request."""
    fw = firmware.get_item(body["firmware_id"], FIRMWARE_KIND)
    if fw["status"] != "ready":
        raise errors.FIRMWARE_NOT_READY(
            "the firmware's file is not registered yet (upload it, then …/complete)", "firmware_id"
        )
    method, mode, confirm = body["method"], body.get("mode") or "static", body.get("confirm") or "silent"
    versions: list[str] = []
    scope = body.get("scope") or "all"
    names: list[str] = []
    if method == "by_version":
        versions = list(dict.fromkeys(body.get("source_versions") or []))
        if not versions:
            raise errors.missing("source_versions")
        for i, v in enumerate(versions):
            if not store.VERSION_RE.fullmatch(v):
                raise errors.SOURCE_VERSION_INVALID(
                    "source versions are 1-32 characters of A-Z a-z 0-9 . _ -", f"source_versions[{i}]"
                )
        if fw["version"] in versions:
            raise errors.SOURCE_VERSION_INVALID(
                f"the firmware's own version {fw['version']} cannot be a source version", "source_versions"
            )
        if scope == "selected":
            names = _parse_names(body)
            if not names:
                raise errors.missing("device_names")
            if mode == "dynamic":
                raise errors.MODE_INVALID("dynamic tasks target all devices of the source versions (scope all)", "mode")
    else:
        names = _parse_names(body)
        if not names:
            raise errors.missing("devices_csv")
        if mode == "dynamic":
            raise errors.MODE_INVALID("a by-device task is static: dynamic needs method by_version", "mode")
        scope = "selected"
    task = {
        "kind": FIRMWARE_KIND,
        "firmware_id": fw["firmware_id"],
        "product_id": fw["product_id"],
        "method": method,
        "source_versions": versions or None,
        "scope": scope,
        "mode": mode,
        "confirm": confirm,
        "target_version": fw["version"],
        "user_defined": fw.get("custom_info", ""),
        "file_name": fw["file_name"],
        **_common_settings(body, confirm),
    }
    return task, fw, names


def create_resource_task(body: dict[str, Any], created_by: str | None) -> dict[str, Any]:
    """Send a resource to one device or a device list (SPEC §8.6)."""
    res = firmware.get_item(body["resource_id"], RESOURCE_KIND)
    if res["status"] != "ready":
        raise errors.RESOURCE_NOT_READY(
            "the resource's file is not registered yet (upload it, then …/complete)", "resource_id"
        )
    if body.get("device_name"):
        body = {**body, "device_names": [body["device_name"], *(body.get("device_names") or [])]}
    names = _parse_names(body)
    if not names:
        raise errors.missing("device_name")
    task = {
        "kind": RESOURCE_KIND,
        "firmware_id": res["firmware_id"],
        "product_id": res["product_id"],
        "method": "by_device",
        "scope": "selected",
        "mode": "static",
        "confirm": "silent",
        "target_version": res["name"],
        "file_name": res["file_name"],
        **_common_settings(body, "silent"),
    }
    return _start(task, res, names, created_by)


def _start(task: dict[str, Any], fw: dict[str, Any], names: list[str], created_by: str | None) -> dict[str, Any]:
    now = clock.now_s()
    tid = ids.short_id("ota" if task["kind"] == FIRMWARE_KIND else "rst")
    task.update(
        task_id=tid,
        status="creating",
        created_at=now,
        updated_at=now,
        created_by=created_by,
        file_key=fw["key"],
        md5=fw["md5"],
        size=fw["size"],
        plan_cursor="",
        planned=False,
        n_total=0,
        n_rejected=0,
        **{c: 0 for c in store.COUNTERS.values()},
    )
    if names:
        task["names_key"] = f"ota/tasks/{tid}/devices.txt"
        files.put_text(task["names_key"], "\n".join(names))
    dynamo.client().put_item(
        TableName=store.tasks_table(),
        Item={k: dynamo.to_av(v) for k, v in task.items() if v is not None},
        ConditionExpression="attribute_not_exists(task_id)",
    )
    jobs.enqueue("ota.plan", {"task_id": tid, "cursor": ""})
    return view_task(task)


def get_task(task_id: str, kind: str = FIRMWARE_KIND) -> dict[str, Any]:
    task = store.read_task(task_id) if isinstance(task_id, str) and re.fullmatch(r"[a-z0-9]{4,40}", task_id) else None
    if task is None or task.get("kind") != kind:
        absent = errors.OTA_TASK_NOT_EXIST if kind == FIRMWARE_KIND else errors.RESOURCE_TASK_NOT_EXIST
        raise absent(f"task {task_id} does not exist", "task_id")
    return task


def view_task(task: dict[str, Any]) -> dict[str, Any]:
    out = {
        k: task.get(k)
        for k in (
            "product_id",
            "method",
            "mode",
            "confirm",
            "status",
            "reason",
            "timeout_minutes",
            "max_retries",
            "created_at",
            "started_at",
            "ended_at",
            "target_version",
        )
    }
    out["id"] = task["task_id"]
    out["rate_per_minute"] = task.get("rate_per_minute") or None
    if task["kind"] == FIRMWARE_KIND:
        out.update(
            firmware_id=task["firmware_id"], source_versions=task.get("source_versions") or [], scope=task.get("scope")
        )
        out["abort"] = (
            {"failure_ratio": task["abort_ratio"], "min_devices": task["abort_min"]}
            if task.get("abort_ratio") is not None
            else None
        )
    else:
        out["resource_id"] = task["firmware_id"]
        out.pop("confirm")
        out.pop("target_version")
        out.pop("mode")
    out["statistics"] = store.statistics(task)
    out["rejected_count"] = int(task.get("n_rejected") or 0)
    out["rejected_devices"] = task.get("rejected") or []
    return out


def list_tasks(
    kind: str,
    *,
    firmware_id: str | None,
    product_id: str | None,
    status: str | None,
    limit: int,
    start: dict[str, Any] | None,
    visible: Callable[[dict[str, Any]], bool] = lambda task: True,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Newest first; only the tasks ``visible`` passes count towards the page."""
    if firmware_id:
        request: dict[str, Any] = {
            "IndexName": "firmware-index",
            "KeyConditionExpression": "#h = :h",
            "ExpressionAttributeNames": {"#h": "firmware_id"},
            "ExpressionAttributeValues": {":h": {"S": firmware_id}},
        }
        key_attrs = ("task_id", "firmware_id", "created_at")
        filters = ["#k = :k"]  # a firmware's OTA and resource tasks share its index
        request["ExpressionAttributeNames"]["#k"] = "kind"
        request["ExpressionAttributeValues"][":k"] = {"S": kind}
    else:
        request = {
            "IndexName": "kind-index",
            "KeyConditionExpression": "#h = :h",
            "ExpressionAttributeNames": {"#h": "kind"},
            "ExpressionAttributeValues": {":h": {"S": kind}},
        }
        key_attrs = ("task_id", "kind", "created_at")
        filters = []  # DynamoDB refuses a filter on the index's own key (moto did not)
    if product_id:
        filters.append("#p = :p")
        request["ExpressionAttributeNames"]["#p"] = "product_id"
        request["ExpressionAttributeValues"][":p"] = {"S": product_id}
    if status:
        filters.append("#s = :s")
        request["ExpressionAttributeNames"]["#s"] = "status"
        request["ExpressionAttributeValues"][":s"] = {"S": status}
    request.update(TableName=store.tasks_table(), ScanIndexForward=False)
    if filters:
        request["FilterExpression"] = " AND ".join(filters)
    return _page(request, limit, start, lambda raw: view_task(dynamo.item(raw)), key_attrs, visible)


def _page(
    request: dict[str, Any],
    limit: int,
    start: dict[str, Any] | None,
    render: Callable[[dict], Any],
    key_attrs: tuple[str, ...],
    keep: Callable[[Any], bool] = lambda item: True,
) -> tuple[list[Any], dict[str, Any] | None]:
    items: list[Any] = []
    key = start
    while len(items) < limit:
        if key:
            request["ExclusiveStartKey"] = key
        request["Limit"] = max(limit - len(items), 25)
        out = dynamo.client().query(**request)
        raw_items = out.get("Items", [])
        for idx, raw in enumerate(raw_items):
            item = render(raw)
            if not keep(item):
                continue
            items.append(item)
            if len(items) >= limit:
                more = idx < len(raw_items) - 1 or bool(out.get("LastEvaluatedKey"))
                return items, {k: raw[k] for k in key_attrs} if more else None
        key = out.get("LastEvaluatedKey")
        if not key:
            break
    return items, None


def firmware_statistics(firmware_id: str) -> dict[str, int]:
    """Per-firmware store.statistics: the sum of its tasks' counters."""
    total = {"tasks": 0, "total": 0, **{s: 0 for s in store.STATES}}
    key = None
    while True:
        request: dict[str, Any] = {
            "TableName": store.tasks_table(),
            "IndexName": "firmware-index",
            "KeyConditionExpression": "#f = :f",
            "ExpressionAttributeNames": {"#f": "firmware_id"},
            "ExpressionAttributeValues": {":f": {"S": firmware_id}},
        }
        if key:
            request["ExclusiveStartKey"] = key
        out = dynamo.client().query(**request)
        for raw in out.get("Items", []):
            task = dynamo.item(raw)
            total["tasks"] += 1
            total["total"] += int(task.get("n_total") or 0)
            for state, attr in store.COUNTERS.items():
                total[state] += int(task.get(attr) or 0)
        key = out.get("LastEvaluatedKey")
        if not key:
            return total


def view_job(job: dict[str, Any]) -> dict[str, Any]:
    state = job["state"]
    if job.get("kind") == RESOURCE_KIND and state == store.UPGRADING:
        state = "downloading"
    out = {
        "device_name": job["device_name"],
        "task_id": job["task_id"],
        "state": state,
        "detail": job.get("detail"),
        "percent": job.get("percent"),
        "result_code": job.get("result_code"),
        "result_msg": job.get("result_msg"),
        "reason": job.get("reason"),
        "attempts": int(job.get("attempts") or 0),
        "source_version": job.get("source_version"),
        "target_version": job.get("target_version"),
        "running_version": job.get("running_version"),
        "updated_at": job.get("updated_at"),
        "awaiting_confirmation": str(job.get("state_key", "")).startswith(store.WAITING),
    }
    return out


def _state_prefix(state: str | None) -> str | None:
    if state is None:
        return None
    return store.UPGRADING if state == "downloading" else state


def list_jobs(
    task_id: str, kind: str, *, state: str | None, limit: int, start: dict[str, Any] | None
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    get_task(task_id, kind)
    names = {"#t": "task_id"}
    values: dict[str, Any] = {":t": {"S": task_id}}
    request: dict[str, Any] = {"TableName": store.jobs_table()}
    prefix = _state_prefix(state)
    if prefix:
        request["IndexName"] = "task-state-index"
        names["#sk"] = "state_key"
        values[":p"] = {"S": prefix}
        request["KeyConditionExpression"] = "#t = :t AND begins_with(#sk, :p)"
        key_attrs: tuple[str, ...] = ("task_id", "device_name", "state_key")
    else:
        request["KeyConditionExpression"] = "#t = :t"
        key_attrs = ("task_id", "device_name")
    request.update(ExpressionAttributeNames=names, ExpressionAttributeValues=values)
    return _page(request, limit, start, lambda raw: view_job(dynamo.item(raw)), key_attrs)


def list_firmware_jobs(
    firmware_id: str, *, state: str | None, limit: int, start: dict[str, Any] | None
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    firmware.get_item(firmware_id, FIRMWARE_KIND)
    request: dict[str, Any] = {
        "TableName": store.jobs_table(),
        "IndexName": "firmware-state-index",
        "KeyConditionExpression": "#f = :f",
        "ExpressionAttributeNames": {"#f": "firmware_id"},
        "ExpressionAttributeValues": {":f": {"S": firmware_id}},
    }
    if state:
        request["KeyConditionExpression"] += " AND begins_with(#k, :p)"
        request["ExpressionAttributeNames"]["#k"] = "fw_state_key"
        request["ExpressionAttributeValues"][":p"] = {"S": state}
    return _page(
        request,
        limit,
        start,
        lambda raw: view_job(dynamo.item(raw)),
        ("task_id", "device_name", "firmware_id", "fw_state_key"),
    )


def cancel_task(task_id: str, kind: str = FIRMWARE_KIND) -> dict[str, Any]:
    task = get_task(task_id, kind)
    names = {"#st": "status", "#live": "live", "#end": "ended_at", "#r": "reason"}
    values = {
        ":a": {"S": "creating"},
        ":b": {"S": "created"},
        ":c": {"S": "cancelled"},
        ":now": {"N": str(clock.now_s())},
        ":r": {"S": "cancelled by the user"},
    }
    try:
        out = dynamo.client().update_item(
            TableName=store.tasks_table(),
            Key={"task_id": {"S": task_id}},
            UpdateExpression="SET #st = :c, #end = :now, #r = :r REMOVE #live",
            ConditionExpression="#st IN (:a, :b)",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            ReturnValues="ALL_NEW",
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            raise errors.TASK_NOT_RUNNING(
                f"task {task_id} is {task['status']}; only a running task can be cancelled", "task_id"
            ) from None
        raise
    store.forget_live()
    jobs.enqueue("ota.close", {"task_id": task_id, "reason": "cancelled"})
    return view_task(dynamo.item(out["Attributes"]))


def cancel_device(task_id: str, dn: str, kind: str = FIRMWARE_KIND) -> dict[str, Any]:
    get_task(task_id, kind)

    def decide(job: dict[str, Any]) -> Any:
        if job["state"] not in store.ACTIVE:
            raise errors.DEVICE_UPGRADE_FINISHED(f"device {dn} is already {job['state']}", "device_name")
        return store.move(job, store.FAILED, sets={"reason": "cancelled", "detail": None}) or False

    store.apply(task_id, dn, decide, first=store.require_job(task_id, dn))
    store.maybe_finish(task_id)
    return view_job(store.require_job(task_id, dn))


def retry_device(task_id: str, dn: str, kind: str = FIRMWARE_KIND) -> dict[str, Any]:
    task = get_task(task_id, kind)
    if task["status"] == "done":
        store.reopen(task_id)
    elif task["status"] != "created":
        raise errors.TASK_NOT_RUNNING(
            f"task {task_id} is {task['status']}; devices can be retried only in a running or done task", "task_id"
        )

    def decide(job: dict[str, Any]) -> Any:
        if job["state"] != store.FAILED:
            raise errors.DEVICE_NOT_FAILED(
                f"device {dn} is {job['state']}; only a failed device can be retried", "device_name"
            )
        ok = store.move(
            job,
            store.PENDING,
            sets={
                "reason": None,
                "detail": None,
                "percent": None,
                "result_code": None,
                "result_msg": None,
                "attempts": 0,
                "active_device": f"{job['product_id']}/{dn}",
            },
        )
        return ok or False

    store.apply(task_id, dn, decide, first=store.require_job(task_id, dn))
    jobs.enqueue("ota.dispatch", {"task_id": task_id})
    return view_job(store.require_job(task_id, dn))


def confirm_device(task_id: str, dn: str) -> dict[str, Any]:
    """The app's approval of a user-confirm upgrade for one device."""
    task = get_task(task_id, FIRMWARE_KIND)
    if task["status"] != "created":
        raise errors.TASK_NOT_RUNNING(f"task {task_id} is {task['status']}", "task_id")

    def decide(job: dict[str, Any]) -> Any:
        if not str(job.get("state_key", "")).startswith(store.WAITING):
            raise errors.DEVICE_NOT_AWAITING_CONFIRMATION(
                f"device {dn} is {job['state']} and not awaiting confirmation", "device_name"
            )
        return store.move(job, store.PENDING, sets={"confirmed_at": clock.now_s()}) or False

    store.apply(task_id, dn, decide, first=store.require_job(task_id, dn))
    jobs.enqueue("ota.dispatch", {"task_id": task_id})
    return view_job(store.require_job(task_id, dn))
