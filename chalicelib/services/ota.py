"""OTA upgrade tasks and resource distribution (SPEC §8.2–§8.4, §8.6): one engine.

A task is created by the API (validated, its device list saved to S3) in status ``creating``;
queued steps then do the long work, each bounded and idempotent (services/jobs.py):

* ``ota.plan`` — one chunk of targets (a page of the devices' firmware-version index, or of the
  device list, whose unknown names are reported on the task, never fatal) becomes ``pending``
  job records; the task's counters and cursor move in one conditional update, so a re-delivered
  chunk stops at the cursor check.  The last chunk starts the task (``created``, ``live``).
* ``ota.dispatch`` — pushes up to ``ota_chunk`` pending jobs (fewer under a rollout rate: the
  task keeps a per-"minute" window count) in transactions of 99 jobs + the task's counters,
  conditioned on each job still being pending and the task still running; then publishes the
  notifications and batch-writes their content logs; chains the next chunk.
* ``ota.sweep`` — jobs whose ``due_at`` passed are re-pushed up to ``max_retries`` times, then
  failed with reason "timeout" (self-scheduled after each push, and from the minute tick).
* ``ota.close`` — a cancelled or aborted task's unfinished jobs become failed ("cancelled").

Every job state change is a conditional update on the job's current state, done in one
transaction with the task's counters, so an illegal transition, a duplicate or a late device
report changes nothing and the statistics never drift.  Per-device states (§8.3): ``pending`` →
``pushed`` → ``upgrading`` (detail downloading n% / burning / done) → ``succeeded`` | ``failed``.
Resource jobs show ``upgrading`` as ``downloading`` and succeed on ``done``; firmware jobs
succeed when the device then reports the target version (§8.4).

A "minute" of the task settings (timeouts, rollout rate) lasts ``settings().ota_minute_s``
seconds, so tests run the same rules in seconds.

Dynamic by-version tasks add a device when it reports (``report_version``) a source version —
which a newly activated device does as its first OTA message, so "devices that activate later"
join through the same path without a presence hook.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
import threading
import time
from typing import Any, Callable, Iterable

from botocore.exceptions import ClientError

from ..core import clock, errors, ids
from ..core.config import settings
from ..core.observability import logger
from ..models.ota import FIRMWARE_KIND, RESOURCE_KIND
from ..protocol import topics
from . import analytics, device_logs, events, files, firmware, jobs
from .txn import connection

PENDING, PUSHED, UPGRADING, SUCCEEDED, FAILED = "pending", "pushed", "upgrading", "succeeded", "failed"
STATES = (PENDING, PUSHED, UPGRADING, SUCCEEDED, FAILED)
ACTIVE = (PENDING, PUSHED, UPGRADING)
RESOURCE_STATES = (PENDING, PUSHED, "downloading", SUCCEEDED, FAILED)
#: the state_key prefix of a pending job of a user-confirm task not yet confirmed by the app
WAITING = "pending~confirm"
TASK_STATUSES = ("not_started", "creating", "created", "failed", "cancelled", "done")
MAX_DEVICES = 10_000
#: the device-list template (SPEC §8.2): first column DeviceName
DEVICE_LIST_TEMPLATE = "DeviceName\r\ndevice_001\r\ndevice_002\r\n"
MAX_REJECTED_LISTED = 100
TX_JOBS = 99
PARALLEL_PUBLISH_OVER = 20
PUBLISH_THREADS = 16
DEVICE_NAME_RE = re.compile(r"[A-Za-z0-9_:\-]{1,48}")
VERSION_RE = re.compile(r"[A-Za-z0-9._\-]{1,32}")
COUNTERS = {PENDING: "n_pending", PUSHED: "n_pushed", UPGRADING: "n_upgrading", SUCCEEDED: "n_succeeded",
            FAILED: "n_failed"}
DOWN_FAMILY = {FIRMWARE_KIND: "ota/update", RESOURCE_KIND: "resource/down/service"}
EVENT_PREFIX = {FIRMWARE_KIND: "ota", RESOURCE_KIND: "resource"}
PROGRESS_CODES = {"0": "success", "-1": "download timeout", "-2": "file missing", "-3": "authentication failed",
                  "-4": "MD5 mismatch", "-5": "burn failed"}


def _ddb() -> Any:
    return connection().client


def _tasks() -> str:
    return settings().table("ota_tasks")


def _jobs() -> str:
    return settings().table("ota_jobs")


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    from .telemetry import from_av

    return {k: from_av(v) for k, v in item.items()}


def _av(value: Any) -> dict[str, Any]:
    from .telemetry import to_av

    return to_av(value)


def _minute() -> float:
    return settings().ota_minute_s


def _reasons(exc: ClientError) -> list[str | None]:
    return [r.get("Code") if r.get("Code") != "None" else None
            for r in exc.response.get("CancellationReasons") or []]


# ===================================================================== tasks: create


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
    if len(unique) > MAX_DEVICES:
        raise errors.FleetboxError("LimitExceeded.DeviceListExceedLimit",
                                   f"the device list holds {len(unique)} names; at most {MAX_DEVICES}",
                                   "devices_csv" if text else "device_names")
    return unique


def _common_settings(body: dict[str, Any], confirm: str) -> dict[str, Any]:
    timeout = body.get("timeout_minutes") or (2 if confirm == "user_confirm" else 15)
    abort = body.get("abort") or None
    return {"timeout_minutes": timeout, "max_retries": body.get("max_retries", 3),
            "rate_per_minute": body.get("rate_per_minute") or 0,
            "abort_ratio": abort["failure_ratio"] if abort else None,
            "abort_min": abort.get("min_devices", 1) if abort else None}


def create_task(body: dict[str, Any], created_by: str | None) -> dict[str, Any]:
    """An upgrade task (SPEC §8.2); answers 202-style: the targets are resolved by queued steps."""
    fw = firmware.get_item(body["firmware_id"], FIRMWARE_KIND)
    if fw["status"] != "ready":
        raise errors.conflict("FailedOperation.FirmwareNotReady",
                              "the firmware's file is not registered yet (upload it, then …/complete)", "firmware_id")
    method, mode, confirm = body["method"], body.get("mode") or "static", body.get("confirm") or "silent"
    versions: list[str] = []
    scope = body.get("scope") or "all"
    names: list[str] = []
    if method == "by_version":
        versions = list(dict.fromkeys(body.get("source_versions") or []))
        if not versions:
            raise errors.missing("source_versions")
        for i, v in enumerate(versions):
            if not VERSION_RE.fullmatch(v):
                raise errors.invalid("SourceVersionInvalid", "source versions are 1-32 characters of A-Z a-z 0-9 . _ -",
                                     f"source_versions[{i}]")
        if fw["version"] in versions:
            raise errors.invalid("SourceVersionInvalid",
                                 f"the firmware's own version {fw['version']} cannot be a source version",
                                 "source_versions")
        if scope == "selected":
            names = _parse_names(body)
            if not names:
                raise errors.missing("device_names")
            if mode == "dynamic":
                raise errors.invalid("ModeInvalid", "dynamic tasks target all devices of the source versions "
                                                    "(scope all)", "mode")
    else:
        names = _parse_names(body)
        if not names:
            raise errors.missing("devices_csv")
        if mode == "dynamic":
            raise errors.invalid("ModeInvalid", "a by-device task is static: dynamic needs method by_version", "mode")
        scope = "selected"
    task = {"kind": FIRMWARE_KIND, "firmware_id": fw["firmware_id"], "product_id": fw["product_id"],
            "method": method, "source_versions": versions or None, "scope": scope, "mode": mode,
            "confirm": confirm, "target_version": fw["version"], "user_defined": fw.get("custom_info", ""),
            "file_name": fw["file_name"], **_common_settings(body, confirm)}
    return _start(task, fw, names, created_by)


def create_resource_task(body: dict[str, Any], created_by: str | None) -> dict[str, Any]:
    """Send a resource to one device or a device list (SPEC §8.6)."""
    res = firmware.get_item(body["resource_id"], RESOURCE_KIND)
    if res["status"] != "ready":
        raise errors.conflict("FailedOperation.ResourceNotReady",
                              "the resource's file is not registered yet (upload it, then …/complete)", "resource_id")
    if body.get("device_name"):
        body = {**body, "device_names": [body["device_name"], *(body.get("device_names") or [])]}
    names = _parse_names(body)
    if not names:
        raise errors.missing("device_name")
    task = {"kind": RESOURCE_KIND, "firmware_id": res["firmware_id"], "product_id": res["product_id"],
            "method": "by_device", "scope": "selected", "mode": "static", "confirm": "silent",
            "target_version": res["name"], "file_name": res["file_name"], **_common_settings(body, "silent")}
    return _start(task, res, names, created_by)


def _start(task: dict[str, Any], fw: dict[str, Any], names: list[str], created_by: str | None) -> dict[str, Any]:
    now = clock.now_s()
    tid = ids.short_id("ota" if task["kind"] == FIRMWARE_KIND else "rst")
    task.update(task_id=tid, status="creating", created_at=now, updated_at=now, created_by=created_by,
                file_key=fw["key"], md5=fw["md5"], size=fw["size"], plan_cursor="", planned=False,
                n_total=0, n_rejected=0, **{c: 0 for c in COUNTERS.values()})
    if names:
        task["names_key"] = f"ota/tasks/{tid}/devices.txt"
        files.put_text(task["names_key"], "\n".join(names))
    _ddb().put_item(TableName=_tasks(), Item={k: _av(v) for k, v in task.items() if v is not None},
                    ConditionExpression="attribute_not_exists(task_id)")
    jobs.enqueue("ota.plan", {"task_id": tid, "cursor": ""})
    return view_task(task)


# ===================================================================== tasks: read


def _task(task_id: str) -> dict[str, Any] | None:
    out = _ddb().get_item(TableName=_tasks(), Key={"task_id": {"S": task_id}}, ConsistentRead=True)
    return _plain(out["Item"]) if out.get("Item") else None


def get_task(task_id: str, kind: str = FIRMWARE_KIND) -> dict[str, Any]:
    task = _task(task_id) if isinstance(task_id, str) and re.fullmatch(r"[a-z0-9]{4,40}", task_id) else None
    if task is None or task.get("kind") != kind:
        what = "OtaTask" if kind == FIRMWARE_KIND else "ResourceTask"
        raise errors.not_found(f"{what}NotExist", f"task {task_id} does not exist", "task_id")
    return task


def statistics(task: dict[str, Any]) -> dict[str, int]:
    stats = {"total": int(task.get("n_total") or 0)}
    for state, attr in COUNTERS.items():
        stats[state] = int(task.get(attr) or 0)
    if task.get("kind") == RESOURCE_KIND:
        stats["downloading"] = stats.pop(UPGRADING)
    return stats


def view_task(task: dict[str, Any]) -> dict[str, Any]:
    out = {k: task.get(k) for k in ("product_id", "method", "mode", "confirm", "status", "reason",
                                    "timeout_minutes", "max_retries", "created_at", "started_at", "ended_at",
                                    "target_version")}
    out["id"] = task["task_id"]
    out["rate_per_minute"] = task.get("rate_per_minute") or None
    if task["kind"] == FIRMWARE_KIND:
        out.update(firmware_id=task["firmware_id"], source_versions=task.get("source_versions") or [],
                   scope=task.get("scope"))
        out["abort"] = ({"failure_ratio": task["abort_ratio"], "min_devices": task["abort_min"]}
                        if task.get("abort_ratio") is not None else None)
    else:
        out["resource_id"] = task["firmware_id"]
        out.pop("confirm")
        out.pop("target_version")
        out.pop("mode")
    out["statistics"] = statistics(task)
    out["rejected_count"] = int(task.get("n_rejected") or 0)
    out["rejected_devices"] = task.get("rejected") or []
    return out


def list_tasks(kind: str, *, firmware_id: str | None, product_id: str | None, status: str | None, limit: int,
               start: dict[str, Any] | None, visible: Callable[[dict[str, Any]], bool] = lambda task: True,
               ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Newest first; only the tasks ``visible`` passes count towards the page."""
    if firmware_id:
        request: dict[str, Any] = {"IndexName": "firmware-index", "KeyConditionExpression": "#h = :h",
                                   "ExpressionAttributeNames": {"#h": "firmware_id"},
                                   "ExpressionAttributeValues": {":h": {"S": firmware_id}}}
        key_attrs = ("task_id", "firmware_id", "created_at")
    else:
        request = {"IndexName": "kind-index", "KeyConditionExpression": "#h = :h",
                   "ExpressionAttributeNames": {"#h": "kind"}, "ExpressionAttributeValues": {":h": {"S": kind}}}
        key_attrs = ("task_id", "kind", "created_at")
    filters = ["#k = :k"]
    request["ExpressionAttributeNames"]["#k"] = "kind"
    request["ExpressionAttributeValues"][":k"] = {"S": kind}
    if product_id:
        filters.append("#p = :p")
        request["ExpressionAttributeNames"]["#p"] = "product_id"
        request["ExpressionAttributeValues"][":p"] = {"S": product_id}
    if status:
        filters.append("#s = :s")
        request["ExpressionAttributeNames"]["#s"] = "status"
        request["ExpressionAttributeValues"][":s"] = {"S": status}
    request.update(TableName=_tasks(), ScanIndexForward=False, FilterExpression=" AND ".join(filters))
    return _page(request, limit, start, lambda raw: view_task(_plain(raw)), key_attrs, visible)


