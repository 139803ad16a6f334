"""Domain events for people: "an OTA task started", "a device failed its upgrade", …

One small interface between the services that notice something (OTA, batches, alarms, video)
and the channels that tell people (webhooks, chat).  A producer calls :func:`emit`; channels
register a subscriber with :func:`subscribe`.  Subscribers must be cheap and must not raise
into the producer's path: a subscriber that needs I/O enqueues a job and returns.  Every event
is also logged (structured, without secrets), so an event nobody subscribes to is still seen.

Event kinds are dotted names, e.g. ``ota.task.started``, ``ota.device.failed``,
``ota.task.done``, ``ota.task.aborted``; a subscription pattern may end in ``*``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..core.observability import logger


@dataclass(frozen=True)
class DomainEvent:
    kind: str
    product_id: str
    #: small JSON-serialisable facts (ids, counts, reasons) — never secrets
    data: dict[str, Any] = field(default_factory=dict)
    at_ms: int = field(default_factory=lambda: int(time.time() * 1000))


Subscriber = Callable[[DomainEvent], None]
_subscribers: list[tuple[str, Subscriber]] = []


def subscribe(pattern: str, subscriber: Subscriber) -> None:
    """Call ``subscriber`` for every event whose kind matches ``pattern`` (exact, or prefix*)."""
    _subscribers.append((pattern, subscriber))


def unsubscribe(subscriber: Subscriber) -> None:
    _subscribers[:] = [(p, s) for p, s in _subscribers if s is not subscriber]


def _matches(pattern: str, kind: str) -> bool:
    return kind.startswith(pattern[:-1]) if pattern.endswith("*") else pattern == kind


def emit(kind: str, product_id: str, **data: Any) -> DomainEvent:
    event = DomainEvent(kind, product_id, data)
    logger.info("domain event", extra={"event_kind": kind, "product_id": product_id, "event_data": data})
    for pattern, subscriber in list(_subscribers):
        if _matches(pattern, kind):
            try:
                subscriber(event)
            except Exception:  # noqa: BLE001 - telling people never breaks the work itself
                logger.exception("event subscriber failed", extra={"event_kind": kind})
    return event
