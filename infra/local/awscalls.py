"""Count the AWS API calls the local stack makes (for benchmarks: DynamoDB requests per report).

``install(path)`` wraps botocore's one choke point, ``BaseClient._make_api_call``, so every
boto3 and PynamoDB request in this process is counted by service and operation, and writes
the running totals to ``path`` (JSON) ten times a second.  Counting is off unless the stack is
started with FLEETBOX_COUNT_AWS_CALLS=1.

DynamoDB requests are also counted in capacity units, as AWS bills them: every DynamoDB data
call asks for ``ReturnConsumedCapacity=TOTAL`` (PynamoDB already does; a boto3 caller that did
not ask gets the extra key in its response, which nothing reads) and the reported
``CapacityUnits`` — table plus every index the write touched — are summed per operation under
``dynamodb_capacity`` and per table and operation under ``dynamodb_capacity_by_table``.
DynamoDB bills a transactional write twice (prepare and commit); DynamoDB Local reports it once,
so ``TransactWriteItems`` / ``TransactGetItems`` units are doubled here.  A write refused by its
condition is billed by AWS too, but answers with an error and no ``ConsumedCapacity``: it is
counted as a request, not in units.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any

_counts: Counter[tuple[str, str]] = Counter()
_units: Counter[str] = Counter()
_table_units: Counter[tuple[str, str]] = Counter()
_lock = threading.Lock()
_installed = False


_DATA_CALLS = frozenset(
    {
        "GetItem",
        "BatchGetItem",
        "Query",
        "Scan",
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "BatchWriteItem",
        "TransactWriteItems",
        "TransactGetItems",
    }
)
_TRANSACTIONAL = frozenset({"TransactWriteItems", "TransactGetItems"})


def consumed_units(operation: str, response: Any) -> dict[str, float]:
    """The capacity units one DynamoDB response reports, by table (doubled for transactions,
    see above)."""
    consumed = response.get("ConsumedCapacity") if isinstance(response, dict) else None
    if consumed is None:
        return {}
    factor = 2 if operation in _TRANSACTIONAL else 1
    out: Counter[str] = Counter()
    for part in consumed if isinstance(consumed, list) else [consumed]:
        out[str(part.get("TableName", "?"))] += float(part.get("CapacityUnits", 0.0)) * factor
    return dict(out)


def snapshot() -> dict[str, dict[str, Any]]:
    with _lock:
        items = list(_counts.items())
        units = dict(_units)
        by_table = dict(_table_units)
    out: dict[str, dict[str, Any]] = {}
    for (service, operation), n in items:
        out.setdefault(service, {})[operation] = n
    if units:
        out["dynamodb_capacity"] = {op: round(u, 3) for op, u in units.items()}
    for (table, operation), u in by_table.items():
        out.setdefault("dynamodb_capacity_by_table", {}).setdefault(table, {})[operation] = round(u, 3)
    return out


def install(path: Path, interval_s: float = 0.1) -> None:
    global _installed
    if _installed:
        return
    from botocore.client import BaseClient

    original = BaseClient._make_api_call  # noqa: SLF001 - counting is the point: every client call passes here

    def counted(self: Any, operation_name: str, api_params: Any) -> Any:
        service = self.meta.service_model.service_name
        with _lock:
            _counts[service, operation_name] += 1
        if service != "dynamodb" or operation_name not in _DATA_CALLS:
            return original(self, operation_name, api_params)
        if "ReturnConsumedCapacity" not in api_params:
            api_params = {**api_params, "ReturnConsumedCapacity": "TOTAL"}
        response = original(self, operation_name, api_params)
        units = consumed_units(operation_name, response)
        with _lock:
            _units[operation_name] += sum(units.values())
            for table, u in units.items():
                _table_units[table, operation_name] += u
        return response

    BaseClient._make_api_call = counted  # type: ignore[method-assign]  # noqa: SLF001
    _installed = True

    def dump() -> None:
        while True:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(snapshot()), encoding="utf-8")
            os.replace(tmp, path)
            threading.Event().wait(interval_s)

    threading.Thread(target=dump, name="aws-call-counter", daemon=True).start()