def _page(request: dict[str, Any], limit: int, start: dict[str, Any] | None, render: Callable[[dict], Any],
          key_attrs: tuple[str, ...], keep: Callable[[Any], bool] = lambda item: True,
          ) -> tuple[list[Any], dict[str, Any] | None]:
    items: list[Any] = []
    key = start
    while len(items) < limit:
        if key:
            request["ExclusiveStartKey"] = key
        request["Limit"] = max(limit - len(items), 25)
        out = _ddb().query(**request)
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


def running_tasks_of(firmware_id: str) -> list[str]:
    out = _ddb().query(TableName=_tasks(), IndexName="firmware-index", KeyConditionExpression="#f = :f",
                       FilterExpression="#s IN (:a, :b)",
                       ExpressionAttributeNames={"#f": "firmware_id", "#s": "status"},
                       ExpressionAttributeValues={":f": {"S": firmware_id}, ":a": {"S": "creating"},
                                                  ":b": {"S": "created"}})
    return [i["task_id"]["S"] for i in out.get("Items", [])]


def firmware_statistics(firmware_id: str) -> dict[str, int]:
    """Per-firmware statistics: the sum of its tasks' counters."""
    total = {"tasks": 0, "total": 0, **{s: 0 for s in STATES}}
    key = None
    while True:
        request: dict[str, Any] = {"TableName": _tasks(), "IndexName": "firmware-index",
                                   "KeyConditionExpression": "#f = :f", "ExpressionAttributeNames": {"#f": "firmware_id"},
                                   "ExpressionAttributeValues": {":f": {"S": firmware_id}}}
        if key:
            request["ExclusiveStartKey"] = key
        out = _ddb().query(**request)
        for raw in out.get("Items", []):
            task = _plain(raw)
            total["tasks"] += 1
            total["total"] += int(task.get("n_total") or 0)
            for state, attr in COUNTERS.items():
                total[state] += int(task.get(attr) or 0)
        key = out.get("LastEvaluatedKey")
        if not key:
            return total


