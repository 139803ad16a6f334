"""The delivery facade (SPEC §9.1-9.2): every outgoing delivery, its dead letters and its log.

Handlers and services reach the delivery engine (``forwarders/``) only through this module:

* **sending** — :func:`deliver_chat` queues a chat message (alerts, chat push) with the same
  guarantees; :func:`deliver` queues a signed POST with guaranteed delivery (retries after
  1 s, 3 s and 10 s from the first attempt — or the ``video`` schedule, 5 s and 10 s — ``Retry-After`` honoured on 429/503, 410 stops the
  target, then a dead letter with the reason; returns the ``webhook-id`` receivers deduplicate
  on); :func:`queue_jobs` queues the rule engine's forward jobs; :func:`run_batch` is the
  ``forward`` worker (the engine gets the rule lookup and the statistics as :class:`Hooks`);
* **fetching** — :func:`download`: a user-supplied URL into a local file through the same
  guard (the video analyser's media);
* **targets** — :func:`check_url` (SSRF guard), :func:`verify_callback` (Echostr),
  :func:`validate_action` / :func:`verify_action` (rule actions by kind), :func:`new_secret`;
  secrets are write-only (SPEC §2): :func:`masked`, :func:`kept_secret`, :func:`secrets_of`;
* **people's views** — dead letters (:func:`list_letters`, :func:`letter_owner`,
  :func:`replay`) and a target's delivery log (:func:`deliveries`), each decided per item on the
  resource of the rule, stream or callback the delivery was for: a rule's letters are
  ``product/{pid}/rule/{name}`` when the rule's topic filter names one product, a stream's
  ``product/{pid}/stream/{id}`` (:func:`owner_of_target`).

The services that own targets plug in here rather than being imported: the rule engine installs
its :class:`Hooks` (:func:`use_rule_hooks`) and every owner of targets its resolver
(:func:`register_owner`) when it is imported, so this module sits below them all.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pynamodb.exceptions import UpdateError

from ..core import clock, errors
from ..core.observability import logger
from ..forwarders import chat, engine, webhook
from ..forwarders.base import HOOK_RETRY_S
from ..models.rules import DeadLetterRecord, DeliveryRecord
from ..protocol.chat import Message
from . import analytics, device_logs
from .paging import checked_start, expect_key, fill_page

ACCOUNT = engine.ACCOUNT
Hooks = engine.Hooks
#: rule action kinds (``republish``, ``http``, ``sqs`` …)
ACTION_KINDS = tuple(engine.KINDS)
SECRET_FIELDS = webhook.SECRET_FIELDS
Target = webhook.Target
#: retry schedules of :func:`deliver` by name
RETRY_SCHEDULES = HOOK_RETRY_S
FetchError = webhook.FetchError

# re-exported target helpers: callers name them from the facade
check_url = webhook.check_url
verify_callback = webhook.verify_callback
masked = webhook.masked
kept_secret = webhook.kept_secret
new_secret = webhook.new_secret
new_webhook_id = engine.new_webhook_id
download = webhook.download


def secrets_of(targets: Iterable[Mapping[str, Any]]) -> set[str]:
    """Every secret value (token, signing secret) of some target settings."""
    return {str(t[k]) for t in targets for k in SECRET_FIELDS if t.get(k)}


# ===================================================================== plug-ins

_owners: dict[str, Callable[[str], str]] = {}
_rule_hooks: dict[str, Callable[..., Any]] = {}


def register_owner(prefix: str, resolver: Callable[[str], str]) -> None:
    """``resolver(id)`` is the resource of the targets named ``{prefix}/{id}/…``."""
    _owners[prefix] = resolver


def use_rule_hooks(
    *,
    lookup: Callable[[str], Any],
    add_stats: Callable[[str, dict[str, int]], None],
    stop_action: Callable[[str, int, str], None],
) -> None:
    """The rule engine's part of the forward worker's :class:`Hooks` (services/rules.py)."""
    _rule_hooks.update(lookup=lookup, add_stats=add_stats, stop_action=stop_action)


def _count(per_rule: dict[str, dict[str, int]], per_product: dict[str, int]) -> None:
    add_stats = _rule_hooks.get("add_stats")
    for rule, deltas in per_rule.items():
        try:
            if add_stats is not None:
                add_stats(rule, deltas)
        except Exception:  # noqa: BLE001 - statistics never fail a delivery
            logger.exception("rule statistics update failed", extra={"rule": rule})
    if per_product:
        tally = analytics.Tally()
        for pid, n in per_product.items():
            tally.add(pid, "rule_forwards", n)
        tally.flush()


def _diagnose(pid: str, dn: str, code: str, message: str, topic: str | None, payload: bytes | None) -> None:
    device_logs.diagnostic(pid, dn, code, message, topic=topic, payload=payload, direction="up")


def hooks() -> Hooks:
    """The forward worker's hooks; refuses to run without the rule engine's (a deployment error)."""
    if not _rule_hooks:
        raise RuntimeError("the rule engine has not installed its delivery hooks (import services.rules)")
    return Hooks(rule=_rule_hooks["lookup"], count=_count, stop_action=_rule_hooks["stop_action"], diagnose=_diagnose)


# ===================================================================== sending


def validate_action(action: dict[str, Any], path: str) -> dict[str, Any]:
    """A rule action's settings checked by its kind's forwarder (raises naming ``path.<field>``)."""
    return engine.kind_module(action["type"]).validate(action, path)


def verify_action(action: dict[str, Any], path: str) -> None:
    """The check a kind runs before its action is enabled (the Echostr GET of HTTP targets)."""
    mod = engine.kind_module(action["type"])
    if hasattr(mod, "verify"):
        mod.verify(action, path)


def queue_jobs(jobs: list[dict[str, Any]]) -> list[int]:
    """Queue forward jobs; returns the indexes the queue refused."""
    return engine.enqueue(jobs)


def dead_letter(job: dict[str, Any], *, target_id: str, reason: str, attempts: int) -> str:
    return engine.dead_letter(job, target_id=target_id, reason=reason, attempts=attempts)


def deliver(
    target: Target | Mapping[str, Any],
    body: Any,
    *,
    target_id: str,
    webhook_id: str | None = None,
    product_id: str | None = None,
    device_name: str | None = None,
    delay_s: int = 0,
    resource: str | None = None,
    retry: str = "webhook",
) -> str:
    """Queue a signed POST with guaranteed delivery (see the module doc); returns the webhook-id.
    ``resource`` is what the delivery belongs to (a stream's ``product/{pid}/stream/{id}``): its
    dead letter is shown to whoever may read that resource.  ``retry`` names the retry schedule
    (``RETRY_SCHEDULES``: the default 1 s, 3 s, 10 s, or ``video``: 5 s, 10 s)."""
    if retry not in RETRY_SCHEDULES:
        raise ValueError(f"unknown retry schedule {retry!r}")
    target = Target.of(target)
    wid = webhook_id or engine.new_webhook_id()
    data = body if isinstance(body, (bytes, bytearray)) else webhook.body_bytes(body)
    job = {
        "k": "hook",
        "id": wid,
        "n": 0,
        "tid": target_id,
        "target": target.as_dict(),
        "body": base64.b64encode(bytes(data)).decode(),
        "pid": product_id,
        "dn": device_name,
    }
    if resource:
        job["own"] = resource
    if retry != "webhook":
        job["rs"] = retry
    _queue(job, target_id, delay_s)
    return wid


def _queue(job: dict[str, Any], target_id: str, delay_s: int) -> None:
    if engine.enqueue([job], delay_s=delay_s):
        # the queue refused it: recorded as a replayable dead letter, never dropped
        engine.dead_letter(
            job,
            target_id=target_id,
            attempts=0,
            reason="the forward queue refused the delivery (replay it when the queue is back)",
        )


def deliver_chat(
    channel: str,
    message: Message,
    *,
    target_id: str,
    product_id: str | None = None,
    device_name: str | None = None,
    resource: str | None = None,
    delay_s: int = 0,
) -> str:
    """Queue a chat message to ``channel`` (``slack:T…:C…`` / ``feishu:<id>``) with the same
    guarantees as :func:`deliver` (retries, dead letter with the reason, delivery log of
    ``target_id``); rendered and sent per platform by ``forwarders/chat.py``.  The message must
    hold no secret: it is stored on the queue and, if it fails, in its dead letter."""
    wid = engine.new_webhook_id()
    job: dict[str, Any] = {
        "k": "chat",
        "id": wid,
        "n": 0,
        "tid": target_id,
        "ch": channel,
        "m": chat.dump_message(message),
        "pid": product_id,
        "dn": device_name,
    }
    if resource:
        job["own"] = resource
    _queue(job, target_id, delay_s)
    return wid


def run_batch(records: Iterable[tuple[str, str]]) -> list[str]:
    """The ``forward`` worker: one SQS batch of jobs; returns the message ids to re-deliver."""
    return engine.run_batch(records, hooks())


# ===================================================================== people's views


def owner_of_target(target_id: str) -> str:
    """The resource a delivery target belongs to: ``rule/{name}/…`` → the rule's, ``stream/{id}…``
    → the stream's; a target whose owner is gone (or unknown) is an account-level resource."""
    parts = target_id.split("/")
    resolver = _owners.get(parts[0]) if len(parts) >= 2 else None
    if resolver is not None:
        return resolver(parts[1])
    return f"delivery/{parts[0]}"


def _letter_resource(rec: DeadLetterRecord) -> str:
    if rec.resource:
        return str(rec.resource)
    if rec.target:  # letters written before they carried their resource
        return owner_of_target(rec.target)
    return f"deadletter/{rec.letter_id}"


def view_letter(rec: DeadLetterRecord) -> dict[str, Any]:
    return {
        "id": rec.letter_id,
        "target": rec.target,
        "rule": rec.rule,
        "resource": _letter_resource(rec),
        "product_id": rec.product_id,
        "device_name": rec.device_name,
        "reason": rec.reason,
        "attempts": int(rec.attempts or 0),
        "status": rec.status,
        "webhook_id": rec.webhook_id,
        "created_at": int(rec.created_at),
        "updated_at": int(rec.updated_at),
        "replays": int(rec.replays or 0),
    }


def _get_letter(letter_id: str, consistent: bool = False) -> DeadLetterRecord:
    try:
        rec = DeadLetterRecord.get(ACCOUNT, letter_id, consistent_read=consistent)
    except DeadLetterRecord.DoesNotExist:
        rec = None
    if rec is None or (rec.expires_at is not None and int(rec.expires_at) <= clock.now_s()):
        raise errors.DEAD_LETTER_NOT_EXIST(f"dead letter {letter_id} does not exist", "letter_id")
    return rec


def letter_owner(letter_id: str) -> tuple[str, DeadLetterRecord]:
    """(resource, record) of a dead letter, for the route kit's per-item decision."""
    rec = _get_letter(letter_id)
    return _letter_resource(rec), rec


def list_letters(
    *, visible: Callable[[str], bool], status: str | None, rule: str | None, limit: int, start: dict[str, Any] | None
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
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
        res = DeadLetterRecord.query(
            ACCOUNT, filter_condition=cond, scan_index_forward=False, last_evaluated_key=key, limit=max(limit, 25)
        )
        return list(res), res.last_evaluated_key

    with checked_start(start):
        recs, nxt = fill_page(
            fetch,
            lambda r: visible(_letter_resource(r)),
            lambda r: {"account": {"S": ACCOUNT}, "letter_id": {"S": r.letter_id}},
            limit,
            start,
        )
    return [view_letter(r) for r in recs], nxt


def replay(letter_id: str) -> dict[str, Any]:
    """Queue a dead letter again (same webhook-id); refused while a replay is in flight."""
    rec = _get_letter(letter_id, consistent=True)
    now = clock.now_s()
    try:
        rec.update(
            actions=[
                DeadLetterRecord.status.set("replaying"),
                DeadLetterRecord.updated_at.set(now),
                DeadLetterRecord.replays.add(1),
            ],
            condition=DeadLetterRecord.status == "dead",
        )
    except UpdateError as exc:
        if getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException":
            raise errors.DEAD_LETTER_NOT_REPLAYABLE(
                f"dead letter {letter_id} is {rec.status}: only a dead letter can be replayed", "letter_id"
            ) from None
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
            out.append(
                {
                    "time": int(rec.ts.split("#", 1)[0]),
                    "webhook_id": rec.webhook_id,
                    "attempt": int(rec.attempt),
                    "ok": bool(rec.ok),
                    "status": int(rec.status) if rec.status is not None else None,
                    "latency_ms": int(rec.latency_ms or 0),
                    "error": rec.error,
                    "snippet": rec.snippet,
                }
            )
        return out, res.last_evaluated_key
