"""moto server with one local-stack patch: DynamoDB transactions back up the items they touch.

moto's ``TransactWriteItems`` deep-copies every table a transaction names — once *per item* —
so that it can roll back; on a table of 10,000 OTA jobs a 100-item transaction copies a million
items (seconds), and even a two-item transaction copies the whole table.  DynamoDB itself has no
such cost.  The patch keeps moto's own transaction code and semantics (conditions, the
cancellation reasons, all-or-nothing) and only changes how the rollback is prepared: the items
named by the transaction are copied before it runs and put back (or deleted) if it fails.

Run as the local stack's moto child (``infra/local/moto_server.py``): ``main()`` patches, then
hands the command line to ``moto.server.main``.  :func:`patch` also works under ``mock_aws``.
"""
from __future__ import annotations

import copy
import sys
from typing import Any

_patched = False


def patch() -> None:
    global _patched
    if _patched:
        return
    from moto.dynamodb import models
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table

    class _NoTableCopy:
        """``copy`` as moto's transaction code sees it: tables are not copied (we back up items)."""

        @staticmethod
        def deepcopy(value: Any, memo: Any = None) -> Any:
            return value if isinstance(value, Table) else copy.deepcopy(value, memo)

        def __getattr__(self, name: str) -> Any:
            return getattr(copy, name)

    original = DynamoDBBackend.transact_write_items

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        backups: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
        for entry in transact_items[:100]:
            try:
                op_type, op = next(iter(entry.items()))
                name = op["TableName"]
                table = self.tables[name]
                if op_type == "Put":
                    key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
                    if table.range_key_attr is not None:
                        key[table.range_key_attr] = op["Item"][table.range_key_attr]
                else:
                    key = op["Key"]
                current = self.get_item(name, key)
            except Exception:  # noqa: BLE001 - moto's own code reports malformed entries
                continue
            backups.append((name, key, copy.deepcopy(current.to_json()["Attributes"]) if current else None))
        saved = models.copy
        models.copy = _NoTableCopy()  # type: ignore[assignment]
        try:
            return original(self, transact_items)
        except Exception:
            for name, key, attrs in reversed(backups):
                if attrs is None:
                    try:
                        self.delete_item(name, key)
                    except Exception:  # noqa: BLE001 - it was never written
                        pass
                else:
                    self.put_item(name, attrs)
            raise
        finally:
            models.copy = saved  # type: ignore[assignment]

    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    _patched = True


def main(argv: list[str] | None = None) -> None:
    patch()
    from moto.server import main as moto_main

    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
