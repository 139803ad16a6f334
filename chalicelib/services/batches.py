"""Batch jobs (SPEC §7.1): many devices at once, with per-device QR codes, as queued chunks.

Shape of a job (ARCHITECTURE §3, "Long jobs"):

1. :func:`create` validates everything (released product, burn method, quantity, the uploaded
   names row by row), stores the row list on S3, then in ONE transaction writes the job record
   and reserves the batch's device licences on the quota counter — so a batch over the quota
   fails with ``LimitExceeded.DeviceExceedLimit`` before any device exists — and queues chunk 0.
2. ``batch.chunk`` (one message per chunk of ``batch_chunk_size`` rows) writes the chunk's
   devices with :func:`devices.insert_many` (conditional puts, never an overwrite; devices of an
   earlier run of the same chunk are recognised by ``batch_id`` and their stored secret reused),
   renders the chunk's CSV rows and QR PNGs to S3 as a part, then checkpoints the job record
   conditionally on ``next_chunk`` (so a re-delivered message counts nothing twice) and queues
   the next chunk, or the final step.
3. ``batch.finish`` streams the parts into the final CSV and ZIP (temp files, bounded memory),
   then marks the job done and releases the licences the batch did not use, in one transaction.

Resuming: SQS re-delivers a step that crashed; and the ``batches.resume`` tick re-queues any
running job whose checkpoint has not moved for ``batch_stale_s`` (a message lost with the host,
e.g. a killed local stack).  Duplicate steps are harmless by construction.

Serial numbers (§7.2) ride the same engine with ``kind="serial_numbers"`` (services/serials.py).
"""
from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import os
import re
import tempfile
import zipfile
from typing import Any, Callable, Iterator

from pynamodb.exceptions import DoesNotExist, PynamoDBException, TransactWriteError, UpdateError

from ..core import clock, errors, ids
from ..core.config import settings
from ..core.observability import logger
from ..media import csvout, qr
from ..models.batches import BatchRecord
from ..models.counters import CounterRecord, QUOTA_DEVICES, QUOTA_PK
from ..models.products import ProductRecord
from . import devices, events, files, jobs, txn
from .paging import checked_start, expect_key
from .products import get_product
from .txn import Transaction

KIND_DEVICES = "devices"
KIND_SERIALS = "serial_numbers"
BURN_METHODS = ("per_device_secret", "per_product_secret")
GENERATIONS = ("auto", "upload")
STATUSES = ("created", "processing", "uploading", "done", "failed")
MAX_QUANTITY = 10_000
CSV_HEADER = ("ProductId", "DeviceName", "ProductSecret", "DevicePsk", "Status", "QRCode")
SUCCESS = "success"
EXISTS = "device already exists"
INVALID = "device name invalid: must be 1-48 characters of A-Z a-z 0-9 _ : -"
#: the output CSV holds names exactly as made (a factory tool reads them back), so a name a
#: spreadsheet would read as a formula cannot be in a batch (SPEC §7.1, §15)
FORMULA_NAME = "device name starts with '-', which a spreadsheet reads as a formula; rename it for a batch"
HUB_TIMEOUT = "hub create device timeout"
#: deliveries of one chunk before its rows that still fail on platform errors are reported as such
MAX_ATTEMPTS = 4
#: failed rows kept on the job record for GET (the CSV has every row)
FAILURE_PREVIEW = 50
PREFIX = "batches"
BATCH_ID_RE = re.compile(r"bat[a-z0-9]{16}")


# ------------------------------------------------------------------ storage


# Objects live in the files bucket through services/files.py (one S3 client for the product).
put_object = files.put_object
get_object = files.get_object


def download_url(key: str, file_name: str) -> str:
    return files.attachment_url(key, file_name)


def _part_key(batch_id: str, chunk: int, ext: str) -> str:
    return f"{PREFIX}/{batch_id}/parts/{chunk:05d}.{ext}"


# ------------------------------------------------------------------ QR content


def qr_signature(key: str, product_id: str, name: str) -> str:
    """Lowercase hex HMAC-SHA256(key = the secret's text, message = ProductId + DeviceName)."""
    return hmac.new(key.encode("utf-8"), (product_id + name).encode("utf-8"), hashlib.sha256).hexdigest()


def device_code(product_id: str, device_name: str, key: str) -> str:
    """The compact JSON a device's QR code holds (SPEC §7.1)."""
    return json.dumps({"ProductId": product_id, "DeviceName": device_name,
                       "Signature": qr_signature(key, product_id, device_name)}, separators=(",", ":"))


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


# ------------------------------------------------------------------ uploads


