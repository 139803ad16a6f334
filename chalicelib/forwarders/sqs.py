"""SQS action: the queue envelope (SPEC §9.1) as one message to ``queue_url``."""

from __future__ import annotations

from typing import Any

from ..protocol import diagnostics
from .base import RETRY_S, Delivery, aws, aws_failure, not_own, text_field
from .webhook import Outcome

CODE = diagnostics.FORWARD_SQS_ERR
__all__ = ["CODE", "RETRY_S", "validate", "send"]


def validate(action: dict[str, Any], path: str) -> dict[str, Any]:
    url = text_field(action, "queue_url", path, pattern=r"https?://\S{1,1000}", rule="must be an SQS queue URL")
    not_own(url.rstrip("/").rsplit("/", 1)[-1], f"{path}.queue_url")
    return {"type": "sqs", "queue_url": url}


def send(d: Delivery) -> Outcome:
    try:
        reply = aws("sqs").send_message(QueueUrl=d.action["queue_url"], MessageBody=d.queue_envelope_bytes().decode())
    except Exception as exc:  # noqa: BLE001
        return aws_failure(exc, CODE)
    return Outcome(True, status=200, snippet=f"MessageId {reply.get('MessageId')}")