# ===================================================================== jobs: read


def view_job(job: dict[str, Any]) -> dict[str, Any]:
    state = job["state"]
    if job.get("kind") == RESOURCE_KIND and state == UPGRADING:
        state = "downloading"
    out = {"device_name": job["device_name"], "task_id": job["task_id"], "state": state,
           "detail": job.get("detail"), "percent": job.get("percent"), "result_code": job.get("result_code"),
           "result_msg": job.get("result_msg"), "reason": job.get("reason"), "attempts": int(job.get("attempts") or 0),
           "source_version": job.get("source_version"), "target_version": job.get("target_version"),
           "running_version": job.get("running_version"), "updated_at": job.get("updated_at"),
           "awaiting_confirmation": str(job.get("state_key", "")).startswith(WAITING)}
    return out


def _state_prefix(state: str | None) -> str | None:
    if state is None:
        return None
    return UPGRADING if state == "downloading" else state


def list_jobs(task_id: str, kind: str, *, state: str | None, limit: int,
              start: dict[str, Any] | None) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    get_task(task_id, kind)
    names = {"#t": "task_id"}
    values: dict[str, Any] = {":t": {"S": task_id}}
    request: dict[str, Any] = {"TableName": _jobs()}
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
    return _page(request, limit, start, lambda raw: view_job(_plain(raw)), key_attrs)


def list_firmware_jobs(firmware_id: str, *, state: str | None, limit: int,
                       start: dict[str, Any] | None) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    firmware.get_item(firmware_id, FIRMWARE_KIND)
    request: dict[str, Any] = {"TableName": _jobs(), "IndexName": "firmware-state-index",
                               "KeyConditionExpression": "#f = :f", "ExpressionAttributeNames": {"#f": "firmware_id"},
                               "ExpressionAttributeValues": {":f": {"S": firmware_id}}}
    if state:
        request["KeyConditionExpression"] += " AND begins_with(#k, :p)"
        request["ExpressionAttributeNames"]["#k"] = "fw_state_key"
        request["ExpressionAttributeValues"][":p"] = {"S": state}
    return _page(request, limit, start, lambda raw: view_job(_plain(raw)),
                 ("task_id", "device_name", "firmware_id", "fw_state_key"))


def _job(task_id: str, dn: str) -> dict[str, Any] | None:
    out = _ddb().get_item(TableName=_jobs(), Key={"task_id": {"S": task_id}, "device_name": {"S": dn}},
                          ConsistentRead=True)
    return _plain(out["Item"]) if out.get("Item") else None


def _active_jobs(pid: str, dn: str, kind: str) -> list[dict[str, Any]]:
    out = _ddb().query(TableName=_jobs(), IndexName="device-active-index", KeyConditionExpression="#a = :a",
                       ExpressionAttributeNames={"#a": "active_device"},
                       ExpressionAttributeValues={":a": {"S": f"{pid}/{dn}"}})
    return [j for j in (_plain(i) for i in out.get("Items", [])) if j.get("kind") == kind]


# ===================================================================== jobs: state changes


def _keys(task_id: str, dn: str, firmware_id: str, state: str, waiting: bool = False) -> dict[str, Any]:
    prefix = WAITING if waiting else state
    return {"state": state, "state_key": f"{prefix}#{dn}", "fw_state_key": f"{prefix}#{task_id}#{dn}"}


def _job_update(job: dict[str, Any], to: str, *, sets: dict[str, Any] | None = None, due_at: float | None = None,
                waiting: bool = False, attempt: bool = False) -> dict[str, Any]:
    """The Update of one job moving from its current state (condition) to ``to``."""
    values: dict[str, Any] = {}
    names: dict[str, str] = {"#sk": "state_key"}
    assigns: dict[str, Any] = {**_keys(job["task_id"], job["device_name"], job["firmware_id"], to, waiting),
                               "updated_at": clock.now_s(), **(sets or {})}
    parts, removes = [], []
    for i, (attr, value) in enumerate(assigns.items()):
        names[f"#s{i}"] = attr
        if value is None:
            removes.append(f"#s{i}")
        else:
            values[f":s{i}"] = _av(value)
            parts.append(f"#s{i} = :s{i}")
    names["#due"] = "due_at"
    if to in (SUCCEEDED, FAILED):
        names["#act"] = "active_device"
        removes += ["#due", "#act"]
    elif due_at is not None:
        values[":due"] = {"N": str(int(math.ceil(due_at)))}
        parts.append("#due = :due")
    else:
        removes.append("#due")
    if attempt:
        names["#at"] = "attempts"
        values[":zero"], values[":one"] = {"N": "0"}, {"N": "1"}
        parts.append("#at = if_not_exists(#at, :zero) + :one")
    values[":from"] = {"S": job["state_key"]}
    expression = "SET " + ", ".join(parts) + (" REMOVE " + ", ".join(removes) if removes else "")
    return {"TableName": _jobs(), "Key": {"task_id": {"S": job["task_id"]}, "device_name": {"S": job["device_name"]}},
            "UpdateExpression": expression, "ConditionExpression": "#sk = :from",
            "ExpressionAttributeNames": names, "ExpressionAttributeValues": values}


def _counter_update(task_id: str, moves: dict[str, int], *, running: bool = False,
                    extra_sets: dict[str, Any] | None = None, extra_adds: dict[str, int] | None = None
                    ) -> dict[str, Any]:
    names, values, adds, sets = {}, {}, [], []
    for i, (attr, n) in enumerate([*moves.items(), *(extra_adds or {}).items()]):
        if not n:
            continue
        names[f"#c{i}"] = attr
        values[f":c{i}"] = {"N": str(n)}
        adds.append(f"#c{i} :c{i}")
    for i, (attr, value) in enumerate((extra_sets or {}).items()):
        names[f"#e{i}"] = attr
        values[f":e{i}"] = _av(value)
        sets.append(f"#e{i} = :e{i}")
    expression = ("SET " + ", ".join(sets) + " " if sets else "") + ("ADD " + ", ".join(adds) if adds else "")
    update: dict[str, Any] = {"TableName": _tasks(), "Key": {"task_id": {"S": task_id}},
                              "UpdateExpression": expression.strip(), "ExpressionAttributeNames": names,
                              "ExpressionAttributeValues": values}
    if running:
        names["#st"] = "status"
        values[":created"] = {"S": "created"}
        update["ConditionExpression"] = "#st = :created"
    return update


