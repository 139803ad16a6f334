"""Republish (SPEC §9.1): the rule output to an MQTT topic through the device publisher port.

``topic`` may hold ``${field}`` variables (a missing field → ``Payload_No_Field``).  QoS is the
original message's unless the action sets ``qos``; QoS 1 failures (no subscriber received it,
or the publisher failed) retry after 3 s, 6 s and 9 s; a QoS 0 publish is attempted once.
"""

from __future__ import annotations

from typing import Any

from ..core import errors
from ..protocol import diagnostics, publisher
from .base import Delivery, template_ok, text_field
from .webhook import Outcome

CODE = diagnostics.RULE_REPUB_SYSTEM_ERR
RETRY_S: tuple[float, ...] = (3.0, 6.0, 9.0)
TOPIC_RE = r"[A-Za-z0-9_\-/${}.]{1,128}"


def validate(action: dict[str, Any], path: str) -> dict[str, Any]:
    topic = text_field(
        action,
        "topic",
        path,
        max_len=128,
        pattern=TOPIC_RE,
        rule="must be 1-128 characters: letters, digits, _ - / and ${field} variables",
    )
    if topic is None or not template_ok(topic) or "+" in topic or "#" in topic or topic.startswith("$"):
        raise errors.ACTION_INVALID(f"{path}.topic must be a topic name; ${{…}} must name a key", f"{path}.topic")
    out: dict[str, Any] = {"type": "republish", "topic": topic}
    qos = action.get("qos")
    if qos is not None:
        if qos not in (0, 1) or isinstance(qos, bool):
            raise errors.ACTION_INVALID(f"{path}.qos must be 0 or 1", f"{path}.qos")
        out["qos"] = qos
    return out


def retry_offsets(d: Delivery) -> tuple[float, ...]:
    return RETRY_S if qos_of(d) >= 1 else ()


def qos_of(d: Delivery) -> int:
    qos = d.action.get("qos")
    return int(qos if qos is not None else d.msg.get("qos") or 0)


def send(d: Delivery) -> Outcome:
    topic = d.substitute(d.action["topic"])
    qos = qos_of(d)
    try:
        received = publisher.publish(topic, d.output_bytes(), qos)
    except Exception as exc:  # noqa: BLE001 - the publisher's failure is this attempt's outcome
        return Outcome(False, error=f"publish to {topic} failed: {type(exc).__name__}: {str(exc)[:120]}", code=CODE)
    if received:
        return Outcome(True, snippet=f"published to {topic} (qos {qos})")
    if qos == 0:
        # at most once: nobody listening is not a failure of a QoS 0 publish
        return Outcome(True, snippet=f"published to {topic} (qos 0, no subscriber)")
    return Outcome(False, error=f"no subscriber received the publish to {topic}", code=CODE)
