"""The local worker loop drives SQS and schedule handlers the way Lambda would.

Runs over moto's ``mock_aws`` with the resources of infra/aws/resources.yaml (stage "test");
AWS_ENDPOINT_URL stays unset because mock_aws ignores custom endpoints.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import boto3
import pytest
from chalice import Chalice, Rate
from moto import mock_aws

from infra.local.bootstrap import bootstrap
from infra.local.worker import ScheduleError, WorkerLoop
from tests.helpers import queue_counts, wait_until

JOBS_QUEUE = "fleetbox-test-jobs"


@pytest.fixture()
def aws(monkeypatch: pytest.MonkeyPatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        resources = bootstrap("test")
        yield resources


@pytest.fixture()
def sqs(aws):
    return boto3.client("sqs", region_name="us-east-1")


@pytest.fixture()
def jobs_url(aws) -> str:
    return aws["queues"]["JobsQueue"]


@pytest.fixture()
def run_loop():
    """Start a WorkerLoop for an app; always stopped at the end of the test."""
    loops: list[WorkerLoop] = []

    def start(app: Chalice, **kwargs: Any) -> WorkerLoop:
        loop = WorkerLoop(app, stage="test", **kwargs)
        loop.start()
        loops.append(loop)
        return loop

    yield start
    for loop in loops:
        loop.stop()


class Recorder:
    """What a handler saw, safe to read from the test thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: list[dict] = []
        self.events: list[dict] = []
        self.contexts: list[Any] = []

    def add(self, event: dict, context: Any, records: list[dict] | None = None) -> None:
        with self.lock:
            self.events.append(event)
            self.contexts.append(context)
            self.records.extend(records or [])

    def bodies(self) -> list[str]:
        with self.lock:
            return [r["body"] for r in self.records]


# ---------------------------------------------------------------------- SQS


def test_each_message_is_delivered_once_as_a_lambda_event_and_deleted(sqs, jobs_url, run_loop):
    # Given an app with an SQS handler on the jobs queue and three messages waiting
    app = Chalice(app_name="worker-test")
    seen = Recorder()

    @app.on_sqs_message(queue=JOBS_QUEUE, batch_size=10)
    def handle_jobs(event):
        seen.add(event.to_dict(), event.context, [r.to_dict() for r in event])

    for n in range(3):
        sqs.send_message(
            QueueUrl=jobs_url,
            MessageBody=json.dumps({"n": n}),
            MessageAttributes={"kind": {"DataType": "String", "StringValue": "test"}},
        )

    # When the worker loop runs
    run_loop(app)
    assert wait_until(lambda: len(seen.bodies()) == 3)
    # the loop deletes a message once its handler returned: none visible and none in flight
    # means all three are gone, so nothing is left that could be delivered again
    assert wait_until(lambda: queue_counts(sqs, jobs_url) == (0, 0)), queue_counts(sqs, jobs_url)

    # Then each message reached the handler exactly once, as Lambda shapes it, and is gone
    assert sorted(json.loads(b)["n"] for b in seen.bodies()) == [0, 1, 2]
    record = seen.records[0]
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == f"arn:aws:sqs:us-east-1:123456789012:{JOBS_QUEUE}"
    assert record["awsRegion"] == "us-east-1"
    assert record["messageId"] and record["receiptHandle"]
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert record["messageAttributes"]["kind"]["stringValue"] == "test"
    assert record["messageAttributes"]["kind"]["dataType"] == "String"
    assert seen.contexts[0].function_name == "handle_jobs"
    assert seen.contexts[0].get_remaining_time_in_millis() > 0
    assert queue_counts(sqs, jobs_url) == (0, 0)


def test_partial_batch_failure_keeps_exactly_the_failed_message(sqs, jobs_url, run_loop):
    # Given a handler that reports one message of its batch as failed (Powertools' response)
    app = Chalice(app_name="worker-test")
    seen = Recorder()
    failed_receipts: list[str] = []

    @app.on_sqs_message(queue=JOBS_QUEUE, batch_size=10)
    def handle_jobs(event):
        records = [r.to_dict() for r in event]
        seen.add(event.to_dict(), event.context, records)
        failures = [r for r in records if r["body"] == "poison"]
        failed_receipts.extend(r["receiptHandle"] for r in failures)
        return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in failures]}

    for body in ("ok-1", "poison", "ok-2"):
        sqs.send_message(QueueUrl=jobs_url, MessageBody=body)

    # When the loop has handled all three
    run_loop(app)
    assert wait_until(lambda: len(seen.bodies()) == 3)
    assert wait_until(lambda: queue_counts(sqs, jobs_url) == (0, 1))

    # Then only the failed message is left, waiting out its visibility timeout
    assert sorted(seen.bodies()) == ["ok-1", "ok-2", "poison"]
    sqs.change_message_visibility(QueueUrl=jobs_url, ReceiptHandle=failed_receipts[0], VisibilityTimeout=0)
    left = sqs.receive_message(QueueUrl=jobs_url, MaxNumberOfMessages=10, VisibilityTimeout=30)["Messages"]
    assert [m["Body"] for m in left] == ["poison"]