def _move(job: dict[str, Any], to: str, *, running: bool = False, **kw: Any) -> bool:
    """Move one job (and its task's counters, in the same transaction); False when the job is no
    longer in the state it was read in (or, with ``running``, the task stopped)."""
    update = _job_update(job, to, **kw)
    frm = job["state"]
    if frm == to and not running:
        try:
            _ddb().update_item(**update)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
    moves = {COUNTERS[frm]: -1, COUNTERS[to]: 1} if frm != to else {}
    if moves:
        task_item = {"Update": _counter_update(job["task_id"], moves, running=running)}
    else:  # same state, the task must still run: a check, nothing to count
        task_item = {"ConditionCheck": {"TableName": _tasks(), "Key": {"task_id": {"S": job["task_id"]}},
                                        "ConditionExpression": "#st = :created",
                                        "ExpressionAttributeNames": {"#st": "status"},
                                        "ExpressionAttributeValues": {":created": {"S": "created"}}}}
    for attempt in range(5):
        try:
            _ddb().transact_write_items(TransactItems=[{"Update": update}, task_item])
            return True
        except ClientError as exc:
            reasons = _reasons(exc)
            if "ConditionalCheckFailed" in reasons:
                return False
            if "TransactionConflict" in reasons and attempt < 4:
                time.sleep(0.02 * 2 ** attempt)
                continue
            raise
    return False


def _apply(task_id: str, dn: str, decide: Callable[[dict[str, Any]], Any], first: dict[str, Any] | None = None
           ) -> Any:
    """Decide on ``first`` (often a GSI copy, which may lag), then on consistent reads: again when
    the job moved under us (False), and once more when a possibly stale copy said "nothing to do"."""
    job, fresh = first, first is None
    for _ in range(4):
        if job is None:
            job, fresh = _job(task_id, dn), True
            if job is None:
                return None
        outcome = decide(job)
        if outcome is False or (outcome is None and not fresh):
            job = None
            continue
        return outcome
    return None


# ===================================================================== downlink messages


def notification(task: dict[str, Any], url: str) -> dict[str, Any]:
    if task["kind"] == FIRMWARE_KIND:
        return {"type": "update_firmware", "version": task["target_version"], "url": url, "md5sum": task["md5"],
                "file_size": int(task["size"]), "user_defined": task.get("user_defined") or ""}
    return {"type": "download", "name": task["target_version"], "size": int(task["size"]), "md5sum": task["md5"],
            "url": url}


def _publish(task: dict[str, Any], pushes: list[tuple[dict[str, Any], dict[str, Any]]]) -> int:
    """Publish notifications; content logs batch-written; returns how many were received."""
    from .telemetry import deliver

    family = DOWN_FAMILY[task["kind"]]
    rows, received = [], 0
    tally = analytics.Tally()
    sends: list[tuple[dict[str, Any], str, dict[str, Any]]] = []
    for job, message in pushes:
        dollar = job.get("dollar")
        for form in ([dollar] if dollar is not None else [False, True]):
            sends.append((job, topics.down(family, job["product_id"], job["device_name"], dollar=form), message))
    if len(sends) > PARALLEL_PUBLISH_OVER:
        # IoT Core's data plane is one HTTPS request per message: a chunk of 500 in parallel
        # stays seconds, not minutes, inside the worker's time limit
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(PUBLISH_THREADS) as pool:
            results = list(pool.map(lambda s: deliver(s[1], s[2], 1), sends))
    else:
        results = [deliver(topic, message, 1) for _, topic, message in sends]
    ok_by_job: dict[str, bool] = {}
    for (job, topic, message), ok in zip(sends, results):
        ok_by_job[job["device_name"]] = ok_by_job.get(job["device_name"], False) or ok
        rows.append(device_logs.entry(job["product_id"], job["device_name"], "content", direction="down",
                                      topic=topic, payload=message))
    for job, _ in pushes:
        ok = ok_by_job.get(job["device_name"], False)
        received += ok
        tally.add(job["product_id"], "downlink", 1)
        if not ok:
            tally.add(job["product_id"], "downlink_fail", 1)
    _write_rows(rows)
    tally.flush()
    return received


def _write_rows(rows: list[Any]) -> None:
    if not rows:
        return
    table = rows[0].Meta.table_name
    items = [r.serialize() for r in rows]
    for start in range(0, len(items), 25):
        request: dict[str, Any] = {table: [{"PutRequest": {"Item": it}} for it in items[start:start + 25]]}
        for attempt in range(6):
            try:
                out = _ddb().batch_write_item(RequestItems=request)
            except ClientError:
                logger.exception("OTA content logs not written")
                break
            request = out.get("UnprocessedItems") or {}
            if not request:
                break
            time.sleep(0.05 * 2 ** attempt)


# ===================================================================== steps


def plan_step(body: dict[str, Any]) -> None:
    """One chunk of targets → pending jobs (see the module doc)."""
    task = _task(body["task_id"])
    if task is None or task["status"] != "creating" or (task.get("plan_cursor") or "") != body.get("cursor", ""):
        return  # stopped, or a re-delivered chunk the cursor has passed
    cursor = json.loads(task["plan_cursor"]) if task.get("plan_cursor") else {}
    if cursor.get("end"):
        return _begin(task)
    chunk = settings().ota_chunk
    targets: list[dict[str, Any]] = []
    rejected: list[dict[str, str]] = []
    if task.get("names_key"):
        names = files.get_text(task["names_key"]).split("\n")
        offset = int(cursor.get("o", 0))
        part = names[offset:offset + chunk]
        targets, rejected = _known_devices(task, part)
        nxt = {"o": offset + len(part)} if offset + len(part) < len(names) else {"end": True}
    else:
        versions = task.get("source_versions") or []
        vi = int(cursor.get("v", 0))
        request: dict[str, Any] = {
            "TableName": settings().table("devices"), "IndexName": "firmware-index", "Limit": chunk,
            "KeyConditionExpression": "#p = :p AND #fw = :v",
            "ExpressionAttributeNames": {"#p": "product_id", "#fw": "firmware_version", "#dn": "device_name",
                                         "#en": "enabled", "#dl": "dollar"},
            "ExpressionAttributeValues": {":p": {"S": task["product_id"]}, ":v": {"S": versions[vi]}},
            "ProjectionExpression": "#p, #dn, #fw, #en, #dl"}
        if cursor.get("k"):
            request["ExclusiveStartKey"] = cursor["k"]
        out = _ddb().query(**request)
        for raw in out.get("Items", []):
            dev = _plain(raw)
            if dev.get("enabled", True):
                targets.append(dev)
        if out.get("LastEvaluatedKey"):
            nxt = {"v": vi, "k": out["LastEvaluatedKey"]}
        else:
            nxt = {"v": vi + 1} if vi + 1 < len(versions) else {"end": True}
    _put_jobs(task, targets)
    room = max(0, MAX_REJECTED_LISTED - len(task.get("rejected") or []))
    new_cursor = json.dumps(nxt, sort_keys=True, separators=(",", ":"))
    sets: dict[str, Any] = {"plan_cursor": new_cursor, "updated_at": clock.now_s()}
    if rejected and room:
        sets["rejected"] = (task.get("rejected") or []) + rejected[:room]
    update = _counter_update(task["task_id"], {"n_total": len(targets), "n_pending": len(targets),
                                               "n_rejected": len(rejected)}, extra_sets=sets)
    update["ConditionExpression"] = "#cur = :cur AND #st = :creating"
    update["ExpressionAttributeNames"].update({"#cur": "plan_cursor", "#st": "status"})
    update["ExpressionAttributeValues"].update({":cur": {"S": task.get("plan_cursor") or ""},
                                                ":creating": {"S": "creating"}})
    try:
        _ddb().update_item(**update)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            return  # another delivery of this chunk won
        raise
    jobs.enqueue("ota.plan", {"task_id": task["task_id"], "cursor": new_cursor})


