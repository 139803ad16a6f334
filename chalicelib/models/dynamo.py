"""DynamoDB at the level of its wire format, for code that talks to the client directly.

* :func:`client` — the botocore client PynamoDB uses (same pool, retries and endpoint);
* :func:`to_av` / :func:`from_av` — a JSON value to and from an AttributeValue;
  :func:`item` / :func:`av_item` — whole items; :func:`plain` — PynamoDB / Decimal values to
  plain JSON values;
* :func:`transient` / :func:`error_code` — which storage failures are worth a retry.

Every layer above ``models`` may use these (services, forwarders); nothing here knows a table.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .txn import connection

_RETRYABLE = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionConflictException",
    "LimitExceededException",
}


def client() -> Any:
    """The botocore DynamoDB client PynamoDB uses."""
    return connection().client


def to_av(value: Any) -> dict[str, Any]:
    """A JSON value as a DynamoDB AttributeValue."""
    if value is None:
        return {"NULL": True}
    if value is True or value is False:
        return {"BOOL": value}
    if isinstance(value, int):
        return {"N": str(value)}
    if isinstance(value, float):
        return {"N": repr(value) if math.isfinite(value) else "0"}
    if isinstance(value, Decimal):
        return {"N": str(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, dict):
        return {"M": {str(k): to_av(v) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        return {"L": [to_av(v) for v in value]}
    return {"S": str(value)}


def _number(text: str) -> int | float:
    d = Decimal(text)
    return int(d) if d == d.to_integral_value() and "e" not in text.lower() and "." not in text else float(d)


def from_av(av: dict[str, Any]) -> Any:
    ((kind, v),) = av.items()
    if kind == "N":
        return _number(v)
    if kind == "M":
        return {k: from_av(x) for k, x in v.items()}
    if kind == "L":
        return [from_av(x) for x in v]
    if kind == "NULL":
        return None
    return v


def plain(value: Any) -> Any:
    """Decimals (DynamoDB numbers) back to int/float, recursively; PynamoDB maps to dicts."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def item(av_item: dict[str, Any]) -> dict[str, Any]:
    """A raw DynamoDB item as plain values."""
    return {k: from_av(v) for k, v in av_item.items()}


def av_item(values: dict[str, Any]) -> dict[str, Any]:
    """Plain values as a raw DynamoDB item (``None`` attributes left out)."""
    return {k: to_av(v) for k, v in values.items() if v is not None}


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def transient(exc: BaseException | None) -> bool:
    """Whether a storage failure is worth a redelivery (throttling, service errors) rather than a bug."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, BotoCoreError):
            return True
        if isinstance(exc, ClientError) and error_code(exc) in _RETRYABLE:
            return True
        exc = getattr(exc, "cause", None) or exc.__cause__  # PynamoDB wraps botocore errors
        seen += 1
    return False
