"""The local stand-in for Lambda's event-source mappings and EventBridge schedules.

For every ``@app.on_sqs_message`` a thread long-polls the queue and invokes the handler with
the event Lambda would build; messages are deleted only when the handler succeeded, minus
those it reports in a partial batch response (``{"batchItemFailures": [...]}``). A handler
that raises leaves the whole batch to come back after the visibility timeout, and the
queue's redrive policy moves a poison message to its dead-letter queue, as on AWS.

For every ``@app.schedule`` a thread fires the handler on its ``rate(...)`` interval (divided
by ``FLEETBOX_SCHEDULE_SPEEDUP``) or at the minutes its ``cron(...)`` expression selects.

Handler errors are logged with their traceback; the loop goes on.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from chalice.app import Chalice, KinesisEventConfig, ScheduledEventConfig, ScheduleExpression, SQSEventConfig
from chalice.local import LambdaContext

log = logging.getLogger(__name__)

DEFAULT_MEMORY_MB = 128
DEFAULT_TIMEOUT_S = 60


class ScheduleError(ValueError):
    """A schedule expression the local loop cannot honour."""


# ---------------------------------------------------------------- schedules

_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$", re.IGNORECASE)
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def rate_seconds(expression: str) -> float | None:
    """Seconds between firings of ``rate(N unit)``; None when it is not a rate expression."""
    match = _RATE.match(expression.strip())
    if not match:
        return None
    value = int(match.group(1))
    if value <= 0:
        raise ScheduleError(f"{expression}: the rate must be positive")
    return value * _UNIT_SECONDS[match.group(2).lower().rstrip("s")]


_MONTHS = {m: i + 1 for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split())}
_WEEKDAYS = {d: i + 1 for i, d in enumerate("SUN MON TUE WED THU FRI SAT".split())}


def _cron_field(text: str, low: int, high: int, names: dict[str, int], label: str) -> set[int] | None:
    """Values selected by one cron field; None for ``*``/``?`` (everything)."""
    if text in ("*", "?"):
        return None
    if "#" in text:
        raise ScheduleError(f"cron {label} '{text}': # is not supported locally")
    values: set[int] = set()

    def number(token: str) -> int:
        if token.upper() in names:
            value = names[token.upper()]
        elif token.isdigit():
            value = int(token)
        elif re.fullmatch(r"\d*L|\d+W|LW", token.upper()):
            raise ScheduleError(f"cron {label} '{text}': L and W are not supported locally")
        else:
            raise ScheduleError(f"cron {label} '{text}': '{token}' is not a value")
        if not low <= value <= high:
            raise ScheduleError(f"cron {label} '{text}': {value} is outside {low}-{high}")
        return value

    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step_text and (not step_text.isdigit() or step <= 0):
            raise ScheduleError(f"cron {label} '{text}': bad step")
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, last = base.split("-", 1)
            start, end = number(first), number(last)
        else:
            start = number(base)
            end = high if step_text else start
        if start > end:
            raise ScheduleError(f"cron {label} '{text}': empty range")
        values.update(range(start, end + 1, step))
    return values


@dataclass(frozen=True)
class Cron:
    """An EventBridge ``cron(min hour day-of-month month day-of-week year)``, in UTC.

    Supported: numbers, names (JAN, MON), ``*``, ``?``, ranges, lists and steps. Not
    supported (refused at start-up): ``L``, ``W`` and ``#``.
    """

    minutes: set[int] | None
    hours: set[int] | None
    days: set[int] | None
    months: set[int] | None
    weekdays: set[int] | None  # 1 = Sunday … 7 = Saturday, as EventBridge
    years: set[int] | None

    @classmethod
    def parse(cls, expression: str) -> Cron:
        match = re.match(r"^cron\((.*)\)$", expression.strip(), re.IGNORECASE)
        if not match:
            raise ScheduleError(f"{expression}: not a cron(...) expression")
        fields = match.group(1).split()
        if len(fields) != 6:
            raise ScheduleError(f"{expression}: cron needs 6 fields (min hour day month weekday year)")
        minute, hour, day, month, weekday, year = fields
        if (day == "?") == (weekday == "?"):
            raise ScheduleError(f"{expression}: exactly one of day-of-month and day-of-week must be '?'")
        return cls(
            minutes=_cron_field(minute, 0, 59, {}, "minutes"),
            hours=_cron_field(hour, 0, 23, {}, "hours"),
            days=_cron_field(day, 1, 31, {}, "day-of-month"),
            months=_cron_field(month, 1, 12, _MONTHS, "month"),
            weekdays=_cron_field(weekday, 1, 7, _WEEKDAYS, "day-of-week"),
            years=_cron_field(year, 1970, 2199, {}, "year"),
        )

    @staticmethod
    def _ok(values: set[int] | None, value: int) -> bool:
        return values is None or value in values

    def next_after(self, moment: dt.datetime) -> dt.datetime:
        """The first selected minute strictly after ``moment`` (an aware UTC datetime)."""
        start = moment.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        day = start.date()
        hours = sorted(self.hours) if self.hours is not None else range(24)
        minutes = sorted(self.minutes) if self.minutes is not None else range(60)
        for _ in range(366 * 10):
            weekday = (day.weekday() + 1) % 7 + 1
            if (
                self._ok(self.years, day.year)
                and self._ok(self.months, day.month)
                and self._ok(self.days, day.day)
                and self._ok(self.weekdays, weekday)
            ):
                for hour in hours:
                    for minute in minutes:
                        candidate = dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=dt.UTC)
                        if candidate >= start:
                            return candidate
            day += dt.timedelta(days=1)
        raise ScheduleError("cron expression never fires in the next ten years")


def expression_text(expression: str | ScheduleExpression) -> str:
    return expression.to_string() if isinstance(expression, ScheduleExpression) else str(expression)


# ---------------------------------------------------------------- events


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def sqs_record(message: dict, queue_arn: str, region: str) -> dict:
    """The record Lambda puts in an SQS event for one received message."""
    attributes = {}
    for name, value in (message.get("MessageAttributes") or {}).items():
        attribute: dict[str, Any] = {
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": value["DataType"],
        }
        if "StringValue" in value:
            attribute["stringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            attribute["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
        attributes[name] = attribute
    record = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes") or {}),
        "messageAttributes": attributes,
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }
    if message.get("MD5OfMessageAttributes"):
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def scheduled_event(rule_arn: str, account_id: str, region: str) -> dict:
    """The event EventBridge sends for one firing of a scheduled rule."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account_id,
        "time": _utc_now().strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [rule_arn],
        "detail": {},
    }