def _known_devices(task: dict[str, Any], names: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    rejected = [{"device_name": n[:64], "reason": "invalid device name"} for n in names
                if not DEVICE_NAME_RE.fullmatch(n)]
    valid = [n for n in names if DEVICE_NAME_RE.fullmatch(n)]
    table = settings().table("devices")
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(valid), 100):
        pending: dict[str, Any] = {table: {
            "Keys": [{"product_id": {"S": task["product_id"]}, "device_name": {"S": n}} for n in valid[start:start + 100]],
            "ProjectionExpression": "#p, #dn, #fw, #en, #dl",
            "ExpressionAttributeNames": {"#p": "product_id", "#dn": "device_name", "#fw": "firmware_version",
                                         "#en": "enabled", "#dl": "dollar"}}}
        for attempt in range(8):
            out = _ddb().batch_get_item(RequestItems=pending)
            for raw in (out.get("Responses") or {}).get(table, []):
                dev = _plain(raw)
                found[dev["device_name"]] = dev
            pending = out.get("UnprocessedKeys") or {}
            if not pending:
                break
            time.sleep(0.05 * 2 ** attempt)
        if pending:
            raise jobs.Retry("device reads stayed unprocessed")
    targets = []
    versions = task.get("source_versions") or []
    for n in valid:
        dev = found.get(n)
        if dev is None:
            rejected.append({"device_name": n, "reason": "device does not exist"})
        elif not dev.get("enabled", True):
            rejected.append({"device_name": n, "reason": "device is disabled"})
        elif versions and dev.get("firmware_version") not in versions:
            running = dev.get("firmware_version") or "no reported version"
            rejected.append({"device_name": n, "reason": f"device runs {running}, not a source version"})
        else:
            targets.append(dev)
    return targets, rejected


def _new_job(task: dict[str, Any], dev: dict[str, Any]) -> dict[str, Any]:
    dn = dev["device_name"]
    waiting = task.get("confirm") == "user_confirm"
    job = {"task_id": task["task_id"], "device_name": dn, "product_id": task["product_id"],
           "firmware_id": task["firmware_id"], "kind": task["kind"], "active_device": f"{task['product_id']}/{dn}",
           "source_version": dev.get("firmware_version"), "target_version": task["target_version"],
           "attempts": 0, "created_at": clock.now_s(), "updated_at": clock.now_s(),
           **_keys(task["task_id"], dn, task["firmware_id"], PENDING, waiting)}
    if dev.get("dollar") is not None:
        job["dollar"] = bool(dev["dollar"])
    return job


def _put_jobs(task: dict[str, Any], targets: list[dict[str, Any]]) -> None:
    items = [{k: _av(v) for k, v in _new_job(task, dev).items() if v is not None} for dev in targets]
    for start in range(0, len(items), 25):
        request: dict[str, Any] = {_jobs(): [{"PutRequest": {"Item": it}} for it in items[start:start + 25]]}
        for attempt in range(8):
            out = _ddb().batch_write_item(RequestItems=request)
            request = out.get("UnprocessedItems") or {}
            if not request:
                break
            time.sleep(0.05 * 2 ** attempt)
        if request:
            raise jobs.Retry("job writes stayed unprocessed")


def _begin(task: dict[str, Any]) -> None:
    now = clock.now_s()
    try:
        _ddb().update_item(TableName=_tasks(), Key={"task_id": {"S": task["task_id"]}},
                           UpdateExpression="SET #st = :created, #live = :one, #pl = :t, #sa = :now",
                           ConditionExpression="#st = :creating",
                           ExpressionAttributeNames={"#st": "status", "#live": "live", "#pl": "planned",
                                                     "#sa": "started_at"},
                           ExpressionAttributeValues={":created": {"S": "created"}, ":one": {"S": "1"},
                                                      ":t": {"BOOL": True}, ":now": {"N": str(now)},
                                                      ":creating": {"S": "creating"}})
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            return
        raise
    _forget_live()
    events.emit(f"{EVENT_PREFIX[task['kind']]}.task.started", task["product_id"], task_id=task["task_id"],
                firmware_id=task["firmware_id"], target_version=task["target_version"],
                total=int(task.get("n_total") or 0), rejected=int(task.get("n_rejected") or 0))
    jobs.enqueue("ota.dispatch", {"task_id": task["task_id"]})


