"""Dynamic registration ("one type, one secret", SPEC §6.3).

A device holding ProductId, ProductSecret and its own DeviceName asks for its DeviceSecret
(or, for certificate products, its certificate and key).  Rules, in order:

1. the product exists and has a product secret (else ``product`` / ``disabled``);
2. the request is signed with that secret (``signature``), its timestamp is within
   ±5 minutes (``expired``) and its nonce is new within that window (``replayed``) — a
   conditional put in the counters table (pk ``nonce/{pid}``, sk ``{nonce}/{dn}``,
   ``expires_at``), so two Lambdas racing on one nonce cannot both pass;
3. ``register_type`` 0 refuses; 1 serves only existing devices; 2 also creates unknown
   names (through :func:`devices.create`, quota included, origin ``dynamic``) while the
   product's ``registered_count`` — an atomic conditional counter — is below
   ``register_limit``;
4. an existing device may register again only while it has never connected (status
   ``inactive``): it gets its existing secret back (never a new one: a factory-burned device
   must keep working), or a new one if it was made without; a disabled device is refused.

Every refusal is a :class:`Refusal` (code, legacy code, reason) and, when the device
exists, a ``Dev_Register_Failed`` diagnostic in its log.  Nothing here ever logs a secret.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from pynamodb.exceptions import DoesNotExist, UpdateError

from ..core import clock, errors, ids
from ..core.config import settings
from ..core.observability import logger
from ..models.devices import DeviceRecord
from ..models.products import ProductRecord
from ..protocol import diagnostics
from ..protocol import registration as proto
from ..protocol.registration import Refusal, SignedRequest, refuse
from ..protocol.topics import DEVICE_NAME_RE, PRODUCT_ID_RE
from . import certificates, device_logs, devices, nonces

NONCE_PK = "nonce/{}"


# ------------------------------------------------------------------ steps


def _product(product_id: str) -> ProductRecord:
    if not PRODUCT_ID_RE.fullmatch(product_id):
        raise refuse("product", f"product {product_id} does not exist")
    try:
        return ProductRecord.get(product_id, consistent_read=True)
    except DoesNotExist:
        raise refuse("product", f"product {product_id} does not exist") from None


def _device(product_id: str, device_name: str) -> DeviceRecord | None:
    try:
        return DeviceRecord.get(product_id, device_name, consistent_read=True)
    except DoesNotExist:
        return None


def _check_time(req: SignedRequest, now_s: int) -> None:
    window = settings().registration_window_s
    if abs(req.timestamp - now_s) > window:
        raise refuse(
            "expired", f"timestamp {req.timestamp} is more than {window // 60} minutes away from server time {now_s}"
        )


def _claim_nonce(req: SignedRequest, now_s: int) -> None:
    """Record the nonce; refuse when it was already used inside the window (replay)."""
    window = settings().registration_window_s
    pk, sk = NONCE_PK.format(req.product_id), f"{req.nonce}/{req.device_name}"
    if not nonces.claim(pk, sk, now_s, window, value=req.timestamp):
        raise refuse(
            "replayed", f"nonce {req.nonce} was already used within the last {window // 60} minutes (replayed request)"
        )


def _reserve_slot(product: ProductRecord) -> None:
    """Count one more dynamically created device, atomically, or refuse at register_limit."""
    limit = int(product.register_limit or 0)
    cond = (ProductRecord.register_type == 2) & (
        (ProductRecord.registered_count < ProductRecord.register_limit)
        | (ProductRecord.registered_count.does_not_exist() & (ProductRecord.register_limit > 0))
    )
    try:
        ProductRecord(product.product_id).update(actions=[ProductRecord.registered_count.add(1)], condition=cond)
    except UpdateError as exc:
        if getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException":
            raise refuse(
                "limit",
                f"dynamic registration may create at most {limit} device(s) for product "
                f"{product.product_id} (register_limit reached)",
            ) from None
        raise


def _release_slot(product_id: str) -> None:
    try:
        ProductRecord(product_id).update(
            actions=[ProductRecord.registered_count.add(-1)], condition=ProductRecord.registered_count > 0
        )
    except UpdateError:
        logger.warning("registered_count release failed", extra={"product_id": product_id})


def _plaintext_for_new(created: Mapping[str, Any]) -> str:
    if created.get("certificate"):
        return proto.cert_plaintext(created["certificate"], created["private_key"])
    return proto.psk_plaintext(created["secret"])


def _create(product: ProductRecord, device_name: str) -> tuple[str, bool]:
    """Type 2: create the device.  Returns (plaintext, created) — created False when a concurrent
    request created it first (the caller then re-registers the existing device)."""
    if not DEVICE_NAME_RE.fullmatch(device_name):
        raise refuse("name")
    _reserve_slot(product)
    try:
        created = devices.create(
            product.product_id, device_name, None, created_by="dynamic-registration", origin="dynamic"
        )
    except errors.FleetboxError as err:
        _release_slot(product.product_id)
        if err.code == errors.DEVICE_ALREADY_EXISTS.code:
            return "", False
        if err.code == errors.DEVICE_EXCEED_LIMIT.code:
            raise refuse("quota", f"the account's device quota is exhausted: {err.message}") from None
        if err.code.startswith("ResourceNotFound"):
            raise refuse("product", f"product {product.product_id} does not exist") from None
        raise
    except Exception:
        _release_slot(product.product_id)
        raise
    return _plaintext_for_new(created), True


def _reregister(product: ProductRecord, rec: DeviceRecord) -> str:
    """An existing device that never connected gets its credentials.  A device that already has
    them (burned in at the factory, or from an earlier registration) gets the same ones back —
    they are never replaced, or a shipped device could no longer log in; a device made without
    them (a one-type-one-secret batch) gets new ones, written only if none appeared meanwhile."""
    if not rec.enabled:
        raise refuse("device_disabled", f"device {rec.product_id}/{rec.device_name} is disabled")
    if rec.status != "inactive" or rec.activated_at is not None:
        raise refuse(
            "activated",
            f"device {rec.product_id}/{rec.device_name} has already connected; delete it before registering it again",
        )
    if product.auth_type == "certificate":
        if rec.cert_pem and rec.key_pem:
            return proto.cert_plaintext(rec.cert_pem, rec.key_pem)
        cert_pem, key_pem = certificates.issue_for_device(rec.product_id, rec.device_name)
        actions = [DeviceRecord.cert_pem.set(cert_pem), DeviceRecord.key_pem.set(key_pem)]
        plaintext = proto.cert_plaintext(cert_pem, key_pem)
        unset = DeviceRecord.cert_pem.does_not_exist()
    else:
        if rec.secret:
            return proto.psk_plaintext(rec.secret)
        secret = ids.device_secret()
        actions = [DeviceRecord.secret.set(secret)]
        plaintext = proto.psk_plaintext(secret)
        unset = DeviceRecord.secret.does_not_exist()
    cond = (
        (DeviceRecord.status == "inactive")
        & DeviceRecord.activated_at.does_not_exist()
        & (DeviceRecord.enabled == True)  # noqa: E712 - a DynamoDB condition, not a comparison
        & unset
    )
    try:
        rec.update(actions=actions + [DeviceRecord.updated_at.set(clock.now_s())], condition=cond)
    except UpdateError as exc:
        if getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException":
            fresh = _device(rec.product_id, rec.device_name)
            if (
                fresh is not None
                and fresh.enabled
                and fresh.status == "inactive"
                and fresh.activated_at is None
                and (fresh.secret or (fresh.cert_pem and fresh.key_pem))
            ):
                return _reregister(product, fresh)  # a concurrent registration wrote them first: same answer
            raise refuse(
                "activated",
                f"device {rec.product_id}/{rec.device_name} connected, was disabled or "
                f"was deleted meanwhile; not registered",
            ) from None
        raise
    return plaintext


# ------------------------------------------------------------------ the flow


def register(req: SignedRequest) -> tuple[ProductRecord, str]:
    """Run the rules for a parsed request; return (product, plaintext) or raise :class:`Refusal`."""
    now_s = clock.now_s()
    product = _product(req.product_id)
    rec = _device(req.product_id, req.device_name) if DEVICE_NAME_RE.fullmatch(req.device_name) else None
    try:
        if not product.product_secret:
            raise refuse(
                "disabled",
                f"Not support dynamic device register: product {product.product_id} has dynamic registration off",
            )
        if not req.signature_ok(product.product_secret):
            raise refuse("signature")
        _check_time(req, now_s)
        if int(product.register_type or 0) == 0:
            raise refuse(
                "disabled",
                f"Not support dynamic device register: product {product.product_id} has dynamic registration off",
            )
        _claim_nonce(req, now_s)
        if rec is None:
            if int(product.register_type or 0) != 2:
                raise refuse("not_exist", f"Pre create mode: device not exists ({req.product_id}/{req.device_name})")
            plaintext, created = _create(product, req.device_name)
            if created:
                return product, plaintext
            rec = _device(req.product_id, req.device_name)
            if rec is None:  # created and deleted between our two reads
                raise refuse("internal", "the device changed concurrently; retry")
        return product, _reregister(product, rec)
    except Refusal as refusal:
        if rec is not None:
            device_logs.diagnostic(
                req.product_id,
                req.device_name,
                diagnostics.DEV_REGISTER_FAILED,
                f"dynamic registration ({req.protocol}) refused: {refusal.code}: {refusal.message}",
            )
        raise


def handle(protocol: str, parse: Callable[[], SignedRequest], request_id: str) -> dict[str, Any]:
    """Parse, register and render one request in its protocol's envelope.  Never raises."""
    started = time.perf_counter()
    success, error = (
        (proto.v2_success, proto.v2_error) if protocol == "v2" else (proto.legacy_success, proto.legacy_error)
    )
    pid = dn = None
    outcome, code = "registered", None
    try:
        req = parse()
        pid, dn = req.product_id, req.device_name
        product, plaintext = register(req)
        payload = proto.encrypt_payload(product.product_secret, plaintext)
        return success(payload, len(plaintext.encode("utf-8")), request_id)
    except Refusal as refusal:
        outcome, code = "refused", refusal.code
        return error(refusal, request_id)
    except Exception:  # noqa: BLE001 - the SDK gets the protocol's own error, never a 5xx
        outcome, code = "failed", errors.INTERNAL_ERROR.code
        logger.exception("dynamic registration failed", extra={"request_id": request_id})
        if pid and dn:
            try:
                if _device(pid, dn) is not None:
                    device_logs.diagnostic(
                        pid, dn, diagnostics.DEV_REGISTER_FAILED, "dynamic registration failed: internal error"
                    )
            except Exception:  # noqa: BLE001 - the answer matters more than the diagnostic
                logger.exception("diagnostic write failed", extra={"request_id": request_id})
        return error(refuse("internal"), request_id)
    finally:
        logger.info(
            "dynamic registration",
            extra={
                "request_id": request_id,
                "protocol": protocol,
                "product_id": pid,
                "device_name": dn,
                "outcome": outcome,
                "code": code,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
