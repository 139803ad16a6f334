"""SNS action: the queue envelope (SPEC §9.1) published to ``topic_arn``."""

from __future__ import annotations

from typing import Any

from ..protocol import diagnostics
from .base import RETRY_S, Delivery, aws, aws_failure, not_own, text_field
from .webhook import Outcome

CODE = diagnostics.FORWARD_SNS_ERR
__all__ = ["CODE", "RETRY_S", "validate", "send"]


def validate(action: dict[str, Any], path: str) -> dict[str, Any]:
    arn = text_field(
        action,
        "topic_arn",
        path,
        pattern=r"arn:aws[a-z\-]*:sns:[a-z0-9\-]+:\d{12}:[A-Za-z0-9_\-.]{1,256}",
        rule="must be an SNS topic ARN",
    )
    not_own(arn.rsplit(":", 1)[-1], f"{path}.topic_arn")
    return {"type": "sns", "topic_arn": arn}


def send(d: Delivery) -> Outcome:
    try:
        reply = aws("sns").publish(TopicArn=d.action["topic_arn"], Message=d.queue_envelope_bytes().decode())
    except Exception as exc:  # noqa: BLE001
        return aws_failure(exc, CODE)
    return Outcome(True, status=200, snippet=f"MessageId {reply.get('MessageId')}")
