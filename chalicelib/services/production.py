"""The batch-job engine (SPEC §7.1, §7.2): many rows at once, as queued, resumable chunks.

Shape of a job (ARCHITECTURE §3, "Long jobs"):

1. the kind's service validates everything (``batches.create`` for devices, ``serials.generate``
   for serial numbers) and calls :func:`new_batch`: the row list goes to S3, then ONE
   transaction writes the job record and reserves the batch's device licences on the quota
   counter — so a batch over the quota fails with ``LimitExceeded.DeviceExceedLimit`` before
   anything exists — and chunk 0 is queued;
2. ``batch.chunk`` (one message per chunk of ``batch_chunk_size`` rows) runs the kind's chunk
   step (:data:`CHUNK_STEPS`), renders the chunk's CSV rows and QR PNGs to S3 as a part, then
   checkpoints the job record conditionally on ``next_chunk`` (so a re-delivered message counts
   nothing twice) and queues the next chunk, or the final step;
3. ``batch.finish`` streams the parts into the final CSV and ZIP (temp files, bounded memory),
   then marks the job done and releases the licences the batch did not use, in one transaction.

Resuming: SQS re-delivers a step that crashed; and the ``batches.resume`` tick re-queues any
running job whose checkpoint has not moved for ``batch_stale_s`` (a message lost with the host,
e.g. a killed local stack).  Duplicate steps are harmless by construction.

A kind's chunk step is named ``"module:function"`` and imported on first use, like the job kinds
of ``services/jobs.py``: a worker's cold start pays only for the kind it runs, and the kinds'
modules build on this one without this one importing them.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import importlib
import io
import json
import os
import re
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

from pynamodb.exceptions import DoesNotExist, TransactWriteError, UpdateError
from pynamodb.expressions.update import Action

from ..core import clock, errors, ids
from ..core.config import settings
from ..core.observability import logger
from ..media import csvout
from ..models import txn
from ..models.batches import BatchRecord
from ..models.counters import QUOTA_DEVICES, QUOTA_PK, CounterRecord
from ..models.products import ProductRecord
from ..models.txn import Transaction
from . import devices, events, files, jobs
from .paging import checked_start, expect_key
from .products import get_product

KIND_DEVICES = "devices"


KIND_SERIALS = "serial_numbers"


STATUSES = ("created", "processing", "uploading", "done", "failed")


MAX_QUANTITY = 10_000


SUCCESS = "success"


HUB_TIMEOUT = "hub create device timeout"


#: deliveries of one chunk before its rows that still fail on platform errors are reported as such
MAX_ATTEMPTS = 4


#: failed rows kept on the job record for GET (the CSV has every row)
FAILURE_PREVIEW = 50


PREFIX = "batches"


BATCH_ID_RE = re.compile(r"bat[a-z0-9]{16}")


put_object = files.put_object


get_object = files.get_object


def download_url(key: str, file_name: str) -> str:
    return files.attachment_url(key, file_name)


def _part_key(batch_id: str, chunk: int, ext: str) -> str:
    return f"{PREFIX}/{batch_id}/parts/{chunk:05d}.{ext}"


def _reserve_and_record(rec: BatchRecord, reserved: int, field: str, av: bool) -> None:
    counter, actions, cond = devices.quota_reservation(reserved, av)

    def build(tx: Transaction) -> None:
        tx.save("batch", rec, condition=BatchRecord.batch_id.does_not_exist())
        if reserved:
            tx.update("quota", counter, actions=actions, condition=cond)

    try:
        txn.run(build)
    except TransactWriteError as exc:
        if "quota" in exc.failed_tags:  # type: ignore[attr-defined]
            raise quota_error(reserved, field, av) from None
        raise


def quota_error(n: int, field: str, av: bool = False) -> errors.FleetboxError:
    err = devices.quota_error(n, av)
    err.field = field
    return err


def new_batch(
    kind: str,
    product: ProductRecord,
    quantity: int,
    reserved: int,
    created_by: str | None,
    *,
    rows: list[tuple[int, str, str | None]] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Record a job (reserving ``reserved`` licences) and queue its first chunk."""
    av = devices.is_av(product)
    if reserved and devices.quota()["av_remaining" if av else "remaining"] < reserved:
        raise quota_error(reserved, "quantity" if rows is None else "names_csv", av)  # fail fast, nothing written
    batch_id = ids.short_id("bat", 16)
    size = max(1, settings().batch_chunk_size)
    now = clock.now_s()
    rec = BatchRecord(
        batch_id=batch_id,
        kind=kind,
        product_id=product.product_id,
        quantity=quantity,
        reserved=reserved,
        seed=ids.product_secret(),
        chunk_size=size,
        chunks=(quantity + size - 1) // size,
        status="created",
        active="1",
        created_at=now,
        updated_at=now,
        created_by=created_by,
        quota_sk=devices.quota_counter(av).sk,
        **fields,
    )
    if rows is not None:
        put_object(f"{PREFIX}/{batch_id}/input.json", json.dumps(rows).encode(), "application/json")
    try:
        _reserve_and_record(rec, reserved, "quantity" if rows is None else "names_csv", av)
    except Exception:
        if rows is not None:
            _quietly(lambda: files.delete_object(f"{PREFIX}/{batch_id}/input.json"))
        raise
    jobs.enqueue("batch.chunk", {"batch_id": batch_id, "chunk": 0})
    return view(rec)