def parse_names(text: str) -> list[tuple[int, str, str | None]]:
    """Rows of an uploaded names file: (line number, DeviceName, problem or None).

    First column = DeviceName; an optional header row (DeviceName / device_name / name) and
    blank lines are skipped.  Invalid names and repeats are reported on their own row; the
    first occurrence of a repeated name stays valid.
    """
    limit = settings().batch_upload_max_bytes
    if len(text.encode("utf-8")) > limit:
        raise errors.FleetboxError("RequestTooLarge.NamesCsvTooLarge",
                                   f"names_csv is larger than {limit} bytes", "names_csv")
    if "\x00" in text or any(ord(c) < 32 and c not in "\t\r\n" for c in text[:4096]):
        raise errors.invalid("NamesCsvInvalid", "names_csv must be CSV text (this looks like a binary file)",
                             "names_csv")
    rows: list[tuple[int, str, str | None]] = []
    seen: dict[str, int] = {}
    try:
        reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
        for line, cells in enumerate(reader, start=1):
            if not cells or not "".join(cells).strip():
                continue
            name = cells[0].strip()
            if not rows and name.lower() in ("devicename", "device_name", "name"):
                continue  # header row
            problem = None
            if not devices.device_name_ok(name):
                problem = INVALID
            elif name.startswith(ids.FORMULA_START):
                problem = FORMULA_NAME
            elif name in seen:
                problem = f"duplicate device name in the file (first on row {seen[name]})"
            else:
                seen[name] = line
            rows.append((line, name, problem))
            if len(rows) > MAX_QUANTITY:
                raise errors.invalid("QuantityInvalid", f"names_csv has more than {MAX_QUANTITY} rows",
                                     "names_csv")
    except csv.Error as exc:
        raise errors.invalid("NamesCsvInvalid", f"names_csv is not valid CSV: {exc}", "names_csv") from None
    if not rows:
        raise errors.invalid("NamesCsvInvalid", "names_csv holds no device name", "names_csv")
    return rows


# ------------------------------------------------------------------ creating


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


def new_batch(kind: str, product: ProductRecord, quantity: int, reserved: int, created_by: str | None,
              *, rows: list[tuple[int, str, str | None]] | None = None, **fields: Any) -> dict[str, Any]:
    """Record a job (reserving ``reserved`` licences) and queue its first chunk."""
    av = devices.is_av(product)
    if reserved and devices.quota()["av_remaining" if av else "remaining"] < reserved:
        raise quota_error(reserved, "quantity" if rows is None else "names_csv", av)  # fail fast, nothing written
    batch_id = ids.short_id("bat", 16)
    size = max(1, settings().batch_chunk_size)
    now = clock.now_s()
    rec = BatchRecord(batch_id=batch_id, kind=kind, product_id=product.product_id, quantity=quantity,
                      reserved=reserved, seed=ids.product_secret(), chunk_size=size,
                      chunks=(quantity + size - 1) // size, status="created", active="1",
                      created_at=now, updated_at=now, created_by=created_by,
                      quota_sk=devices.quota_counter(av).sk, **fields)
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


def create(fields: dict[str, Any], created_by: str | None) -> dict[str, Any]:
    product = get_product(fields["product_id"])
    if product.status != "released":
        raise errors.FleetboxError("UnsupportedOperation.ProductNotReleased",
                                   f"product {product.product_id} is not released: mass production requires "
                                   "a released product (publish it first)", "product_id")
    if product.auth_type == "certificate":
        raise errors.FleetboxError("UnsupportedOperation.CertificateProductBatch",
                                   "batch jobs make key-authenticated devices; devices of a certificate product "
                                   "are created one by one (each gets its certificate)", "product_id")
    burn, generation = fields["burn_method"], fields["generation"]
    if burn == "per_product_secret":
        if generation != "upload":
            raise errors.invalid("GenerationInvalid",
                                 "per_product_secret batches take uploaded names (generation upload)", "generation")
        if not int(product.register_type or 0) or not product.product_secret:
            raise errors.FleetboxError("UnsupportedOperation.DynamicRegisterDisabled",
                                       "per_product_secret batches need dynamic registration on for the product",
                                       "burn_method")
    rows = None
    if generation == "auto":
        if "names_csv" in fields:
            raise errors.invalid("NamesCsvInvalid", "names_csv applies only to generation upload", "names_csv")
        if fields.get("quantity") is None:
            raise errors.missing("quantity")
        quantity = reserved = int(fields["quantity"])
    else:
        if not fields.get("names_csv"):
            raise errors.missing("names_csv")
        rows = parse_names(fields["names_csv"])
        quantity = len(rows)
        if fields.get("quantity") is not None and int(fields["quantity"]) != quantity:
            raise errors.invalid("QuantityInvalid", f"quantity {fields['quantity']} does not match the "
                                 f"{quantity} rows of names_csv (omit it for uploads)", "quantity")
        reserved = sum(1 for _, _, problem in rows if problem is None)
    return new_batch(KIND_DEVICES, product, quantity, reserved, created_by, rows=rows,
                     burn_method=burn, generation=generation, qr_code=bool(fields.get("qr_code")))


