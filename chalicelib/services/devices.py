"""Devices (SPEC §5) and the account device quota (§7.4)."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import Any

from pynamodb.exceptions import DoesNotExist, TransactWriteError, UpdateError
from pynamodb.expressions.update import Action

from ..core import clock, errors, ids
from ..core.config import settings
from ..models import txn
from ..models.counters import QUOTA_AV_DEVICES, QUOTA_DEVICES, QUOTA_PK, CounterRecord
from ..models.devices import DeviceRecord, ShadowRecord
from ..models.products import ProductRecord
from ..models.txn import Transaction
from ..protocol import publisher
from . import analytics, certificates, shadow
from .paging import checked_start, expect_key
from .products import get_product

DEVICE_NAME_RE = re.compile(r"[A-Za-z0-9_:\-]{1,48}")
TAG_KEY_RE = re.compile(r"[A-Za-z0-9_\-.]{1,32}")
MAX_TAGS = 20
STATUSES = ("inactive", "online", "offline")


def device_name_ok(name: str) -> bool:
    return DEVICE_NAME_RE.fullmatch(name) is not None


def secret_ok(secret: str) -> bool:
    """A supplied PSK must be what we would generate: base64 of 16 bytes."""
    try:
        return len(secret) == 24 and len(base64.b64decode(secret, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def _search_fields(name: str, tags: dict[str, str]) -> tuple[list[str], str]:
    terms = [f"{k}={v}" for k, v in sorted(tags.items())]
    text = "\n".join([name.lower()] + [t.lower() for t in terms])
    return terms, text


# ------------------------------------------------------------------ reading


def _get(product_id: str, device_name: str) -> DeviceRecord:
    if not device_name_ok(device_name or ""):
        raise errors.DEVICE_NOT_EXIST(f"device {device_name} does not exist", "device_name")
    try:
        return DeviceRecord.get(product_id, device_name, consistent_read=True)
    except DoesNotExist:
        raise errors.DEVICE_NOT_EXIST(f"device {product_id}/{device_name} does not exist", "device_name") from None


def get_device(product_id: str, device_name: str) -> DeviceRecord:
    get_product(product_id)
    return _get(product_id, device_name)


def view(rec: DeviceRecord, include_secret: bool = False) -> dict[str, Any]:
    out = {
        "product_id": rec.product_id,
        "device_name": rec.device_name,
        "status": rec.status,
        "enabled": bool(rec.enabled),
        "tags": dict(rec.tags.as_dict() if hasattr(rec.tags, "as_dict") else rec.tags or {}),
        "firmware_version": rec.firmware_version,
        "created_at": int(rec.created_at),
        "updated_at": int(rec.updated_at),
        "activated_at": int(rec.activated_at) if rec.activated_at is not None else None,
        "last_online_at": int(rec.last_online_at) if rec.last_online_at is not None else None,
    }
    if rec.cert_pem:
        out["certificate"] = rec.cert_pem
    out["secret_set"] = bool(rec.secret or rec.key_pem)
    if include_secret:
        if rec.secret:
            out["secret"] = rec.secret
        if rec.key_pem:
            out["private_key"] = rec.key_pem
    return out


def describe(product_id: str, device_name: str, include_secret: bool) -> dict[str, Any]:
    return view(get_device(product_id, device_name), include_secret)


def _raw_key(rec: DeviceRecord, index: str | None) -> dict[str, Any]:
    key: dict[str, Any] = {"product_id": {"S": rec.product_id}, "device_name": {"S": rec.device_name}}
    if index == "status":
        key["status"] = {"S": rec.status}
    elif index == "firmware":
        key["firmware_version"] = {"S": rec.firmware_version}
    return key


def list_devices(product_id: str, **kw: Any) -> tuple[list[dict[str, Any]], int | None, dict[str, Any] | None]:
    shape = {"product_id": "S", "device_name": "S"}
    if kw.get("status"):
        shape["status"] = "S"
    elif kw.get("firmware_version"):
        shape["firmware_version"] = "S"
    expect_key(kw.get("start"), shape, {"product_id": product_id})
    with checked_start(kw.get("start")):
        return _list_devices(product_id, **kw)


def _list_devices(
    product_id: str,
    *,
    status: str | None,
    firmware_version: str | None,
    tag: str | None,
    q: str | None,
    enabled: bool | None,
    limit: int,
    start: dict[str, Any] | None,
    visible: Callable[[str], bool] = lambda name: True,
) -> tuple[list[dict[str, Any]], int | None, dict[str, Any] | None]:
    """Key queries only: the status / firmware GSIs when those filter, else the product partition.
    Devices ``visible(name)`` refuses are left out (a policy may deny single devices)."""
    product = get_product(product_id)
    cond = None

    def both(c: Any) -> None:
        nonlocal cond
        cond = c if cond is None else cond & c

    if status and firmware_version:
        both(DeviceRecord.firmware_version == firmware_version)
    if tag:
        k, sep, v = tag.partition("=") if "=" in tag else tag.partition(":")
        both(DeviceRecord.search_terms.contains(f"{k}={v}" if sep else k))
    if q:
        both(DeviceRecord.search_text.contains(q.lower()))
    if enabled is not None:
        both(DeviceRecord.enabled == enabled)

    if status:
        index = "status"
        pages = DeviceRecord.status_index.query(
            product_id,
            DeviceRecord.status == status,
            filter_condition=cond,
            last_evaluated_key=start,
            limit=max(limit, 50),
        )
    elif firmware_version:
        index = "firmware"
        pages = DeviceRecord.firmware_index.query(
            product_id,
            DeviceRecord.firmware_version == firmware_version,
            filter_condition=cond,
            last_evaluated_key=start,
            limit=max(limit, 50),
        )
    else:
        index = None
        pages = DeviceRecord.query(product_id, filter_condition=cond, last_evaluated_key=start, limit=max(limit, 50))
    filtered = any(x is not None for x in (status, firmware_version, tag, q, enabled))
    items: list[dict[str, Any]] = []
    while True:
        for rec in pages:
            if not visible(rec.device_name):
                filtered = True  # the product's device count would count what this caller cannot see
                continue
            items.append(view(rec))
            if len(items) == limit:
                nxt = _raw_key(rec, index)
                total = None if filtered else int(product.device_count or 0)
                return items, total, nxt
        last = pages.last_evaluated_key
        if not last:
            break
        # the query's own limit ran out before ours did: continue from where it stopped
        if index == "status":
            pages = DeviceRecord.status_index.query(
                product_id,
                DeviceRecord.status == status,
                filter_condition=cond,
                last_evaluated_key=last,
                limit=max(limit, 50),
            )
        elif index == "firmware":
            pages = DeviceRecord.firmware_index.query(
                product_id,
                DeviceRecord.firmware_version == firmware_version,
                filter_condition=cond,
                last_evaluated_key=last,
                limit=max(limit, 50),
            )
        else:
            pages = DeviceRecord.query(product_id, filter_condition=cond, last_evaluated_key=last, limit=max(limit, 50))
    total = len(items) if (filtered and start is None) else (None if filtered else int(product.device_count or 0))
    return items, total, None


# ------------------------------------------------------------------ quota


#: category roots of audio/video products (e.g. ``video/camera/ipc``): their own quota (SPEC §7.4)
AV_CATEGORY_ROOTS = ("video", "audio", "av", "audio-video")


def is_av(product: ProductRecord) -> bool:
    return (product.category or "").split("/", 1)[0].lower() in AV_CATEGORY_ROOTS


def _quota_sk(av: bool) -> str:
    return QUOTA_AV_DEVICES if av else QUOTA_DEVICES


def _quota_limit(av: bool) -> int:
    return settings().av_device_quota if av else settings().device_quota


def _used(av: bool) -> int:
    try:
        return int(CounterRecord.get(QUOTA_PK, _quota_sk(av), consistent_read=True).count or 0)
    except DoesNotExist:
        return 0


def quota() -> dict[str, Any]:
    used, av_used = _used(False), _used(True)
    limit, av_limit = _quota_limit(False), _quota_limit(True)
    return {
        "device_quota": limit,
        "registered": used,
        "remaining": max(limit - used, 0),
        "av_device_quota": av_limit,
        "av_registered": av_used,
        "av_remaining": max(av_limit - av_used, 0),
    }


def quota_reservation(n: int, av: bool = False) -> tuple[CounterRecord, list[Any], Any]:
    """The transaction pieces that reserve ``n`` device licences or fail the whole write."""
    limit = _quota_limit(av)
    counter = CounterRecord(pk=QUOTA_PK, sk=_quota_sk(av))
    cond = CounterRecord.count.does_not_exist() | (CounterRecord.count <= limit - n)
    if n > limit:
        cond = CounterRecord.count < -1  # can never hold: more than the whole quota
    return counter, [CounterRecord.count.add(n)], cond


def quota_counter(av: bool = False) -> CounterRecord:
    return CounterRecord(pk=QUOTA_PK, sk=_quota_sk(av))


def quota_error(n: int, av: bool = False) -> errors.FleetboxError:
    q = quota()
    kind, prefix = ("audio/video device", "av_") if av else ("normal device", "")
    return errors.DEVICE_EXCEED_LIMIT(
        f"{kind} license limit: {n} more device(s) requested, "
        f"{q[prefix + 'remaining']} of {q[prefix + 'device_quota']} remaining",
        "device_name",
    )


# ----------------------------------------------------------------- writing


def check_name(device_name: str, field: str = "device_name") -> None:
    if not device_name_ok(device_name):
        raise errors.DEVICE_NAME_INVALID("device_name must be 1-48 characters of A-Z a-z 0-9 _ : -", field)


def new_record(
    product: ProductRecord,
    device_name: str,
    secret: str | None,
    created_by: str | None,
    origin: str = "api",
    *,
    batch_id: str | None = None,
    keyless: bool = False,
) -> DeviceRecord:
    """The record of a device about to be created (not written): secret or certificate issued.

    ``keyless``: a one-type-one-secret device that fetches its secret at first boot (SPEC §6.3).
    """
    cert_pem = key_pem = None
    if product.auth_type == "certificate":
        if secret is not None:
            raise errors.DEVICE_SECRET_INVALID(
                "certificate-authenticated products take no secret: the device gets a certificate", "secret"
            )
        if not keyless:
            cert_pem, key_pem = certificates.issue_for_device(product.product_id, device_name)
    elif not keyless:
        secret = secret or ids.device_secret()
    now = clock.now_s()
    terms, text = _search_fields(device_name, {})
    return DeviceRecord(
        product_id=product.product_id,
        device_name=device_name,
        secret=secret,
        cert_pem=cert_pem,
        key_pem=key_pem,
        status="inactive",
        enabled=True,
        tags={},
        search_terms=terms,
        search_text=text,
        created_at=now,
        updated_at=now,
        created_by=created_by,
        origin=origin,
        batch_id=batch_id,
    )


def create(
    product_id: str, device_name: str, secret: str | None, created_by: str | None, origin: str = "api"
) -> dict[str, Any]:
    check_name(device_name)
    if secret is not None and not secret_ok(secret):
        raise errors.DEVICE_SECRET_INVALID("secret must be base64 of 16 bytes (24 characters)", "secret")
    product = get_product(product_id)
    rec = new_record(product, device_name, secret, created_by, origin)
    av = is_av(product)
    counter, counter_actions, counter_cond = quota_reservation(1, av)

    def build(tx: Transaction) -> None:
        tx.update("quota", counter, actions=counter_actions, condition=counter_cond)
        tx.save("device", rec, condition=DeviceRecord.device_name.does_not_exist())
        tx.save("shadow", shadow.fresh(rec))  # replaces any shadow a deleted namesake left
        tx.update(
            "product",
            ProductRecord(product_id),
            actions=[ProductRecord.device_count.add(1)],
            condition=ProductRecord.product_id.exists(),
        )

    try:
        txn.run(build)
    except TransactWriteError as exc:
        failed = exc.failed_tags  # type: ignore[attr-defined]
        if "device" in failed:
            raise errors.DEVICE_ALREADY_EXISTS(
                f"device {device_name} already exists in product {product_id}", "device_name"
            ) from None
        if "quota" in failed:
            raise quota_error(1, av) from None
        if "product" in failed:
            raise errors.PRODUCT_NOT_EXIST(f"product {product_id} does not exist", "product_id") from None
        raise _contended() from None
    return view(rec, include_secret=True)


#: items per TransactWriteItems (DynamoDB's limit is 100: 99 devices + the product's device count)
INSERT_GROUP = 99
_PRODUCT_TAG = "#product"  # '#' is never part of a device name


def insert_many(product_id: str, records: list[DeviceRecord]) -> dict[str, tuple[str, DeviceRecord]]:
    """Write new devices without ever overwriting one; quota is the caller's (reserved up front).

    Each group of ≤ 99 devices goes in one transaction (every Put conditioned on
    ``attribute_not_exists``) together with the product's device count.  A group cancelled by
    existing names is retried without them, after reading those names once: a device carrying
    the same ``batch_id`` as ours was written by an earlier run of the same chunk and is reused
    (its stored secret), any other is reported.  Returns name -> (outcome, record) with outcome
    ``created`` | ``ours`` | ``exists``.  Platform errors (throttling after retries) propagate.
    """
    out: dict[str, tuple[str, DeviceRecord]] = {}
    for start in range(0, len(records), INSERT_GROUP):
        todo = records[start : start + INSERT_GROUP]
        while todo:
            group = todo

            def build(tx: Transaction, group: list[DeviceRecord] = group) -> None:
                for rec in group:
                    tx.save(rec.device_name, rec, condition=DeviceRecord.device_name.does_not_exist())
                tx.update(
                    _PRODUCT_TAG,
                    ProductRecord(product_id),
                    actions=[ProductRecord.device_count.add(len(group))],
                    condition=ProductRecord.product_id.exists(),
                )

            try:
                txn.run(build)
            except TransactWriteError as exc:
                failed = set(exc.failed_tags)  # type: ignore[attr-defined]
                if not failed:
                    raise
                if _PRODUCT_TAG in failed:
                    raise errors.PRODUCT_NOT_EXIST(f"product {product_id} does not exist", "product_id") from None
                mine = {rec.device_name: rec for rec in group}
                batch_id = group[0].batch_id
                for found in DeviceRecord.batch_get([(product_id, n) for n in failed], consistent_read=True):
                    ours = batch_id is not None and found.batch_id == batch_id
                    out[found.device_name] = ("ours" if ours else "exists", found if ours else mine[found.device_name])
                # a name that failed but is gone again (deleted meanwhile) is simply tried again
                todo = [rec for rec in group if rec.device_name not in out]
                continue
            for rec in group:
                out[rec.device_name] = ("created", rec)
            todo = []
    return out


def modify(product_id: str, device_name: str, fields: dict[str, Any]) -> dict[str, Any]:
    rec = get_device(product_id, device_name)
    actions: list[Action] = []
    if "enabled" in fields:
        actions.append(DeviceRecord.enabled.set(fields["enabled"]))
    if "tags" in fields:
        tags = fields["tags"]
        terms, text = _search_fields(device_name, tags)
        actions += [
            DeviceRecord.tags.set(tags),
            DeviceRecord.search_terms.set(terms),
            DeviceRecord.search_text.set(text),
        ]
    if actions:
        actions.append(DeviceRecord.updated_at.set(clock.now_s()))
        try:
            rec.update(actions=actions, condition=DeviceRecord.device_name.exists())
        except UpdateError:
            raise errors.DEVICE_NOT_EXIST(f"device {product_id}/{device_name} does not exist", "device_name") from None
        if "enabled" in fields:
            shadow.mirror_enabled(product_id, device_name, fields["enabled"])
        if fields.get("enabled") is False:
            publisher.disconnect(f"{product_id}{device_name}")  # a disabled device cannot stay connected
    return view(rec)


def delete(product_id: str, device_name: str) -> None:
    """Delete the device; its secret stops working at once (the record is gone)."""
    product = get_product(product_id)
    rec = _get(product_id, device_name)
    state = shadow.read(rec)  # its region leaves the statistics with it
    counter = quota_counter(is_av(product))

    def build(tx: Transaction) -> None:
        tx.delete("device", rec, condition=DeviceRecord.device_name.exists())
        tx.delete("shadow", ShadowRecord(product_id, device_name))
        tx.update("quota", counter, actions=[CounterRecord.count.add(-1)])
        tx.update(
            "product",
            ProductRecord(product_id),
            actions=[ProductRecord.device_count.add(-1)],
            condition=ProductRecord.product_id.exists(),
        )

    try:
        txn.run(build)
    except TransactWriteError as exc:
        if "device" in exc.failed_tags:  # type: ignore[attr-defined]
            raise errors.DEVICE_NOT_EXIST(f"device {product_id}/{device_name} does not exist", "device_name") from None
        raise _contended() from None
    publisher.disconnect(f"{product_id}{device_name}")  # its secret no longer works: neither does its session
    _release_gauges(rec, state.region)


def _contended() -> errors.FleetboxError:
    return errors.TRANSACTION_CONFLICT("the account's device records are busy; retry the request", None)


def _release_gauges(rec: DeviceRecord, region: str | None) -> None:
    """A deleted device no longer counts as online, activated or in its region (SPEC §13)."""
    gauges: dict[str, int] = {}
    if rec.status == "online":
        gauges["online"] = -1
    if rec.activated_at is not None:
        gauges["activated"] = -1
    if region:
        gauges[analytics.REGION_PREFIX + region] = -1
    analytics.adjust_totals(rec.product_id, gauges)
