"""Domain events survive their producer (ARCHITECTURE: domain events).

Given the account's tables (moto), when a service emits an event, then in-process subscribers see
it (a failing one never breaks the producer), it is recorded, and one ``events.dispatch`` job is
queued for the durable subscribers; running that job hands the event to the rule engine on
``$events/{pid}/{kind}``; an event whose job could not be queued stays pending and the tick
queues it again; an event whose subscribers keep failing is given up with the reason, not lost.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib.services import events, jobs


@pytest.fixture()
def queued(monkeypatch: pytest.MonkeyPatch, aws: None) -> list[tuple[str, dict[str, Any]]]:
    got: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(jobs, "enqueue", lambda kind, body, delay_s=0: got.append((kind, body)) or "1")
    return got


def _record(event: events.DomainEvent) -> Any:
    from chalicelib.models.events import EventRecord

    return EventRecord.get(event.product_id, f"{event.at_ms:013d}#{event.event_id}", consistent_read=True)


def test_subscribers_get_matching_events_and_failures_are_contained(queued) -> None:
    seen: list[str] = []

    def broken(event: events.DomainEvent) -> None:
        raise RuntimeError("channel down")

    def record(event: events.DomainEvent) -> None:
        seen.append(f"{event.kind}:{event.product_id}:{event.data['task_id']}")

    events.subscribe("ota.*", broken)
    events.subscribe("ota.task.done", record)
    try:
        events.emit("ota.task.done", "PROD000001", task_id=7)
        events.emit("batch.done", "PROD000001", task_id=8)
    finally:
        events.unsubscribe(broken)
        events.unsubscribe(record)
    assert seen == ["ota.task.done:PROD000001:7"]


def test_an_event_is_recorded_and_its_dispatch_queued_then_the_rules_get_it(api, queued, monkeypatch) -> None:
    from chalicelib.services import rules

    # Given a rule on the events of one product
    pid = "ABCDEFGHIJ"
    created = api.post(
        "/v1/rules",
        {
            "name": "on_fail",
            "sql": f"SELECT * FROM '$events/{pid}/ota/device/failed'",
            "actions": [
                {
                    "type": "sqs",
                    "queue_url": "https://sqs.us-east-1.amazonaws.com/123456789012/fleetbox-test-sink-events",
                }
            ],
            "enabled": True,
        },
    )
    assert created.status_code == 201, created.body
    assert created.json["resource"] == f"product/{pid}/rule/on_fail"
    rules.forget()
    forwarded: list[list[dict[str, Any]]] = []
    monkeypatch.setattr(rules.delivery, "queue_jobs", lambda jobs_: forwarded.append(jobs_) or [])
    # When OTA notices a failed device
    event = events.emit("ota.device.failed", pid, task_id="t1", device_name="dev7", reason="MD5 mismatch")
    # Then the event is recorded, pending, and one dispatch job is queued
    assert _record(event).pending == "1" and _record(event).kind == "ota.device.failed"
    assert [k for k, _ in queued] == ["events.dispatch"]
    # And running that job gives the rule engine the event on its system topic, then clears pending
    events.dispatch_step(queued[0][1])
    (job,) = forwarded[0]
    assert job["r"] == "on_fail" and job["msg"]["topic"] == f"$events/{pid}/ota/device/failed"
    assert job["msg"]["dn"] == "dev7"
    payload = job["out"]["j"]
    assert payload["event"] == "ota.device.failed" and payload["reason"] == "MD5 mismatch"
    assert payload["eventId"] == event.event_id
    assert _record(event).pending is None


def test_a_pending_event_is_queued_again_and_given_up_after_repeated_failures(aws, monkeypatch) -> None:
    from chalicelib.core import clock

    # Given an event whose dispatch job could not be queued (the queue was down)
    def refuse(kind: str, body: dict[str, Any], delay_s: int = 0) -> str:
        raise RuntimeError("queue down")

    monkeypatch.setattr(jobs, "enqueue", refuse)
    event = events.emit("batch.done", "ABCDEFGHIJ", batch_id="b1")
    assert _record(event).pending == "1"
    later: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(jobs, "enqueue", lambda kind, body, delay_s=0: later.append((kind, body)) or "1")
    # When the tick runs before and after the re-dispatch delay
    assert events.redispatch() == 0
    clock.shift(events.REDISPATCH_AFTER_S + 1)
    try:
        assert events.redispatch() == 1
        assert later[0][0] == "events.dispatch" and later[0][1]["event"]["event_id"] == event.event_id
        # And an event that keeps failing is given up after MAX_DISPATCHES, with the reason
        for _ in range(events.MAX_DISPATCHES + 2):
            events.redispatch()
        rec = _record(event)
        assert rec.pending is None and "failed" in rec.gave_up
        assert json.loads(json.dumps(rec.data)) == {"batch_id": "b1"}
    finally:
        clock.reset()
