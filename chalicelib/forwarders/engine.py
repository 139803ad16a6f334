"""The delivery engine: forward jobs on the ``forward`` queue, retries, error actions, dead letters.

A job is one message for one target: a rule action (``k: "rule"``), a plain webhook
(``k: "hook"``, queued by ``delivery.deliver``) or a chat message (``k: "chat"``, queued by
``delivery.deliver_chat``: a channel ref and a neutral message, rendered and sent by
``forwarders/chat.py``; retries after 1, 3 and 10 s).  The ``forward`` worker
(``handlers/forward.py``) runs the jobs of one SQS batch concurrently (:func:`run_batch`), so a
batch lasts about one attempt (≤ :func:`webhook.max_attempt_s`, 15 s by default) — far under
the queue's 360 s visibility timeout.

Per job, one attempt, logged in the target's delivery log (``GET /v1/deliveries?target=``):

* success → counted (rule stats ``forwards_ok``);
* failure with attempts left → a **new** message with ``DelaySeconds`` so the next attempt
  starts at the first attempt's time + 1 s, + 3 s, + 10 s (republish QoS 1: + 3, + 6, + 9 s;
  a video result callback: + 5 s, + 10 s — ``base.HOOK_RETRY_S``;
  ``Retry-After`` of a 429/503 wins when later); the failed message itself completes, so no
  attempt ever waits out a visibility timeout;
* the last failure (or a permanent one: blocked URL, 410 Gone, access denied) → a diagnostic
  in the device's cloud log (SPEC §5 code), then the rule's error actions get the message once
  (one job, all error actions concurrently); if there are none or one of them fails, a
  **dead letter** records the job and the reason.  :func:`replay` re-queues a dead letter with
  the same ``webhook-id`` (receivers deduplicate on it); a replay that fails again updates the
  same dead letter.

The ``webhook-id`` (``msg_…``) is fixed when the job is created, so every attempt and replay of
one message to one target carries the same id.
"""

from __future__ import annotations

import base64
import importlib
import json
import math
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ..core import clock
from ..core.config import settings
from ..core.observability import logger
from ..models.rules import DeadLetterRecord, DeliveryRecord
from ..protocol import diagnostics
from . import chat, webhook
from .base import HOOK_RETRY_S, RETRY_S, Delivery, MissingField, forget_clients
from .webhook import Outcome

#: action type -> forwarder module (one per kind)
KINDS = {
    "republish": "chalicelib.forwarders.republish",
    "http": "chalicelib.forwarders.http",
    "sqs": "chalicelib.forwarders.sqs",
    "sns": "chalicelib.forwarders.sns",
    "kinesis": "chalicelib.forwarders.kinesis",
    "dynamodb": "chalicelib.forwarders.dynamodb",
    "lambda": "chalicelib.forwarders.lambda_invoke",
    "s3": "chalicelib.forwarders.s3",
}
MAX_DELAY_S = 900
MAX_JOB_BYTES = 250_000
MAX_BATCH_BYTES = 250_000
ACCOUNT = "main"


@dataclass(frozen=True)
class Hooks:
    """What the engine needs from the services above it, handed in by the delivery facade
    (``services/delivery.py``) so this layer imports none of them:

    * ``rule(name)`` — the rule as it runs now (``.name``, ``.actions``, ``.error_actions``), or None;
    * ``count(per_rule, per_product)`` — statistics of a batch: per-rule counter deltas
      (``hits``/``forwards_ok``/``failures``/``dead_letters``) and forwards per product;
    * ``stop_action(rule, index, reason)`` — a target answered 410 Gone: stop sending to it;
    * ``diagnose(product_id, device_name, code, message, topic, payload)`` — a line in the
      device's cloud diagnostic log (SPEC §5).
    """

    rule: Callable[[str], Any]
    count: Callable[[dict[str, dict[str, int]], dict[str, int]], None]
    stop_action: Callable[[str, int, str], None]
    diagnose: Callable[[str, str, str, str, str | None, bytes | None], None]


def kind_module(kind: str) -> Any:
    return importlib.import_module(KINDS[kind])


def new_webhook_id() -> str:
    return "msg_" + secrets.token_hex(12)


# ===================================================================== the queue

_clients: dict[str, Any] = {}


