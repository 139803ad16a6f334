"""Device data over the API (SPEC §5, §6.4, §16): latest values, history, control, actions,
events, logs.

Times: query ranges (``start``/``end``) accept Unix seconds or milliseconds — a value of
10^11 or more is milliseconds (that is after the year 5138 in seconds, so nothing real is
ambiguous); answers give ``time`` in seconds and ``time_ms`` in milliseconds.  History and
logs are newest first and paged with an opaque ``next`` token.

Control: the values are checked against the thing model (read-only properties refused);
an online device gets ``{"method":"control","clientToken":"clientToken-<uuid>","params"}``
on ``thing/down/property`` in the topic form it last used (both forms when that is not
known), and its ``control_reply`` is matched by token; an offline device (or one that
nobody received the message for) gets the values stored as desired, delivered on its next
``get_status``.  ``timeout`` > 0 waits that long for the reply.

Actions: input checked, ``{"method":"action","clientToken","actionId","timestamp","params"}``
on ``thing/down/action``; ``sync`` waits up to ``timeout`` (default
``FLEETBOX_ACTION_TIMEOUT_S``, 5 s) and fails with ``FailedOperation.ActionTimeout`` (HTTP
504) when the device stays silent; ``async`` returns the token at once and
``GET …/calls/{client_token}`` tells the result later.  Waiters poll the calls item, so the
reply may be processed by any Lambda.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import json
import time
import uuid
from typing import Any

from pynamodb.exceptions import DoesNotExist, UpdateError

from ..core import clock, errors
from ..core.config import settings
from ..models.devices import DeviceRecord
from ..models.dynamo import plain
from ..models.telemetry import CallRecord, DeviceLogRecord, HistoryRecord
from . import catalog, device_logs, downlink, shadow, thing_model
from .devices import get_device
from .paging import newest_first
from .products import get_product, topic_name_ok
from .uplink_view import history_key

MS_THRESHOLD = 100_000_000_000
DEFAULT_RANGE_MS = 7 * 86400 * 1000
CLOCK_SLACK_MS = 86400 * 1000
CALL_TTL_S = 86400
POLL_FIRST_S, POLL_MAX_S = 0.05, 0.25


def to_ms(value: int | None, default: int) -> int:
    if value is None:
        return default
    return int(value) if value >= MS_THRESHOLD else int(value) * 1000


def time_range(start: int | None, end: int | None) -> tuple[int, int]:
    """``(start_ms, end_ms)``; without ``end`` the range reaches a day past now (device clocks run
    ahead, and a value stamped a second in the future must not vanish), without ``start`` it
    begins 7 days before ``end`` or now."""
    now = clock.now_ms()
    end_ms = to_ms(end, now + CLOCK_SLACK_MS)
    start_ms = to_ms(start, (end_ms if end is not None else now) - DEFAULT_RANGE_MS)
    if start_ms > end_ms:
        raise errors.TIME_RANGE_INVALID("start must not be after end", "start")
    return start_ms, end_ms


def _times(ms: int) -> dict[str, int]:
    return {"time": ms // 1000, "time_ms": ms}


def _device(pid: str, dn: str) -> tuple[DeviceRecord, catalog.ProductInfo]:
    rec = get_device(pid, dn)  # 404s for unknown products/devices
    product = catalog.product_info(pid, fresh=True)
    if product is None:
        raise errors.PRODUCT_NOT_EXIST(f"product {pid} does not exist", "product_id")
    return rec, product


def _problems_error(problems: list[thing_model.Problem], what: str) -> errors.FleetboxError:
    """A 400 naming the first refused key (``params.<id>``) and listing every problem."""
    first = problems[0]
    text = "; ".join(p.message for p in problems)
    if first.code == thing_model.PROBLEM_NOT_DEFINED:
        code = errors.PROPERTY_NOT_DEFINED if what == "property" else errors.PARAM_NOT_DEFINED
    elif first.code == thing_model.PROBLEM_READ_ONLY:
        code = errors.PROPERTY_READ_ONLY
    else:
        code = errors.PARAM_VALUE_INVALID
    return code(text[:1024], "params" if first.key == "params" else f"params.{first.key}")


# ------------------------------------------------------------------ latest values


def properties(pid: str, dn: str) -> dict[str, Any]:
    rec, product = _device(pid, dn)
    names = {p["id"]: p.get("name") for p in product.doc.get("properties") or ()}
    state = shadow.read(rec)
    reported, desired = state.reported, state.desired
    items = []
    for prop, entry in sorted(reported.items()):
        if isinstance(entry, dict):
            items.append(
                {
                    "id": prop,
                    "name": names.get(prop),
                    "value": entry.get("value"),
                    **_times(int(entry.get("time") or 0)),
                }
            )
    pending = []
    for prop, entry in sorted(desired.items()):
        if isinstance(entry, dict):
            pending.append(
                {
                    "id": prop,
                    "value": entry.get("value"),
                    "client_token": entry.get("token"),
                    **_times(int(entry.get("time") or 0)),
                }
            )
    return {"product_id": pid, "device_name": dn, "status": rec.status, "properties": items, "desired": pending}


# ------------------------------------------------------------------ range queries


def _check_cursor(cursor: dict[str, Any] | None, key: str, lo: str, hi: str) -> None:
    if cursor is None:
        return
    ok = (
        set(cursor) == {"key", "ts"}
        and cursor.get("key") == {"S": key}
        and isinstance(cursor.get("ts"), dict)
        and set(cursor["ts"]) == {"S"}
        and lo <= str(cursor["ts"]["S"]) <= hi
    )
    if not ok:
        raise errors.NEXT_TOKEN_INVALID("next is not a token this listing issued", "next")


def _history(
    key: str, start_ms: int, end_ms: int, limit: int, cursor: dict[str, Any] | None, cond: Any = None
) -> tuple[list[HistoryRecord], dict[str, Any] | None]:
    lo, hi = f"{max(start_ms, 0):013d}", f"{max(end_ms, 0):013d}#~"
    _check_cursor(cursor, key, lo, hi)
    skip = str(cursor["ts"]["S"]) if cursor is not None else None
    found: list[HistoryRecord] = []
    for rec in newest_first(HistoryRecord, key, lo, skip or hi, cond, skip):
        found.append(rec)
        if len(found) == limit:
            return found, {"key": {"S": key}, "ts": {"S": rec.ts}}
    return found, None


def _ms_of(rec: HistoryRecord) -> int:
    return int(rec.ts.split("#", 1)[0])


def property_history(
    pid: str, dn: str, prop: str, start_ms: int, end_ms: int, limit: int, cursor: dict[str, Any] | None
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """A property's values newest first, from the two places reports keep them: the report's own
    content-log row (``props``, written since the shadow split: one row per report) and the
    history table (older data, and reports stamped far from their arrival time, see
    ``services/uplink_view.py``).  Both are key queries in the same sort-key space, merged."""
    _, product = _device(pid, dn)
    if prop not in product.model.property_ids:
        raise errors.PROPERTY_NOT_EXIST(f"property {prop} is not defined in the thing model of {pid}", "property_id")
    key = history_key(pid, dn, prop)
    lo, hi = f"{max(start_ms, 0):013d}", f"{max(end_ms, 0):013d}#~"
    _check_cursor(cursor, key, lo, hi)
    skip = None
    if cursor is not None:
        hi = skip = str(cursor["ts"]["S"])
    rows = (
        (rec.ts, json.loads(plain(rec.props)[prop]))
        for rec in newest_first(
            DeviceLogRecord, f"{pid}/{dn}/content", lo, hi, DeviceLogRecord.props[prop].exists(), skip
        )
    )
    history = ((rec.ts, rec.value) for rec in newest_first(HistoryRecord, key, lo, hi, None, skip))
    out: list[dict[str, Any]] = []
    for ts, value in heapq.merge(rows, history, key=lambda row: row[0], reverse=True):
        out.append({"value": value, **_times(int(ts.split("#", 1)[0]))})
        if len(out) == limit:
            return out, {"key": {"S": key}, "ts": {"S": ts}}
    return out, None


def events(
    pid: str,
    dn: str,
    start_ms: int,
    end_ms: int,
    event_id: str | None,
    event_type: str | None,
    limit: int,
    cursor: dict[str, Any] | None,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    _device(pid, dn)
    cond = None
    if event_id:
        cond = HistoryRecord.event_id == event_id
    if event_type:
        c = HistoryRecord.event_type == event_type
        cond = c if cond is None else cond & c
    recs, nxt = _history(history_key(pid, dn), start_ms, end_ms, limit, cursor, cond)
    return [
        {
            "event_id": r.event_id,
            "type": r.event_type,
            "params": r.value if isinstance(r.value, dict) else {},
            **_times(_ms_of(r)),
        }
        for r in recs
    ], nxt


def logs(
    pid: str, dn: str, kind: str, start_ms: int, end_ms: int, limit: int, cursor: dict[str, Any] | None
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    _device(pid, dn)
    items, nxt = device_logs.query(pid, dn, kind, start_ms, end_ms, limit, cursor)
    out = []
    for item in items:
        ms = int(item["time"])
        out.append(
            {
                "kind": item["kind"],
                "direction": item.get("direction"),
                "topic": item.get("topic"),
                "payload": item.get("payload"),
                "code": item.get("code"),
                "message": item.get("message"),
                **_times(ms),
            }
        )
    return out, nxt


# ------------------------------------------------------------------ calls


def _new_call(pid: str, dn: str, kind: str, params: dict, action_id: str | None = None) -> CallRecord:
    token = f"clientToken-{uuid.uuid4()}"
    now = clock.now_s()
    call = CallRecord(
        key=f"{pid}/{dn}",
        token=token,
        kind=kind,
        action_id=action_id,
        params=params,
        status="pending",
        created_at=now,
        expires_at=now + CALL_TTL_S,
    )
    call.save(condition=CallRecord.token.does_not_exist())
    return call


def call_view(call: CallRecord) -> dict[str, Any]:
    reply = call.reply if isinstance(call.reply, dict) else None
    return {
        "client_token": call.token,
        "kind": call.kind,
        "action_id": call.action_id,
        "params": call.params if isinstance(call.params, dict) else {},
        "status": call.status,
        "code": int(call.code) if call.code is not None else None,
        "reply_status": reply.get("status") if reply else None,
        "response": reply.get("response") if reply and isinstance(reply.get("response"), dict) else None,
        "created_at": int(call.created_at),
        "replied_at": int(call.replied_at) if call.replied_at is not None else None,
    }


def get_call(pid: str, dn: str, token: str) -> dict[str, Any]:
    _device(pid, dn)
    if not 0 < len(token) <= 128:
        raise errors.CALL_NOT_EXIST(f"no control or action {token[:64]} for device {pid}/{dn}", "client_token")
    try:
        return call_view(CallRecord.get(f"{pid}/{dn}", token, consistent_read=True))
    except DoesNotExist:
        raise errors.CALL_NOT_EXIST(f"no control or action {token} for device {pid}/{dn}", "client_token") from None


def _wait(pid: str, dn: str, token: str, timeout_s: float) -> CallRecord:
    deadline = time.monotonic() + timeout_s
    pause = POLL_FIRST_S
    while True:
        call = CallRecord.get(f"{pid}/{dn}", token, consistent_read=True)
        if call.status != "pending" or time.monotonic() >= deadline:
            return call
        time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
        pause = min(pause * 1.5, POLL_MAX_S)


def _time_out(call: CallRecord) -> CallRecord:
    """Mark a silent call timed out — unless the reply landed meanwhile."""
    try:
        call.update(actions=[CallRecord.status.set("timeout")], condition=CallRecord.status == "pending")
    except UpdateError:
        call.refresh(consistent_read=True)
    return call


def _usable(rec: DeviceRecord, pid: str, dn: str) -> None:
    if not rec.enabled:
        raise errors.DEVICE_DISABLED(f"device {pid}/{dn} is disabled", "device_name")


def control(pid: str, dn: str, params: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    rec, product = _device(pid, dn)
    _usable(rec, pid, dn)
    accepted, problems = product.model.check_properties(params, writable_only=True)
    if problems:
        raise _problems_error(problems, "property")
    if not accepted:
        raise errors.PARAMS_INVALID("params must name at least one property", "params")
    call = _new_call(pid, dn, "control", accepted)
    message = {"method": "control", "clientToken": call.token, "params": accepted}
    delivered = rec.status == "online" and downlink.send(pid, dn, "property", message, dollar=rec.dollar)
    if not delivered:
        shadow.store_desired(pid, dn, accepted, call.token)
        return {**call_view(call), "delivery": "desired"}
    if timeout_s > 0:
        call = _wait(pid, dn, call.token, timeout_s)
    return {**call_view(call), "delivery": "published"}


def call_action(
    pid: str, dn: str, action_id: str, params: dict[str, Any], mode: str, timeout_s: float | None
) -> dict[str, Any]:
    rec, product = _device(pid, dn)
    if action_id not in product.model.action_ids:
        raise errors.ACTION_NOT_EXIST(f"action {action_id} is not defined in the thing model of {pid}", "action_id")
    _usable(rec, pid, dn)
    accepted, problems = product.model.check_action_input(action_id, params)
    if problems:
        raise _problems_error(problems, "param")
    if rec.status != "online":
        raise errors.DEVICE_OFFLINE(f"device {pid}/{dn} is {rec.status}: actions need an online device", "device_name")
    call = _new_call(pid, dn, "action", accepted, action_id)
    message = {
        "method": "action",
        "clientToken": call.token,
        "actionId": action_id,
        "timestamp": clock.now_s(),
        "params": accepted,
    }
    if not downlink.send(pid, dn, "action", message, dollar=rec.dollar):
        _time_out(call)
        raise errors.DEVICE_OFFLINE(
            f"device {pid}/{dn} did not receive the action (not subscribed or gone)", "device_name"
        )
    if mode == "async":
        return call_view(call)
    call = _wait(pid, dn, call.token, settings().action_timeout_s if timeout_s is None else timeout_s)
    if call.status == "pending":
        call = _time_out(call)
    if call.status != "replied":
        raise errors.ACTION_TIMEOUT(
            f"device {pid}/{dn} did not answer action {action_id} within the timeout; its clientToken is {call.token}",
            None,
            details={"client_token": call.token},
        )
    return call_view(call)


# ------------------------------------------------------------------ custom-topic messages

#: the largest message a caller may send to a device's custom topic
MAX_MESSAGE_BYTES = 32 * 1024
PAYLOAD_ENCODINGS = ("none", "base64")


def _topic_matches(defined: str, name: str) -> bool:
    """Whether the concrete topic ``name`` is an instance of the product topic ``defined``
    (``+`` stands for one level)."""
    want, got = defined.split("/"), name.split("/")
    return len(want) == len(got) and all(w == "+" or w == g for w, g in zip(want, got, strict=True))


def publish_message(pid: str, dn: str, topic: str, payload: str, qos: int, encoding: str) -> dict[str, Any]:
    """Send ``payload`` to one of the device's custom topics (``{pid}/{dn}/<name>``, a product topic
    the device may subscribe to: permission sub or pubsub), as text or base64-decoded bytes."""
    rec, _ = _device(pid, dn)
    _usable(rec, pid, dn)
    prefix = f"{pid}/{dn}/"
    name = topic[len(prefix) :] if topic.startswith(prefix) else ""
    if not name or not topic_name_ok(name) or "+" in name.split("/"):
        raise errors.TOPIC_INVALID(f"topic must be {prefix}<a custom topic of the product>, without wildcards", "topic")
    defined = next((t for t in get_product(pid).topics or [] if _topic_matches(t["name"], name)), None)
    if defined is None:
        raise errors.TOPIC_NOT_EXIST(
            f"{name} is not a custom topic of product {pid} (GET /v1/products/{pid}/topics)", "topic"
        )
    if defined["permission"] == "pub":
        raise errors.TOPIC_PERMISSION_INVALID(
            f"devices only publish to {defined['name']}: send to a sub or pubsub topic", "topic"
        )
    if encoding == "base64":
        try:
            raw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise errors.PAYLOAD_INVALID("payload is not valid base64", "payload") from None
    else:
        raw = payload.encode("utf-8")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise errors.PAYLOAD_INVALID(f"payload must be at most {MAX_MESSAGE_BYTES} bytes", "payload")
    delivered = downlink.send_raw(pid, dn, topic, raw, payload, qos)
    return {"product_id": pid, "device_name": dn, "topic": topic, "qos": qos, "size": len(raw), "delivered": delivered}
