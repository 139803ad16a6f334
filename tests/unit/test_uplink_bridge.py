"""The local topic-rule → Kinesis → uplink bridge (infra/local/bridge.py)."""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from typing import Any

from chalicelib.protocol.events import UplinkMessage
from infra.local.bridge import UplinkBridge

ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/fleetbox-test-uplink"


def message(device: str, n: int) -> UplinkMessage:
    return UplinkMessage(
        topic=f"thing/up/property/ABCDEFGHIJ/{device}",
        payload=str(n).encode(),
        client_id=f"ABCDEFGHIJ{device}",
        timestamp_ms=1_700_000_000_000 + n,
    )


def decode(event: dict[str, Any]) -> list[UplinkMessage]:
    return [UplinkMessage.from_record(base64.b64decode(r["kinesis"]["data"])) for r in event["Records"]]


class Recorder:
    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[UplinkMessage]] = []
        self.events: list[dict[str, Any]] = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        if self.delay:
            time.sleep(self.delay)  # a handler slower than the producer: what the ordering test needs
        with self.lock:
            self.events.append(event)
            self.batches.append(decode(event))
        return {"batchItemFailures": []}

    @property
    def delivered(self) -> list[UplinkMessage]:
        return [m for batch in self.batches for m in batch]


def test_each_devices_messages_arrive_in_order_in_kinesis_events():
    # Given a bridge over 4 shards and a handler slower than the producer
    handler = Recorder(delay=0.01)
    bridge = UplinkBridge(handler, ARN, shards=4, max_batch=50, max_wait_s=0.005)
    bridge.start()
    # When 20 devices publish 100 messages each, interleaved
    for n in range(100):
        for d in range(20):
            bridge.submit(message(f"dev{d}", n))
    assert bridge.drain(10)
    bridge.stop()
    # Then every message arrived once, each device's in order, in batches of at most 50
    got = handler.delivered
    assert len(got) == 2000
    for d in range(20):
        assert [int(m.payload) for m in got if m.client_id.endswith(f"dev{d}")] == list(range(100))
    assert max(len(b) for b in handler.batches) <= 50
    assert bridge.stats.largest_batch > 1
    # and each event is what Lambda hands a Kinesis handler
    record = handler.events[0]["Records"][0]
    assert record["eventSource"] == "aws:kinesis" and record["eventSourceARN"] == ARN
    assert record["kinesis"]["partitionKey"].startswith("ABCDEFGHIJ/dev")


def test_a_lone_message_is_delivered_within_the_batching_window():
    handler = Recorder()
    bridge = UplinkBridge(handler, ARN, max_wait_s=0.02)
    bridge.start()
    started = time.monotonic()
    bridge.submit(message("a", 1))
    assert bridge.drain(2)
    assert time.monotonic() - started < 0.5
    bridge.stop()
    assert len(handler.batches) == 1


def test_a_failing_handler_is_retried_then_the_messages_are_recorded(caplog):
    calls: list[int] = []
    failed: list[tuple[list[UplinkMessage], str]] = []

    def handler(event: dict[str, Any]) -> Any:
        calls.append(len(event["Records"]))
        raise ValueError("boom")

    bridge = UplinkBridge(
        handler,
        ARN,
        max_attempts=3,
        retry_delay_s=0.01,
        on_failed=lambda msgs, reason: failed.append((list(msgs), reason)),
    )
    bridge.start()
    with caplog.at_level(logging.ERROR, logger="infra.local.bridge"):
        bridge.submit(message("a", 1))
        bridge.submit(message("a", 2))
        assert bridge.drain(5)
    bridge.stop()
    assert len(calls) == 3
    assert [int(m.payload) for m in failed[0][0]] == [1, 2]
    assert "ValueError: boom" in failed[0][1]
    assert any("Traceback" in r.getMessage() for r in caplog.records)
    assert bridge.stats.failed == 2 and bridge.stats.delivered == 0


def test_a_partial_failure_redelivers_from_the_first_failed_record():
    attempts: list[list[int]] = []

    def handler(event: dict[str, Any]) -> Any:
        got = [int(m.payload) for m in decode(event)]
        attempts.append(got)
        if len(attempts) == 1:  # the second message fails once
            return {"batchItemFailures": [{"itemIdentifier": event["Records"][1]["kinesis"]["sequenceNumber"]}]}
        return {"batchItemFailures": []}

    bridge = UplinkBridge(handler, ARN, shards=1, max_wait_s=0.05, retry_delay_s=0.01)
    for n in range(4):
        bridge.submit(message("a", n))
    bridge.start()
    assert bridge.drain(5)
    bridge.stop()
    assert attempts == [[0, 1, 2, 3], [1, 2, 3]]
    assert bridge.stats.failed == 0


def test_a_full_shard_asks_the_broker_to_wait_until_it_drains():
    release = threading.Event()

    def slow(event: dict[str, Any]) -> Any:
        release.wait(5)
        return None

    bridge = UplinkBridge(slow, ARN, shards=1, max_batch=1, capacity=10, max_wait_s=0.0)

    async def produce() -> tuple[list[bool], float]:
        bridge.start(asyncio.get_running_loop())
        answers = [bridge.submit(message("a", n)) for n in range(12)]
        started = time.monotonic()
        threading.Timer(0.2, release.set).start()
        await asyncio.wait_for(bridge.wait_for_room(message("a", 99)), 5)
        return answers, time.monotonic() - started

    answers, waited = asyncio.run(produce())
    bridge.stop()
    assert answers[:9] == [True] * 9 and answers[-1] is False
    assert waited >= 0.15
    assert bridge.stats.waits == 1


def test_stop_delivers_what_is_queued():
    handler = Recorder()
    bridge = UplinkBridge(handler, ARN, max_wait_s=0.2)
    bridge.start()
    for n in range(5):
        bridge.submit(message("a", n))
    assert bridge.stop(timeout=5) == 0
    assert [int(m.payload) for m in handler.delivered] == list(range(5))
