"""Cloud → device messages: every downlink goes through here.

* :func:`deliver` — publish one message through the device publisher port
  (``protocol/publisher.py``: IoT Core's data plane on AWS, the embedded broker locally);
  False when nobody received it or the publisher failed (never raises);
* :func:`send` — a cloud-originated downlink (control, action, OTA notification) on the topic
  form the device last used (both forms when unknown), with its content log, the downlink
  counters and a ``Pub_To_Dev_No_Subscriber`` diagnostic when nobody received it;
* :func:`send_raw` — the same for a message the caller wrote itself on a custom topic.

Replies to uplinks are published by the uplink pipeline with :func:`deliver` (their logs and
counters are written with the batch's rows).
"""

from __future__ import annotations

from typing import Any

from ..core.observability import logger
from ..protocol import diagnostics, publisher, topics
from . import analytics, device_logs


def deliver(topic: str, payload: Any, qos: int = 0) -> bool:
    """Publish to a device; False when nobody received it or the publisher failed."""
    try:
        return bool(publisher.publish(topic, payload, qos))
    except Exception:  # noqa: BLE001 - a failed downlink is a diagnostic, not a failed batch
        logger.exception("device publish failed", extra={"topic": topic})
        return False


def send(pid: str, dn: str, family: str, message: dict, *, dollar: bool | None, qos: int = 1) -> bool:
    """Publish a cloud-originated downlink (control, action) on the form the device last used —
    both forms when unknown — with its content log and counters.  True if any form was received."""
    forms = [dollar] if dollar is not None else [False, True]
    delivered = False
    for form in forms:
        topic = topics.down(family, pid, dn, dollar=form)
        ok = deliver(topic, message, qos)
        delivered = delivered or ok
        device_logs.write(pid, dn, "content", direction="down", topic=topic, payload=message)
    _account(pid, dn, delivered, topics.down(family, pid, dn, dollar=bool(dollar)), message)
    return delivered


def send_raw(pid: str, dn: str, topic: str, payload: bytes, logged: str, qos: int) -> bool:
    """Publish ``payload`` as is on one of the device's own topics (custom-topic messages), with
    its content log (``logged``: the payload as text) and counters.  True if it was received."""
    delivered = deliver(topic, payload, qos)
    device_logs.write(pid, dn, "content", direction="down", topic=topic, payload=logged)
    _account(pid, dn, delivered, topic, logged)
    return delivered


def _account(pid: str, dn: str, delivered: bool, topic: str, payload: Any) -> None:
    analytics.count(pid, "downlink", 1)
    if not delivered:
        analytics.count(pid, "downlink_fail", 1)
        device_logs.diagnostic(
            pid,
            dn,
            diagnostics.PUB_TO_DEV_NO_SUBSCRIBER,
            "no subscriber received the message: the device is offline or not subscribed",
            topic=topic,
            payload=payload,
            direction="down",
        )