def _sqs() -> Any:
    client = _clients.get("sqs")
    if client is None:
        import boto3

        client = _clients["sqs"] = boto3.client("sqs", region_name=settings().region)
    return client


@lru_cache(maxsize=1)
def queue_url() -> str:
    return _sqs().get_queue_url(QueueName=settings().queue("forward"))["QueueUrl"]


def forget() -> None:
    """Drop cached clients (tests that swap the AWS backend)."""
    _clients.clear()
    queue_url.cache_clear()
    forget_clients()


def _dump(job: dict[str, Any]) -> str:
    return json.dumps(job, separators=(",", ":"), ensure_ascii=False)


def _delay(seconds: float) -> int:
    return max(0, min(MAX_DELAY_S, int(math.ceil(seconds))))


def enqueue(jobs: list[dict[str, Any]], *, delay_s: float | list[float] = 0, strict: bool = False) -> list[int]:
    """Queue jobs with SendMessageBatch (≤ 10 entries and ≤ 250 KB per call, refused entries
    retried twice); ``delay_s`` for all, or one per job.  Returns the indexes of the jobs that
    could not be queued — or raises ``RuntimeError`` when ``strict``.  A job too large for SQS
    is refused (its index returned)."""
    delays = [_delay(d) for d in delay_s] if isinstance(delay_s, list) else [_delay(delay_s)] * len(jobs)
    bodies = [_dump(j) for j in jobs]
    failed: list[int] = []
    pending: list[int] = []
    for i, body in enumerate(bodies):
        (failed if len(body.encode()) > MAX_JOB_BYTES else pending).append(i)
    for _ in range(3):
        if not pending:
            break
        retry: list[int] = []
        chunk: list[int] = []
        size = 0

        def flush(chunk: list[int], retry: list[int] = retry) -> None:
            try:
                reply = _sqs().send_message_batch(
                    QueueUrl=queue_url(),
                    Entries=[
                        {"Id": str(n), "MessageBody": bodies[i], "DelaySeconds": delays[i]} for n, i in enumerate(chunk)
                    ],
                )
            except Exception:  # noqa: BLE001 - the whole call failed: retry its entries
                logger.exception("forward queue SendMessageBatch failed")
                retry.extend(chunk)
                return
            for f in reply.get("Failed") or []:
                retry.append(chunk[int(f["Id"])])

        for i in pending:
            n = len(bodies[i].encode())
            if chunk and (len(chunk) == 10 or size + n > MAX_BATCH_BYTES):
                flush(chunk)
                chunk, size = [], 0
            chunk.append(i)
            size += n
        if chunk:
            flush(chunk)
        pending = retry
        if pending:
            time.sleep(0.1)
    failed.extend(pending)
    if failed and strict:
        raise RuntimeError(f"the forward queue refused {len(failed)} job(s)")
    return sorted(failed)


# ===================================================================== statistics


class Stats:
    """What one worker batch produced, written in bulk at its end: per-rule counters (one update
    per rule), delivery-log rows (BatchWriteItem) and follow-up jobs (SendMessageBatch with a
    delay per entry)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[str, dict[str, int]] = {}
        self.product_forwards: dict[str, int] = {}
        self.rows: list[Any] = []
        self.followups: list[tuple[str | None, dict[str, Any], float]] = []

    def log(self, row: Any) -> None:
        with self._lock:
            self.rows.append(row)

    def follow(self, message_id: str | None, job: dict[str, Any], delay_s: float = 0) -> None:
        with self._lock:
            self.followups.append((message_id, job, clock.now_ms() + delay_s * 1000))

    def send_followups(self) -> set[str | None]:
        """Queue the follow-up jobs; returns the message ids whose follow-up was refused."""
        if not self.followups:
            return set()
        now = clock.now_ms()
        refused = enqueue(
            [j for _, j, _ in self.followups], delay_s=[(due - now) / 1000 for _, _, due in self.followups]
        )
        return {self.followups[i][0] for i in refused}

    def write_rows(self) -> None:
        if not self.rows:
            return
        try:
            with DeliveryRecord.batch_write() as batch:
                for row in self.rows:
                    batch.save(row)
        except Exception:  # noqa: BLE001 - the log never fails the deliveries
            logger.exception("delivery log write failed", extra={"rows": len(self.rows)})

    def add(self, rule: str | None, metric: str, n: int = 1) -> None:
        if not rule:
            return
        with self._lock:
            per = self.counts.setdefault(rule, {})
            per[metric] = per.get(metric, 0) + n

    def forwarded(self, pid: str | None) -> None:
        if pid:
            with self._lock:
                self.product_forwards[pid] = self.product_forwards.get(pid, 0) + 1

    def flush(self, hooks: Hooks) -> None:
        """Hand the batch's statistics to the services (never fails the deliveries)."""
        try:
            hooks.count(self.counts, self.product_forwards)
        except Exception:  # noqa: BLE001 - statistics never fail a delivery
            logger.exception("delivery statistics update failed")


