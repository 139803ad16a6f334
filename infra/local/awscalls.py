"""Count the AWS API calls the local stack makes (for benchmarks: DynamoDB requests per report).

``install(path)`` wraps botocore's one choke point, ``BaseClient._make_api_call``, so every
boto3 and PynamoDB request in this process is counted by service and operation, and writes
the running totals to ``path`` (JSON) twice a second.  Counting is off unless the stack is
started with FLEETBOX_COUNT_AWS_CALLS=1.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any

_counts: Counter[tuple[str, str]] = Counter()
_lock = threading.Lock()
_installed = False


def snapshot() -> dict[str, dict[str, int]]:
    with _lock:
        items = list(_counts.items())
    out: dict[str, dict[str, int]] = {}
    for (service, operation), n in items:
        out.setdefault(service, {})[operation] = n
    return out


def install(path: Path, interval_s: float = 0.5) -> None:
    global _installed
    if _installed:
        return
    from botocore.client import BaseClient

    original = BaseClient._make_api_call  # noqa: SLF001 - counting is the point: every client call passes here

    def counted(self: Any, operation_name: str, api_params: Any) -> Any:
        key = (self.meta.service_model.service_name, operation_name)
        with _lock:
            _counts[key] += 1
        return original(self, operation_name, api_params)

    BaseClient._make_api_call = counted  # type: ignore[method-assign]  # noqa: SLF001
    _installed = True

    def dump() -> None:
        while True:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(snapshot()), encoding="utf-8")
            os.replace(tmp, path)
            threading.Event().wait(interval_s)

    threading.Thread(target=dump, name="aws-call-counter", daemon=True).start()
