"""The jobs queue: long work done as bounded, idempotent steps (ARCHITECTURE §3, "Long jobs").

An API call validates, writes its job record, and :func:`enqueue`s one message; the ``jobs``
worker (``handlers/workers.py``) runs each message's step, which checkpoints on its own
record and enqueues the next step.  A step must be safe to run twice: SQS delivers at least
once, and a crash between a write and the delete of the message re-delivers it.

Kinds map to ``"module:function"`` names imported on first use, so the worker's cold start
pays only for the kinds it actually runs.  A step raises :class:`Retry` (or any transient
AWS error) to have its message re-delivered after the visibility timeout; any other exception
is a bug in that step: it is logged and the message is re-delivered too, until the queue's
redrive policy parks it on the dead-letter queue.

Periodic work (OTA timeouts, dynamic tasks) registers in :data:`TICKS`; the ``ticks`` schedule
runs each of them once a minute, each guarded so one failing tick never starves the others.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

from ..core.config import settings
from ..core.observability import logger

#: message kind -> "module:function" taking the message body (a dict)
KINDS: dict[str, str] = {
    "batch.chunk": "chalicelib.services.production:run_chunk",
    "batch.finish": "chalicelib.services.production:run_finish",
    "ota.plan": "chalicelib.services.ota.rollout:plan_step",
    "ota.dispatch": "chalicelib.services.ota.rollout:dispatch_step",
    "ota.sweep": "chalicelib.services.ota.rollout:sweep_step",
    "ota.close": "chalicelib.services.ota.rollout:close_step",
    "events.dispatch": "chalicelib.services.events:dispatch_step",
    "video.analyse": "chalicelib.services.video:analyse_step",
    # the operator chat's answers: they run commands through the route kit, so they live in handlers
    "chat.reply": "chalicelib.handlers.chat:reply_step",
    "chat.run": "chalicelib.handlers.chat:run_step",
    "chat.follow": "chalicelib.handlers.chat:follow_step",
    "chat.summary": "chalicelib.services.chat_alerts:summary_step",
}

#: tick name -> "module:function" taking no argument, run by the ``ticks`` schedule
TICKS: dict[str, str] = {
    "batches.resume": "chalicelib.services.production:resume_stalled",
    "ota": "chalicelib.services.ota.rollout:tick",
    "events.redispatch": "chalicelib.services.events:redispatch",
    "video.sweep": "chalicelib.services.video:sweep",
}

#: SQS caps DelaySeconds at 15 minutes
MAX_DELAY_S = 900


class Retry(Exception):
    """Raised by a step that cannot finish now (a lock held, a dependency down): re-deliver."""


class UnknownKind(Exception):
    """A message whose kind no code handles (a newer deployment's message, or garbage)."""


def _resolve(table: dict[str, str], name: str) -> Callable[..., Any]:
    target = table.get(name)
    if target is None:
        raise UnknownKind(name)
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


@lru_cache(maxsize=1)
def _queue_url() -> str:
    return _sqs().get_queue_url(QueueName=settings().queue("jobs"))["QueueUrl"]


def _sqs() -> Any:
    import boto3

    return _client(boto3)


_clients: dict[str, Any] = {}


def _client(boto3: Any) -> Any:
    client = _clients.get("sqs")
    if client is None:
        client = _clients["sqs"] = boto3.client("sqs", region_name=settings().region)
    return client


def forget() -> None:
    """Drop cached clients and the queue URL (tests that swap the AWS backend call this)."""
    _clients.clear()
    _queue_url.cache_clear()


def _message(kind: str, body: dict[str, Any]) -> str:
    if kind not in KINDS:
        raise UnknownKind(kind)
    return json.dumps({"kind": kind, "body": body}, separators=(",", ":"), sort_keys=True)


def enqueue(kind: str, body: dict[str, Any], *, delay_s: int = 0) -> str:
    """Queue one step; returns the SQS message id."""
    reply = _sqs().send_message(
        QueueUrl=_queue_url(), MessageBody=_message(kind, body), DelaySeconds=max(0, min(MAX_DELAY_S, int(delay_s)))
    )
    return reply["MessageId"]


def enqueue_many(steps: Iterable[tuple[str, dict[str, Any]]], *, delay_s: int = 0) -> int:
    """Queue many steps, ten per SendMessageBatch; raises if any entry was refused."""
    entries = [_message(kind, body) for kind, body in steps]
    delay = max(0, min(MAX_DELAY_S, int(delay_s)))
    for start in range(0, len(entries), 10):
        chunk = entries[start : start + 10]
        reply = _sqs().send_message_batch(
            QueueUrl=_queue_url(),
            Entries=[{"Id": str(i), "MessageBody": text, "DelaySeconds": delay} for i, text in enumerate(chunk)],
        )
        if reply.get("Failed"):
            raise RuntimeError(f"SQS refused {len(reply['Failed'])} job messages: {reply['Failed'][0].get('Code')}")
    return len(entries)


def run(text: str) -> None:
    """Run one queued message's step (the worker calls this per SQS record).

    Raises to have the message re-delivered; an unreadable or unknown message is logged and
    dropped (re-delivering it could never succeed).
    """
    try:
        message = json.loads(text)
        kind, body = message["kind"], message["body"]
        step = _resolve(KINDS, kind)
    except (ValueError, KeyError, TypeError, UnknownKind):
        # never the text itself: a job body may carry a webhook URL or a token
        logger.error("unrunnable job message dropped", extra={"length": len(text)})
        return
    logger.thread_safe_append_keys(job_kind=kind)  # this thread only: the local stack serves HTTP beside it
    try:
        step(body)
    finally:
        logger.thread_safe_remove_keys(["job_kind"])


def tick() -> dict[str, str]:
    """Run every registered tick once; returns name -> "ok" | error class, for the log."""
    outcome: dict[str, str] = {}
    for name in TICKS:
        try:
            _resolve(TICKS, name)()
            outcome[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - one failing tick never starves the others
            logger.exception("tick failed", extra={"tick": name})
            outcome[name] = type(exc).__name__
    return outcome
