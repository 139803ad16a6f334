"""``python -m infra.local.moto_fast``: moto's server with one patch for the local stack.

moto's ``TransactWriteItems`` backs up, for rollback, a deep copy of the *whole table* once per
operation in the transaction: a 99-device transaction against a 10,000-device table copies a
million items, so batch jobs (SPEC §7.1) went quadratic locally.  DynamoDB does nothing of the
sort.  The patch keeps moto's semantics (all-or-nothing, the same cancellation reasons) but backs
up only the items the transaction touches, and restores exactly those when it is cancelled.
"""
from __future__ import annotations

import copy
import sys
from typing import Any


def apply() -> None:
    from moto.dynamodb import models
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    real_copy = copy

    class _NoTableCopy:
        """``copy`` as moto's backend module sees it: tables are not copied (items are, below)."""

        def deepcopy(self, obj: Any, memo: Any = None) -> Any:
            if isinstance(obj, Table):
                return obj  # moto's restore then re-assigns the same table: a no-op
            return real_copy.deepcopy(obj, memo)

        def __getattr__(self, name: str) -> Any:
            return getattr(real_copy, name)

    models.copy = _NoTableCopy()  # type: ignore[assignment]
    original = models.DynamoDBBackend.transact_write_items

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        backups = []
        for entry in transact_items:
            try:
                _, op = next(iter(entry.items()))
                table = self.tables.get(op.get("TableName"))
                if table is None:
                    continue
                raw = op["Item"] if "Item" in op else op["Key"]
                h = DynamoType(raw[table.hash_key_attr])
                r = DynamoType(raw[table.range_key_attr]) if table.range_key_attr else None
                item = table.get_item(h, r)
                backups.append((table, h, r, real_copy.deepcopy(item) if item is not None else None))
            except Exception:  # noqa: BLE001 - a malformed operation: moto's own validation answers it
                continue
        try:
            original(self, transact_items)
        except Exception:
            for table, h, r, item in reversed(backups):
                if item is None:
                    if r is not None:
                        table.items.get(h, {}).pop(r, None)
                    else:
                        table.items.pop(h, None)
                elif r is not None:
                    table.items[h][r] = item
                else:
                    table.items[h] = item
            raise

    models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]


if __name__ == "__main__":
    apply()
    from moto.server import main

    sys.exit(main())
