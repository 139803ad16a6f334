"""Lambda action: invoke ``function_name`` asynchronously (``Event``) with the queue envelope."""

from __future__ import annotations

from typing import Any

from ..protocol import diagnostics
from .base import RETRY_S, Delivery, aws, aws_failure, not_own, text_field
from .webhook import Outcome

CODE = diagnostics.FORWARD_LAMBDA_ERR
__all__ = ["CODE", "RETRY_S", "validate", "send"]


def validate(action: dict[str, Any], path: str) -> dict[str, Any]:
    name = text_field(
        action,
        "function_name",
        path,
        max_len=170,
        pattern=r"(arn:aws[a-z\-]*:lambda:[a-z0-9\-]+:\d{12}:function:)?[A-Za-z0-9_\-]{1,64}(:[A-Za-z0-9_$\-]+)?",
        rule="must be a Lambda function name or ARN",
    )
    not_own(name.split(":function:")[-1], f"{path}.function_name")
    return {"type": "lambda", "function_name": name}


def send(d: Delivery) -> Outcome:
    try:
        reply = aws("lambda").invoke(
            FunctionName=d.action["function_name"], InvocationType="Event", Payload=d.queue_envelope_bytes()
        )
    except Exception as exc:  # noqa: BLE001
        return aws_failure(exc, CODE)
    status = int(reply.get("StatusCode") or 0)
    if reply.get("FunctionError") or not 200 <= status < 300:
        return Outcome(
            False,
            status=status,
            error=f"invoke answered {status} {reply.get('FunctionError') or ''}".strip(),
            code=CODE,
        )
    return Outcome(True, status=status, snippet="invoked")
