"""Serial numbers and module IMEIs for cellular products (SPEC §7.2).

Generating N serial numbers is a batch job (``kind="serial_numbers"`` on the batch engine):
each chunk writes its SNs (deterministic per job and index, conditional puts) and their QR PNGs
(content = ProductId + SN); the output is a ZIP of the PNGs plus a CSV.

The factory then uploads the ``SN,IMEI`` relationship file: each good row creates the device
(DeviceName = IMEI) or links an existing one, and records SN ↔ device; bad rows are reported
with their reason and never stop the good ones.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from pynamodb.exceptions import PynamoDBException, TransactWriteError, UpdateError

from ..core import clock, errors
from ..core.config import settings
from ..media import qr
from ..models import txn
from ..models.batches import BatchRecord, SerialNumberRecord
from ..models.devices import DeviceRecord
from ..models.products import ProductRecord
from ..models.txn import Transaction
from . import devices, jobs, production
from .products import get_product

CELLULAR = ("cellular", "5g")
CSV_HEADER = production.OUTPUTS[production.KIND_SERIALS][0]
TEMPLATE = "SN,IMEI\r\n"
MAX_IMPORT_ROWS = 1000
GROUP = 100


def _cellular(product_id: str) -> ProductRecord:
    product = get_product(product_id)
    if product.comm_method not in CELLULAR:
        raise errors.PRODUCT_NOT_CELLULAR(
            f"serial numbers and IMEIs are for cellular products; product {product_id} "
            f"communicates by {product.comm_method}",
            "product_id",
        )
    return product


def generate(product_id: str, quantity: int, created_by: str | None) -> dict[str, Any]:
    product = _cellular(product_id)
    if product.status != "released":
        raise errors.PRODUCT_NOT_RELEASED(
            f"product {product_id} is not released: mass production requires a released product", "product_id"
        )
    return production.new_batch(
        production.KIND_SERIALS, product, quantity, 0, created_by, generation="auto", qr_code=True
    )


def sn_of(name: str) -> str:
    return name.upper()


def sn_code(product_id: str, sn: str) -> str:
    return product_id + sn


def run_chunk(
    rec: BatchRecord, product: ProductRecord, rows: list[tuple[int, str, str | None]], give_up: bool
) -> production.Outcome:
    out = production.Outcome()
    now = clock.now_s()
    records = [
        SerialNumberRecord(product_id=rec.product_id, sn=sn_of(name), batch_id=rec.batch_id, created_at=now)
        for _, name, _ in rows
    ]
    outcome: dict[str, str] = {}
    for start in range(0, len(records), GROUP):
        todo = records[start : start + GROUP]
        while todo:
            group = todo

            def build(tx: Transaction, group: list[SerialNumberRecord] = group) -> None:
                for r in group:
                    tx.save(r.sn, r, condition=SerialNumberRecord.sn.does_not_exist())

            try:
                txn.run(build)
            except TransactWriteError as exc:
                failed = set(exc.failed_tags)  # type: ignore[attr-defined]
                if not failed:
                    if not give_up:
                        raise jobs.Retry("writing serial numbers failed") from exc
                    outcome.update({r.sn: production.HUB_TIMEOUT for r in group})
                    break
                for found in SerialNumberRecord.batch_get(
                    [(rec.product_id, sn) for sn in failed], consistent_read=True
                ):
                    ours = found.batch_id == rec.batch_id
                    outcome[found.sn] = production.SUCCESS if ours else "serial number already exists"
                todo = [r for r in group if r.sn not in outcome]
                continue
            except PynamoDBException as exc:
                if not give_up:
                    raise jobs.Retry("writing serial numbers failed") from exc
                outcome.update({r.sn: production.HUB_TIMEOUT for r in group})
                break
            outcome.update({r.sn: production.SUCCESS for r in group})
            todo = []
    for (row, _, _), r in zip(rows, records, strict=True):
        status = outcome[r.sn]
        if status != production.SUCCESS:
            out.fail(row, r.sn, status)
            out.rows.append((rec.product_id, r.sn, status, ""))
            continue
        content = sn_code(rec.product_id, r.sn)
        out.rows.append((rec.product_id, r.sn, production.SUCCESS, content))
        out.pngs.append((f"{r.sn}.png", qr.png(content)))
        out.success += 1
    return out


# ------------------------------------------------------------------ SN,IMEI import


def imei_ok(imei: str) -> bool:
    """15 digits whose last is the Luhn check digit of the first 14 (3GPP TS 23.003)."""
    if len(imei) != 15 or not imei.isdigit():
        return False
    total = 0
    for i, ch in enumerate(imei[:14]):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return (10 - total % 10) % 10 == int(imei[14])


def _parse(text: str) -> list[tuple[int, str, str]]:
    limit = settings().batch_upload_max_bytes
    if len(text.encode("utf-8")) > limit:
        raise errors.CSV_TOO_LARGE(f"csv is larger than {limit} bytes", "csv")
    if "\x00" in text:
        raise errors.CSV_INVALID("csv must be CSV text (this looks like a binary file)", "csv")
    rows: list[tuple[int, str, str]] = []
    try:
        for line, cells in enumerate(csv.reader(io.StringIO(text.lstrip("\ufeff"))), start=1):
            if not cells or not "".join(cells).strip():
                continue
            sn = cells[0].strip()
            imei = cells[1].strip() if len(cells) > 1 else ""
            if not rows and sn.upper() == "SN":
                continue  # the template's header
            rows.append((line, sn, imei))
    except csv.Error as exc:
        raise errors.CSV_INVALID(f"csv is not valid CSV: {exc}", "csv") from None
    if not rows:
        raise errors.CSV_INVALID("csv holds no SN,IMEI row", "csv")
    if len(rows) > MAX_IMPORT_ROWS:
        raise errors.CSV_INVALID(f"csv has {len(rows)} rows; at most {MAX_IMPORT_ROWS} per file", "csv")
    return rows


def import_relations(product_id: str, text: str, created_by: str | None) -> dict[str, Any]:
    _cellular(product_id)
    rows = _parse(text)
    failures: list[dict[str, Any]] = []

    def fail(row: int, sn: str, imei: str, reason: str) -> None:
        failures.append({"row": row, "sn": sn or None, "imei": imei or None, "reason": reason})

    seen_sn: dict[str, int] = {}
    seen_imei: dict[str, int] = {}
    good: list[tuple[int, str, str]] = []
    for row, sn, imei in rows:
        if not sn:
            fail(row, sn, imei, "SN is empty")
        elif not imei_ok(imei):
            fail(row, sn, imei, "IMEI must be 15 digits with a valid check digit")
        elif sn in seen_sn:
            fail(row, sn, imei, f"SN repeated in the file (first on row {seen_sn[sn]})")
        elif imei in seen_imei:
            fail(row, sn, imei, f"IMEI repeated in the file (first on row {seen_imei[imei]})")
        else:
            seen_sn[sn], seen_imei[imei] = row, row
            good.append((row, sn, imei))
    known: dict[str, SerialNumberRecord] = {}
    existing: set[str] = set()
    for start in range(0, len(good), 100):
        part = good[start : start + 100]
        for r in SerialNumberRecord.batch_get([(product_id, sn) for _, sn, _ in part], consistent_read=True):
            known[r.sn] = r
        for d in DeviceRecord.batch_get(
            [(product_id, imei) for _, _, imei in part], consistent_read=True, attributes_to_get=["device_name"]
        ):
            existing.add(d.device_name)
    succeeded = 0
    for row, sn, imei in good:
        rec = known.get(sn)
        if rec is None:
            fail(row, sn, imei, "serial number does not exist in this product")
            continue
        if rec.imei and rec.imei != imei:
            fail(row, sn, imei, f"serial number is already linked to IMEI {rec.imei}")
            continue
        if imei not in existing:
            try:
                devices.create(product_id, imei, None, created_by, origin="sn_import")
            except errors.FleetboxError as err:
                if err.code != errors.DEVICE_ALREADY_EXISTS.code:
                    fail(row, sn, imei, err.message)
                    continue
        try:
            rec.update(
                actions=[
                    SerialNumberRecord.imei.set(imei),
                    SerialNumberRecord.device_name.set(imei),
                    SerialNumberRecord.linked_at.set(clock.now_s()),
                ],
                condition=SerialNumberRecord.imei.does_not_exist() | (SerialNumberRecord.imei == imei),
            )
        except UpdateError:
            fail(row, sn, imei, "serial number was linked to another IMEI meanwhile")
            continue
        succeeded += 1
    failures.sort(key=lambda f: f["row"])
    return {"total": len(rows), "succeeded": succeeded, "failed": len(failures), "failures": failures}
