"""DynamoDB action: one item per message in ``table``, built by ``fields`` — a mapping of
attribute name to ``"${field}"`` (the output's value, type kept), a template string with
``${…}`` variables, or a constant (like the MySQL action's field mapping).  The table's key
attributes must be among the mapped fields."""

from __future__ import annotations

from typing import Any

from ..core import errors
from ..models.dynamo import to_av
from ..protocol import diagnostics
from .base import RETRY_S, Delivery, aws, aws_failure, not_own, template_ok, text_field
from .webhook import Outcome

CODE = diagnostics.FORWARD_DYNAMODB_ERR
__all__ = ["CODE", "RETRY_S", "validate", "send"]


def validate(action: dict[str, Any], path: str) -> dict[str, Any]:
    table = text_field(
        action,
        "table",
        path,
        pattern=r"[A-Za-z0-9_.\-]{3,255}",
        rule="must be a DynamoDB table name (3-255 of A-Z a-z 0-9 _ . -)",
    )
    fields = action.get("fields")
    if not isinstance(fields, dict) or not 1 <= len(fields) <= 64:
        raise errors.ACTION_INVALID(
            f"{path}.fields must map 1-64 attribute names to ${{field}} or constants", f"{path}.fields"
        )
    for name, spec in fields.items():
        if not isinstance(name, str) or not 1 <= len(name) <= 255:
            raise errors.ACTION_INVALID(f"{path}.fields: attribute names are 1-255 characters", f"{path}.fields")
        if isinstance(spec, str) and not template_ok(spec):
            raise errors.ACTION_INVALID(f"{path}.fields.{name}: ${{…}} must name a key", f"{path}.fields.{name}")
        if isinstance(spec, (dict, list)):
            raise errors.ACTION_INVALID(
                f"{path}.fields.{name} must be a string, number or boolean", f"{path}.fields.{name}"
            )
    not_own(table, f"{path}.table")
    return {"type": "dynamodb", "table": table, "fields": dict(fields)}


def send(d: Delivery) -> Outcome:
    item = {k: to_av(v) for k, v in d.mapped(d.action["fields"]).items()}
    try:
        aws("dynamodb").put_item(TableName=d.action["table"], Item=item)
    except Exception as exc:  # noqa: BLE001
        return aws_failure(exc, CODE)
    return Outcome(True, status=200, snippet=f"{len(item)} attribute(s) written")
