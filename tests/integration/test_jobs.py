"""The jobs queue: steps queued by services run through the real `jobs` SQS handler.

Given the app's `jobs` worker and moto's SQS, when steps are enqueued and the worker receives
them, each step runs once per delivery and only the failed one is reported for re-delivery.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from chalicelib.services import jobs

RAN: list[dict[str, Any]] = []


def ok_step(body: dict[str, Any]) -> None:
    RAN.append(body)


def failing_step(body: dict[str, Any]) -> None:
    raise jobs.Retry("not yet")


@pytest.fixture()
def kinds(monkeypatch: pytest.MonkeyPatch, aws: None):
    RAN.clear()
    jobs.forget()
    monkeypatch.setitem(jobs.KINDS, "test.ok", f"{__name__}:ok_step")
    monkeypatch.setitem(jobs.KINDS, "test.fail", f"{__name__}:failing_step")
    monkeypatch.setitem(jobs.TICKS, "test.tick", f"{__name__}:failing_step_tick")
    yield
    jobs.forget()


def failing_step_tick() -> None:
    raise RuntimeError("tick broke")


def _receive() -> list[dict[str, Any]]:
    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.get_queue_url(QueueName="fleetbox-test-jobs")["QueueUrl"]
    return sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])


def _sqs_event(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": {},
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "awsRegion": "us-east-1",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:fleetbox-test-jobs",
            }
            for m in messages
        ]
    }


def test_enqueued_steps_run_and_only_the_failed_one_is_redelivered(kinds: None) -> None:
    from chalice.test import Client

    from app import app

    jobs.enqueue("test.ok", {"n": 1})
    jobs.enqueue_many([("test.ok", {"n": 2}), ("test.fail", {"n": 3})])
    messages = _receive()
    assert len(messages) == 3
    with Client(app) as client:
        reply = client.lambda_.invoke("jobs", _sqs_event(messages)).payload
    failed_id = next(m["MessageId"] for m in messages if json.loads(m["Body"])["kind"] == "test.fail")
    assert reply == {"batchItemFailures": [{"itemIdentifier": failed_id}]}
    assert sorted(b["n"] for b in RAN) == [1, 2]


def test_unknown_kinds_are_refused_when_queued_and_dropped_when_received(kinds: None) -> None:
    with pytest.raises(jobs.UnknownKind):
        jobs.enqueue("no.such.kind", {})
    jobs.run(json.dumps({"kind": "no.such.kind", "body": {}}))  # logged, not raised: never re-delivered
    jobs.run("not json")
    assert RAN == []


def test_a_failing_tick_does_not_stop_the_others(kinds: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(jobs.TICKS, "test.tick2", f"{__name__}:tick_ok")
    outcome = jobs.tick()
    assert outcome["test.tick"] == "RuntimeError"
    assert outcome["test.tick2"] == "ok"
    assert RAN == [{"tick": True}]


def tick_ok() -> None:
    RAN.append({"tick": True})
