"""Domain events: "an OTA task started", "a device failed its upgrade", "a batch is done", …

One small interface between the services that notice something (OTA, batches, alarms, video)
and the channels that tell people or systems (the rule engine's webhooks and queues, chat).

A producer calls :func:`emit`.  The event is logged (structured, never a secret), **recorded**
(the ``events`` table, 30 days) and, when durable subscribers want it, **one job** is queued
(``events.dispatch``) that runs them — so nothing that needs I/O runs inline in the producer's
path, and an event reaches its channels even if the producing invocation dies right after
``emit`` returns.  A record whose job could not be queued, or whose dispatch keeps failing,
stays ``pending``; the ``events.redispatch`` tick queues it again.  Subscribers get each event
at least once and must be idempotent (``event_id`` is stable).

Durable subscribers are named in :data:`SUBSCRIBERS` as ``"module:function"`` (imported on first
use, like the job kinds).  :func:`subscribe` adds an in-process subscriber (cheap, no I/O: tests,
counters); it runs inline and never breaks the producer.

Event kinds (dotted; a subscription pattern may end in ``*``):

* ``batch.done``, ``batch.failed`` — a batch job finished (batch_id, batch_kind, counts, reason);
* ``ota.task.started``, ``ota.task.done``, ``ota.task.aborted``, ``ota.device.failed`` — an
  upgrade task's life and its failed devices (task_id, device_name, reason, statistics);
  ``resource.*`` the same for resource distribution;
* ``video.task.done``, ``video.task.failed`` — a video summary task finished (task_id,
  device_name, service_type; status 2|3 and classes when done, reason when failed).
* ``fence.alarm`` — a bound device's fix crossed a fence boundary in a triggering direction
  (``services/location``): device_name, fence_id, fence_name, space_id, type enter|exit, time
  (the fix's, ms), lat, lon, accuracy — one per alarm row, never per fix; on the rule engine's
  ``$events/{ProductId}/fence/alarm``.
* ``rule.dead_letter`` — a rule's deliveries were dead-lettered (rule, dead_letters: how many in
  one forward batch); for people (chat alerts) only: the rule engine does not receive ``rule.*``.

The rule engine receives every event as a message on ``$events/{ProductId}/{kind with / for .}``
(e.g. ``$events/ABCDEFGHIJ/ota/device/failed``; payload ``{"event","eventId","productId","time",…data}``),
so every rule action — signed webhook, SQS, SNS, Kinesis, DynamoDB, Lambda, S3 — can carry events
with its retries and dead letters.
"""

from __future__ import annotations

import importlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..core import clock
from ..core.observability import logger
from ..models.events import EventRecord
from . import jobs

#: durable subscriber name -> (kind pattern, "module:function" taking a DomainEvent)
SUBSCRIBERS: dict[str, tuple[str, str]] = {
    "rules": ("*", "chalicelib.services.rules:on_event"),
    "chat": ("*", "chalicelib.services.chat_alerts:on_event"),
}
RETENTION_S = 30 * 86400
#: a pending event older than this is queued again by the tick, at most MAX_DISPATCHES times in all
REDISPATCH_AFTER_S = 120
MAX_DISPATCHES = 10
ACCOUNT_WIDE = "-"


@dataclass(frozen=True)
class DomainEvent:
    kind: str
    product_id: str
    #: small JSON-serialisable facts (ids, counts, reasons) — never secrets
    data: dict[str, Any] = field(default_factory=dict)
    at_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    event_id: str = field(default_factory=lambda: "ev-" + secrets.token_hex(8))

    def as_message(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "product_id": self.product_id,
            "data": self.data,
            "at_ms": self.at_ms,
            "event_id": self.event_id,
        }

    @classmethod
    def of(cls, doc: dict[str, Any]) -> DomainEvent:
        return cls(doc["kind"], doc["product_id"], dict(doc.get("data") or {}), int(doc["at_ms"]), doc["event_id"])


Subscriber = Callable[[DomainEvent], None]
_subscribers: list[tuple[str, Subscriber]] = []


def subscribe(pattern: str, subscriber: Subscriber) -> None:
    """Call ``subscriber`` inline for every event whose kind matches ``pattern`` (exact, or prefix*)."""
    _subscribers.append((pattern, subscriber))