def failed_message_ids(result: Any, batch_ids: Iterable[str]) -> set[str]:
    """Message ids a partial batch response reports as failed.

    Like Lambda, a malformed response or an unknown/empty itemIdentifier fails the batch.
    """
    batch = set(batch_ids)
    if not isinstance(result, dict) or "batchItemFailures" not in result:
        return set()
    failures = result["batchItemFailures"]
    if not isinstance(failures, list):
        return batch
    failed = set()
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if not identifier or identifier not in batch:
            log.error(
                "partial batch response names %r, not a message of the batch: the whole batch is treated as failed",
                identifier,
            )
            return batch
        failed.add(identifier)
    return failed


# ---------------------------------------------------------------- the loop


class _Function:
    """A handler plus what Lambda would pass it as context."""

    def __init__(self, loop: WorkerLoop, name: str) -> None:
        self.name = name
        self.handler: Callable[[dict, Any], Any] = loop.app.handler_map[name]
        self.memory_mb, self.timeout_s = loop.function_settings(name)
        self.arn = f"arn:aws:lambda:{loop.region}:{loop.account_id}:function:{loop.app.app_name}-{loop.stage}-{name}"

    def invoke(self, event: dict) -> Any:
        context = LambdaContext(self.name, self.memory_mb, max_runtime_ms=self.timeout_s * 1000)
        context.invoked_function_arn = self.arn
        return self.handler(event, context)


