"""The thing-model protocol (SPEC §6.4): the uplink stages of ``thing/up/property``, ``…/event``,
``…/action`` and ``sys/operation`` messages.

Each ``on_*`` function is a stage of the uplink pipeline (``services/uplink.py``) for one topic
family: it reads one :class:`~.uplink_view.Received` message of a device's batch and records on
the :class:`~.uplink_view.DeviceView` what to store (newest values for the shadow, history and
log rows) and what to answer (``*_reply`` on the form the device used):

* ``report`` — every param validated against the thing model; valid values stored (latest +
  history), invalid ones logged as diagnostics; ``report_reply`` with code 0 or the first
  problem's code and every problem's reason;
* ``get_status`` / ``clear_control`` / ``report_info`` — answered from the device's stored state;
* ``control_reply`` / ``action_reply`` — matched to their call by clientToken (never across
  devices; Tencent's SDK restarts its tokens at every reboot);
* ``event_post`` / ``events_post`` — validated, stored as event history, answered;
* the time service (``{"type":"get","resource":["time"]}``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from pynamodb.exceptions import UpdateError
from pynamodb.expressions.update import Action

from ..core import clock
from ..core.observability import logger
from ..models.dynamo import transient
from ..models.telemetry import CallRecord
from ..protocol import diagnostics
from . import analytics, thing_model
from .uplink_view import (
    CODE_INVALID,
    CODE_NOT_FOUND,
    CODE_OK,
    MAX_STATUS_CHARS,
    DeviceView,
    Received,
    history_key,
    history_row,
    message_seq,
    reply_payload,
    status_text,
    time_ms,
    token_of,
)

MAX_EVENTS_PER_MESSAGE = 100
FW_VER_RE = re.compile(r"[A-Za-z0-9._\-]{1,32}")
INFO_STRINGS = ("module_hardinfo", "module_softinfo", "mac", "imei")


def on_property(dev: DeviceView, m: Received) -> None:
    body = m.body or {}
    method = body.get("method")
    if method is None or method == "control_reply":
        if "clientToken" in body:
            _call_reply(dev, m, "control")
        else:
            dev.failure(diagnostics.PAYLOAD_NO_FIELD, "the message has no method", m)
        return
    handler = _PROPERTY_METHODS.get(method) if isinstance(method, str) else None
    if handler is None:
        dev.failure(diagnostics.PAYLOAD_NO_FIELD, f"unknown method {str(method)[:40]!r} on a property topic", m)
        return
    handler(dev, m, body)


def _report(dev: DeviceView, m: Received, body: dict) -> None:
    if "params" not in body:
        dev.failure(diagnostics.PAYLOAD_NO_FIELD, "report without params", m)
        dev.reply(m, reply_payload("report_reply", body, CODE_INVALID, "params is required"))
        return
    accepted, problems = dev.product.model.check_properties(body.get("params"))
    at = time_ms(body.get("timestamp"), m.msg.timestamp_ms or clock.now_ms())
    seq = message_seq(m.msg, "r")
    dev.report(m, at, seq, accepted)
    for problem in problems:
        dev.diagnostic(diagnostics.THING_MODEL_INVALID, problem.message, m)
    if problems:
        dev.uplink_fail += 1
        dev.reply(m, reply_payload("report_reply", body, int(problems[0].code), status_text(problems)))
    else:
        dev.reply(m, reply_payload("report_reply", body, CODE_OK, "success"))


def _get_status(dev: DeviceView, m: Received, body: dict) -> None:
    kind = body.get("type")
    if kind not in (None, "report", "control"):
        dev.uplink_fail += 1
        dev.reply(m, reply_payload("get_status_reply", body, CODE_INVALID, "type must be report or control"))
        return
    data: dict[str, Any] = {}
    if kind in (None, "report"):
        data["reported"] = {k: v.get("value") for k, v in dev.reported().items() if isinstance(v, dict)}
    if kind in (None, "control"):
        data["control"] = {k: v.get("value") for k, v in dev.desired().items() if isinstance(v, dict)}
    extra: dict[str, Any] = {"type": kind} if kind else {}
    dev.reply(m, reply_payload("get_status_reply", body, CODE_OK, "success", **extra, data=data))


def _clear_control(dev: DeviceView, m: Received, body: dict) -> None:
    dev.clear_desired = True
    dev.reply(m, reply_payload("clear_control_reply", body, CODE_OK, "success"))


def _report_info(dev: DeviceView, m: Received, body: dict) -> None:
    params = body.get("params")
    problems: list[str] = []
    if not isinstance(params, dict):
        dev.failure(diagnostics.PAYLOAD_NO_FIELD, "report_info without params", m)
        dev.reply(m, reply_payload("report_info_reply", body, CODE_INVALID, "params is required"))
        return
    fw = params.get("fw_ver")
    if not isinstance(fw, str) or not FW_VER_RE.fullmatch(fw):
        dev.uplink_fail += 1
        reason = "fw_ver is required" if fw is None else "fw_ver must be 1-32 characters of A-Z a-z 0-9 . _ -"
        dev.diagnostic(diagnostics.PAYLOAD_NO_FIELD if fw is None else diagnostics.THING_MODEL_INVALID, reason, m)
        dev.reply(m, reply_payload("report_info_reply", body, CODE_INVALID, reason))
        return
    info: dict[str, Any] = {"fw_ver": fw}
    for name in INFO_STRINGS:
        value = params.get(name)
        if value is None:
            continue
        if isinstance(value, str) and len(value) <= 128:
            info[name] = value
        else:
            problems.append(f"{name} must be a string of at most 128 characters")
    lat: Any = params.get("lat")
    lon: Any = params.get("lon")
    if lat is not None or lon is not None:
        try:
            la, lo = float(lat), float(lon)
            if not (-90 <= la <= 90 and -180 <= lo <= 180):
                raise ValueError
            info["lat"], info["lon"] = la, lo
            dev.position = (la, lo)
        except (TypeError, ValueError):
            problems.append("lat/lon must be a WGS-84 position (lat -90..90, lon -180..180)")
    label = params.get("device_label")
    if label is not None:
        if (
            isinstance(label, dict)
            and len(label) <= 20
            and all(
                isinstance(k, str) and 0 < len(k) <= 32 and isinstance(v, str) and len(v) <= 128
                for k, v in label.items()
            )
        ):
            info["device_label"] = dict(label)
            dev.label = analytics.region_label(label.get("region")) or ""
        else:
            problems.append("device_label must be an object of at most 20 string labels")
    info["time"] = m.msg.timestamp_ms or clock.now_ms()
    dev.info, dev.firmware = info, fw
    if problems:
        dev.uplink_fail += 1
        for text in problems:
            dev.diagnostic(diagnostics.THING_MODEL_INVALID, text, m)
        dev.reply(m, reply_payload("report_info_reply", body, CODE_INVALID, "; ".join(problems)))
    else:
        dev.reply(m, reply_payload("report_info_reply", body, CODE_OK, "success"))


def on_event(dev: DeviceView, m: Received) -> None:
    body = m.body or {}
    method = body.get("method")
    if method not in ("event_post", "events_post"):
        dev.failure(diagnostics.PAYLOAD_NO_FIELD, f"unknown method {str(method)[:40]!r} on an event topic", m)
        return
    reply_method = "event_reply" if method == "event_post" else "events_reply"
    if "events" in body:
        events = body.get("events")
        if not isinstance(events, list) or not events or len(events) > MAX_EVENTS_PER_MESSAGE:
            dev.uplink_fail += 1
            dev.reply(
                m,
                reply_payload(
                    reply_method,
                    body,
                    CODE_INVALID,
                    f"events must be a list of 1-{MAX_EVENTS_PER_MESSAGE} events",
                    data={},
                ),
            )
            return
    elif method == "event_post":
        events = [body]
    else:
        dev.failure(diagnostics.PAYLOAD_NO_FIELD, "events_post without events", m)
        dev.reply(m, reply_payload(reply_method, body, CODE_INVALID, "events is required", data={}))
        return
    first: tuple[int, str] | None = None
    received = m.msg.timestamp_ms or clock.now_ms()
    for i, event in enumerate(events):
        if not isinstance(event, dict):
            first = first or (CODE_INVALID, f"events[{i}] is not an object")
            continue
        event_id: Any = event.get("eventId")
        accepted, problems = dev.product.model.check_event(event_id, event.get("params"))
        if (
            problems
            and problems[0].code == thing_model.PROBLEM_NOT_DEFINED
            and dev.product.model.event_type(event_id) is None
        ):
            first = first or (CODE_NOT_FOUND, problems[0].message)
            dev.diagnostic(diagnostics.THING_MODEL_INVALID, problems[0].message, m)
            continue
        at = time_ms(event.get("timestamp"), received)
        dev.add_row(
            history_row(
                history_key(dev.pid, dev.dn),
                at,
                message_seq(m.msg, f"e{i}"),
                accepted,
                event_id=event_id,
                event_type=dev.product.model.event_type(event_id),
            )
        )
        for problem in problems:
            dev.diagnostic(diagnostics.THING_MODEL_INVALID, f"{event_id}: {problem.message}", m)
        if problems:
            first = first or (int(problems[0].code), f"{event_id}: {status_text(problems)}")
    if first is None:
        dev.reply(m, reply_payload(reply_method, body, CODE_OK, "success", data={}))
    else:
        dev.uplink_fail += 1
        dev.reply(m, reply_payload(reply_method, body, first[0], first[1][:MAX_STATUS_CHARS], data={}))


def on_action(dev: DeviceView, m: Received) -> None:
    body = m.body or {}
    method = body.get("method")
    if method not in (None, "action_reply") or "clientToken" not in body:
        dev.failure(diagnostics.PAYLOAD_NO_FIELD, "an action topic carries action_reply with its clientToken", m)
        return
    _call_reply(dev, m, "action")


def _call_reply(dev: DeviceView, m: Received, kind: str) -> None:
    """control_reply / action_reply: matched to the call by clientToken (never across devices)."""
    body = m.body or {}
    token = token_of(body)
    code = body.get("code")
    code = int(code) if isinstance(code, (int, float)) and not isinstance(code, bool) and math.isfinite(code) else None
    status = body.get("status")
    status = status.replace("\x00", "") if isinstance(status, str) else None
    reply: dict[str, Any] = {"code": code, "status": status}
    if kind == "action":
        reply["response"] = body.get("response") if isinstance(body.get("response"), dict) else {}
    if not token or len(token) > 128:
        dev.failure(diagnostics.PAYLOAD_NO_FIELD, f"{kind}_reply without a usable clientToken", m)
        return
    # DynamoDB applies one UpdateItem atomically; the status goes last anyway, so an emulator that
    # applies the clauses one by one (moto) never shows "replied" without the reply to a poller.
    actions: list[Action] = [
        CallRecord.reply.set(reply),
        CallRecord.replied_at.set(clock.now_s()),
        CallRecord.code.set(code) if code is not None else CallRecord.code.remove(),
        CallRecord.status.set("replied"),
    ]
    rec = CallRecord(key=f"{dev.pid}/{dev.dn}", token=token)
    try:
        rec.update(
            actions=actions,
            condition=CallRecord.token.exists()
            & (CallRecord.kind == kind)
            & CallRecord.status.is_in("pending", "timeout"),
        )
    except UpdateError as exc:
        if transient(exc):
            raise
        logger.info("reply matches no pending call", extra={"device": f"{dev.pid}/{dev.dn}", "kind": kind})
        return
    if kind == "action" and isinstance(body.get("response"), dict):
        _, problems = dev.product.model.check_action_output(rec.action_id or "", body["response"])
        for problem in problems:
            dev.diagnostic(diagnostics.THING_MODEL_INVALID, f"{rec.action_id}: {problem.message}", m)


def on_time_service(dev: DeviceView, m: Received) -> None:
    body = m.body or {}
    resource = body.get("resource")
    if body.get("type") != "get" or not isinstance(resource, list) or "time" not in resource:
        dev.failure(diagnostics.PAYLOAD_NO_FIELD, 'sys/operation supports {"type":"get","resource":["time"]}', m)
        return
    now = clock.now_ms()
    received = min(m.msg.timestamp_ms or now, now)
    dev.reply(m, {"type": "get", "time": now // 1000, "ntptime1": received, "ntptime2": now})


def on_custom(dev: DeviceView, m: Received) -> None:
    """Custom topics (passthrough: the broker / IoT policy already enforced the permission)."""


_PROPERTY_METHODS: dict[str, Callable[[DeviceView, Received, dict], None]] = {
    "report": _report,
    "get_status": _get_status,
    "clear_control": _clear_control,
    "report_info": _report_info,
}