def dispatch_step(body: dict[str, Any]) -> None:
    """Push one chunk of pending jobs (rate-limited); chain the next."""
    task = _task(body["task_id"])
    if task is None or task["status"] != "created":
        return
    now = clock.now()
    limit = settings().ota_chunk
    rate = int(task.get("rate_per_minute") or 0)
    window = int(now // _minute()) if rate else None
    used = 0
    if rate:
        used = int(task.get("window_count") or 0) if task.get("window") == window else 0
        if used >= rate:
            jobs.enqueue("ota.dispatch", {"task_id": task["task_id"]},
                         delay_s=max(1, math.ceil((window + 1) * _minute() - now)))
            return
        limit = min(limit, rate - used)
    out = _ddb().query(TableName=_jobs(), IndexName="task-state-index", Limit=limit,
                       KeyConditionExpression="#t = :t AND begins_with(#sk, :p)",
                       ExpressionAttributeNames={"#t": "task_id", "#sk": "state_key"},
                       ExpressionAttributeValues={":t": {"S": task["task_id"]}, ":p": {"S": f"{PENDING}#"}})
    pending = [_plain(i) for i in out.get("Items", [])]
    if not pending:
        _maybe_finish(task["task_id"])
        return
    due = now + float(task["timeout_minutes"]) * _minute()
    pushed: list[dict[str, Any]] = []
    stopped = False
    for start in range(0, len(pending), TX_JOBS):
        part = pending[start:start + TX_JOBS]
        while part:
            sets: dict[str, Any] = {}
            adds: dict[str, int] = {}
            if rate:
                if task.get("window") == window:
                    adds["window_count"] = len(part)
                else:
                    sets.update(window=window, window_count=len(part))
                    task["window"] = window
            counter = _counter_update(task["task_id"], {"n_pending": -len(part), "n_pushed": len(part)},
                                      running=True, extra_sets=sets, extra_adds=adds)
            updates = [_job_update(j, PUSHED, due_at=due, attempt=True, sets={"pushed_at": int(now)}) for j in part]
            try:
                _ddb().transact_write_items(TransactItems=[{"Update": counter}, *({"Update": u} for u in updates)])
                pushed += part
                break
            except ClientError as exc:
                reasons = _reasons(exc)
                if not reasons:
                    raise
                if reasons[0] == "ConditionalCheckFailed":
                    stopped = True  # the task was cancelled or aborted meanwhile
                    break
                lost = {i - 1 for i, r in enumerate(reasons) if i and r == "ConditionalCheckFailed"}
                if not lost and "TransactionConflict" not in reasons:
                    raise
                part = [j for i, j in enumerate(part) if i not in lost]
        if stopped:
            break
    if pushed:
        url = files.download_url(task["file_key"])
        message = notification(task, url)
        _publish(task, [(j, message) for j in pushed])
        jobs.enqueue("ota.sweep", {"task_id": task["task_id"]},
                     delay_s=max(1, math.ceil(float(task["timeout_minutes"]) * _minute()) + 1))
    if stopped:
        return
    if len(pending) >= limit:
        delay = 0
        if rate and used + len(pending) >= rate:  # this window's budget is spent: wait for the next
            delay = max(1, math.ceil((window + 1) * _minute() - clock.now()))
        jobs.enqueue("ota.dispatch", {"task_id": task["task_id"]}, delay_s=delay)
    else:
        _maybe_finish(task["task_id"])


def sweep_step(body: dict[str, Any]) -> None:
    """Timed-out pushed/upgrading jobs: re-push (up to max_retries) or fail with "timeout"."""
    task = _task(body["task_id"])
    if task is None or task["status"] != "created":
        return
    now = clock.now()
    out = _ddb().query(TableName=_jobs(), IndexName="due-index", Limit=settings().ota_chunk,
                       KeyConditionExpression="#t = :t AND #d <= :now",
                       ExpressionAttributeNames={"#t": "task_id", "#d": "due_at"},
                       ExpressionAttributeValues={":t": {"S": task["task_id"]}, ":now": {"N": str(int(now))}})
    due_jobs = [_plain(i) for i in out.get("Items", [])]
    repushed: list[dict[str, Any]] = []
    failed = 0
    new_due = now + float(task["timeout_minutes"]) * _minute()
    for job in due_jobs:
        def decide(j: dict[str, Any]) -> Any:
            if j["state"] not in (PUSHED, UPGRADING) or float(j.get("due_at") or 0) > now:
                return None
            if int(j.get("attempts") or 0) > int(task.get("max_retries") or 0):
                ok = _move(j, FAILED, sets={"reason": "timeout", "detail": None})
                return "failed" if ok else False
            ok = _move(j, PUSHED, due_at=new_due, attempt=True, running=True,
                       sets={"pushed_at": int(now), "detail": None, "percent": None})
            return j if ok else False

        outcome = _apply(job["task_id"], job["device_name"], decide, first=job)
        if outcome == "failed":
            failed += 1
            _device_failed(task, job, "timeout")
        elif isinstance(outcome, dict):
            repushed.append(outcome)
    if repushed:
        message = notification(task, files.download_url(task["file_key"]))
        _publish(task, [(j, message) for j in repushed])
    if failed:
        if not _maybe_abort(task["task_id"]):
            _maybe_finish(task["task_id"])
    if len(due_jobs) >= settings().ota_chunk:
        jobs.enqueue("ota.sweep", {"task_id": task["task_id"]})
    elif repushed:
        jobs.enqueue("ota.sweep", {"task_id": task["task_id"]}, delay_s=max(1, math.ceil(new_due - clock.now()) + 1))


def close_step(body: dict[str, Any]) -> None:
    """Fail the unfinished jobs of a stopped task with ``reason`` (chunked)."""
    task = _task(body["task_id"])
    if task is None or task["status"] not in ("cancelled", "failed"):
        return
    reason = body.get("reason") or "cancelled"
    moved = 0
    for state in ACTIVE:
        out = _ddb().query(TableName=_jobs(), IndexName="task-state-index", Limit=settings().ota_chunk,
                           KeyConditionExpression="#t = :t AND begins_with(#sk, :p)",
                           ExpressionAttributeNames={"#t": "task_id", "#sk": "state_key"},
                           ExpressionAttributeValues={":t": {"S": task["task_id"]}, ":p": {"S": state}})
        for raw in out.get("Items", []):
            job = _plain(raw)
            _apply(job["task_id"], job["device_name"],
                   lambda j: None if j["state"] not in ACTIVE else _move(j, FAILED, sets={"reason": reason}),
                   first=job)
            moved += 1
    if moved:
        jobs.enqueue("ota.close", body)


def tick() -> None:
    """Once a minute: a sweep for every running task (timeouts) and a dispatch for those with a
    rollout rate (restarts a chain a crash may have broken; dispatch is idempotent)."""
    steps: list[tuple[str, dict[str, Any]]] = []
    for task in _live_tasks(fresh=True):
        steps.append(("ota.sweep", {"task_id": task["task_id"]}))
        if int(task.get("n_pending") or 0):
            steps.append(("ota.dispatch", {"task_id": task["task_id"]}))
    if steps:
        jobs.enqueue_many(steps)


# ===================================================================== task outcomes


def _device_failed(task: dict[str, Any], job: dict[str, Any], reason: str) -> None:
    events.emit(f"{EVENT_PREFIX[task['kind']]}.device.failed", task["product_id"], task_id=task["task_id"],
                device_name=job["device_name"], reason=reason, target_version=task.get("target_version"))


def _finish(task_id: str, status: str, reason: str | None, condition_zero: bool) -> dict[str, Any] | None:
    names = {"#st": "status", "#live": "live", "#end": "ended_at"}
    values: dict[str, Any] = {":created": {"S": "created"}, ":new": {"S": status}, ":now": {"N": str(clock.now_s())}}
    sets = "#st = :new, #end = :now"
    if reason:
        names["#r"] = "reason"
        values[":r"] = {"S": reason}
        sets += ", #r = :r"
    condition = "#st = :created"
    if condition_zero:
        names.update({"#a": "n_pending", "#b": "n_pushed", "#c": "n_upgrading", "#pl": "planned", "#m": "mode"})
        values.update({":z": {"N": "0"}, ":t": {"BOOL": True}, ":static": {"S": "static"}})
        condition += " AND #a = :z AND #b = :z AND #c = :z AND #pl = :t AND #m = :static"
    try:
        out = _ddb().update_item(TableName=_tasks(), Key={"task_id": {"S": task_id}},
                                 UpdateExpression=f"SET {sets} REMOVE #live", ConditionExpression=condition,
                                 ExpressionAttributeNames=names, ExpressionAttributeValues=values,
                                 ReturnValues="ALL_NEW")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            return None
        raise
    _forget_live()
    return _plain(out["Attributes"])


def _maybe_finish(task_id: str) -> None:
    task = _finish(task_id, "done", None, condition_zero=True)
    if task is not None:
        events.emit(f"{EVENT_PREFIX[task['kind']]}.task.done", task["product_id"], task_id=task_id,
                    firmware_id=task["firmware_id"], statistics=statistics(task))


def _maybe_abort(task_id: str) -> bool:
    task = _task(task_id)
    if task is None or task["status"] != "created" or task.get("abort_ratio") is None:
        return False
    failed, succeeded = int(task.get("n_failed") or 0), int(task.get("n_succeeded") or 0)
    decided = failed + succeeded
    if decided < int(task.get("abort_min") or 1) or failed / decided <= float(task["abort_ratio"]):
        return False
    reason = (f"aborted: {failed} of {decided} finished devices failed "
              f"({failed / decided:.0%} > {float(task['abort_ratio']):.0%})")
    done = _finish(task_id, "failed", reason, condition_zero=False)
    if done is None:
        return False
    events.emit(f"{EVENT_PREFIX[task['kind']]}.task.aborted", task["product_id"], task_id=task_id,
                firmware_id=task["firmware_id"], reason=reason, statistics=statistics(done))
    jobs.enqueue("ota.close", {"task_id": task_id, "reason": "task aborted"})
    return True


def cancel_task(task_id: str, kind: str = FIRMWARE_KIND) -> dict[str, Any]:
    task = get_task(task_id, kind)
    names = {"#st": "status", "#live": "live", "#end": "ended_at", "#r": "reason"}
    values = {":a": {"S": "creating"}, ":b": {"S": "created"}, ":c": {"S": "cancelled"},
              ":now": {"N": str(clock.now_s())}, ":r": {"S": "cancelled by the user"}}
    try:
        out = _ddb().update_item(TableName=_tasks(), Key={"task_id": {"S": task_id}},
                                 UpdateExpression="SET #st = :c, #end = :now, #r = :r REMOVE #live",
                                 ConditionExpression="#st IN (:a, :b)", ExpressionAttributeNames=names,
                                 ExpressionAttributeValues=values, ReturnValues="ALL_NEW")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            raise errors.conflict("FailedOperation.TaskNotRunning",
                                  f"task {task_id} is {task['status']}; only a running task can be cancelled",
                                  "task_id") from None
        raise
    _forget_live()
    jobs.enqueue("ota.close", {"task_id": task_id, "reason": "cancelled"})
    return view_task(_plain(out["Attributes"]))


def cancel_device(task_id: str, dn: str, kind: str = FIRMWARE_KIND) -> dict[str, Any]:
    get_task(task_id, kind)

    def decide(job: dict[str, Any]) -> Any:
        if job["state"] not in ACTIVE:
            raise errors.conflict("FailedOperation.DeviceUpgradeFinished",
                                  f"device {dn} is already {job['state']}", "device_name")
        return _move(job, FAILED, sets={"reason": "cancelled", "detail": None}) or False

    _apply(task_id, dn, decide, first=_require_job(task_id, dn))
    _maybe_finish(task_id)
    return view_job(_require_job(task_id, dn))


def retry_device(task_id: str, dn: str, kind: str = FIRMWARE_KIND) -> dict[str, Any]:
    task = get_task(task_id, kind)
    if task["status"] == "done":
        _reopen(task_id)
    elif task["status"] != "created":
        raise errors.conflict("FailedOperation.TaskNotRunning",
                              f"task {task_id} is {task['status']}; devices can be retried only in a running "
                              "or done task", "task_id")

    def decide(job: dict[str, Any]) -> Any:
        if job["state"] != FAILED:
            raise errors.conflict("FailedOperation.DeviceNotFailed",
                                  f"device {dn} is {job['state']}; only a failed device can be retried", "device_name")
        ok = _move(job, PENDING, sets={"reason": None, "detail": None, "percent": None, "result_code": None,
                                       "result_msg": None, "attempts": 0,
                                       "active_device": f"{job['product_id']}/{dn}"})
        return ok or False

    _apply(task_id, dn, decide, first=_require_job(task_id, dn))
    jobs.enqueue("ota.dispatch", {"task_id": task_id})
    return view_job(_require_job(task_id, dn))


def confirm_device(task_id: str, dn: str) -> dict[str, Any]:
    """The app's approval of a user-confirm upgrade for one device."""
    task = get_task(task_id, FIRMWARE_KIND)
    if task["status"] != "created":
        raise errors.conflict("FailedOperation.TaskNotRunning", f"task {task_id} is {task['status']}", "task_id")

    def decide(job: dict[str, Any]) -> Any:
        if not str(job.get("state_key", "")).startswith(WAITING):
            raise errors.conflict("FailedOperation.DeviceNotAwaitingConfirmation",
                                  f"device {dn} is {job['state']} and not awaiting confirmation", "device_name")
        return _move(job, PENDING, sets={"confirmed_at": clock.now_s()}) or False

    _apply(task_id, dn, decide, first=_require_job(task_id, dn))
    jobs.enqueue("ota.dispatch", {"task_id": task_id})
    return view_job(_require_job(task_id, dn))


def _require_job(task_id: str, dn: str) -> dict[str, Any]:
    job = _job(task_id, dn) if DEVICE_NAME_RE.fullmatch(dn or "") else None
    if job is None:
        raise errors.not_found(errors.DEVICE_NOT_EXIST, f"device {dn} is not part of task {task_id}", "device_name")
    return job


def _reopen(task_id: str) -> None:
    try:
        _ddb().update_item(TableName=_tasks(), Key={"task_id": {"S": task_id}},
                           UpdateExpression="SET #st = :created, #live = :one REMOVE #end",
                           ConditionExpression="#st = :done",
                           ExpressionAttributeNames={"#st": "status", "#live": "live", "#end": "ended_at"},
                           ExpressionAttributeValues={":created": {"S": "created"}, ":one": {"S": "1"},
                                                      ":done": {"S": "done"}})
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
            raise
    _forget_live()


# ===================================================================== live tasks (cached)

_live_cache: dict[str, Any] = {"at": 0.0, "tasks": []}
_live_lock = threading.Lock()
LIVE_TTL_S = 2.0


def _forget_live() -> None:
    _live_cache["at"] = 0.0


def _live_tasks(fresh: bool = False) -> list[dict[str, Any]]:
    with _live_lock:
        if not fresh and time.monotonic() - _live_cache["at"] < LIVE_TTL_S:
            return _live_cache["tasks"]
        tasks, key = [], None
        while True:
            request: dict[str, Any] = {"TableName": _tasks(), "IndexName": "live-index",
                                       "KeyConditionExpression": "#l = :one", "ExpressionAttributeNames": {"#l": "live"},
                                       "ExpressionAttributeValues": {":one": {"S": "1"}}}
            if key:
                request["ExclusiveStartKey"] = key
            out = _ddb().query(**request)
            tasks += [_plain(i) for i in out.get("Items", [])]
            key = out.get("LastEvaluatedKey")
            if not key:
                break
        _live_cache.update(at=time.monotonic(), tasks=tasks)
        return tasks


# ===================================================================== device protocol (SPEC §8.4, §8.6)


def _body(dev: Any, m: Any) -> dict[str, Any] | None:
    try:
        body = json.loads(m.msg.payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        dev.uplink_fail += 1
        dev.diagnostic(device_logs.PAYLOAD_NOT_JSON, "the payload is not a JSON object", m)
        return None
    return body


def on_ota_report(dev: Any, m: Any) -> None:
    """``ota/report`` (telemetry.FAMILY_HANDLERS): report_version and report_progress."""
    body = _body(dev, m)
    if body is None:
        return
    kind = body.get("type")
    report = body.get("report") if isinstance(body.get("report"), dict) else {}
    if kind == "report_version":
        _report_version(dev, m, report)
    elif kind == "report_progress":
        _report_progress(dev, m, report, FIRMWARE_KIND)
    else:
        dev.uplink_fail += 1
        dev.diagnostic(device_logs.PAYLOAD_NO_FIELD, "ota/report supports type report_version and report_progress", m)


def on_resource_report(dev: Any, m: Any) -> None:
    """``resource/up/service``: report_download_progress."""
    body = _body(dev, m)
    if body is None:
        return
    if body.get("type") != "report_download_progress":
        dev.uplink_fail += 1
        dev.diagnostic(device_logs.PAYLOAD_NO_FIELD, "resource/up/service supports type report_download_progress", m)
        return
    report = body.get("report") if isinstance(body.get("report"), dict) else body
    _report_progress(dev, m, report, RESOURCE_KIND)


def _report_version(dev: Any, m: Any, report: dict[str, Any]) -> None:
    version = report.get("version")
    if not isinstance(version, str) or not VERSION_RE.fullmatch(version):
        dev.uplink_fail += 1
        reason = "report.version must be 1-32 characters of A-Z a-z 0-9 . _ -"
        dev.diagnostic(device_logs.PAYLOAD_NO_FIELD, reason, m)
        dev.reply(m, {"type": "report_version_rsp", "result_code": 1, "result_msg": reason,
                      "version": version if isinstance(version, str) else ""}, qos=1)
        return
    dev.reply(m, {"type": "report_version_rsp", "result_code": 0, "result_msg": "success", "version": version}, qos=1)
    from .telemetry import plain  # noqa: PLC0415

    info = dict(dev.info) if dev.info is not None else (plain(dev.rec.info) if dev.rec is not None and
                                                        dev.rec.info is not None else {})
    info.update(fw_ver=version, time=m.msg.timestamp_ms or clock.now_ms())
    dev.info, dev.firmware = info, version  # stored by the batch's one device update
    for job in _active_jobs(dev.pid, dev.dn, FIRMWARE_KIND):
        _version_of_job(dev, m, job, version)
    _join_dynamic(dev, version)


def _version_of_job(dev: Any, m: Any, job: dict[str, Any], version: str) -> None:
    task = _task(job["task_id"])
    if task is None or task["status"] != "created":
        return
    now = clock.now()

    def decide(j: dict[str, Any]) -> Any:
        if j["state"] not in (PUSHED, UPGRADING):
            return None  # pending: the dispatcher pushes it (at the task's rate)
        if version == j["target_version"]:
            ok = _move(j, SUCCEEDED, sets={"running_version": version, "detail": None, "percent": 100})
            return "succeeded" if ok else False
        attempts = int(j.get("attempts") or 0)
        if j["state"] == UPGRADING and attempts > int(task.get("max_retries") or 0):
            reason = f"the device still runs {version} after the upgrade"
            ok = _move(j, FAILED, sets={"running_version": version, "reason": reason})
            return ("failed", reason) if ok else False
        ok = _move(j, PUSHED, due_at=now + float(task["timeout_minutes"]) * _minute(),
                   attempt=j["state"] == UPGRADING, running=True,
                   sets={"running_version": version, "detail": None, "percent": None, "dollar": m.topic.dollar})
        return "repush" if ok else False

    outcome = _apply(job["task_id"], job["device_name"], decide, first=job)
    if outcome == "succeeded":
        _maybe_finish(task["task_id"])
    elif isinstance(outcome, tuple):
        _device_failed(task, job, outcome[1])
        if not _maybe_abort(task["task_id"]):
            _maybe_finish(task["task_id"])
    elif outcome == "repush":
        dev.reply(m, notification(task, files.download_url(task["file_key"])), qos=1)


def _join_dynamic(dev: Any, version: str) -> None:
    for task in _live_tasks():
        if (task.get("kind") != FIRMWARE_KIND or task.get("mode") != "dynamic" or task["product_id"] != dev.pid
                or version not in (task.get("source_versions") or [])):
            continue
        job = _new_job(task, {"device_name": dev.dn, "firmware_version": version, "dollar": dev.dollar})
        try:
            _ddb().transact_write_items(TransactItems=[
                {"Put": {"TableName": _jobs(), "Item": {k: _av(v) for k, v in job.items() if v is not None},
                         "ConditionExpression": "attribute_not_exists(task_id)"}},
                {"Update": _counter_update(task["task_id"], {"n_total": 1, "n_pending": 1}, running=True)}])
        except ClientError as exc:
            if _reasons(exc):
                continue  # already part of the task, or the task stopped
            raise
        jobs.enqueue("ota.dispatch", {"task_id": task["task_id"]})


def _text_number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,4}", value.strip()):
        return int(value.strip())
    return None


def _report_progress(dev: Any, m: Any, report: dict[str, Any], kind: str) -> None:
    progress = report.get("progress")
    state = progress.get("state") if isinstance(progress, dict) else None
    allowed = ("downloading", "burning", "done", "fail") if kind == FIRMWARE_KIND else ("downloading", "done", "fail")
    if state not in allowed:
        dev.uplink_fail += 1
        dev.diagnostic(device_logs.PAYLOAD_NO_FIELD, f"progress.state must be one of {', '.join(allowed)}", m)
        return
    percent = _text_number(progress.get("percent"))
    code = _text_number(progress.get("result_code"))
    msg = progress.get("result_msg") if isinstance(progress.get("result_msg"), str) else None
    target = report.get("version") if kind == FIRMWARE_KIND else (report.get("name") or report.get("resource_name"))
    candidates = _active_jobs(dev.pid, dev.dn, kind)
    chosen = [j for j in candidates if j.get("target_version") == target] or \
        (candidates if len(candidates) == 1 else [])
    if not chosen:
        logger.info("progress report without an unfinished job ignored", extra={"device": f"{dev.pid}/{dev.dn}"})
        return  # late or duplicate: the job is finished (or never was)
    job = chosen[0]
    task = _task(job["task_id"])
    if task is None:
        return
    now = clock.now()
    due = now + float(task["timeout_minutes"]) * _minute()

    def decide(j: dict[str, Any]) -> Any:
        if j["state"] not in (PUSHED, UPGRADING):
            return None
        if state == "fail":
            text = msg or PROGRESS_CODES.get(str(code), "failed")
            reason = f"device reported {code if code is not None else 'an error'}: {text}"
            ok = _move(j, FAILED, sets={"result_code": code, "result_msg": msg, "reason": reason,
                                        "detail": "fail"})
            return ("failed", reason) if ok else False
        if state == "done" and kind == RESOURCE_KIND:
            ok = _move(j, SUCCEEDED, sets={"detail": "done", "percent": 100, "result_code": code or 0,
                                           "result_msg": msg})
            return "succeeded" if ok else False
        pct = 100 if state == "done" else (max(0, min(100, percent)) if percent is not None else None)
        ok = _move(j, UPGRADING, due_at=due, sets={"detail": state, "percent": pct, "result_code": code,
                                                   "result_msg": msg})
        return "progress" if ok else False

    outcome = _apply(job["task_id"], job["device_name"], decide, first=job)
    if isinstance(outcome, tuple):
        _device_failed(task, job, outcome[1])
        if not _maybe_abort(task["task_id"]):
            _maybe_finish(task["task_id"])
    elif outcome == "succeeded":
        _maybe_finish(task["task_id"])