# ------------------------------------------------------------------ reading


def get_batch(batch_id: str) -> BatchRecord:
    if not BATCH_ID_RE.fullmatch(batch_id or ""):
        raise errors.not_found("BatchNotExist", f"batch {batch_id} does not exist", "batch_id")
    try:
        return BatchRecord.get(batch_id, consistent_read=True)
    except DoesNotExist:
        raise errors.not_found("BatchNotExist", f"batch {batch_id} does not exist", "batch_id") from None


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
        "id": rec.batch_id, "kind": rec.kind, "product_id": rec.product_id, "burn_method": rec.burn_method,
        "generation": rec.generation, "qr_code": bool(rec.qr_code), "quantity": int(rec.quantity),
        "status": rec.status, "progress": progress(rec), "processed": int(rec.processed),
        "success_count": int(rec.success_count), "failure_count": int(rec.failure_count),
        "last_failure_reason": rec.last_failure_reason, "failures": rec.failures or [],
        "created_by": rec.created_by, "created_at": int(rec.created_at), "updated_at": int(rec.updated_at),
        "finished_at": int(rec.finished_at) if rec.finished_at is not None else None,
        "download_url": None, "csv_url": None, "download_expires_at": None,
    }
    if rec.status in ("done", "failed") and rec.csv_key and holds_secrets(rec) and not include_secret:
        out["outputs_hold_secrets"] = True  # links: GET …?include_secret=true with DescribeDeviceSecret
    elif rec.status in ("done", "failed") and rec.csv_key:
        stem = f"{rec.product_id}-{rec.batch_id}"
        out["csv_url"] = download_url(rec.csv_key, f"{stem}.csv")
        out["download_url"] = download_url(rec.zip_key, f"{stem}.zip") if rec.zip_key else out["csv_url"]
        out["download_expires_at"] = clock.now_s() + settings().download_ttl_s
    return out


def list_batches(product_id: str, limit: int,
                 start: dict[str, Any] | None) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    get_product(product_id)
    expect_key(start, {"batch_id": "S", "product_id": "S", "created_at": "N"}, {"product_id": product_id})
    items: list[dict[str, Any]] = []
    with checked_start(start):
        last = start
        while True:
            res = BatchRecord.by_product.query(product_id, scan_index_forward=False, last_evaluated_key=last,
                                               limit=limit)
            for rec in res:
                items.append(view(rec))
                if len(items) == limit:
                    return items, {"batch_id": {"S": rec.batch_id}, "product_id": {"S": product_id},
                                   "created_at": {"N": str(int(rec.created_at))}}
            last = res.last_evaluated_key
            if not last:
                return items, None


# ------------------------------------------------------------------ chunks


class Outcome:
    """What one chunk produced: CSV rows, PNGs, counts, failed rows."""

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.pngs: list[tuple[str, bytes]] = []
        self.success = 0
        self.failures: list[dict[str, Any]] = []

    def fail(self, row: int, name: str, reason: str) -> None:
        self.failures.append({"row": row, "device_name": name, "reason": reason})


def chunk_rows(rec: BatchRecord, chunk: int) -> list[tuple[int, str, str | None]]:
    """(row number, name, problem) of one chunk; auto names are derived from the job's seed."""
    first = chunk * int(rec.chunk_size)
    last = min(int(rec.quantity), first + int(rec.chunk_size))
    if rec.generation == "upload":
        rows = json.loads(get_object(f"{PREFIX}/{rec.batch_id}/input.json"))
        return [(int(r[0]), r[1], r[2]) for r in rows[first:last]]
    return [(i + 1, auto_name(rec.seed, i), None) for i in range(first, last)]