def unsubscribe(subscriber: Subscriber) -> None:
    _subscribers[:] = [(p, s) for p, s in _subscribers if s is not subscriber]


def matches(pattern: str, kind: str) -> bool:
    return kind.startswith(pattern[:-1]) if pattern.endswith("*") else pattern == kind


def emit(kind: str, product_id: str, **data: Any) -> DomainEvent:
    """Log, record and dispatch an event (see the module doc).  Never raises into the producer."""
    event = DomainEvent(kind, product_id, data)
    logger.info(
        "domain event",
        extra={"event_kind": kind, "product_id": product_id, "event_data": data, "event_id": event.event_id},
    )
    for pattern, subscriber in list(_subscribers):
        if matches(pattern, kind):
            try:
                subscriber(event)
            except Exception:  # noqa: BLE001 - telling people never breaks the work itself
                logger.exception("event subscriber failed", extra={"event_kind": kind})
    durable = [name for name, (pattern, _) in SUBSCRIBERS.items() if matches(pattern, kind)]
    try:
        _record(event, durable)
    except Exception:  # noqa: BLE001 - the event is logged; the producer's work stands
        logger.exception("domain event could not be recorded", extra={"event_kind": kind, "event_id": event.event_id})
        return event
    if durable:
        try:
            jobs.enqueue("events.dispatch", {"event": event.as_message(), "subscribers": durable})
        except Exception:  # noqa: BLE001 - recorded as pending: the redispatch tick queues it
            logger.exception("domain event dispatch not queued; the tick will", extra={"event_id": event.event_id})
    return event


def _record(event: DomainEvent, durable: list[str]) -> None:
    rec = EventRecord(
        product_id=event.product_id or ACCOUNT_WIDE,
        sk=f"{event.at_ms:013d}#{event.event_id}",
        event_id=event.event_id,
        kind=event.kind,
        at_ms=event.at_ms,
        data=event.data,
        subscribers=durable,
        expires_at=event.at_ms // 1000 + RETENTION_S,
    )
    if durable:
        rec.pending = "1"
    rec.save()


def _subscriber(name: str) -> Subscriber:
    module, _, attr = SUBSCRIBERS[name][1].partition(":")
    return getattr(importlib.import_module(module), attr)


def dispatch_step(body: dict[str, Any]) -> None:
    """Job ``events.dispatch``: run the event's durable subscribers, then clear its ``pending``.
    A subscriber that raises fails the step: the job is re-delivered (every subscriber runs
    again; they are idempotent on ``event_id``)."""
    event = DomainEvent.of(body["event"])
    for name in body.get("subscribers") or []:
        if name in SUBSCRIBERS:
            _subscriber(name)(event)
    try:
        EventRecord(product_id=event.product_id or ACCOUNT_WIDE, sk=f"{event.at_ms:013d}#{event.event_id}").update(
            actions=[EventRecord.pending.remove()]
        )
    except Exception:  # noqa: BLE001 - delivered; at worst the tick dispatches it once more
        logger.exception("could not clear a dispatched event", extra={"event_id": event.event_id})


def redispatch() -> int:
    """Tick ``events.redispatch``: queue again the events still pending after a while."""
    cutoff = clock.now_ms() - REDISPATCH_AFTER_S * 1000
    queued = 0
    for rec in EventRecord.by_pending.query("1", EventRecord.at_ms < cutoff, limit=500):
        event = DomainEvent(
            rec.kind,
            "" if rec.product_id == ACCOUNT_WIDE else rec.product_id,
            dict(rec.data or {}),
            int(rec.at_ms),
            rec.event_id,
        )
        if int(rec.dispatches or 0) >= MAX_DISPATCHES:
            # recorded, never silently lost: the event stays queryable with why it stopped
            rec.update(
                actions=[
                    EventRecord.pending.remove(),
                    EventRecord.gave_up.set(f"its subscribers failed {MAX_DISPATCHES} dispatches"),
                ]
            )
            logger.error(
                "domain event given up after repeated dispatch failures",
                extra={"event_id": rec.event_id, "event_kind": rec.kind},
            )
            continue
        rec.update(actions=[EventRecord.dispatches.add(1)])
        jobs.enqueue("events.dispatch", {"event": event.as_message(), "subscribers": list(rec.subscribers or [])})
        queued += 1
    if queued:
        logger.warning("pending domain events queued again", extra={"events": queued})
    return queued