# ===================================================================== delivery log, dead letters


def log_attempt(stats: Stats, target_id: str, webhook_id: str, attempt: int, outcome: Outcome, started_ms: int) -> None:
    """One delivery-log row (time = when the attempt started), written with the batch."""
    stats.log(
        DeliveryRecord(
            target=target_id,
            ts=f"{started_ms:013d}#{secrets.token_hex(3)}",
            webhook_id=webhook_id,
            attempt=attempt,
            ok=outcome.ok,
            status=outcome.status,
            latency_ms=outcome.latency_ms,
            error=(outcome.error or None) and outcome.error[:300],
            snippet=(outcome.snippet or None) and outcome.snippet[:256],
            expires_at=started_ms // 1000 + settings().delivery_log_days * 86400,
        )
    )


def dead_letter(job: dict[str, Any], *, target_id: str, reason: str, attempts: int) -> str:
    """Record (or, for a replayed job, update) the dead letter of ``job``; returns its id."""
    now = clock.now_ms()
    letter_id = job.get("dl") or f"{now:013d}{secrets.token_hex(4)}"
    msg = job.get("msg") or {}
    stored = {k: v for k, v in job.items() if k not in ("dl", "why", "e")}
    stored.update({"n": 0, "t0": None, "st": "a"})
    rec = DeadLetterRecord(
        account=ACCOUNT,
        letter_id=letter_id,
        target=target_id,
        rule=job.get("r"),
        resource=job.get("own") or (f"rule/{job['r']}" if job.get("r") else None),
        product_id=msg.get("pid") or job.get("pid"),
        device_name=msg.get("dn") or job.get("dn"),
        reason=reason[:1000],
        attempts=attempts,
        status="dead",
        job=stored,
        webhook_id=job.get("id"),
        created_at=now // 1000,
        updated_at=now // 1000,
        replays=int(job.get("rp") or 0),
        expires_at=now // 1000 + settings().dead_letter_days * 86400,
    )
    rec.save()
    logger.warning(
        "delivery dead-lettered", extra={"target": target_id, "letter_id": letter_id, "reason": reason[:200]}
    )
    return letter_id


def letter_delivered(letter_id: str) -> None:
    """A replayed dead letter got through: mark it ``replayed``."""
    try:
        DeadLetterRecord(account=ACCOUNT, letter_id=letter_id).update(
            actions=[DeadLetterRecord.status.set("replayed"), DeadLetterRecord.updated_at.set(clock.now_s())]
        )
    except Exception:  # noqa: BLE001
        logger.exception("marking a replayed dead letter failed", extra={"letter_id": letter_id})


# ===================================================================== running jobs


@dataclass
class _Plan:
    """What one job resolves to: the attempt to make and where it is logged."""

    delivery: Delivery
    send: Any
    offsets: tuple[float, ...]
    code: str


def _diagnose(hooks: Hooks, job: dict[str, Any], code: str, message: str) -> None:
    msg = job.get("msg") or {}
    pid, dn = msg.get("pid") or job.get("pid"), msg.get("dn") or job.get("dn")
    if not pid or not dn:
        return
    payload = None
    if msg.get("raw") is not None:
        try:
            payload = base64.b64decode(msg["raw"])
        except (ValueError, TypeError):
            payload = None
    try:
        hooks.diagnose(pid, dn, code, message[:1024], msg.get("topic"), payload)
    except Exception:  # noqa: BLE001 - a diagnostic never fails the delivery
        logger.exception("delivery diagnostic failed")


