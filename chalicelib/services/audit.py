"""The audit log: who did what to which resource, with what result (SPEC §2).

Records never hold request bodies, so no secret can reach them.
"""

from __future__ import annotations

from typing import Any

from ..core import clock, errors
from ..core.config import settings
from ..models.audit import AuditRecord
from .paging import checked_start

_DAY = 86_400


def record(
    *,
    principal_id: str,
    key_id: str | None,
    action: str,
    resource: str,
    status: int,
    result: str,
    request_id: str,
    source_ip: str | None,
    channel: str | None = None,
    detail: str | None = None,
) -> None:
    """``channel`` says where a call came from when it was not plain HTTP (``chat:slack:T1/C1``,
    ``cloudapi``); ``detail`` is a short, secret-free note (a chat command's words, a denial's
    reason) — callers must never pass request bodies or secrets."""
    now = clock.now()
    AuditRecord(
        day=clock.day(now),
        sk=f"{int(now * 1000):013d}#{request_id}",
        ts=int(now * 1000),
        principal_id=principal_id,
        key_id=key_id,
        action=action,
        resource=resource,
        status=status,
        result=result,
        request_id=request_id,
        source_ip=source_ip,
        channel=channel,
        detail=detail,
        expires_at=int(now) + settings().audit_retention_days * _DAY,
    ).save()


def view(rec: AuditRecord) -> dict[str, Any]:
    return {
        "time": int(rec.ts) // 1000,
        "time_ms": int(rec.ts),
        "principal_id": rec.principal_id,
        "key_id": rec.key_id,
        "action": rec.action,
        "resource": rec.resource,
        "status": int(rec.status),
        "result": rec.result,
        "request_id": rec.request_id,
        "source_ip": rec.source_ip,
        "channel": rec.channel,
        "detail": rec.detail,
    }


def query(**kw: Any) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    with checked_start(kw.get("cursor")):
        return _query(**kw)


def _query(
    *, start: int, end: int, principal_id: str | None, action: str | None, limit: int, cursor: dict[str, Any] | None
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Newest first over day partitions between ``start`` and ``end`` (Unix seconds).

    The cursor is {"day": {"S": d}, "sk": {"S": last sk returned}}; filters are applied inside each
    day's key query, so no request path scans the table.
    """
    items: list[dict[str, Any]] = []
    day_ts = end
    cursor_day = cursor.get("day", {}).get("S") if cursor else None
    last_sk = cursor.get("sk", {}).get("S") if cursor else None
    if cursor and not (cursor_day and last_sk):
        raise errors.NEXT_TOKEN_INVALID("next is not a token this listing issued", "next")
    lo_sk, hi_sk = f"{start * 1000:013d}", f"{end * 1000 + 999:013d}~"
    while day_ts >= start - _DAY and len(items) < limit:
        day = clock.day(day_ts)
        day_ts -= _DAY
        if cursor_day and day > cursor_day:
            continue
        upper = last_sk if (cursor_day == day and last_sk) else hi_sk
        cond = None
        if principal_id:
            cond = AuditRecord.principal_id == principal_id
        if action:
            c2 = AuditRecord.action == action
            cond = c2 if cond is None else cond & c2
        range_cond = AuditRecord.sk.between(lo_sk, upper)
        for rec in AuditRecord.query(day, range_cond, filter_condition=cond, scan_index_forward=False):
            if rec.sk == upper:
                continue
            items.append(view(rec))
            if len(items) >= limit:
                return items, {"day": {"S": day}, "sk": {"S": rec.sk}}
    return items, None
