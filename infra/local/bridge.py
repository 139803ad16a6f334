"""The local stand-in for the IoT topic rule → Kinesis → ``uplink`` Lambda path.

On AWS a topic rule writes every device uplink to the uplink Kinesis stream (partition key
``{pid}/{dn}``) and Lambda hands the ``uplink`` handler batches of records.  Locally the
broker gives each allowed device uplink to :class:`UplinkBridge`, which calls the *same*
handler with the *same* event shape (:func:`chalicelib.protocol.events.kinesis_event`),
in process — no moto Kinesis and no shard polling, so a report's round trip stays in the
milliseconds.

What it keeps from Kinesis + Lambda:

* **per-device order** — messages are spread over ``shards`` by a hash of their partition
  key; each shard is one thread delivering its batches one after the other, so one
  device's messages reach the handler in the order the broker received them;
* **batching** — a shard delivers up to ``max_batch`` messages (the handler's configured
  ``batch_size``), or what arrived within ``max_wait_s`` of the batch's first message,
  whichever comes first; under load batches fill up by themselves;
* **partial batch failures** — a ``{"batchItemFailures": [{"itemIdentifier": seq}]}``
  answer marks those messages failed.

* **retries** — a handler error redelivers the batch, a partial failure redelivers from the
  first failed record on, as the event source mapping does.

What it does differently: after ``max_attempts`` (3) the messages that still fail are given
up (Lambda would retry until the records expire): the failure is logged with its traceback
and recorded in each device's diagnostic log (``Dev_Conn_System_Err``) — never lost silently.

Backpressure: the queues are bounded.  :meth:`UplinkBridge.submit` never blocks (it runs
on the broker's event loop) but answers False once a shard is over its capacity; the
broker then awaits :meth:`UplinkBridge.wait_for_room` before reading more from that
connection, so TCP flow control slows the publishing device down instead of memory growing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import traceback
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("infra.local.bridge")

DEFAULT_MAX_BATCH = 500
DEFAULT_MAX_WAIT_S = 0.03
DEFAULT_SHARDS = 4
DEFAULT_CAPACITY = 20_000  # messages per shard before the broker stops reading


# ---------------------------------------------------------------- invoking app handlers


class LambdaInvoker:
    """Calls one of the Chalice app's non-HTTP handlers as Lambda would: ``handler(event, context)``."""

    def __init__(
        self,
        app: Any,
        name: str,
        *,
        region: str = "us-east-1",
        account_id: str = "123456789012",
        stage: str = "local",
        memory_mb: int = 128,
        timeout_s: int = 60,
    ) -> None:
        self.name = name
        self.handler: Callable[[dict, Any], Any] = app.handler_map[name]
        self.memory_mb = memory_mb
        self.timeout_s = timeout_s
        self.arn = f"arn:aws:lambda:{region}:{account_id}:function:{app.app_name}-{stage}-{name}"

    def __repr__(self) -> str:
        return f"the {self.name} handler"

    def __call__(self, event: dict) -> Any:
        from chalice.local import LambdaContext

        context = LambdaContext(self.name, self.memory_mb, max_runtime_ms=self.timeout_s * 1000)
        context.invoked_function_arn = self.arn
        return self.handler(event, context)


def find_uplink_source(app: Any, stream_name: str) -> Any | None:
    """The app's Kinesis event source for the uplink stream (or one named ``uplink``)."""
    from chalice.app import KinesisEventConfig

    sources = [s for s in getattr(app, "event_sources", []) if isinstance(s, KinesisEventConfig)]
    for source in sources:
        if source.stream == stream_name or source.stream.rpartition("/")[2] == stream_name:
            return source
    for source in sources:
        if source.name == "uplink":
            return source
    return None


# ---------------------------------------------------------------- the bridge


@dataclass
class BridgeStats:
    submitted: int = 0
    delivered: int = 0
    failed: int = 0
    batches: int = 0
    largest_batch: int = 0
    handler_seconds: float = 0.0
    waits: int = 0  # times the broker had to wait for room (backpressure)

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass
class _Shard:
    index: int
    queue: deque = field(default_factory=deque)  # (monotonic arrival, UplinkMessage)
    cond: threading.Condition = field(default_factory=threading.Condition)
    in_flight: int = 0
    room: asyncio.Event | None = None
    waiting: bool = False
    thread: threading.Thread | None = None


FailureRecorder = Callable[[Sequence[Any], str], None]