def _hook_plan(job: dict[str, Any]) -> _Plan:
    target = job["target"]
    body = base64.b64decode(job.get("body") or "")
    d = Delivery(job=job, action=target, rule=None, webhook_id=job["id"], target_id=job["tid"])
    offsets = HOOK_RETRY_S.get(job.get("rs") or "webhook", RETRY_S)
    return _Plan(
        d, lambda d=d: webhook.attempt(target, body, d.webhook_id), offsets, diagnostics.FORWARD_THIRD_SYSTEM_ERR
    )


def _chat_plan(job: dict[str, Any]) -> _Plan:
    channel = job["ch"]
    d = Delivery(
        job=job, action={"type": "chat", "channel": channel}, rule=None, webhook_id=job["id"], target_id=job["tid"]
    )
    return _Plan(d, lambda d=d: chat.send(channel, job.get("m") or {}, d.webhook_id), chat.RETRY_S, chat.CODE)


def _rule_plan(job: dict[str, Any], rule: Any, index: int, error_stage: bool) -> _Plan | str:
    actions = rule.error_actions if error_stage else rule.actions
    if index >= len(actions):
        return f"the rule's {'error ' if error_stage else ''}action {index} no longer exists"
    action = actions[index]
    mod = kind_module(action["type"])
    tid = f"rule/{rule.name}/{'error/' if error_stage else ''}{index}"
    d = Delivery(job=job, action=action, rule=rule.name, webhook_id=job["id"], target_id=tid)
    offsets = mod.retry_offsets(d) if hasattr(mod, "retry_offsets") else getattr(mod, "RETRY_S", RETRY_S)
    return _Plan(d, lambda d=d, mod=mod: mod.send(d), offsets, mod.CODE)


def _attempt(plan: _Plan) -> Outcome:
    try:
        return plan.send()
    except MissingField as exc:
        return Outcome(
            False,
            error=f"the rule output has no field {exc.args[0]!r}",
            code=diagnostics.PAYLOAD_NO_FIELD,
            permanent=True,
        )
    except Exception as exc:  # noqa: BLE001 - a forwarder bug is this attempt's failure, with the reason
        logger.exception("forwarder raised", extra={"target": plan.delivery.target_id})
        return Outcome(False, error=f"{type(exc).__name__}: {str(exc)[:200]}", code=plan.code)


def _describe(target_id: str, action: dict[str, Any], attempts: int, outcome: Outcome) -> str:
    kind = action.get("type", "webhook")
    return f"{target_id} ({kind}): {attempts} attempt(s) failed; last: {outcome.error or 'failed'}"


def run_job(job: dict[str, Any], stats: Stats, hooks: Hooks, message_id: str | None = None) -> None:
    """Run one job (see the module doc).  Its follow-up (retry, error actions) is queued with
    the batch; if that fails, the SQS message is re-delivered and the attempt made again."""
    kind = job.get("k")
    now_ms = clock.now_ms()
    if job.get("t0") is None:
        job["t0"] = now_ms
    rule = None
    if kind == "hook":
        plan: _Plan | str = _hook_plan(job)
    elif kind == "chat":
        plan = _chat_plan(job)
    elif kind == "rule":
        rule = hooks.rule(job["r"])
        if rule is None:
            plan = f"the rule {job['r']} no longer exists"
        elif job.get("st") == "e":
            _run_error_actions(job, rule, stats)
            return
        else:
            plan = _rule_plan(job, rule, int(job["a"]), False)
    else:
        logger.error("unknown forward job dropped", extra={"job_kind": str(kind)[:40]})
        return
    if isinstance(plan, str):
        tid = f"rule/{job.get('r')}/{job.get('a')}"
        stats.add(job.get("r"), "failures")
        stats.add(job.get("r"), "dead_letters")
        dead_letter(job, target_id=tid, reason=plan, attempts=int(job.get("n") or 0))
        return

    attempt_no = int(job.get("n") or 0) + 1
    started_ms = clock.now_ms()
    outcome = _attempt(plan)
    log_attempt(stats, plan.delivery.target_id, job["id"], attempt_no, outcome, started_ms)
    if outcome.ok:
        stats.add(plan.delivery.rule, "forwards_ok")
        stats.forwarded(plan.delivery.product_id or None)
        if job.get("dl"):
            letter_delivered(job["dl"])
        return
    stats.add(plan.delivery.rule, "failures")
    if outcome.gone and rule is not None:
        hooks.stop_action(rule.name, int(job["a"]), outcome.error or "410 Gone")
    if not outcome.permanent and attempt_no <= len(plan.offsets):
        due_ms = int(job["t0"]) + int(plan.offsets[attempt_no - 1] * 1000)
        delay = max(0.0, (due_ms - clock.now_ms()) / 1000)
        if outcome.retry_after_s is not None:
            delay = max(delay, outcome.retry_after_s)
        stats.follow(message_id, dict(job, n=attempt_no), delay)
        return
    reason = _describe(plan.delivery.target_id, plan.delivery.action, attempt_no, outcome)
    _diagnose(hooks, job, outcome.code or plan.code, reason)
    if rule is not None and rule.error_actions:
        stats.follow(message_id, dict(job, st="e", why=reason, n=attempt_no))
        return
    stats.add(plan.delivery.rule, "dead_letters")
    dead_letter(job, target_id=plan.delivery.target_id, reason=reason, attempts=attempt_no)


