"""``python -m infra.local.moto_fast``: moto's server for the local stack, with one patch and a guard.

The guard (``infra/local/moto_auth.py``) refuses every request not signed with the stack's own
secret key (``FLEETBOX_MOTO_SECRET``); the patch follows.

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


def serve(host: str, port: int) -> None:
    """moto.server.main's server, with :class:`~infra.local.moto_auth.SigV4Guard` in front."""
    import os
    import signal

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import run_simple

    from infra.local.moto_auth import SigV4Guard

    os.environ.setdefault("MOTO_PORT", str(port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    secret = os.environ.get("FLEETBOX_MOTO_SECRET")
    if not secret:
        raise SystemExit("FLEETBOX_MOTO_SECRET is not set: the local stack starts this server with its key")
    guarded = SigV4Guard(app, secret, token=os.environ.get("FLEETBOX_MOTO_TOKEN") or secret)
    run_simple(host, port, guarded, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    import argparse

    apply()
    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args()
    serve(args.host, args.port)