def get_batch(batch_id: str) -> BatchRecord:
    if not BATCH_ID_RE.fullmatch(batch_id or ""):
        raise errors.BATCH_NOT_EXIST(f"batch {batch_id} does not exist", "batch_id")
    try:
        return BatchRecord.get(batch_id, consistent_read=True)
    except DoesNotExist:
        raise errors.BATCH_NOT_EXIST(f"batch {batch_id} does not exist", "batch_id") from None


def progress(rec: BatchRecord) -> int:
    if rec.status in ("done", "failed"):
        return 100
    total = int(rec.quantity) or 1
    return min(99, int(int(rec.processed) * 100 / total))


def holds_secrets(rec: BatchRecord) -> bool:
    """Device batches' outputs carry DevicePsk or ProductSecret columns (serial numbers do not)."""
    return rec.kind == KIND_DEVICES


def view(rec: BatchRecord, include_secret: bool = False) -> dict[str, Any]:
    """The job; download links of outputs that hold secrets only with ``include_secret`` (the
    caller passed the secret-reading action, SPEC §2)."""
    out: dict[str, Any] = {
        "id": rec.batch_id,
        "kind": rec.kind,
        "product_id": rec.product_id,
        "burn_method": rec.burn_method,
        "generation": rec.generation,
        "qr_code": bool(rec.qr_code),
        "quantity": int(rec.quantity),
        "status": rec.status,
        "progress": progress(rec),
        "processed": int(rec.processed),
        "success_count": int(rec.success_count),
        "failure_count": int(rec.failure_count),
        "last_failure_reason": rec.last_failure_reason,
        "failures": rec.failures or [],
        "created_by": rec.created_by,
        "created_at": int(rec.created_at),
        "updated_at": int(rec.updated_at),
        "finished_at": int(rec.finished_at) if rec.finished_at is not None else None,
        "download_url": None,
        "csv_url": None,
        "download_expires_at": None,
    }
    if rec.status in ("done", "failed") and rec.csv_key and holds_secrets(rec) and not include_secret:
        out["outputs_hold_secrets"] = True  # links: GET …?include_secret=true with DescribeDeviceSecret
    elif rec.status in ("done", "failed") and rec.csv_key:
        stem = f"{rec.product_id}-{rec.batch_id}"
        out["csv_url"] = download_url(rec.csv_key, f"{stem}.csv")
        out["download_url"] = download_url(rec.zip_key, f"{stem}.zip") if rec.zip_key else out["csv_url"]
        out["download_expires_at"] = clock.now_s() + settings().download_ttl_s
    return out


