"""OTA on the device's side (SPEC §8.4, §8.6): the uplink stages of ``ota/report`` and
``resource/up/service``.

``report_version`` is answered (``report_version_rsp``) and completes a job whose target the
device now runs (a different version re-pushes the notification); ``report_progress`` moves a
job through downloading / burning / done / fail.  Dynamic by-version tasks add a device when it
reports a source version — which a newly activated device does as its first OTA message, so
"devices that activate later" join through the same path without a presence hook.
"""

from __future__ import annotations

import json
import re
from typing import Any

from botocore.exceptions import ClientError

from ...core import clock
from ...core.observability import logger
from ...models import dynamo
from ...models.ota import FIRMWARE_KIND, RESOURCE_KIND
from ...protocol import diagnostics
from .. import files, jobs
from ..uplink_view import DeviceView, Received
from . import store

PROGRESS_CODES = {
    "0": "success",
    "-1": "download timeout",
    "-2": "file missing",
    "-3": "authentication failed",
    "-4": "MD5 mismatch",
    "-5": "burn failed",
}


def _body(dev: DeviceView, m: Received) -> dict[str, Any] | None:
    try:
        body = json.loads(m.msg.payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        dev.failure(diagnostics.PAYLOAD_NOT_JSON, "the payload is not a JSON object", m)
        return None
    return body


def on_ota_report(dev: DeviceView, m: Received) -> None:
    """``ota/report`` (telemetry.FAMILY_HANDLERS): report_version and report_progress."""
    body = _body(dev, m)
    if body is None:
        return
    kind = body.get("type")
    report: dict[str, Any] = body["report"] if isinstance(body.get("report"), dict) else {}
    if kind == "report_version":
        _report_version(dev, m, report)
    elif kind == "report_progress":
        _report_progress(dev, m, report, FIRMWARE_KIND)
    else:
        dev.failure(diagnostics.PAYLOAD_NO_FIELD, "ota/report supports type report_version and report_progress", m)


def on_resource_report(dev: DeviceView, m: Received) -> None:
    """``resource/up/service``: report_download_progress."""
    body = _body(dev, m)
    if body is None:
        return
    if body.get("type") != "report_download_progress":
        dev.failure(diagnostics.PAYLOAD_NO_FIELD, "resource/up/service supports type report_download_progress", m)
        return
    report: dict[str, Any] = body["report"] if isinstance(body.get("report"), dict) else body
    _report_progress(dev, m, report, RESOURCE_KIND)


def _report_version(dev: DeviceView, m: Received, report: dict[str, Any]) -> None:
    version = report.get("version")
    if not isinstance(version, str) or not store.VERSION_RE.fullmatch(version):
        dev.uplink_fail += 1
        reason = "report.version must be 1-32 characters of A-Z a-z 0-9 . _ -"
        dev.diagnostic(diagnostics.PAYLOAD_NO_FIELD, reason, m)
        dev.reply(
            m,
            {
                "type": "report_version_rsp",
                "result_code": 1,
                "result_msg": reason,
                "version": version if isinstance(version, str) else "",
            },
            qos=1,
        )
        return
    dev.reply(m, {"type": "report_version_rsp", "result_code": 0, "result_msg": "success", "version": version}, qos=1)
    info = (
        dict(dev.info)
        if dev.info is not None
        else (dynamo.plain(dev.rec.info) if dev.rec is not None and dev.rec.info is not None else {})
    )
    info.update(fw_ver=version, time=m.msg.timestamp_ms or clock.now_ms())
    dev.info, dev.firmware = info, version  # stored by the batch's one device update
    for job in store.active_jobs(dev.pid, dev.dn, FIRMWARE_KIND):
        _version_of_job(dev, m, job, version)
    _join_dynamic(dev, version)


def _version_of_job(dev: DeviceView, m: Received, job: dict[str, Any], version: str) -> None:
    task = store.read_task(job["task_id"])
    if task is None or task["status"] != "created":
        return
    now = clock.now()

    def decide(j: dict[str, Any]) -> Any:
        if j["state"] not in (store.PUSHED, store.UPGRADING):
            return None  # pending: the dispatcher pushes it (at the task's rate)
        if version == j["target_version"]:
            ok = store.move(j, store.SUCCEEDED, sets={"running_version": version, "detail": None, "percent": 100})
            return "succeeded" if ok else False
        attempts = int(j.get("attempts") or 0)
        if j["state"] == store.UPGRADING and attempts > int(task.get("max_retries") or 0):
            reason = f"the device still runs {version} after the upgrade"
            ok = store.move(j, store.FAILED, sets={"running_version": version, "reason": reason})
            return ("failed", reason) if ok else False
        ok = store.move(
            j,
            store.PUSHED,
            due_at=now + float(task["timeout_minutes"]) * store.minute(),
            attempt=j["state"] == store.UPGRADING,
            running=True,
            sets={"running_version": version, "detail": None, "percent": None, "dollar": m.topic.dollar},
        )
        return "repush" if ok else False

    outcome = store.apply(job["task_id"], job["device_name"], decide, first=job)
    if outcome == "succeeded":
        store.maybe_finish(task["task_id"])
    elif isinstance(outcome, tuple):
        store.device_failed(task, job, outcome[1])
        if not store.maybe_abort(task["task_id"]):
            store.maybe_finish(task["task_id"])
    elif outcome == "repush":
        dev.reply(m, store.notification(task, files.download_url(task["file_key"])), qos=1)


def _join_dynamic(dev: DeviceView, version: str) -> None:
    for task in store.live_tasks():
        if (
            task.get("kind") != FIRMWARE_KIND
            or task.get("mode") != "dynamic"
            or task["product_id"] != dev.pid
            or version not in (task.get("source_versions") or [])
        ):
            continue
        job = store.new_job(task, {"device_name": dev.dn, "firmware_version": version, "dollar": dev.dollar})
        try:
            dynamo.client().transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": store.jobs_table(),
                            "Item": {k: dynamo.to_av(v) for k, v in job.items() if v is not None},
                            "ConditionExpression": "attribute_not_exists(task_id)",
                        }
                    },
                    {"Update": store.counter_update(task["task_id"], {"n_total": 1, "n_pending": 1}, running=True)},
                ]
            )
        except ClientError as exc:
            if store.cancellation_reasons(exc):
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