#: a batch holds ≤ 10 jobs and a rule ≤ 10 error actions: 100 threads keep even a batch of error
#: jobs to about one attempt's duration (far under the function timeout)
_fanout = ThreadPoolExecutor(max_workers=100, thread_name_prefix="error-actions")


def _run_error_actions(job: dict[str, Any], rule: Any, stats: Stats) -> None:
    """The rule's error actions get the failed message once, concurrently; a dead letter when
    any of them fails (or cannot run)."""
    why = job.get("why") or "the action failed"
    err_job = dict(job)
    err_job["out"] = {"j": {"rule": rule.name, "reason": why, "output": _output_of(job)}}
    plans = [_rule_plan(err_job, rule, i, True) for i in range(len(rule.error_actions))]
    results: list[str] = []

    def one(i: int, plan: _Plan | str) -> str | None:
        if isinstance(plan, str):
            return plan
        started_ms = clock.now_ms()
        outcome = _attempt(plan)
        log_attempt(stats, plan.delivery.target_id, job["id"], 1, outcome, started_ms)
        if outcome.ok:
            return None
        return _describe(plan.delivery.target_id, plan.delivery.action, 1, outcome)

    futures = [_fanout.submit(one, i, p) for i, p in enumerate(plans)]
    for f in futures:
        r = f.result()
        if r:
            results.append(r)
    if not plans:
        results.append("the rule has no error actions any more")
    if results:
        stats.add(rule.name, "dead_letters")
        dead_letter(
            job,
            target_id=f"rule/{rule.name}/{job.get('a')}",
            reason=f"{why}; error actions failed: " + "; ".join(results),
            attempts=int(job.get("n") or 0),
        )
    elif job.get("dl"):
        letter_delivered(job["dl"])


def _output_of(job: dict[str, Any]) -> Any:
    out = job.get("out") or {}
    return out["j"] if "j" in out else {"base64": out.get("b")}


_pool = ThreadPoolExecutor(max_workers=10, thread_name_prefix="forward")


def run_batch(bodies: Iterable[tuple[str, str]], hooks: Hooks) -> list[str]:
    """Run the jobs of one SQS batch concurrently; returns the ids of the messages to re-deliver."""
    stats = Stats()
    items = list(bodies)

    def one(mid: str, body: str) -> None:
        try:
            job = json.loads(body)
        except ValueError:
            # never the body itself: it may hold a target URL or token
            logger.error("unreadable forward job dropped", extra={"message_id": mid, "length": len(body)})
            return
        run_job(job, stats, hooks, mid)

    futures = [(mid, _pool.submit(one, mid, body)) for mid, body in items]
    failed = set()
    for mid, fut in futures:
        try:
            fut.result()
        except Exception:  # noqa: BLE001 - re-delivered alone; its neighbours completed
            logger.exception("forward job failed; the message will be re-delivered", extra={"message_id": mid})
            failed.add(mid)
    failed |= stats.send_followups()
    stats.write_rows()
    stats.flush(hooks)
    return [mid for mid, _ in items if mid in failed]