class UplinkBridge:
    """Batches device uplinks per shard and hands them to the uplink handler (see the module doc).

    ``handler(event)`` receives a Lambda Kinesis event; ``on_failed(messages, reason)`` is told
    about messages the handler raised on or reported as failed.
    """

    def __init__(
        self,
        handler: Callable[[dict], Any],
        stream_arn: str,
        *,
        region: str = "us-east-1",
        shards: int = DEFAULT_SHARDS,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        capacity: int = DEFAULT_CAPACITY,
        max_attempts: int = 3,
        retry_delay_s: float = 0.2,
        on_failed: FailureRecorder | None = None,
    ) -> None:
        if shards < 1 or max_batch < 1 or capacity < 1:
            raise ValueError("shards, max_batch and capacity must be positive")
        self.handler = handler
        self.stream_arn = stream_arn
        self.region = region
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.capacity = capacity
        self.low_water = max(1, capacity // 2)
        self.on_failed = on_failed
        self.max_attempts = max(1, max_attempts)
        self.retry_delay_s = retry_delay_s
        self.stats = BridgeStats()
        self._stats_lock = threading.Lock()
        self._shards = [_Shard(i) for i in range(shards)]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._abandon = False
        self._started = False

    # -- lifecycle

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start the shard threads; ``loop`` is the broker's event loop (for backpressure)."""
        self._loop = loop
        self._stopping = False
        self._abandon = False
        for shard in self._shards:
            shard.thread = threading.Thread(
                target=self._run, args=(shard,), name=f"uplink-bridge-{shard.index}", daemon=True
            )
            shard.thread.start()
        self._started = True

    def stop(self, timeout: float = 10.0) -> int:
        """Deliver what is queued within ``timeout``, then stop; returns the messages left undelivered.

        Retries stop at once; what is still queued at the deadline is counted and logged (a
        shutdown does not write a diagnostic per device: the stack is going away).
        """
        if not self._started:
            return 0
        deadline = time.monotonic() + timeout
        self._stopping = True
        for shard in self._shards:
            with shard.cond:
                shard.cond.notify_all()
        while self.pending() and time.monotonic() < deadline - 0.5:
            time.sleep(0.01)
        self._abandon = True
        for shard in self._shards:
            with shard.cond:
                shard.cond.notify_all()
        for shard in self._shards:
            if shard.thread is not None:
                shard.thread.join(max(0.05, min(1.0, deadline - time.monotonic())))
        left: list[Any] = []
        for shard in self._shards:
            with shard.cond:
                left += [msg for _, msg in shard.queue]
                shard.queue.clear()
            self._wake(shard)
        if left:
            from chalicelib.protocol.events import partition_key

            devices = sorted({partition_key(m.topic) for m in left})
            log.warning(
                "stopped with %d uplink message(s) of %d device(s) not delivered to the handler (e.g. %s)",
                len(left),
                len(devices),
                ", ".join(devices[:5]),
            )
        self._started = False
        return len(left)

    # -- producer side (the broker's event loop)

    def shard_of(self, partition_key: str) -> int:
        return zlib.crc32(partition_key.encode()) % len(self._shards)

    def submit(self, message: Any) -> bool:
        """Queue one :class:`~chalicelib.protocol.events.UplinkMessage`.

        Never blocks and never drops; returns False when its shard is over capacity (the
        caller should then ``await wait_for_room(message)`` before reading more).
        """
        from chalicelib.protocol.events import partition_key

        shard = self._shards[self.shard_of(partition_key(message.topic))]
        with shard.cond:
            shard.queue.append((time.monotonic(), message))
            size = len(shard.queue)
            if size == 1 or size >= self.max_batch:
                shard.cond.notify()
        with self._stats_lock:
            self.stats.submitted += 1
        return size < self.capacity

    async def wait_for_room(self, message: Any) -> None:
        """Wait (on the broker loop) until ``message``'s shard is back under its low-water mark."""
        from chalicelib.protocol.events import partition_key

        shard = self._shards[self.shard_of(partition_key(message.topic))]
        if shard.room is None:
            shard.room = asyncio.Event()
        with self._stats_lock:
            self.stats.waits += 1
        while not self._abandon:
            with shard.cond:
                if len(shard.queue) < self.low_water:
                    return
                shard.room.clear()
                shard.waiting = True
            await shard.room.wait()

    def pending(self) -> int:
        """Messages queued or being handled right now."""
        total = 0
        for shard in self._shards:
            with shard.cond:
                total += len(shard.queue) + shard.in_flight
        return total

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until nothing is queued or in flight (benchmarks, tests); False on timeout."""
        deadline = time.monotonic() + timeout
        while self.pending():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    # -- consumer side (one thread per shard)

    def _wake(self, shard: _Shard) -> None:
        if shard.waiting and shard.room is not None and self._loop is not None and not self._loop.is_closed():
            shard.waiting = False
            try:
                self._loop.call_soon_threadsafe(shard.room.set)
            except RuntimeError:  # the loop closed meanwhile
                pass

    def _next_batch(self, shard: _Shard) -> list[Any] | None:
        with shard.cond:
            while not shard.queue or self._abandon:
                if self._stopping or self._abandon:
                    return None
                shard.cond.wait(0.5)
            # fill the batch until it is full or its first message has waited max_wait_s
            deadline = shard.queue[0][0] + self.max_wait_s
            while len(shard.queue) < self.max_batch and not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                shard.cond.wait(remaining)
            count = min(len(shard.queue), self.max_batch)
            batch = [shard.queue.popleft()[1] for _ in range(count)]
            shard.in_flight = count
            if len(shard.queue) < self.low_water:
                self._wake(shard)
        return batch

    def _run(self, shard: _Shard) -> None:
        while True:
            try:
                batch = self._next_batch(shard)
            except Exception:
                log.exception("uplink bridge shard %d failed to take a batch", shard.index)
                time.sleep(0.1)
                continue
            if batch is None:
                return
            try:
                self.deliver(batch)
                with self._stats_lock:
                    self.stats.delivered += len(batch)
            except Exception:
                log.exception("uplink bridge shard %d failed to deliver a batch", shard.index)
            finally:
                with shard.cond:
                    shard.in_flight = 0

    def deliver(self, batch: list[Any]) -> None:
        """Hand one batch to the handler, retrying as the Kinesis event source mapping would;
        record what still failed after the last attempt."""
        pending = batch
        for attempt in range(1, self.max_attempts + 1):
            failed, reason = self._invoke(pending)
            if not failed:
                return
            if attempt < self.max_attempts and not self._stopping:
                # Kinesis + ReportBatchItemFailures: redelivery resumes at the first failed record
                # (a handler error redelivers the whole batch)
                failed_ids = {id(m) for m in failed}
                first = next(i for i, m in enumerate(pending) if id(m) in failed_ids)
                pending = pending[first:]
                time.sleep(self.retry_delay_s * attempt)
                continue
            log.error("%d uplink message(s) still failed after %d attempt(s)", len(failed), attempt)
            self._record_failed(failed, reason)
            with self._stats_lock:
                self.stats.failed += len(failed)
                self.stats.delivered -= len(failed)
            return

    def _invoke(self, batch: list[Any]) -> tuple[list[Any], str]:
        """One handler call: (failed messages, why)."""
        from chalicelib.protocol.events import kinesis_event

        event = kinesis_event(batch, self.stream_arn, self.region)
        started = time.perf_counter()
        try:
            result = self.handler(event)
        except Exception as exc:  # noqa: BLE001 - logged with its traceback, retried, then recorded
            elapsed = time.perf_counter() - started
            log.error(
                "uplink handler failed on a batch of %d message(s) (%.1f ms)\n%s",
                len(batch),
                elapsed * 1000,
                traceback.format_exc(),
            )
            self._count(len(batch), elapsed)
            return list(batch), f"uplink handler error: {type(exc).__name__}: {exc}"
        elapsed = time.perf_counter() - started
        self._count(len(batch), elapsed)
        failed = self._partial_failures(result, event, batch)
        if failed:
            log.warning("uplink handler reported %d of %d message(s) of a batch as failed", len(failed), len(batch))
        return failed, "the uplink handler reported the message as failed"

    @staticmethod
    def _partial_failures(result: Any, event: dict, batch: list[Any]) -> list[Any]:
        if not isinstance(result, dict) or not result.get("batchItemFailures"):
            return []
        by_seq = {rec["kinesis"]["sequenceNumber"]: msg for rec, msg in zip(event["Records"], batch, strict=True)}
        failures = result["batchItemFailures"]
        if not isinstance(failures, list):
            return list(batch)
        failed = []
        for failure in failures:
            ident = failure.get("itemIdentifier") if isinstance(failure, dict) else None
            if ident not in by_seq:
                log.error("partial batch response names %r, not a record of the batch: the whole batch failed", ident)
                return list(batch)
            failed.append(by_seq[ident])
        return failed

    def _count(self, size: int, elapsed: float) -> None:
        with self._stats_lock:
            self.stats.batches += 1
            self.stats.largest_batch = max(self.stats.largest_batch, size)
            self.stats.handler_seconds += elapsed

    def _record_failed(self, messages: Iterable[Any], reason: str) -> None:
        messages = list(messages)
        if not messages or self.on_failed is None:
            return
        if self._abandon:  # the stack is stopping: its tables may already be gone
            log.warning("%d uplink message(s) failed during the stop: %s", len(messages), reason)
            return
        try:
            self.on_failed(messages, reason)
        except Exception:
            log.exception("could not record %d failed uplink message(s)", len(messages))
