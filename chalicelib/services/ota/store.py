"""OTA's shared ground (SPEC §8): tables, per-device job state changes, task outcomes, live tasks.

Every job state change is a conditional update on the job's current state, done in one
transaction with the task's counters (:func:`move`, :func:`apply`), so an illegal transition, a
duplicate or a late device report changes nothing and the statistics never drift.  Per-device
states (§8.3): ``pending`` → ``pushed`` → ``upgrading`` (detail downloading n% / burning /
done) → ``succeeded`` | ``failed``.  Resource jobs show ``upgrading`` as ``downloading`` and
succeed on ``done``; firmware jobs succeed when the device then reports the target version.

A "minute" of the task settings (timeouts, rollout rate) lasts ``settings().ota_minute_s``
seconds (:func:`minute`), so tests run the same rules in seconds.  The three audiences —
``tasks`` (the HTTP API), ``rollout`` (the queued steps) and ``device`` (the device protocol) —
build on this module and never on each other's privates.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.exceptions import ClientError

from ...core import clock, errors
from ...core.config import settings
from ...core.observability import logger
from ...models import dynamo
from ...models.ota import FIRMWARE_KIND, RESOURCE_KIND
from ...protocol import topics
from .. import analytics, device_logs, downlink, events, jobs

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


PARALLEL_PUBLISH_OVER = 20


PUBLISH_THREADS = 16


DEVICE_NAME_RE = re.compile(r"[A-Za-z0-9_:\-]{1,48}")


VERSION_RE = re.compile(r"[A-Za-z0-9._\-]{1,32}")


COUNTERS = {
    PENDING: "n_pending",
    PUSHED: "n_pushed",
    UPGRADING: "n_upgrading",
    SUCCEEDED: "n_succeeded",
    FAILED: "n_failed",
}


DOWN_FAMILY = {FIRMWARE_KIND: "ota/update", RESOURCE_KIND: "resource/down/service"}


EVENT_PREFIX = {FIRMWARE_KIND: "ota", RESOURCE_KIND: "resource"}


def tasks_table() -> str:
    return settings().table("ota_tasks")


def jobs_table() -> str:
    return settings().table("ota_jobs")


def minute() -> float:
    return settings().ota_minute_s


def cancellation_reasons(exc: ClientError) -> list[str | None]:
    return [r.get("Code") if r.get("Code") != "None" else None for r in exc.response.get("CancellationReasons") or []]


def read_task(task_id: str) -> dict[str, Any] | None:
    out = dynamo.client().get_item(TableName=tasks_table(), Key={"task_id": {"S": task_id}}, ConsistentRead=True)
    return dynamo.item(out["Item"]) if out.get("Item") else None


def statistics(task: dict[str, Any]) -> dict[str, int]:
    stats = {"total": int(task.get("n_total") or 0)}
    for state, attr in COUNTERS.items():
        stats[state] = int(task.get(attr) or 0)
    if task.get("kind") == RESOURCE_KIND:
        stats["downloading"] = stats.pop(UPGRADING)
    return stats


def read_job(task_id: str, dn: str) -> dict[str, Any] | None:
    out = dynamo.client().get_item(
        TableName=jobs_table(), Key={"task_id": {"S": task_id}, "device_name": {"S": dn}}, ConsistentRead=True
    )
    return dynamo.item(out["Item"]) if out.get("Item") else None


def active_jobs(pid: str, dn: str, kind: str) -> list[dict[str, Any]]:
    out = dynamo.client().query(
        TableName=jobs_table(),
        IndexName="device-active-index",
        KeyConditionExpression="#a = :a",
        ExpressionAttributeNames={"#a": "active_device"},
        ExpressionAttributeValues={":a": {"S": f"{pid}/{dn}"}},
    )
    return [j for j in (dynamo.item(i) for i in out.get("Items", [])) if j.get("kind") == kind]


def job_keys(task_id: str, dn: str, firmware_id: str, state: str, waiting: bool = False) -> dict[str, Any]:
    prefix = WAITING if waiting else state
    return {"state": state, "state_key": f"{prefix}#{dn}", "fw_state_key": f"{prefix}#{task_id}#{dn}"}


def job_update(
    job: dict[str, Any],
    to: str,
    *,
    sets: dict[str, Any] | None = None,
    due_at: float | None = None,
    waiting: bool = False,
    attempt: bool = False,
) -> dict[str, Any]:
    """The Update of one job moving from its current state (condition) to ``to``."""
    values: dict[str, Any] = {}
    names: dict[str, str] = {"#sk": "state_key"}
    assigns: dict[str, Any] = {
        **job_keys(job["task_id"], job["device_name"], job["firmware_id"], to, waiting),
        "updated_at": clock.now_s(),
        **(sets or {}),
    }
    parts, removes = [], []
    for i, (attr, value) in enumerate(assigns.items()):
        names[f"#s{i}"] = attr
        if value is None:
            removes.append(f"#s{i}")
        else:
            values[f":s{i}"] = dynamo.to_av(value)
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
    return {
        "TableName": jobs_table(),
        "Key": {"task_id": {"S": job["task_id"]}, "device_name": {"S": job["device_name"]}},
        "UpdateExpression": expression,
        "ConditionExpression": "#sk = :from",
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }


def counter_update(
    task_id: str,
    moves: dict[str, int],
    *,
    running: bool = False,
    extra_sets: dict[str, Any] | None = None,
    extra_adds: dict[str, int] | None = None,
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
        values[f":e{i}"] = dynamo.to_av(value)
        sets.append(f"#e{i} = :e{i}")
    expression = ("SET " + ", ".join(sets) + " " if sets else "") + ("ADD " + ", ".join(adds) if adds else "")
    update: dict[str, Any] = {
        "TableName": tasks_table(),
        "Key": {"task_id": {"S": task_id}},
        "UpdateExpression": expression.strip(),
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }
    if running:
        names["#st"] = "status"
        values[":created"] = {"S": "created"}
        update["ConditionExpression"] = "#st = :created"
    return update


def move(job: dict[str, Any], to: str, *, running: bool = False, **kw: Any) -> bool:
    """Move one job (and its task's counters, in the same transaction); False when the job is no
    longer in the state it was read in (or, with ``running``, the task stopped)."""
    update = job_update(job, to, **kw)
    frm = job["state"]
    if frm == to and not running:
        try:
            dynamo.client().update_item(**update)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
    moves = {COUNTERS[frm]: -1, COUNTERS[to]: 1} if frm != to else {}
    if moves:
        task_item = {"Update": counter_update(job["task_id"], moves, running=running)}
    else:  # same state, the task must still run: a check, nothing to count
        task_item = {
            "ConditionCheck": {
                "TableName": tasks_table(),
                "Key": {"task_id": {"S": job["task_id"]}},
                "ConditionExpression": "#st = :created",
                "ExpressionAttributeNames": {"#st": "status"},
                "ExpressionAttributeValues": {":created": {"S": "created"}},
            }
        }
    for attempt in range(5):
        try:
            dynamo.client().transact_write_items(TransactItems=[{"Update": update}, task_item])
            return True
        except ClientError as exc:
            reasons = cancellation_reasons(exc)
            if "ConditionalCheckFailed" in reasons:
                return False
            if "TransactionConflict" in reasons and attempt < 4:
                time.sleep(0.02 * 2**attempt)
                continue
            raise
    return False


def apply(task_id: str, dn: str, decide: Callable[[dict[str, Any]], Any], first: dict[str, Any] | None = None) -> Any:
    """Decide on ``first`` (often a GSI copy, which may lag), then on consistent reads: again when
    the job moved under us (False), and once more when a possibly stale copy said "nothing to do"."""
    job, fresh = first, first is None
    for _ in range(4):
        if job is None:
            job, fresh = read_job(task_id, dn), True
            if job is None:
                return None
        outcome = decide(job)
        if outcome is False or (outcome is None and not fresh):
            job = None
            continue
        return outcome
    return None


def new_job(task: dict[str, Any], dev: dict[str, Any]) -> dict[str, Any]:
    dn = dev["device_name"]
    waiting = task.get("confirm") == "user_confirm"
    job = {
        "task_id": task["task_id"],
        "device_name": dn,
        "product_id": task["product_id"],
        "firmware_id": task["firmware_id"],
        "kind": task["kind"],
        "active_device": f"{task['product_id']}/{dn}",
        "source_version": dev.get("firmware_version"),
        "target_version": task["target_version"],
        "attempts": 0,
        "created_at": clock.now_s(),
        "updated_at": clock.now_s(),
        **job_keys(task["task_id"], dn, task["firmware_id"], PENDING, waiting),
    }
    if dev.get("dollar") is not None:
        job["dollar"] = bool(dev["dollar"])
    return job


def notification(task: dict[str, Any], url: str) -> dict[str, Any]:
    if task["kind"] == FIRMWARE_KIND:
        return {
            "type": "update_firmware",
            "version": task["target_version"],
            "url": url,
            "md5sum": task["md5"],
            "file_size": int(task["size"]),
            "user_defined": task.get("user_defined") or "",
        }
    return {
        "type": "download",
        "name": task["target_version"],
        "size": int(task["size"]),
        "md5sum": task["md5"],
        "url": url,
    }


def publish(task: dict[str, Any], pushes: list[tuple[dict[str, Any], dict[str, Any]]]) -> int:
    """Publish notifications; content logs batch-written; returns how many were received."""
    family = DOWN_FAMILY[task["kind"]]
    rows, received = [], 0
    tally = analytics.Tally()
    sends: list[tuple[dict[str, Any], str, dict[str, Any]]] = []
    for job, message in pushes:
        dollar = job.get("dollar")
        for form in [dollar] if dollar is not None else [False, True]:
            sends.append((job, topics.down(family, job["product_id"], job["device_name"], dollar=form), message))
    if len(sends) > PARALLEL_PUBLISH_OVER:
        # IoT Core's data plane is one HTTPS request per message: a chunk of 500 in parallel
        # stays seconds, not minutes, inside the worker's time limit
        with ThreadPoolExecutor(PUBLISH_THREADS) as pool:
            results = list(pool.map(lambda s: downlink.deliver(s[1], s[2], 1), sends))
    else:
        results = [downlink.deliver(topic, message, 1) for _, topic, message in sends]
    ok_by_job: dict[str, bool] = {}
    for (job, topic, message), ok in zip(sends, results, strict=True):
        ok_by_job[job["device_name"]] = ok_by_job.get(job["device_name"], False) or ok
        rows.append(
            device_logs.entry(
                job["product_id"], job["device_name"], "content", direction="down", topic=topic, payload=message
            )
        )
    for job, _ in pushes:
        ok = ok_by_job.get(job["device_name"], False)
        received += ok
        tally.add(job["product_id"], "downlink", 1)
        if not ok:
            tally.add(job["product_id"], "downlink_fail", 1)
    write_rows(rows)
    tally.flush()
    return received


def write_rows(rows: list[Any]) -> None:
    if not rows:
        return
    table = rows[0].Meta.table_name
    items = [r.serialize() for r in rows]
    for start in range(0, len(items), 25):
        request: dict[str, Any] = {table: [{"PutRequest": {"Item": it}} for it in items[start : start + 25]]}
        for attempt in range(6):
            try:
                out = dynamo.client().batch_write_item(RequestItems=request)
            except ClientError:
                logger.exception("OTA content logs not written")
                break
            request = out.get("UnprocessedItems") or {}
            if not request:
                break
            time.sleep(0.05 * 2**attempt)


def device_failed(task: dict[str, Any], job: dict[str, Any], reason: str) -> None:
    events.emit(
        f"{EVENT_PREFIX[task['kind']]}.device.failed",
        task["product_id"],
        task_id=task["task_id"],
        device_name=job["device_name"],
        reason=reason,
        target_version=task.get("target_version"),
    )


def finish(task_id: str, status: str, reason: str | None, condition_zero: bool) -> dict[str, Any] | None:
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
        out = dynamo.client().update_item(
            TableName=tasks_table(),
            Key={"task_id": {"S": task_id}},
            UpdateExpression=f"SET {sets} REMOVE #live",
            ConditionExpression=condition,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            ReturnValues="ALL_NEW",
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            return None
        raise
    forget_live()
    return dynamo.item(out["Attributes"])


def maybe_finish(task_id: str) -> None:
    task = finish(task_id, "done", None, condition_zero=True)
    if task is not None:
        events.emit(
            f"{EVENT_PREFIX[task['kind']]}.task.done",
            task["product_id"],
            task_id=task_id,
            firmware_id=task["firmware_id"],
            statistics=statistics(task),
        )


def maybe_abort(task_id: str) -> bool:
    task = read_task(task_id)
    if task is None or task["status"] != "created" or task.get("abort_ratio") is None:
        return False
    failed, succeeded = int(task.get("n_failed") or 0), int(task.get("n_succeeded") or 0)
    decided = failed + succeeded
    if decided < int(task.get("abort_min") or 1) or failed / decided <= float(task["abort_ratio"]):
        return False
    reason = (
        f"aborted: {failed} of {decided} finished devices failed "
        f"({failed / decided:.0%} > {float(task['abort_ratio']):.0%})"
    )
    done = finish(task_id, "failed", reason, condition_zero=False)
    if done is None:
        return False
    events.emit(
        f"{EVENT_PREFIX[task['kind']]}.task.aborted",
        task["product_id"],
        task_id=task_id,
        firmware_id=task["firmware_id"],
        reason=reason,
        statistics=statistics(done),
    )
    jobs.enqueue("ota.close", {"task_id": task_id, "reason": "task aborted"})
    return True


def require_job(task_id: str, dn: str) -> dict[str, Any]:
    job = read_job(task_id, dn) if DEVICE_NAME_RE.fullmatch(dn or "") else None
    if job is None:
        raise errors.DEVICE_NOT_EXIST(f"device {dn} is not part of task {task_id}", "device_name")
    return job


def reopen(task_id: str) -> None:
    try:
        dynamo.client().update_item(
            TableName=tasks_table(),
            Key={"task_id": {"S": task_id}},
            UpdateExpression="SET #st = :created, #live = :one REMOVE #end",
            ConditionExpression="#st = :done",
            ExpressionAttributeNames={"#st": "status", "#live": "live", "#end": "ended_at"},
            ExpressionAttributeValues={":created": {"S": "created"}, ":one": {"S": "1"}, ":done": {"S": "done"}},
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
            raise
    forget_live()


LIVE_TTL_S = 2.0


_live_cache: dict[str, Any] = {"at": 0.0, "tasks": []}


_live_lock = threading.Lock()


def forget_live() -> None:
    _live_cache["at"] = 0.0


def live_tasks(fresh: bool = False) -> list[dict[str, Any]]:
    with _live_lock:
        if not fresh and time.monotonic() - _live_cache["at"] < LIVE_TTL_S:
            return _live_cache["tasks"]
        tasks, key = [], None
        while True:
            request: dict[str, Any] = {
                "TableName": tasks_table(),
                "IndexName": "live-index",
                "KeyConditionExpression": "#l = :one",
                "ExpressionAttributeNames": {"#l": "live"},
                "ExpressionAttributeValues": {":one": {"S": "1"}},
            }
            if key:
                request["ExclusiveStartKey"] = key
            out = dynamo.client().query(**request)
            tasks += [dynamo.item(i) for i in out.get("Items", [])]
            key = out.get("LastEvaluatedKey")
            if not key:
                break
        _live_cache.update(at=time.monotonic(), tasks=tasks)
        return tasks
