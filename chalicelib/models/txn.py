"""DynamoDB transactions whose failed conditions can be named.

PynamoDB sends a transaction's operations grouped by kind (condition checks,
deletes, puts, updates), not in call order, so the cancellation reasons DynamoDB
returns must be mapped back through that grouping.  :class:`Transaction` keeps a
tag per operation and answers which tagged conditions failed.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from pynamodb.connection import Connection
from pynamodb.exceptions import TransactWriteError
from pynamodb.transactions import TransactWrite

from ..core.config import settings


@lru_cache(maxsize=1)
def connection() -> Connection:
    return Connection(region=settings().region)


class Transaction:
    """``with Transaction() as tx: tx.save("device", rec, condition=...)``; then ``tx.failed(exc)``."""

    _KINDS = ("check", "delete", "put", "update")

    def __init__(self) -> None:
        self._tx = TransactWrite(connection=connection())
        self._tags: dict[str, list[str]] = {k: [] for k in self._KINDS}

    def __enter__(self) -> Transaction:
        self._tx.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._tx.__exit__(*exc)

    def save(self, tag: str, model: Any, condition: Any = None) -> None:
        self._tx.save(model, condition=condition)
        self._tags["put"].append(tag)

    def update(self, tag: str, model: Any, actions: list[Any], condition: Any = None) -> None:
        self._tx.update(model, actions=actions, condition=condition)
        self._tags["update"].append(tag)

    def delete(self, tag: str, model: Any, condition: Any = None) -> None:
        self._tx.delete(model, condition=condition)
        self._tags["delete"].append(tag)

    def check(self, tag: str, model_cls: Any, hash_key: Any, range_key: Any = None, condition: Any = None) -> None:
        self._tx.condition_check(model_cls, hash_key, range_key=range_key, condition=condition)
        self._tags["check"].append(tag)

    def failed(self, exc: TransactWriteError) -> set[str]:
        """Tags of the operations whose condition failed."""
        order = [t for kind in self._KINDS for t in self._tags[kind]]
        reasons = getattr(exc, "cancellation_reasons", None) or []
        return {
            order[i]
            for i, r in enumerate(reasons)
            if r is not None and getattr(r, "code", None) == "ConditionalCheckFailed" and i < len(order)
        }


def run(build: Callable[[Transaction], None], attempts: int = 6) -> None:
    """Build and commit a transaction, retrying when it lost a race rather than a condition.

    Writes that share a hot item (the account's device quota counter) collide with
    ``TransactionConflict``; DynamoDB asks callers to retry those with backoff.  A failed
    condition is an answer, not a race: it is raised at once for the caller to name.
    """
    for attempt in range(attempts):
        tx = Transaction()
        try:
            with tx:
                build(tx)
            return
        except TransactWriteError as exc:
            exc.failed_tags = tx.failed(exc)  # type: ignore[attr-defined]
            if exc.failed_tags or attempt == attempts - 1:  # type: ignore[attr-defined]
                raise
            time.sleep(min(0.5, 0.01 * 2**attempt) * (0.5 + random.random()))
