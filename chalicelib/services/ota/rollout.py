"""OTA's queued steps (SPEC §8.2): each bounded and idempotent (services/jobs.py).

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
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from botocore.exceptions import ClientError

from ...core import clock
from ...core.config import settings
from ...models import dynamo
from .. import events, files, jobs
from . import store

MAX_REJECTED_LISTED = 100


TX_JOBS = 99


def plan_step(body: dict[str, Any]) -> None:
    """One chunk of targets → pending jobs (see the module doc)."""
    task = store.read_task(body["task_id"])
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
        part = names[offset : offset + chunk]
        targets, rejected = _known_devices(task, part)
        nxt = {"o": offset + len(part)} if offset + len(part) < len(names) else {"end": True}
    else:
        versions = task.get("source_versions") or []
        vi = int(cursor.get("v", 0))
        request: dict[str, Any] = {
            "TableName": settings().table("devices"),
            "IndexName": "firmware-index",
            "Limit": chunk,
            "KeyConditionExpression": "#p = :p AND #fw = :v",
            "ExpressionAttributeNames": {
                "#p": "product_id",
                "#fw": "firmware_version",
                "#dn": "device_name",
                "#en": "enabled",
                "#dl": "dollar",
            },
            "ExpressionAttributeValues": {":p": {"S": task["product_id"]}, ":v": {"S": versions[vi]}},
            "ProjectionExpression": "#p, #dn, #fw, #en, #dl",
        }
        if cursor.get("k"):
            request["ExclusiveStartKey"] = cursor["k"]
        out = dynamo.client().query(**request)
        for raw in out.get("Items", []):
            dev = dynamo.item(raw)
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
    update = store.counter_update(
        task["task_id"],
        {"n_total": len(targets), "n_pending": len(targets), "n_rejected": len(rejected)},
        extra_sets=sets,
    )
    update["ConditionExpression"] = "#cur = :cur AND #st = :creating"
    update["ExpressionAttributeNames"].update({"#cur": "plan_cursor", "#st": "status"})
    update["ExpressionAttributeValues"].update(
        {":cur": {"S": task.get("plan_cursor") or ""}, ":creating": {"S": "creating"}}
    )
    try:
        dynamo.client().update_item(**update)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            return  # another delivery of this chunk won
        raise
    jobs.enqueue("ota.plan", {"task_id": task["task_id"], "cursor": new_cursor})


def _known_devices(task: dict[str, Any], names: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    rejected = [
        {"device_name": n[:64], "reason": "invalid device name"} for n in names if not store.DEVICE_NAME_RE.fullmatch(n)
    ]
    valid = [n for n in names if store.DEVICE_NAME_RE.fullmatch(n)]
    table = settings().table("devices")
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(valid), 100):
        pending: dict[str, Any] | None = {
            table: {
                "Keys": [
                    {"product_id": {"S": task["product_id"]}, "device_name": {"S": n}}
                    for n in valid[start : start + 100]
                ],
                "ProjectionExpression": "#p, #dn, #fw, #en, #dl",
                "ExpressionAttributeNames": {
                    "#p": "product_id",
                    "#dn": "device_name",
                    "#fw": "firmware_version",
                    "#en": "enabled",
                    "#dl": "dollar",
                },
            }
        }
        for attempt in range(8):
            out = dynamo.client().batch_get_item(RequestItems=pending)
            for raw in (out.get("Responses") or {}).get(table, []):
                row = dynamo.item(raw)
                found[row["device_name"]] = row
            pending = out.get("UnprocessedKeys") or {}
            if not pending:
                break
            time.sleep(0.05 * 2**attempt)
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


def _put_jobs(task: dict[str, Any], targets: list[dict[str, Any]]) -> None:
    items = [{k: dynamo.to_av(v) for k, v in store.new_job(task, dev).items() if v is not None} for dev in targets]
    for start in range(0, len(items), 25):
        request: dict[str, Any] = {
            store.jobs_table(): [{"PutRequest": {"Item": it}} for it in items[start : start + 25]]
        }
        for attempt in range(8):
            out = dynamo.client().batch_write_item(RequestItems=request)
            request = out.get("UnprocessedItems") or {}
            if not request:
                break
            time.sleep(0.05 * 2**attempt)
        if request:
            raise jobs.Retry("job writes stayed unprocessed")


def _begin(task: dict[str, Any]) -> None:
    now = clock.now_s()
    try:
        dynamo.client().update_item(
            TableName=store.tasks_table(),
            Key={"task_id": {"S": task["task_id"]}},
            UpdateExpression="SET #st = :created, #live = :one, #pl = :t, #sa = :now",
            ConditionExpression="#st = :creating",
            ExpressionAttributeNames={"#st": "status", "#live": "live", "#pl": "planned", "#sa": "started_at"},
            ExpressionAttributeValues={
                ":created": {"S": "created"},
                ":one": {"S": "1"},
                ":t": {"BOOL": True},
                ":now": {"N": str(now)},
                ":creating": {"S": "creating"},
            },
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            return
        raise
    store.forget_live()
    events.emit(
        f"{store.EVENT_PREFIX[task['kind']]}.task.started",
        task["product_id"],
        task_id=task["task_id"],
        firmware_id=task["firmware_id"],
        target_version=task["target_version"],
        total=int(task.get("n_total") or 0),
        rejected=int(task.get("n_rejected") or 0),
    )
    jobs.enqueue("ota.dispatch", {"task_id": task["task_id"]})


def dispatch_step(body: dict[str, Any]) -> None:
    """Push one chunk of pending jobs (rate-limited); chain the next."""
    task = store.read_task(body["task_id"])
    if task is None or task["status"] != "created":
        return
    now = clock.now()
    limit = settings().ota_chunk
    rate = int(task.get("rate_per_minute") or 0)
    window = int(now // store.minute()) if rate else 0
    used = 0
    if rate:
        used = int(task.get("window_count") or 0) if task.get("window") == window else 0
        if used >= rate:
            jobs.enqueue(
                "ota.dispatch",
                {"task_id": task["task_id"]},
                delay_s=max(1, math.ceil((window + 1) * store.minute() - now)),
            )
            return
        limit = min(limit, rate - used)
    out = dynamo.client().query(
        TableName=store.jobs_table(),
        IndexName="task-state-index",
        Limit=limit,
        KeyConditionExpression="#t = :t AND begins_with(#sk, :p)",
        ExpressionAttributeNames={"#t": "task_id", "#sk": "state_key"},
        ExpressionAttributeValues={":t": {"S": task["task_id"]}, ":p": {"S": f"{store.PENDING}#"}},
    )
    pending = [dynamo.item(i) for i in out.get("Items", [])]
    if not pending:
        store.maybe_finish(task["task_id"])
        return
    due = now + float(task["timeout_minutes"]) * store.minute()
    pushed: list[dict[str, Any]] = []
    stopped = False
    for start in range(0, len(pending), TX_JOBS):
        part = pending[start : start + TX_JOBS]
        while part:
            sets: dict[str, Any] = {}
            adds: dict[str, int] = {}
            if rate:
                if task.get("window") == window:
                    adds["window_count"] = len(part)
                else:
                    sets.update(window=window, window_count=len(part))
                    task["window"] = window
            counter = store.counter_update(
                task["task_id"],
                {"n_pending": -len(part), "n_pushed": len(part)},
                running=True,
                extra_sets=sets,
                extra_adds=adds,
            )
            updates = [
                store.job_update(j, store.PUSHED, due_at=due, attempt=True, sets={"pushed_at": int(now)}) for j in part
            ]
            try:
                dynamo.client().transact_write_items(
                    TransactItems=[{"Update": counter}, *({"Update": u} for u in updates)]
                )
                pushed += part
                break
            except ClientError as exc:
                reasons = store.cancellation_reasons(exc)
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
        message = store.notification(task, url)
        store.publish(task, [(j, message) for j in pushed])
        jobs.enqueue(
            "ota.sweep",
            {"task_id": task["task_id"]},
            delay_s=max(1, math.ceil(float(task["timeout_minutes"]) * store.minute()) + 1),
        )
    if stopped:
        return
    if len(pending) >= limit:
        delay = 0
        if rate and used + len(pending) >= rate:  # this window's budget is spent: wait for the next
            delay = max(1, math.ceil((window + 1) * store.minute() - clock.now()))
        jobs.enqueue("ota.dispatch", {"task_id": task["task_id"]}, delay_s=delay)
    else:
        store.maybe_finish(task["task_id"])


def sweep_step(body: dict[str, Any]) -> None:
    """Timed-out pushed/upgrading jobs: re-push (up to max_retries) or fail with "timeout"."""
    task = store.read_task(body["task_id"])
    if task is None or task["status"] != "created":
        return
    now = clock.now()
    out = dynamo.client().query(
        TableName=store.jobs_table(),
        IndexName="due-index",
        Limit=settings().ota_chunk,
        KeyConditionExpression="#t = :t AND #d <= :now",
        ExpressionAttributeNames={"#t": "task_id", "#d": "due_at"},
        ExpressionAttributeValues={":t": {"S": task["task_id"]}, ":now": {"N": str(int(now))}},
    )
    due_jobs = [dynamo.item(i) for i in out.get("Items", [])]
    repushed: list[dict[str, Any]] = []
    failed = 0
    new_due = now + float(task["timeout_minutes"]) * store.minute()
    for job in due_jobs:

        def decide(j: dict[str, Any]) -> Any:
            if j["state"] not in (store.PUSHED, store.UPGRADING) or float(j.get("due_at") or 0) > now:
                return None
            if int(j.get("attempts") or 0) > int(task.get("max_retries") or 0):
                ok = store.move(j, store.FAILED, sets={"reason": "timeout", "detail": None})
                return "failed" if ok else False
            ok = store.move(
                j,
                store.PUSHED,
                due_at=new_due,
                attempt=True,
                running=True,
                sets={"pushed_at": int(now), "detail": None, "percent": None},
            )
            return j if ok else False

        outcome = store.apply(job["task_id"], job["device_name"], decide, first=job)
        if outcome == "failed":
            failed += 1
            store.device_failed(task, job, "timeout")
        elif isinstance(outcome, dict):
            repushed.append(outcome)
    if repushed:
        message = store.notification(task, files.download_url(task["file_key"]))
        store.publish(task, [(j, message) for j in repushed])
    if failed:
        if not store.maybe_abort(task["task_id"]):
            store.maybe_finish(task["task_id"])
    if len(due_jobs) >= settings().ota_chunk:
        jobs.enqueue("ota.sweep", {"task_id": task["task_id"]})
    elif repushed:
        jobs.enqueue("ota.sweep", {"task_id": task["task_id"]}, delay_s=max(1, math.ceil(new_due - clock.now()) + 1))


def close_step(body: dict[str, Any]) -> None:
    """Fail the unfinished jobs of a stopped task with ``reason`` (chunked)."""
    task = store.read_task(body["task_id"])
    if task is None or task["status"] not in ("cancelled", "failed"):
        return
    reason = body.get("reason") or "cancelled"
    moved = 0
    for state in store.ACTIVE:
        out = dynamo.client().query(
            TableName=store.jobs_table(),
            IndexName="task-state-index",
            Limit=settings().ota_chunk,
            KeyConditionExpression="#t = :t AND begins_with(#sk, :p)",
            ExpressionAttributeNames={"#t": "task_id", "#sk": "state_key"},
            ExpressionAttributeValues={":t": {"S": task["task_id"]}, ":p": {"S": state}},
        )
        for raw in out.get("Items", []):
            job = dynamo.item(raw)
            store.apply(
                job["task_id"],
                job["device_name"],
                lambda j: (
                    None if j["state"] not in store.ACTIVE else store.move(j, store.FAILED, sets={"reason": reason})
                ),
                first=job,
            )
            moved += 1
    if moved:
        jobs.enqueue("ota.close", body)


def tick() -> None:
    """Once a minute: a sweep for every running task (timeouts) and a dispatch for those with a
    rollout rate (restarts a chain a crash may have broken; dispatch is idempotent)."""
    steps: list[tuple[str, dict[str, Any]]] = []
    for task in store.live_tasks(fresh=True):
        steps.append(("ota.sweep", {"task_id": task["task_id"]}))
        if int(task.get("n_pending") or 0):
            steps.append(("ota.dispatch", {"task_id": task["task_id"]}))
    if steps:
        jobs.enqueue_many(steps)