def test_a_raising_handler_deletes_nothing_and_the_loop_goes_on(sqs, jobs_url, run_loop, caplog):
    # Given a handler that raises on its first batch only
    app = Chalice(app_name="worker-test")
    seen = Recorder()
    calls = []

    @app.on_sqs_message(queue=JOBS_QUEUE, batch_size=10)
    def handle_jobs(event):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom in the handler")
        seen.add(event.to_dict(), event.context, [r.to_dict() for r in event])

    caplog.set_level(logging.INFO, logger="infra.local")
    sqs.send_message(QueueUrl=jobs_url, MessageBody="first")
    run_loop(app)
    assert wait_until(lambda: queue_counts(sqs, jobs_url) == (0, 1))

    # When another message arrives
    sqs.send_message(QueueUrl=jobs_url, MessageBody="second")
    assert wait_until(lambda: seen.bodies() == ["second"])

    # Then the failed batch is still in the queue (in flight), the error was logged with its
    # traceback, and the loop kept serving
    assert wait_until(lambda: queue_counts(sqs, jobs_url) == (0, 1))
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and errors[0].exc_info and "boom in the handler" in str(errors[0].exc_info[1])


def test_failed_messages_can_be_released_for_a_shutdown_snapshot(sqs, jobs_url, run_loop):
    # Given a message a handler failed on, waiting out its visibility timeout
    app = Chalice(app_name="worker-test")

    @app.on_sqs_message(queue=JOBS_QUEUE)
    def handle_jobs(event):
        raise RuntimeError("not now")

    sqs.send_message(QueueUrl=jobs_url, MessageBody="retry me")
    loop = run_loop(app)
    assert wait_until(lambda: queue_counts(sqs, jobs_url) == (0, 1))

    # When the stopped loop releases the messages it failed on
    loop.stop()
    released = loop.release_failed_messages()

    # Then the message is visible again (so a clean shutdown can save it)
    assert released == 1
    assert queue_counts(sqs, jobs_url) == (1, 0)


def test_a_poison_message_ends_in_the_dead_letter_queue(sqs, aws, jobs_url, run_loop):
    # Given a queue whose messages come back at once, and a handler that always fails
    sqs.set_queue_attributes(QueueUrl=jobs_url, Attributes={"VisibilityTimeout": "0"})
    dlq_url = aws["queues"]["JobsDeadLetterQueue"]
    app = Chalice(app_name="worker-test")
    attempts: list[str] = []

    @app.on_sqs_message(queue=JOBS_QUEUE, batch_size=1)
    def handle_jobs(event):
        attempts.extend(r.to_dict()["attributes"]["ApproximateReceiveCount"] for r in event)
        raise ValueError("cannot handle this")

    sqs.send_message(QueueUrl=jobs_url, MessageBody="poison")

    # When the loop keeps retrying it
    run_loop(app)
    assert wait_until(lambda: queue_counts(sqs, dlq_url)[0] == 1, timeout=20)

    # Then after maxReceiveCount (5) attempts the redrive policy moved it to the DLQ
    assert attempts == ["1", "2", "3", "4", "5"]
    assert queue_counts(sqs, jobs_url) == (0, 0)
    assert sqs.receive_message(QueueUrl=dlq_url)["Messages"][0]["Body"] == "poison"


def test_a_handler_on_a_queue_missing_from_the_template_is_refused_at_start(aws):
    app = Chalice(app_name="worker-test")

    @app.on_sqs_message(queue="fleetbox-test-nope")
    def handle(event):
        pass

    with pytest.raises(RuntimeError, match="fleetbox-test-nope"):
        WorkerLoop(app, stage="test").start()


# ---------------------------------------------------------------- schedules


def test_schedules_fire_on_their_rate_scaled_by_the_speedup(aws, run_loop, caplog):
    # Given a one-minute schedule, a five-minute one, and a one-minute one that always raises
    app = Chalice(app_name="worker-test")
    every_minute, every_five, broken = Recorder(), Recorder(), Recorder()

    @app.schedule("rate(1 minute)")
    def tick(event):
        every_minute.add(event.to_dict(), event.context)

    @app.schedule(Rate(5, unit=Rate.MINUTES))
    def slow_tick(event):
        every_five.add(event.to_dict(), event.context)

    @app.schedule("rate(1 minute)")
    def broken_tick(event):
        broken.add(event.to_dict(), event.context)
        raise RuntimeError("scheduled failure")

    caplog.set_level(logging.INFO, logger="infra.local")

    # When the loop runs 600× faster (a minute every 0.1 s) for a moment
    run_loop(app, speedup=600)
    assert wait_until(lambda: len(every_minute.events) >= 3 and len(broken.events) >= 3)

    # Then each fired on its interval with a CloudWatch scheduled event; a failure does not
    # stop its schedule
    event = every_minute.events[0]
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.events"
    assert event["account"] == "123456789012"
    assert event["region"] == "us-east-1"
    assert event["resources"][0].startswith("arn:aws:events:us-east-1:123456789012:rule/")
    assert len(every_five.events) <= len(every_minute.events) // 4 + 1
    assert any("scheduled failure" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


def test_cron_schedules_are_accepted_and_unsupported_ones_refused_at_start(aws):
    app = Chalice(app_name="worker-test")

    @app.schedule("cron(0/15 * ? * MON-FRI *)")
    def quarter_hourly(event):
        pass

    loop = WorkerLoop(app, stage="test")
    loop.start()
    loop.stop()

    bad = Chalice(app_name="worker-test")

    @bad.schedule("cron(0 12 L * ? *)")
    def last_day(event):
        pass

    with pytest.raises(ScheduleError, match="not supported"):
        WorkerLoop(bad, stage="test").start()
