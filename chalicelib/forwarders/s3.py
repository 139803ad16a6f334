"""S3 action: the rule output (JSON, or the raw bytes of a binary payload) as one object of
``bucket`` at ``key`` (a template; default ``rules/${productId}/${deviceName}/${timestamp}-${seq}.json``)."""

from __future__ import annotations

from typing import Any

from ..core import errors
from ..protocol import diagnostics
from .base import RETRY_S, Delivery, aws, aws_failure, not_own, template_ok, text_field
from .webhook import Outcome

CODE = diagnostics.FORWARD_S3_ERR
DEFAULT_KEY = "rules/${productId}/${deviceName}/${timestamp}-${seq}.json"
__all__ = ["CODE", "RETRY_S", "validate", "send"]


def validate(action: dict[str, Any], path: str) -> dict[str, Any]:
    bucket = text_field(
        action, "bucket", path, pattern=r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", rule="must be an S3 bucket name"
    )
    key = text_field(action, "key", path, required=False, max_len=512) or DEFAULT_KEY
    if not template_ok(key):
        raise errors.ACTION_INVALID(f"{path}.key: ${{…}} must name a key", f"{path}.key")
    not_own(bucket, f"{path}.bucket")
    return {"type": "s3", "bucket": bucket, "key": key}


def send(d: Delivery) -> Outcome:
    key = d.substitute(d.action["key"]).lstrip("/")[:1024]
    out = d.output
    ctype = "application/octet-stream" if isinstance(out, (bytes, bytearray)) else "application/json"
    try:
        aws("s3").put_object(Bucket=d.action["bucket"], Key=key, Body=d.output_bytes(), ContentType=ctype)
    except Exception as exc:  # noqa: BLE001
        return aws_failure(exc, CODE)
    return Outcome(True, status=200, snippet=f"s3://{d.action['bucket']}/{key}")