def list_batches(
    product_id: str, limit: int, start: dict[str, Any] | None
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    get_product(product_id)
    expect_key(start, {"batch_id": "S", "product_id": "S", "created_at": "N"}, {"product_id": product_id})
    items: list[dict[str, Any]] = []
    with checked_start(start):
        last = start
        while True:
            res = BatchRecord.by_product.query(
                product_id, scan_index_forward=False, last_evaluated_key=last, limit=limit
            )
            for rec in res:
                items.append(view(rec))
                if len(items) == limit:
                    return items, {
                        "batch_id": {"S": rec.batch_id},
                        "product_id": {"S": product_id},
                        "created_at": {"N": str(int(rec.created_at))},
                    }
            last = res.last_evaluated_key
            if not last:
                return items, None


class Outcome:
    """What one chunk produced: CSV rows, PNGs, counts, failed rows."""

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.pngs: list[tuple[str, bytes]] = []
        self.success = 0
        self.failures: list[dict[str, Any]] = []

    def fail(self, row: int, name: str, reason: str) -> None:
        self.failures.append({"row": row, "device_name": name, "reason": reason})


def auto_name(seed: str, index: int) -> str:
    """Deterministic per (job, index), so a re-run chunk makes the same names; 16 chars [a-z0-9]."""
    digest = hmac.new(seed.encode(), str(index).encode(), hashlib.sha256).digest()
    n = int.from_bytes(digest[:12], "big")
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    out = []
    for _ in range(16):
        n, r = divmod(n, 36)
        out.append(alphabet[r])
    return "".join(out)


def chunk_rows(rec: BatchRecord, chunk: int) -> list[tuple[int, str, str | None]]:
    """(row number, name, problem) of one chunk; auto names are derived from the job's seed."""
    first = chunk * int(rec.chunk_size)
    last = min(int(rec.quantity), first + int(rec.chunk_size))
    if rec.generation == "upload":
        rows = json.loads(get_object(f"{PREFIX}/{rec.batch_id}/input.json"))
        return [(int(r[0]), r[1], r[2]) for r in rows[first:last]]
    return [(i + 1, auto_name(rec.seed, i), None) for i in range(first, last)]


def _write_part(rec: BatchRecord, chunk: int, out: Outcome) -> None:
    put_object(_part_key(rec.batch_id, chunk, "csv"), csvout.render(out.rows).encode("utf-8"), "text/csv")
    if rec.qr_code:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:  # PNGs are compressed already
            for name, data in out.pngs:
                zf.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data)
        put_object(_part_key(rec.batch_id, chunk, "zip"), buf.getvalue(), "application/zip")


def run_chunk(body: dict[str, Any]) -> None:
    """Step ``batch.chunk``: one chunk of rows, checkpointed; safe to run twice."""
    batch_id, chunk = body["batch_id"], int(body["chunk"])
    try:
        rec = BatchRecord.get(batch_id, consistent_read=True)
    except DoesNotExist:
        logger.warning("batch step for a missing batch dropped", extra={"batch_id": batch_id})
        return
    if rec.status in ("done", "failed", "uploading") or int(rec.next_chunk) != chunk:
        return  # a duplicate delivery: this chunk is checkpointed already (or not due yet)
    try:
        rec.update(
            actions=[
                BatchRecord.attempts.add(1),
                BatchRecord.status.set("processing"),
                BatchRecord.updated_at.set(clock.now_s()),
            ],
            condition=BatchRecord.next_chunk == chunk,
        )
    except UpdateError:
        return
    if int(rec.attempts) > 2 * MAX_ATTEMPTS:  # even the give-up run kept failing: stop for good
        _fail(rec, f"chunk {chunk} failed {int(rec.attempts) - 1} times; the batch was stopped")
        return
    give_up = int(rec.attempts) >= MAX_ATTEMPTS
    try:
        product = get_product(rec.product_id)
    except errors.FleetboxError as err:
        _fail(rec, err.message)
        return
    rows = chunk_rows(rec, chunk)
    try:
        out = _kind_step(rec.kind)(rec, product, rows, give_up)
    except errors.FleetboxError as err:
        _fail(rec, err.message)
        return
    _write_part(rec, chunk, out)
    _checkpoint(rec, chunk, out)