def _device_chunk(rec: BatchRecord, product: ProductRecord, rows: list[tuple[int, str, str | None]],
                  give_up: bool) -> Outcome:
    out = Outcome()
    keyless = rec.burn_method == "per_product_secret"
    good = [(row, name) for row, name, problem in rows if problem is None]
    records = [devices.new_record(product, name, None, rec.created_by, "batch", batch_id=rec.batch_id,
                                  keyless=keyless) for _, name in good]
    results: dict[str, tuple[str, Any]] = {}
    for start in range(0, len(records), devices.INSERT_GROUP):
        group = records[start:start + devices.INSERT_GROUP]
        try:
            results.update(devices.insert_many(product.product_id, group))
        except (PynamoDBException, OSError) as exc:
            if not give_up:
                raise jobs.Retry(f"writing devices failed: {type(exc).__name__}") from exc
            logger.warning("batch rows given up after platform errors",
                           extra={"batch_id": rec.batch_id, "error": type(exc).__name__})
            for r in group:
                results[r.device_name] = (HUB_TIMEOUT, r)
    for row, name, problem in rows:
        status = problem
        written = None
        if status is None:
            outcome, written = results[name]
            status = SUCCESS if outcome in ("created", "ours") else (EXISTS if outcome == "exists" else outcome)
        if status != SUCCESS or written is None:
            out.fail(row, name, status)
            out.rows.append((rec.product_id, name, "", "", status, ""))
            continue
        key = product.product_secret if keyless else written.secret
        content = device_code(rec.product_id, name, key) if rec.qr_code else ""
        out.rows.append((rec.product_id, name, product.product_secret if keyless else "",
                         "" if keyless else written.secret, SUCCESS, content))
        if rec.qr_code:
            out.pngs.append((f"{name}.png", qr.png(content)))
        out.success += 1
    return out


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
        rec.update(actions=[BatchRecord.attempts.add(1), BatchRecord.status.set("processing"),
                            BatchRecord.updated_at.set(clock.now_s())],
                   condition=BatchRecord.next_chunk == chunk)
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
    if rec.kind == KIND_SERIALS:
        from . import serials  # noqa: PLC0415

        out = serials.run_chunk(rec, product, rows, give_up)
    else:
        try:
            out = _device_chunk(rec, product, rows, give_up)
        except errors.FleetboxError as err:
            _fail(rec, err.message)
            return
    _write_part(rec, chunk, out)
    _checkpoint(rec, chunk, out)


def _checkpoint(rec: BatchRecord, chunk: int, out: Outcome) -> None:
    last = chunk + 1 >= int(rec.chunks)
    failures = list(rec.failures or [])
    failures += out.failures[:max(0, FAILURE_PREVIEW - len(failures))]
    actions = [BatchRecord.next_chunk.set(chunk + 1), BatchRecord.attempts.set(0),
               BatchRecord.processed.add(len(out.rows)), BatchRecord.success_count.add(out.success),
               BatchRecord.failure_count.add(len(out.failures)), BatchRecord.updated_at.set(clock.now_s()),
               BatchRecord.failures.set(failures)]
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
    actions = [BatchRecord.status.set(status), BatchRecord.active.remove(), BatchRecord.quota_released.set(True),
               BatchRecord.finished_at.set(clock.now_s()), BatchRecord.updated_at.set(clock.now_s())]
    if reason:
        actions.append(BatchRecord.last_failure_reason.set(reason))
    if csv_key:
        actions.append(BatchRecord.csv_key.set(csv_key))
    if zip_key:
        actions.append(BatchRecord.zip_key.set(zip_key))

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
    events.emit(f"batch.{status}", rec.product_id, batch_id=rec.batch_id, batch_kind=rec.kind,
                success_count=int(rec.success_count), failure_count=int(rec.failure_count),
                reason=reason)


# ------------------------------------------------------------------ final step


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
    if rec.kind == KIND_SERIALS:
        from . import serials  # noqa: PLC0415

        header, csv_name = serials.CSV_HEADER, "serial_numbers.csv"
    else:
        header, csv_name = CSV_HEADER, "devices.csv"
    csv_key, zip_key = assemble(rec, header, csv_name)
    status = "done" if int(rec.success_count) > 0 else "failed"
    _close(rec, status, None if status == "done" else (rec.last_failure_reason or "no row succeeded"),
           csv_key, zip_key)
    for chunk in range(int(rec.chunks)):
        for ext in ("csv", "zip"):
            _quietly(lambda: files.delete_object(_part_key(rec.batch_id, chunk, ext)))


def _quietly(action: Callable[[], Any]) -> None:
    try:
        action()
    except Exception:  # noqa: BLE001 - clean-up only; the job's result is already recorded
        logger.warning("batch clean-up failed", exc_info=True)


# ------------------------------------------------------------------ resume sweep


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
            rec.update(actions=[BatchRecord.updated_at.set(now)],
                       condition=BatchRecord.updated_at == int(rec.updated_at))
        except UpdateError:
            continue
        if rec.status == "uploading":
            jobs.enqueue("batch.finish", {"batch_id": rec.batch_id})
        else:
            jobs.enqueue("batch.chunk", {"batch_id": rec.batch_id, "chunk": int(rec.next_chunk)})
        logger.warning("batch resumed: its checkpoint had not moved", extra={
            "batch_id": rec.batch_id, "status": rec.status, "chunk": int(rec.next_chunk),
            "processed": int(rec.processed), "quantity": int(rec.quantity)})
        requeued += 1
    return requeued
