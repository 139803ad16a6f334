"""Device batches (SPEC §7.1): many devices at once, with per-device QR codes.

Burn methods ``per_device_secret`` (auto-generated or uploaded names, a secret each) and
``per_product_secret`` (uploaded names; devices fetch their secret at first boot, §6.3);
quantity 1–10,000; QR codes ``generate`` or ``none``.  :func:`create` validates everything
(released product, burn method, quantity, the uploaded names row by row) and hands the job to
the batch engine (``services/production.py``), whose ``batch.chunk`` step runs
:func:`device_chunk` per chunk: the chunk's devices written with :func:`devices.insert_many`
(conditional puts, never an overwrite; devices of an earlier run of the same chunk are
recognised by ``batch_id`` and their stored secret reused), one CSV row and QR PNG each.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
from typing import Any

from pynamodb.exceptions import PynamoDBException

from ..core import errors, ids
from ..core.config import settings
from ..core.observability import logger
from ..media import qr
from ..models.batches import BatchRecord
from ..models.products import ProductRecord
from . import devices, jobs, production
from .production import HUB_TIMEOUT, KIND_DEVICES, MAX_ATTEMPTS, MAX_QUANTITY, SUCCESS, Outcome, auto_name  # noqa: F401
from .products import get_product

BURN_METHODS = ("per_device_secret", "per_product_secret")


GENERATIONS = ("auto", "upload")


CSV_HEADER = production.OUTPUTS[KIND_DEVICES][0]


EXISTS = "device already exists"


INVALID = "device name invalid: must be 1-48 characters of A-Z a-z 0-9 _ : -"


#: the output CSV holds names exactly as made (a factory tool reads them back), so a name a
#: spreadsheet would read as a formula cannot be in a batch (SPEC §7.1, §15)
FORMULA_NAME = "device name starts with '-', which a spreadsheet reads as a formula; rename it for a batch"


def qr_signature(key: str, product_id: str, name: str) -> str:
    """Lowercase hex HMAC-SHA256(key = the secret's text, message = ProductId + DeviceName)."""
    return hmac.new(key.encode("utf-8"), (product_id + name).encode("utf-8"), hashlib.sha256).hexdigest()


def device_code(product_id: str, device_name: str, key: str) -> str:
    """The compact JSON a device's QR code holds (SPEC §7.1)."""
    return json.dumps(
        {"ProductId": product_id, "DeviceName": device_name, "Signature": qr_signature(key, product_id, device_name)},
        separators=(",", ":"),
    )


def parse_names(text: str) -> list[tuple[int, str, str | None]]:
    """Rows of an uploaded names file: (line number, DeviceName, problem or None).

    First column = DeviceName; an optional header row (DeviceName / device_name / name) and
    blank lines are skipped.  Invalid names and repeats are reported on their own row; the
    first occurrence of a repeated name stays valid.
    """
    limit = settings().batch_upload_max_bytes
    if len(text.encode("utf-8")) > limit:
        raise errors.NAMES_CSV_TOO_LARGE(f"names_csv is larger than {limit} bytes", "names_csv")
    if "\x00" in text or any(ord(c) < 32 and c not in "\t\r\n" for c in text[:4096]):
        raise errors.NAMES_CSV_INVALID("names_csv must be CSV text (this looks like a binary file)", "names_csv")
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
                raise errors.QUANTITY_INVALID(f"names_csv has more than {MAX_QUANTITY} rows", "names_csv")
    except csv.Error as exc:
        raise errors.NAMES_CSV_INVALID(f"names_csv is not valid CSV: {exc}", "names_csv") from None
    if not rows:
        raise errors.NAMES_CSV_INVALID("names_csv holds no device name", "names_csv")
    return rows


def create(fields: dict[str, Any], created_by: str | None) -> dict[str, Any]:
    product, quantity, reserved, rows = _plan(fields)
    return production.new_batch(
        KIND_DEVICES,
        product,
        quantity,
        reserved,
        created_by,
        rows=rows,
        burn_method=fields["burn_method"],
        generation=fields["generation"],
        qr_code=bool(fields.get("qr_code")),
    )


def check(fields: dict[str, Any]) -> None:
    """Every check :func:`create` makes before it starts the batch (the quota is taken only then)."""
    _plan(fields)


def _plan(fields: dict[str, Any]) -> tuple[ProductRecord, int, int, list[tuple[int, str, str | None]] | None]:
    """(product, quantity, devices to reserve, uploaded rows) of a valid batch request."""
    product = get_product(fields["product_id"])
    if product.status != "released":
        raise errors.PRODUCT_NOT_RELEASED(
            f"product {product.product_id} is not released: mass production requires "
            "a released product (publish it first)",
            "product_id",
        )
    if product.auth_type == "certificate":
        raise errors.CERTIFICATE_PRODUCT_BATCH(
            "batch jobs make key-authenticated devices; devices of a certificate product "
            "are created one by one (each gets its certificate)",
            "product_id",
        )
    burn, generation = fields["burn_method"], fields["generation"]
    if burn == "per_product_secret":
        if generation != "upload":
            raise errors.GENERATION_INVALID(
                "per_product_secret batches take uploaded names (generation upload)", "generation"
            )
        if not int(product.register_type or 0) or not product.product_secret:
            raise errors.DYNAMIC_REGISTER_DISABLED(
                "per_product_secret batches need dynamic registration on for the product", "burn_method"
            )
    rows = None
    if generation == "auto":
        if "names_csv" in fields:
            raise errors.NAMES_CSV_INVALID("names_csv applies only to generation upload", "names_csv")
        if fields.get("quantity") is None:
            raise errors.missing("quantity")
        quantity = reserved = int(fields["quantity"])
    else:
        if not fields.get("names_csv"):
            raise errors.missing("names_csv")
        rows = parse_names(fields["names_csv"])
        quantity = len(rows)
        if fields.get("quantity") is not None and int(fields["quantity"]) != quantity:
            raise errors.QUANTITY_INVALID(
                f"quantity {fields['quantity']} does not match the {quantity} rows of names_csv (omit it for uploads)",
                "quantity",
            )
        reserved = sum(1 for _, _, problem in rows if problem is None)
    return product, quantity, reserved, rows


def device_chunk(
    rec: BatchRecord, product: ProductRecord, rows: list[tuple[int, str, str | None]], give_up: bool
) -> Outcome:
    out = Outcome()
    keyless = rec.burn_method == "per_product_secret"
    good = [(row, name) for row, name, problem in rows if problem is None]
    records = [
        devices.new_record(product, name, None, rec.created_by, "batch", batch_id=rec.batch_id, keyless=keyless)
        for _, name in good
    ]
    results: dict[str, tuple[str, Any]] = {}
    for start in range(0, len(records), devices.INSERT_GROUP):
        group = records[start : start + devices.INSERT_GROUP]
        try:
            results.update(devices.insert_many(product.product_id, group))
        except (PynamoDBException, OSError) as exc:
            if not give_up:
                raise jobs.Retry(f"writing devices failed: {type(exc).__name__}") from exc
            logger.warning(
                "batch rows given up after platform errors",
                extra={"batch_id": rec.batch_id, "error": type(exc).__name__},
            )
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
        out.rows.append(
            (
                rec.product_id,
                name,
                product.product_secret if keyless else "",
                "" if keyless else written.secret,
                SUCCESS,
                content,
            )
        )
        if rec.qr_code:
            out.pngs.append((f"{name}.png", qr.png(content)))
        out.success += 1
    return out
