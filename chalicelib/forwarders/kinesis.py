"""Kinesis action: the queue envelope (SPEC §9.1) as one record of ``stream_name``; partition key
``partition_key`` (a template, default ``${productId}/${deviceName}`` to keep per-device order)."""

from __future__ import annotations

from typing import Any

from ..core import errors
from ..protocol import diagnostics
from .base import RETRY_S, Delivery, aws, aws_failure, not_own, template_ok, text_field
from .webhook import Outcome

CODE = diagnostics.FORWARD_KINESIS_ERR
__all__ = ["CODE", "RETRY_S", "validate", "send"]


def validate(action: dict[str, Any], path: str) -> dict[str, Any]:
    name = text_field(
        action,
        "stream_name",
        path,
        pattern=r"[A-Za-z0-9_.\-]{1,128}",
        rule="must be a Kinesis stream name (1-128 of A-Z a-z 0-9 _ . -)",
    )
    key = text_field(action, "partition_key", path, required=False, max_len=256) or "${productId}/${deviceName}"
    if not template_ok(key):
        raise errors.ACTION_INVALID(f"{path}.partition_key: ${{…}} must name a key", f"{path}.partition_key")
    not_own(name, f"{path}.stream_name")
    return {"type": "kinesis", "stream_name": name, "partition_key": key}


def send(d: Delivery) -> Outcome:
    key = d.substitute(d.action["partition_key"])[:256] or "-"
    try:
        reply = aws("kinesis").put_record(
            StreamName=d.action["stream_name"], Data=d.queue_envelope_bytes(), PartitionKey=key
        )
    except Exception as exc:  # noqa: BLE001
        return aws_failure(exc, CODE)
    return Outcome(True, status=200, snippet=f"SequenceNumber {reply.get('SequenceNumber')}")
