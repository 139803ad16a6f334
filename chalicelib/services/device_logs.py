"""Device logs (SPEC §5): content, presence (online/offline) and cloud diagnostics, kept 30 days.

One table, pk ``"{pid}/{dn}/{kind}"``, sk ``"{ms:013d}#{seq}"`` so a time range of one
device's log of one kind is a single key query, newest first.  ``expires_at`` is the
DynamoDB TTL; moto (and DynamoDB for up to a couple of days) keeps expired items, so
queries filter them out themselves.

Shared by connectivity (authorizer refusals), registration, the uplink pipeline and presence; the
codes of diagnostics are ``protocol/diagnostics.py``.
"""

from __future__ import annotations

import itertools
import json
import secrets
from typing import Any

from ..core import clock, errors
from ..core.config import settings
from ..core.observability import logger
from ..models.telemetry import DeviceLogRecord
from .paging import newest_first

KINDS = ("content", "presence", "diagnostic")
DIRECTIONS = ("up", "down")
MAX_PAYLOAD = 4096

_seq = itertools.count()


def _sort_key(ts_ms: int) -> str:
    # process counter first keeps one writer's entries of one millisecond in order;
    # the random tail keeps two Lambdas writing in the same millisecond apart
    return f"{ts_ms:013d}#{next(_seq) % 1_000_000:06d}{secrets.token_hex(2)}"


def payload_text(payload: Any) -> str | None:
    if payload is None:
        return None
    if isinstance(payload, (bytes, bytearray)):
        text = bytes(payload).decode("utf-8", errors="replace")
    elif isinstance(payload, str):
        text = payload
    else:
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str)
    return text[:MAX_PAYLOAD]


def entry(
    product_id: str,
    device_name: str,
    kind: str,
    *,
    direction: str | None = None,
    topic: str | None = None,
    payload: Any = None,
    code: str | None = None,
    message: str | None = None,
    ts_ms: int | None = None,
) -> DeviceLogRecord:
    """Build (not save) a log item — for callers that batch their writes."""
    if kind not in KINDS:
        raise ValueError(f"log kind must be one of {KINDS}")
    if direction is not None and direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}")
    ts = int(ts_ms) if ts_ms is not None else clock.now_ms()
    return DeviceLogRecord(
        key=f"{product_id}/{device_name}/{kind}",
        ts=_sort_key(ts),
        direction=direction,
        topic=topic,
        payload=payload_text(payload),
        code=code,
        message=message[:1024] if message else message,
        expires_at=max(ts // 1000, clock.now_s()) + settings().device_log_days * 86400,
    )


def write(
    product_id: str,
    device_name: str,
    kind: str,
    *,
    direction: str | None = None,
    topic: str | None = None,
    payload: Any = None,
    code: str | None = None,
    message: str | None = None,
    ts_ms: int | None = None,
) -> bool:
    """Append one log entry.  A log write never fails its caller: False (and an error log) if it did not land."""
    rec = entry(
        product_id,
        device_name,
        kind,
        direction=direction,
        topic=topic,
        payload=payload,
        code=code,
        message=message,
        ts_ms=ts_ms,
    )
    try:
        rec.save()
        return True
    except Exception:  # noqa: BLE001 - a lost log line never fails the traffic it describes
        logger.exception(
            "device log write failed", extra={"device": f"{product_id}/{device_name}", "kind": kind, "code": code}
        )
        return False


def diagnostic(
    product_id: str,
    device_name: str,
    code: str,
    message: str,
    *,
    topic: str | None = None,
    payload: Any = None,
    direction: str | None = None,
    ts_ms: int | None = None,
) -> bool:
    """Shorthand for a cloud diagnostic entry."""
    return write(
        product_id,
        device_name,
        "diagnostic",
        code=code,
        message=message,
        topic=topic,
        payload=payload,
        direction=direction,
        ts_ms=ts_ms,
    )


def entries(rec: DeviceLogRecord) -> list[dict[str, Any]]:
    """The log entries one row holds, newest first: a content row with the cloud's reply
    attached is the reply (down) and then the request (up)."""
    kind = rec.key.rsplit("/", 1)[-1]
    up = {
        "time": int(rec.ts.split("#", 1)[0]),
        "kind": kind,
        "direction": rec.direction,
        "topic": rec.topic,
        "payload": rec.payload,
        "code": rec.code,
        "message": rec.message,
    }
    if rec.reply_topic is None:
        return [up]
    down = {
        "time": int(rec.reply_at if rec.reply_at is not None else up["time"]),
        "kind": kind,
        "direction": "down",
        "topic": rec.reply_topic,
        "payload": rec.reply_payload,
        "code": None,
        "message": None,
    }
    return [down, up]


#: a cursor that ends inside a row (its reply was the page's last entry) carries this suffix
MID_ROW = "!"


def query(
    product_id: str,
    device_name: str,
    kind: str,
    start_ms: int,
    end_ms: int,
    limit: int = 100,
    cursor: dict[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """One device's log of one kind between ``start_ms`` and ``end_ms`` (inclusive), newest first.

    ``cursor`` is the raw key this function returned as the next cursor (encode it with the route
    kit's ``encode_token``); a cursor of another listing is refused with
    ``InvalidParameterValue.NextTokenInvalid``.  Returns ``(items, next_cursor | None)``.
    Report rows kept for history beyond the log's retention are not shown as log entries.
    """
    if kind not in KINDS:
        raise errors.LOG_KIND_INVALID(f"kind must be one of {', '.join(KINDS)}", "kind")
    key = f"{product_id}/{device_name}/{kind}"
    lo, hi = f"{max(int(start_ms), 0):013d}", f"{max(int(end_ms), 0):013d}#~"
    resume, only_up = None, False
    if cursor is not None:
        good = (
            isinstance(cursor, dict)
            and set(cursor) == {"key", "ts"}
            and cursor.get("key") == {"S": key}
            and isinstance(cursor.get("ts"), dict)
            and set(cursor["ts"]) == {"S"}
            and lo <= str(cursor["ts"]["S"]) <= hi
        )
        if not good:
            raise errors.NEXT_TOKEN_INVALID("next is not a token this listing issued", "next")
        resume = str(cursor["ts"]["S"])
        only_up = resume.endswith(MID_ROW)
        resume = resume.removesuffix(MID_ROW)
        hi = resume
    now_s = clock.now_s()
    shown_from = (now_s - settings().device_log_days * 86400) * 1000
    items: list[dict[str, Any]] = []
    for rec in newest_first(DeviceLogRecord, key, lo, hi, None, None if only_up else resume):
        parts = entries(rec)
        if rec.ts == resume:
            parts = parts[-1:]
        if rec.props is not None and parts[-1]["time"] < shown_from:
            continue
        for i, part in enumerate(parts):
            items.append(part)
            if len(items) == limit:
                inside = MID_ROW if i < len(parts) - 1 else ""
                return items, {"key": {"S": key}, "ts": {"S": rec.ts + inside}}
    return items, None