def _report_progress(dev: DeviceView, m: Received, report: dict[str, Any], kind: str) -> None:
    progress: Any = report.get("progress")
    state = progress.get("state") if isinstance(progress, dict) else None
    allowed = ("downloading", "burning", "done", "fail") if kind == FIRMWARE_KIND else ("downloading", "done", "fail")
    if state not in allowed:
        dev.failure(diagnostics.PAYLOAD_NO_FIELD, f"progress.state must be one of {', '.join(allowed)}", m)
        return
    percent = _text_number(progress.get("percent"))
    code = _text_number(progress.get("result_code"))
    msg = progress.get("result_msg") if isinstance(progress.get("result_msg"), str) else None
    target = report.get("version") if kind == FIRMWARE_KIND else (report.get("name") or report.get("resource_name"))
    candidates = store.active_jobs(dev.pid, dev.dn, kind)
    chosen = [j for j in candidates if j.get("target_version") == target] or (
        candidates if len(candidates) == 1 else []
    )
    if not chosen:
        logger.info("progress report without an unfinished job ignored", extra={"device": f"{dev.pid}/{dev.dn}"})
        return  # late or duplicate: the job is finished (or never was)
    job = chosen[0]
    task = store.read_task(job["task_id"])
    if task is None:
        return
    now = clock.now()
    due = now + float(task["timeout_minutes"]) * store.minute()

    def decide(j: dict[str, Any]) -> Any:
        if j["state"] not in (store.PUSHED, store.UPGRADING):
            return None
        if state == "fail":
            text = msg or PROGRESS_CODES.get(str(code), "failed")
            reason = f"device reported {code if code is not None else 'an error'}: {text}"
            ok = store.move(
                j, store.FAILED, sets={"result_code": code, "result_msg": msg, "reason": reason, "detail": "fail"}
            )
            return ("failed", reason) if ok else False
        if state == "done" and kind == RESOURCE_KIND:
            ok = store.move(
                j, store.SUCCEEDED, sets={"detail": "done", "percent": 100, "result_code": code or 0, "result_msg": msg}
            )
            return "succeeded" if ok else False
        pct = 100 if state == "done" else (max(0, min(100, percent)) if percent is not None else None)
        ok = store.move(
            j,
            store.UPGRADING,
            due_at=due,
            sets={"detail": state, "percent": pct, "result_code": code, "result_msg": msg},
        )
        return "progress" if ok else False

    outcome = store.apply(job["task_id"], job["device_name"], decide, first=job)
    if isinstance(outcome, tuple):
        store.device_failed(task, job, outcome[1])
        if not store.maybe_abort(task["task_id"]):
            store.maybe_finish(task["task_id"])
    elif outcome == "succeeded":
        store.maybe_finish(task["task_id"])