class WorkerLoop:
    """Drives the app's SQS and schedule handlers in threads until :meth:`stop`."""

    def __init__(
        self,
        app: Chalice,
        *,
        stage: str = "local",
        region: str = "us-east-1",
        account_id: str = "123456789012",
        speedup: float = 1.0,
        wait_time_seconds: int = 1,
        chalice_config: Any = None,
    ) -> None:
        if speedup <= 0:
            raise ValueError("speedup must be positive")
        self.app = app
        self.stage = stage
        self.region = region
        self.account_id = account_id
        self.speedup = speedup
        self.wait_time_seconds = wait_time_seconds
        self.chalice_config = chalice_config
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._session = boto3.session.Session(region_name=region)
        self.not_driven: list[str] = []
        # messages a handler failed on, still in flight: queue url -> {message id: receipt handle}
        self._in_flight: dict[str, dict[str, str]] = {}
        self._in_flight_lock = threading.Lock()

    def function_settings(self, name: str) -> tuple[int, int]:
        if self.chalice_config is None:
            return DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S
        scoped = self.chalice_config.scope(self.chalice_config.chalice_stage, name)
        return (scoped.lambda_memory_size or DEFAULT_MEMORY_MB, scoped.lambda_timeout or DEFAULT_TIMEOUT_S)

    # -- lifecycle

    def start(self) -> None:
        """Validate every event source (raising on what cannot run), then start the threads."""
        runners: list[tuple[str, Callable[[], None]]] = []
        for source in self.app.event_sources:
            if isinstance(source, SQSEventConfig):
                runners.append((f"sqs:{source.name}", self._sqs_runner(source)))
            elif isinstance(source, ScheduledEventConfig):
                runners.append((f"schedule:{source.name}", self._schedule_runner(source)))
            elif isinstance(source, KinesisEventConfig):
                continue  # the MQTT broker's uplink bridge (infra/local/bridge.py) drives stream handlers
            else:
                # S3/SNS/CloudWatch-pattern events have no local emitter.
                self.not_driven.append(f"{source.name} ({type(source).__name__})")
        if self.not_driven:
            log.warning("event handlers not driven by the local worker loop: %s", ", ".join(self.not_driven))
        for name, runner in runners:
            thread = threading.Thread(target=self._guard(name, runner), name=f"worker-{name}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop polling and firing; waits up to ``timeout`` for handlers in progress."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("%s is still running a handler; not waiting for it", thread.name)
        self._threads = []

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def release_failed_messages(self) -> int:
        """Make the messages handlers failed on visible again (after :meth:`stop`).

        A clean shutdown with a state dir saves the visible messages; without this, a message
        waiting out its visibility timeout would be missing from that snapshot.
        """
        sqs = self._session.client("sqs")
        with self._in_flight_lock:
            in_flight, self._in_flight = self._in_flight, {}
        released = 0
        for url, handles in in_flight.items():
            for receipt in handles.values():
                try:
                    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=receipt, VisibilityTimeout=0)
                    released += 1
                except ClientError:
                    pass  # since moved to the DLQ or received again elsewhere
        return released

    def _remember_failed(self, url: str, messages: Iterable[dict]) -> None:
        with self._in_flight_lock:
            handles = self._in_flight.setdefault(url, {})
            for message in messages:
                handles[message["MessageId"]] = message["ReceiptHandle"]

    def _forget(self, url: str, message_ids: Iterable[str]) -> None:
        with self._in_flight_lock:
            handles = self._in_flight.get(url, {})
            for message_id in message_ids:
                handles.pop(message_id, None)

    def _guard(self, name: str, runner: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                runner()
            except Exception:
                log.exception("worker %s crashed", name)

        return run

    # -- SQS

    def _sqs_runner(self, source: SQSEventConfig) -> Callable[[], None]:
        sqs = self._session.client("sqs")
        queue_name = source.queue or (source.queue_arn or "").rpartition(":")[2]
        try:
            url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
        except ClientError as exc:
            raise RuntimeError(
                f"handler {source.name} listens to queue {queue_name!r}, which does not "
                f"exist locally: add it to infra/aws/resources.yaml"
            ) from exc
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        function = _Function(self, source.name)
        batch_size = max(1, int(source.batch_size or 1))
        log.info("%s <- queue %s (batch %d)", source.name, queue_name, batch_size)

        def run() -> None:
            while not self._stop.is_set():
                try:
                    messages = self._receive(sqs, url, batch_size)
                except (BotoCoreError, ClientError) as exc:
                    if self._stop.is_set():
                        return
                    log.warning("worker %s: receiving from %s failed: %s", source.name, queue_name, exc)
                    self._stop.wait(1.0)
                    continue
                if messages:
                    self._deliver(sqs, url, arn, function, messages)

        return run

    def _receive(self, sqs: Any, url: str, batch_size: int) -> list[dict]:
        messages: list[dict] = []
        wait = self.wait_time_seconds
        while len(messages) < batch_size and not self._stop.is_set():
            response = sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=min(10, batch_size - len(messages)),
                WaitTimeSeconds=wait,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            received = response.get("Messages", [])
            messages.extend(received)
            if len(received) < 10:
                break
            wait = 0  # top the batch up with what is already waiting, as Lambda's poller does
        return messages

    def _deliver(self, sqs: Any, url: str, arn: str, function: _Function, messages: list[dict]) -> None:
        event = {"Records": [sqs_record(m, arn, self.region) for m in messages]}
        ids = [m["MessageId"] for m in messages]
        try:
            result = function.invoke(event)
        except Exception:
            log.exception(
                "handler %s failed on %d message(s); they return after the visibility timeout",
                function.name,
                len(messages),
            )
            self._remember_failed(url, messages)
            return
        failed = failed_message_ids(result, ids)
        if failed:
            log.info(
                "handler %s: %d of %d message(s) failed; they return after the visibility timeout",
                function.name,
                len(failed),
                len(messages),
            )
        done = [m for m in messages if m["MessageId"] not in failed]
        self._remember_failed(url, [m for m in messages if m["MessageId"] in failed])
        self._forget(url, [m["MessageId"] for m in done])
        for start in range(0, len(done), 10):
            chunk = done[start : start + 10]
            try:
                response = sqs.delete_message_batch(
                    QueueUrl=url,
                    Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
                )
            except (BotoCoreError, ClientError) as exc:
                log.error("handler %s: deleting %d processed message(s) failed: %s", function.name, len(chunk), exc)
                continue
            for failure in response.get("Failed", []):
                log.error("handler %s: deleting a processed message failed: %s", function.name, failure.get("Message"))

    # -- schedules

    def _schedule_runner(self, source: ScheduledEventConfig) -> Callable[[], None]:
        expression = expression_text(source.schedule_expression)
        interval = rate_seconds(expression)
        cron = None
        if interval is None:
            if not expression.strip().lower().startswith("cron("):
                raise ScheduleError(f"handler {source.name}: unsupported schedule {expression!r}")
            cron = Cron.parse(expression)
        function = _Function(self, source.name)
        rule_arn = (
            f"arn:aws:events:{self.region}:{self.account_id}:rule/{self.app.app_name}-{self.stage}-{source.name}-event"
        )
        period = interval / self.speedup if interval is not None else 0.0
        if cron is None:
            log.info("%s every %.3g s (%s, speedup %g)", source.name, period, expression, self.speedup)
        else:
            log.info("%s at %s UTC (speedup does not apply to cron)", source.name, expression)

        def fire() -> None:
            try:
                function.invoke(scheduled_event(rule_arn, self.account_id, self.region))
            except Exception:
                log.exception("scheduled handler %s failed", function.name)

        def run_rate() -> None:
            next_at = time.monotonic() + period
            while not self._stop.wait(max(0.0, next_at - time.monotonic())):
                fire()
                # A slow handler skips the firings it overran instead of bunching them up.
                next_at += period
                now = time.monotonic()
                if next_at < now:
                    next_at += period * (1 + int((now - next_at) // period))

        def run_cron() -> None:
            assert cron is not None
            last = _utc_now()
            while True:
                target = cron.next_after(max(_utc_now(), last))
                # wake at the target even if the wall clock jumps; never fire early
                while (delay := (target - _utc_now()).total_seconds()) > 0:
                    if self._stop.wait(min(delay, 60.0)):
                        return
                if self._stop.is_set():
                    return
                fire()
                last = target

        run = run_rate if cron is None else run_cron
        return run