def _checkpoint(rec: BatchRecord, chunk: int, out: Outcome) -> None:
    last = chunk + 1 >= int(rec.chunks)
    failures = list(rec.failures or [])
    failures += out.failures[: max(0, FAILURE_PREVIEW - len(failures))]
    actions: list[Action] = [
        BatchRecord.next_chunk.set(chunk + 1),
        BatchRecord.attempts.set(0),
        BatchRecord.processed.add(len(out.rows)),
        BatchRecord.success_count.add(out.success),
        BatchRecord.failure_count.add(len(out.failures)),
        BatchRecord.updated_at.set(clock.now_s()),
        BatchRecord.failures.set(failures),
    ]
    if out.failures:
        actions.append(BatchRecord.last_failure_reason.set(out.failures[-1]["reason"]))
    if last:
        actions.append(BatchRecord.status.set("uploading"))
    try:
        rec.update(actions=actions, condition=BatchRecord.next_chunk == chunk)
    except UpdateError:
        return  # a concurrent delivery checkpointed this chunk first; it queues the next step
    if last:
        jobs.enqueue("batch.finish", {"batch_id": rec.batch_id})
    else:
        jobs.enqueue("batch.chunk", {"batch_id": rec.batch_id, "chunk": chunk + 1})


def _fail(rec: BatchRecord, reason: str) -> None:
    """Stop a batch for good (its product is gone): release what it did not use."""
    _close(rec, "failed", reason, None, None)


def _close(rec: BatchRecord, status: str, reason: str | None, csv_key: str | None, zip_key: str | None) -> None:
    unused = int(rec.reserved) - int(rec.success_count)
    counter = CounterRecord(pk=QUOTA_PK, sk=rec.quota_sk or QUOTA_DEVICES)
    actions = [
        BatchRecord.active.remove(),
        BatchRecord.quota_released.set(True),
        BatchRecord.finished_at.set(clock.now_s()),
        BatchRecord.updated_at.set(clock.now_s()),
    ]
    if reason:
        actions.append(BatchRecord.last_failure_reason.set(reason))
    if csv_key:
        actions.append(BatchRecord.csv_key.set(csv_key))
    if zip_key:
        actions.append(BatchRecord.zip_key.set(zip_key))
    # the status last: one UpdateItem is atomic on DynamoDB, moto applies its clauses in order
    actions.append(BatchRecord.status.set(status))

    def build(tx: Transaction) -> None:
        tx.update("batch", rec, actions=actions, condition=BatchRecord.quota_released.does_not_exist())
        if unused > 0:
            tx.update("quota", counter, actions=[CounterRecord.count.add(-unused)])

    try:
        txn.run(build)
    except TransactWriteError as exc:
        if "batch" in exc.failed_tags:  # type: ignore[attr-defined]
            return  # closed already by another delivery
        raise
    events.emit(
        f"batch.{status}",
        rec.product_id,
        batch_id=rec.batch_id,
        batch_kind=rec.kind,
        success_count=int(rec.success_count),
        failure_count=int(rec.failure_count),
        reason=reason,
    )


def _parts(rec: BatchRecord, ext: str) -> Iterator[bytes]:
    for chunk in range(int(rec.chunks)):
        yield get_object(_part_key(rec.batch_id, chunk, ext))


def assemble(rec: BatchRecord, header: tuple[str, ...], csv_name: str) -> tuple[str, str | None]:
    """Stream the parts into the final CSV (and ZIP) on S3; returns their keys.

    Both files are built in temp files (memory holds one part at a time) and uploaded with a
    single PUT each.
    """
    csv_key = f"{PREFIX}/{rec.batch_id}/{rec.product_id}-{rec.batch_id}.csv"
    zip_key = f"{PREFIX}/{rec.batch_id}/{rec.product_id}-{rec.batch_id}.zip" if rec.qr_code else None
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = os.path.join(tmp, "out.csv")
        with open(csv_path, "wb") as fh:
            fh.write(csvout.render([], header=header).encode("utf-8"))
            for part in _parts(rec, "csv"):
                fh.write(part)
        with open(csv_path, "rb") as fh:
            put_object(csv_key, fh, "text/csv; charset=utf-8")
        if zip_key:
            zip_path = os.path.join(tmp, "out.zip")
            with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED) as out:
                for part in _parts(rec, "zip"):
                    with zipfile.ZipFile(io.BytesIO(part)) as src:
                        for info in src.infolist():
                            out.writestr(info, src.read(info))
                out.write(csv_path, csv_name, compress_type=zipfile.ZIP_DEFLATED)
            with open(zip_path, "rb") as fh:
                put_object(zip_key, fh, "application/zip")
    return csv_key, zip_key


