"""The delivery facade (SPEC §9.1-9.2): what people see of outgoing deliveries.

Dead letters (list, one, replay) and the delivery log of a target, each decided per item on the
resource of the rule, stream or callback the delivery was for (SPEC §2): a rule's letters are
``product/{pid}/rule/{name}`` when the rule's topic filter names one product, a stream's
``product/{pid}/stream/{id}``.  The engine that runs deliveries is ``forwarders/engine.py``.
"""
from __future__ import annotations

from typing import Any, Callable

from ..core import clock, errors
from ..forwarders import engine
from ..models.rules import DeadLetterRecord, DeliveryRecord
from .paging import checked_start, expect_key, fill_page

ACCOUNT = engine.ACCOUNT


def owner_of_target(target_id: str) -> str:
    """The resource a delivery target belongs to: ``rule/{name}/…`` → the rule's, ``stream/{id}…``
    → the stream's; a target whose owner is gone (or unknown) is an account-level resource."""
    from . import rules, streams

    parts = target_id.split("/")
    if len(parts) >= 2 and parts[0] == "rule":
        live = rules.lookup(parts[1])
        return live.resource if live is not None else f"rule/{parts[1]}"
    if len(parts) >= 2 and parts[0] == "stream":
        return streams.resource_of_id(parts[1])
    return f"delivery/{parts[0]}"


def _letter_resource(rec: DeadLetterRecord) -> str:
    if rec.resource:
        return str(rec.resource)
    if rec.target:  # letters written before they carried their resource
        return owner_of_target(rec.target)
    return f"deadletter/{rec.letter_id}"


def view_letter(rec: DeadLetterRecord) -> dict[str, Any]:
    return {"id": rec.letter_id, "target": rec.target, "rule": rec.rule, "resource": _letter_resource(rec),
            "product_id": rec.product_id, "device_name": rec.device_name, "reason": rec.reason,
            "attempts": int(rec.attempts or 0), "status": rec.status, "webhook_id": rec.webhook_id,
            "created_at": int(rec.created_at), "updated_at": int(rec.updated_at), "replays": int(rec.replays or 0)}


def _get_letter(letter_id: str, consistent: bool = False) -> DeadLetterRecord:
    try:
        rec = DeadLetterRecord.get(ACCOUNT, letter_id, consistent_read=consistent)
    except DeadLetterRecord.DoesNotExist:
        rec = None
    if rec is None or (rec.expires_at is not None and int(rec.expires_at) <= clock.now_s()):
        raise errors.not_found("DeadLetterNotExist", f"dead letter {letter_id} does not exist", "letter_id")
    return rec


def letter_owner(letter_id: str) -> tuple[str, DeadLetterRecord]:
    """(resource, record) of a dead letter, for the route kit's per-item decision."""
    rec = _get_letter(letter_id)
    return _letter_resource(rec), rec


def list_letters(*, visible: Callable[[str], bool], status: str | None, rule: str | None, limit: int,
                 start: dict[str, Any] | None) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Dead letters ``visible(resource)`` lets the caller read, newest first."""
    expect_key(start, {"account": "S", "letter_id": "S"}, {"account": ACCOUNT})
    cond = None
    if status:
        cond = DeadLetterRecord.status == status
    if rule:
        c = DeadLetterRecord.rule == rule
        cond = c if cond is None else cond & c
    live = DeadLetterRecord.expires_at.does_not_exist() | (DeadLetterRecord.expires_at > clock.now_s())
    cond = live if cond is None else cond & live

    def fetch(key: dict[str, Any] | None) -> tuple[list[DeadLetterRecord], Any]:
        res = DeadLetterRecord.query(ACCOUNT, filter_condition=cond, scan_index_forward=False,
                                     last_evaluated_key=key, limit=max(limit, 25))
        return list(res), res.last_evaluated_key

    with checked_start(start):
        recs, nxt = fill_page(fetch, lambda r: visible(_letter_resource(r)),
                              lambda r: {"account": {"S": ACCOUNT}, "letter_id": {"S": r.letter_id}}, limit, start)
    return [view_letter(r) for r in recs], nxt


def replay(letter_id: str) -> dict[str, Any]:
    """Queue a dead letter again (same webhook-id); refused while a replay is in flight."""
    from pynamodb.exceptions import UpdateError

    rec = _get_letter(letter_id, consistent=True)
    now = clock.now_s()
    try:
        rec.update(actions=[DeadLetterRecord.status.set("replaying"), DeadLetterRecord.updated_at.set(now),
                            DeadLetterRecord.replays.add(1)],
                   condition=DeadLetterRecord.status == "dead")
    except UpdateError as exc:
        if getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException":
            raise errors.conflict("FailedOperation.DeadLetterNotReplayable",
                                  f"dead letter {letter_id} is {rec.status}: only a dead letter can be replayed",
                                  "letter_id") from None
        raise
    job = dict(rec.job)
    job.update({"n": 0, "t0": None, "st": "a", "dl": letter_id, "rp": int(rec.replays or 0)})
    try:
        engine.enqueue([job], strict=True)
    except RuntimeError:
        rec.update(actions=[DeadLetterRecord.status.set("dead")])
        raise
    return view_letter(DeadLetterRecord.get(ACCOUNT, letter_id, consistent_read=True))


def deliveries(target_id: str, *, limit: int, start: dict[str, Any] | None) -> tuple[list[dict[str, Any]], Any]:
    """One target's delivery log, newest first."""
    expect_key(start, {"target": "S", "ts": "S"}, {"target": target_id})
    out: list[dict[str, Any]] = []
    with checked_start(start):
        res = DeliveryRecord.query(target_id, scan_index_forward=False, last_evaluated_key=start, limit=limit)
        for rec in res:
            out.append({"time": int(rec.ts.split("#", 1)[0]), "webhook_id": rec.webhook_id,
                        "attempt": int(rec.attempt), "ok": bool(rec.ok),
                        "status": int(rec.status) if rec.status is not None else None,
                        "latency_ms": int(rec.latency_ms or 0), "error": rec.error, "snippet": rec.snippet})
        return out, res.last_evaluated_key
