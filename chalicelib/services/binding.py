"""Binding by QR (SPEC §7.3) and the product QR code (§3).

Three scannable codes identify a device:

* device code — ``{"ProductId","DeviceName","Signature"}``, Signature = hex HMAC-SHA256(key = the
  device secret, or the ProductSecret for one-type-one-secret devices, msg = ProductId+DeviceName);
* SN code — ``ProductId + SN`` (§7.2); the SN must be linked to a device by the IMEI import;
* product code — ``{"ProductId","Signature"}`` (key = the product's own QR key) plus the
  DeviceName the device reported while pairing.

One binding per device (pk ``{pid}/{dn}``).  The product's binding strategy decides what a scan
by another user does: ``exclusive`` refuses until the owner unbinds, ``preemptive`` takes the
device over.  A binding id names its device and a nonce, so the id of a binding that has been
taken over no longer unbinds anything.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable
from typing import Any

from pynamodb.exceptions import DeleteError, DoesNotExist, PutError, UpdateError

from ..core import clock, errors, ids
from ..core.auth import Principal
from ..models.batches import BindingRecord, SerialNumberRecord
from ..models.devices import DeviceRecord
from ..models.products import ProductRecord
from . import batches, devices
from .paging import checked_start, expect_key
from .products import PRODUCT_ID_RE, get_product

SN_CODE_RE = re.compile(r"([A-Z0-9]{10})([A-Z0-9]{4,32})")
USER_ID_RE = re.compile(r"[A-Za-z0-9_.@:\-]{1,64}")
BINDING_ID_RE = re.compile(r"([A-Z0-9]{10})([A-Za-z0-9_:\-]{1,48})\.([a-z0-9]{12})")


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.lower().encode("utf-8", errors="replace"))


# ------------------------------------------------------------------ product QR


def _qr_key(product: ProductRecord) -> str:
    if product.qr_secret:
        return product.qr_secret
    key = ids.product_secret()
    try:
        product.update(actions=[ProductRecord.qr_secret.set(key)], condition=ProductRecord.qr_secret.does_not_exist())
        return key
    except UpdateError:
        return get_product(product.product_id).qr_secret  # another request made it first


def product_code(product_id: str) -> str:
    """The product QR content: ProductId plus a signature only the platform can make."""
    product = get_product(product_id)
    signature = hmac.new(_qr_key(product).encode(), product_id.encode(), hashlib.sha256).hexdigest()
    return json.dumps({"ProductId": product_id, "Signature": signature}, separators=(",", ":"))


# ------------------------------------------------------------------ parsing


def _json_code(code: str) -> dict[str, Any] | None:
    try:
        value = json.loads(code)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def product_of_code(code: Any) -> str:
    """The ProductId a scanned code names (for the policy check), or ``*`` when it names none."""
    if not isinstance(code, str):
        return "*"
    doc = _json_code(code.strip())
    pid = doc.get("ProductId") if doc else (m.group(1) if (m := SN_CODE_RE.fullmatch(code.strip())) else None)
    return pid if isinstance(pid, str) and PRODUCT_ID_RE.fullmatch(pid) else "*"


def product_of_id(binding_id: str) -> str:
    m = BINDING_ID_RE.fullmatch(binding_id or "")
    return m.group(1) if m else "*"


def _forged() -> errors.FleetboxError:
    return errors.QR_CODE_SIGNATURE_INVALID(
        "the code's signature does not verify: not a code this platform issued, or it was altered", "code"
    )


def _resolve(body: dict[str, Any]) -> tuple[ProductRecord, DeviceRecord, str]:
    """(product, device, via) of a scanned code, its signature or SN verified."""
    code = body["code"].strip()
    doc = _json_code(code)
    if doc is not None:
        pid, sig = doc.get("ProductId"), doc.get("Signature")
        if not isinstance(pid, str) or not PRODUCT_ID_RE.fullmatch(pid) or not isinstance(sig, str):
            raise errors.CODE_INVALID("code must be a device, SN or product QR code", "code")
        product = get_product(pid)
        if "DeviceName" in doc:
            name = doc["DeviceName"]
            if not isinstance(name, str) or not devices.device_name_ok(name):
                raise errors.CODE_INVALID("code names no valid DeviceName", "code")
            try:
                device = DeviceRecord.get(pid, name, consistent_read=True)
            except DoesNotExist:
                raise _forged() from None  # never reveal whether a name exists to a forged code
            keys = [k for k in (device.secret, product.product_secret) if k]
            if not any(_same(batches.qr_signature(k, pid, name), sig) for k in keys):
                raise _forged()
            return product, device, "device"
        expected = json.loads(product_code(pid))["Signature"]
        if not _same(expected, sig):
            raise _forged()
        name = body.get("device_name")
        if not name:
            raise errors.missing("device_name")
        return product, devices.get_device(pid, name), "product"
    m = SN_CODE_RE.fullmatch(code)
    if not m:
        raise errors.CODE_INVALID("code must be a device, SN or product QR code", "code")
    product = get_product(m.group(1))
    try:
        sn = SerialNumberRecord.get(m.group(1), m.group(2), consistent_read=True)
    except DoesNotExist:
        raise errors.SERIAL_NUMBER_NOT_EXIST(f"serial number {m.group(2)} does not exist", "code") from None
    if not sn.device_name:
        raise errors.SERIAL_NUMBER_NOT_LINKED(
            f"serial number {sn.sn} is not linked to a device yet (import its IMEI)", "code"
        )
    return product, devices.get_device(product.product_id, sn.device_name), "sn"


# ------------------------------------------------------------------ binding


def view(rec: BindingRecord) -> dict[str, Any]:
    return {
        "id": rec.binding_id,
        "product_id": rec.product_id,
        "device_name": rec.device_name,
        "user_id": rec.user_id,
        "family_id": rec.family_id,
        "via": rec.via,
        "bound_at": int(rec.bound_at),
    }


def bind(body: dict[str, Any], principal: Principal | None, developer: Callable[[str], bool]) -> dict[str, Any]:
    product, device, via = _resolve(body)
    pid, dn = product.product_id, device.device_name
    if product.status != "released" and not developer(pid):
        raise errors.UNAUTHORIZED_OPERATION(
            f"product {pid} is not released: QR binding of an unreleased product needs a "
            "developer credential (BindUnreleasedDevice)"
        )
    user, family = body["user_id"], body.get("family_id")
    key = f"{pid}/{dn}"
    for _ in range(3):
        try:
            current: BindingRecord | None = BindingRecord.get(key, consistent_read=True)
        except DoesNotExist:
            current = None
        if current is not None and current.user_id == user:
            return view(current)  # the same user scanning again: one binding
        if current is not None and product.binding_strategy == "exclusive":
            raise errors.DEVICE_ALREADY_BOUND(
                f"device {dn} is bound to another user; the product's binding strategy is "
                "exclusive: the owner must unbind it first",
                "code",
            )
        rec = BindingRecord(
            device=key,
            binding_id=f"{pid}{dn}.{ids.short_id('', 12)}",
            product_id=pid,
            device_name=dn,
            user_id=user,
            family_id=family,
            via=via,
            bound_at=clock.now_s(),
            bound_by=principal.principal_id if principal else None,
        )
        cond: Any = BindingRecord.device.does_not_exist()
        if current is not None:  # preemptive: take over exactly the binding we saw
            cond = BindingRecord.binding_id == current.binding_id
        try:
            rec.save(condition=cond)
            return view(rec)
        except PutError:
            continue  # someone bound or unbound meanwhile: look again
    raise errors.TRANSACTION_CONFLICT("the device's binding changed while binding; retry", None)


def unbind(binding_id: str) -> None:
    m = BINDING_ID_RE.fullmatch(binding_id or "")
    if not m:
        raise errors.BINDING_NOT_EXIST(f"binding {binding_id} does not exist", "binding_id")
    try:
        BindingRecord(f"{m.group(1)}/{m.group(2)}").delete(condition=BindingRecord.binding_id == binding_id)
    except DeleteError:
        raise errors.BINDING_NOT_EXIST(
            f"binding {binding_id} does not exist (unbound, or taken over by another user)", "binding_id"
        ) from None


def user_devices(
    user_id: str, limit: int, start: dict[str, Any] | None, allowed: Callable[[str], bool]
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The user's bound devices that ``allowed(resource)`` passes (``product/{pid}/device/{dn}``)."""
    if not USER_ID_RE.fullmatch(user_id):
        raise errors.USER_ID_INVALID("user_id must be 1-64 characters of A-Z a-z 0-9 _ . @ : -", "user_id")
    expect_key(start, {"device": "S", "user_id": "S", "bound_at": "N"}, {"user_id": user_id})
    items: list[dict[str, Any]] = []
    last = start
    with checked_start(start):
        while True:
            res = BindingRecord.by_user.query(
                user_id, scan_index_forward=False, last_evaluated_key=last, limit=max(limit, 25)
            )
            for rec in res:
                if not allowed(f"product/{rec.product_id}/device/{rec.device_name}"):
                    continue
                items.append(view(rec))
                if len(items) == limit:
                    return items, {
                        "device": {"S": rec.device},
                        "user_id": {"S": user_id},
                        "bound_at": {"N": str(int(rec.bound_at))},
                    }
            last = res.last_evaluated_key
            if not last:
                return items, None