def run_finish(body: dict[str, Any]) -> None:
    """Step ``batch.finish``: assemble the outputs, close the job, release unused licences."""
    try:
        rec = BatchRecord.get(body["batch_id"], consistent_read=True)
    except DoesNotExist:
        return
    if rec.status != "uploading":
        return
    header, csv_name = OUTPUTS.get(rec.kind, OUTPUTS[KIND_DEVICES])
    csv_key, zip_key = assemble(rec, header, csv_name)
    status = "done" if int(rec.success_count) > 0 else "failed"
    _close(rec, status, None if status == "done" else (rec.last_failure_reason or "no row succeeded"), csv_key, zip_key)
    for chunk in range(int(rec.chunks)):
        for ext in ("csv", "zip"):
            _quietly(functools.partial(files.delete_object, _part_key(rec.batch_id, chunk, ext)))


def _quietly(action: Callable[[], Any]) -> None:
    try:
        action()
    except Exception:  # noqa: BLE001 - clean-up only; the job's result is already recorded
        logger.warning("batch clean-up failed", exc_info=True)


def resume_stalled(stale_s: int | None = None) -> int:
    """Tick ``batches.resume``: re-queue running batches whose checkpoint stopped moving.

    ``stale_s`` (default ``batch_stale_s``) is how long a checkpoint may stand still; the local
    stack passes 0 when it starts, since a stack that was killed lost its in-flight messages.
    The touch of ``updated_at`` is conditional, so concurrent sweeps queue each batch once;
    the step itself tolerates duplicates anyway.  Every resume is logged.  Returns how many
    were re-queued.
    """
    stale = settings().batch_stale_s if stale_s is None else stale_s
    now = clock.now_s()
    requeued = 0
    for key in BatchRecord.active_index.query("1"):
        try:
            rec = BatchRecord.get(key.batch_id, consistent_read=True)
        except DoesNotExist:
            continue
        if not rec.active or now - int(rec.updated_at) < stale:
            continue
        try:
            rec.update(
                actions=[BatchRecord.updated_at.set(now)], condition=BatchRecord.updated_at == int(rec.updated_at)
            )
        except UpdateError:
            continue
        if rec.status == "uploading":
            jobs.enqueue("batch.finish", {"batch_id": rec.batch_id})
        else:
            jobs.enqueue("batch.chunk", {"batch_id": rec.batch_id, "chunk": int(rec.next_chunk)})
        logger.warning(
            "batch resumed: its checkpoint had not moved",
            extra={
                "batch_id": rec.batch_id,
                "status": rec.status,
                "chunk": int(rec.next_chunk),
                "processed": int(rec.processed),
                "quantity": int(rec.quantity),
            },
        )
        requeued += 1
    return requeued


#: output of each kind: (CSV header, the CSV's name inside the ZIP)
OUTPUTS: dict[str, tuple[tuple[str, ...], str]] = {
    KIND_DEVICES: (("ProductId", "DeviceName", "ProductSecret", "DevicePsk", "Status", "QRCode"), "devices.csv"),
    KIND_SERIALS: (("ProductId", "SN", "Status", "QRCode"), "serial_numbers.csv"),
}
#: kind -> its chunk step ``fn(rec, product, rows, give_up) -> Outcome``
CHUNK_STEPS = {
    KIND_DEVICES: "chalicelib.services.batches:device_chunk",
    KIND_SERIALS: "chalicelib.services.serials:run_chunk",
}


def _kind_step(kind: str) -> Callable[..., Outcome]:
    module, _, attr = CHUNK_STEPS[kind].partition(":")
    return getattr(importlib.import_module(module), attr)
