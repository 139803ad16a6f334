"""Products (SPEC §3): fields, lifecycle, deletion, dynamic-registration settings, custom topics."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pynamodb.exceptions import DoesNotExist, TransactWriteError, UpdateError
from pynamodb.expressions.update import Action

from ..core import clock, errors, ids
from ..models.counters import PRODUCT_NAME_PK, CounterRecord
from ..models.products import ACCOUNT, ProductRecord
from ..models.txn import Transaction
from . import thing_model
from .paging import checked_start, expect_key

DEVICE_TYPES = ("device", "gateway", "subdevice")
SUBDEVICE_PROTOCOLS = ("zigbee", "ble", "433", "custom")
COMM_METHODS = ("wifi", "cellular", "5g", "ble", "lorawan", "ethernet", "other")
AUTH_TYPES = ("key", "certificate")
DATA_PROTOCOLS = ("thing_model", "custom")
BINDING_STRATEGIES = ("preemptive", "exclusive")
STATUSES = ("developing", "released")
REGISTER_TYPES = (0, 1, 2)
#: PATCH fields that switch a value-added function: allowed whatever the product's state
SERVICE_SWITCHES = ("ai_video_enabled",)
MAX_TOPICS = 50
DEFAULT_TOPICS = (
    {"name": "control", "permission": "sub"},
    {"name": "data", "permission": "pubsub"},
    {"name": "event", "permission": "pub"},
)

# letters of any script, digits, _, space, ()（）-@\/ ; a space may not open or close the name
_NAME_CHARS = re.compile(r"[^\W_]|[0-9_ ()（）\-@\\/]")
PRODUCT_ID_RE = re.compile(r"[A-Z0-9]{10}")
CATEGORY_RE = re.compile(r"[A-Za-z0-9_\-]{1,32}(/[A-Za-z0-9_\-]{1,32}){0,5}")
TOPIC_NAME_RE = re.compile(r"([A-Za-z0-9_]+|\+)(/([A-Za-z0-9_]+|\+))*")


def product_name_ok(name: str) -> bool:
    """SPEC §1: 1-40 chars of letters (any script), digits, `_`, space, `()（）-@\\/`."""
    if not 1 <= len(name) <= 40 or name[0] == " " or name[-1] == " ":
        return False
    return all(_NAME_CHARS.fullmatch(ch) for ch in name)


def topic_name_ok(name: str) -> bool:
    return 1 <= len(name) <= 64 and TOPIC_NAME_RE.fullmatch(name) is not None


def _name_key(name: str) -> str:
    return name.casefold()


# ----------------------------------------------------------------- reading


def get_product(product_id: str, field: str = "product_id") -> ProductRecord:
    if not PRODUCT_ID_RE.fullmatch(product_id or ""):
        raise errors.PRODUCT_NOT_EXIST(f"product {product_id} does not exist", field)
    try:
        return ProductRecord.get(product_id, consistent_read=True)
    except DoesNotExist:
        raise errors.PRODUCT_NOT_EXIST(f"product {product_id} does not exist", field) from None


def view(rec: ProductRecord) -> dict[str, Any]:
    return {
        "product_id": rec.product_id,
        "name": rec.name,
        "category": rec.category,
        "device_type": rec.device_type,
        "subdevice_protocol": rec.subdevice_protocol,
        "comm_method": rec.comm_method,
        "auth_type": rec.auth_type,
        "data_protocol": rec.data_protocol,
        "description": rec.description or "",
        "binding_strategy": rec.binding_strategy,
        "status": rec.status,
        "device_count": int(rec.device_count or 0),
        "dynamic_registration": int(rec.register_type or 0) != 0,
        "ai_video_enabled": bool(rec.ai_video),
        "created_at": int(rec.created_at),
        "updated_at": int(rec.updated_at),
        "created_by": rec.created_by,
    }


def describe(product_id: str) -> dict[str, Any]:
    return view(get_product(product_id))


def list_products(**kw: Any) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    expect_key(kw.get("start"), {"product_id": "S", "account": "S", "created_at": "N"}, {"account": ACCOUNT})
    with checked_start(kw.get("start")):
        return _list_products(**kw)


def _list_products(
    *, allowed: Callable[[str], bool], q: str | None, status: str | None, limit: int, start: dict[str, Any] | None
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Newest first, filtered to what the caller may see (``allowed(product_id)``)."""
    cond = None
    if status:
        cond = ProductRecord.status == status
    needle = q.casefold() if q else None
    items: list[dict[str, Any]] = []
    last: dict[str, Any] | None = start
    while True:
        res = ProductRecord.by_account.query(
            ACCOUNT, filter_condition=cond, scan_index_forward=False, last_evaluated_key=last, limit=max(limit, 25)
        )
        for rec in res:
            if needle and needle not in rec.name.casefold() and needle not in rec.product_id.casefold():
                continue
            if not allowed(rec.product_id):
                continue
            items.append(view(rec))
            if len(items) == limit:
                key = {
                    "product_id": {"S": rec.product_id},
                    "account": {"S": ACCOUNT},
                    "created_at": {"N": str(int(rec.created_at))},
                }
                return items, key
        last = res.last_evaluated_key
        if not last:
            return items, None


# ---------------------------------------------------------------- changing


def _check_shape(fields: dict[str, Any]) -> None:
    """Cross-field rules the per-field schema cannot express."""
    if fields.get("device_type") == "subdevice":
        if not fields.get("subdevice_protocol"):
            raise errors.missing("subdevice_protocol")
    elif fields.get("subdevice_protocol") is not None:
        raise errors.SUBDEVICE_PROTOCOL_INVALID(
            "subdevice_protocol applies only when device_type is subdevice", "subdevice_protocol"
        )


def create(fields: dict[str, Any], created_by: str | None) -> dict[str, Any]:
    _check_shape(fields)
    now = clock.now_s()
    topics = [dict(t) for t in DEFAULT_TOPICS] if fields["data_protocol"] == "custom" else []
    for _ in range(5):  # a 36^10 id collides essentially never; retry instead of failing
        rec = ProductRecord(
            product_id=ids.product_id(),
            name=fields["name"],
            category=fields["category"],
            device_type=fields["device_type"],
            subdevice_protocol=fields.get("subdevice_protocol"),
            comm_method=fields["comm_method"],
            auth_type=fields["auth_type"],
            data_protocol=fields["data_protocol"],
            description=fields.get("description", ""),
            binding_strategy=fields.get("binding_strategy", "preemptive"),
            status="developing",
            created_at=now,
            updated_at=now,
            created_by=created_by,
            device_count=0,
            topics=topics,
        )
        lock = CounterRecord(pk=PRODUCT_NAME_PK, sk=_name_key(rec.name), owner=rec.product_id)
        tx = Transaction()
        try:
            with tx:
                tx.save("name", lock, condition=CounterRecord.sk.does_not_exist())
                tx.save("product", rec, condition=ProductRecord.product_id.does_not_exist())
        except TransactWriteError as exc:
            failed = tx.failed(exc)
            if "name" in failed:
                raise errors.PRODUCT_NAME_EXISTS(f"a product named {rec.name!r} already exists", "name") from None
            if "product" in failed:
                continue
            raise
        return view(rec)
    raise errors.internal()


def _refuse_if_released(rec: ProductRecord, what: str) -> None:
    if rec.status == "released":
        raise errors.PRODUCT_RELEASED(
            f"product {rec.product_id} is released: its {what} cannot change; unpublish it first", "status"
        )


def _service_actions(switches: dict[str, Any]) -> list[Action]:
    """Value-added functions (the AI video analysis of SPEC §11) are switched on and off in any
    state: they change what the platform does for the product, not the product's information."""
    return [ProductRecord.ai_video.set(1 if switches["ai_video_enabled"] else 0)] if switches else []


def modify(product_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    switches = {k: fields.pop(k) for k in SERVICE_SWITCHES if k in fields}
    rec = get_product(product_id)
    if not fields:
        if switches:
            try:
                rec.update(
                    actions=[*_service_actions(switches), ProductRecord.updated_at.set(clock.now_s())],
                    condition=ProductRecord.product_id.exists(),
                )
            except UpdateError:
                raise errors.PRODUCT_NOT_EXIST(f"product {product_id} does not exist", "product_id") from None
        return view(rec)
    _refuse_if_released(rec, "information")
    structural = sorted(k for k in fields if k not in ("name", "description"))
    if structural and int(rec.device_count or 0) > 0:
        raise errors.DEVICES_EXIST_UNDER_PRODUCT(
            f"{structural[0]} cannot change while the product has devices", structural[0]
        )
    merged = {k: getattr(rec, k) for k in ("device_type", "subdevice_protocol")}
    merged.update({k: v for k, v in fields.items() if k in merged})
    if fields.get("device_type") not in (None, "subdevice") and "subdevice_protocol" not in fields:
        merged["subdevice_protocol"] = None
        fields["subdevice_protocol"] = None
    _check_shape(merged)
    now = clock.now_s()
    actions = [
        getattr(ProductRecord, k).set(v) if v is not None else getattr(ProductRecord, k).remove()
        for k, v in fields.items()
        if k != "name"
    ]
    actions.append(ProductRecord.updated_at.set(now))
    actions += _service_actions(switches)
    cond = (ProductRecord.status == "developing") & ProductRecord.updated_at.exists()
    if structural:
        cond = cond & (ProductRecord.device_count == 0)
    new_name = fields.get("name")
    tx = Transaction()
    try:
        if new_name is not None and _name_key(new_name) != _name_key(rec.name):
            actions.append(ProductRecord.name.set(new_name))
            with tx:
                tx.save(
                    "name",
                    CounterRecord(pk=PRODUCT_NAME_PK, sk=_name_key(new_name), owner=product_id),
                    condition=CounterRecord.sk.does_not_exist(),
                )
                tx.delete("old-name", CounterRecord(pk=PRODUCT_NAME_PK, sk=_name_key(rec.name)))
                tx.update("product", rec, actions=actions, condition=cond)
        else:
            if new_name is not None:
                actions.append(ProductRecord.name.set(new_name))  # only the letter case changed
            rec.update(actions=actions, condition=cond)
    except TransactWriteError as exc:
        if "name" in tx.failed(exc):
            raise errors.PRODUCT_NAME_EXISTS(f"a product named {new_name!r} already exists", "name") from None
        raise _lost_race(product_id) from None
    except UpdateError:
        raise _lost_race(product_id) from None
    return describe(product_id)


def _lost_race(product_id: str) -> errors.FleetboxError:
    """A conditional write failed: say which rule now stands in the way."""
    rec = get_product(product_id)
    if rec.status == "released":
        return errors.PRODUCT_RELEASED(f"product {product_id} is released", "status")
    return errors.DEVICES_EXIST_UNDER_PRODUCT(f"product {product_id} has devices", "product_id")


def delete(product_id: str) -> None:
    rec = get_product(product_id)
    if int(rec.device_count or 0) > 0:
        raise errors.DEVICES_EXIST_UNDER_PRODUCT(
            f"product {product_id} still has {int(rec.device_count)} device(s); delete them first", "product_id"
        )
    try:
        with Transaction() as tx:
            tx.delete(
                "product",
                rec,
                condition=(ProductRecord.device_count == 0) | ProductRecord.device_count.does_not_exist(),
            )
            tx.delete("name", CounterRecord(pk=PRODUCT_NAME_PK, sk=_name_key(rec.name)))
    except TransactWriteError:
        raise errors.DEVICES_EXIST_UNDER_PRODUCT(f"product {product_id} has devices", "product_id") from None


def set_status(product_id: str, status: str) -> dict[str, Any]:
    rec = get_product(product_id)
    if rec.status == status:
        already = errors.PRODUCT_RELEASED if status == "released" else errors.PRODUCT_NOT_RELEASED
        raise already(f"product {product_id} is already {status}", "status")
    try:
        rec.update(
            actions=[ProductRecord.status.set(status), ProductRecord.updated_at.set(clock.now_s())],
            condition=ProductRecord.status == rec.status,
        )
    except UpdateError:
        raise errors.CONCURRENT_CHANGE(f"product {product_id} changed status concurrently; retry", "status") from None
    return view(rec)


# ------------------------------------------------------------- thing model


def get_thing_model(product_id: str) -> dict[str, Any]:
    rec = get_product(product_id)
    if rec.thing_model:
        return thing_model.export_model(rec.thing_model)
    return thing_model.validate_model(
        {"version": "1.0", "properties": [], "events": [], "actions": []}, product_id=product_id
    )


def put_thing_model(product_id: str, doc: Any) -> dict[str, Any]:
    rec = get_product(product_id)
    _refuse_if_released(rec, "thing model")
    if rec.data_protocol != "thing_model":
        raise errors.CUSTOM_PROTOCOL_PRODUCT(
            f"product {product_id} uses a custom data protocol and has no thing model", "data_protocol"
        )
    model = thing_model.validate_model(doc, product_id=product_id)
    try:
        rec.update(
            actions=[ProductRecord.thing_model.set(model), ProductRecord.updated_at.set(clock.now_s())],
            condition=ProductRecord.status == "developing",
        )
    except UpdateError:
        raise _lost_race(product_id) from None
    return model


# -------------------------------------------------- dynamic registration


def registration_view(rec: ProductRecord, include_secret: bool = False) -> dict[str, Any]:
    """The settings; the product secret only when made or rotated by this request, or asked for
    with the secret-reading action (SPEC §2: secrets are write-only)."""
    out = {
        "product_id": rec.product_id,
        "register_type": int(rec.register_type or 0),
        "register_limit": int(rec.register_limit or 0),
        "registered_count": int(rec.registered_count or 0),
        "secret_set": bool(rec.product_secret),
    }
    if include_secret:
        out["product_secret"] = rec.product_secret
    return out


def get_registration(product_id: str, include_secret: bool = False) -> dict[str, Any]:
    return registration_view(get_product(product_id), include_secret)


def put_registration(product_id: str, register_type: int, register_limit: int | None) -> dict[str, Any]:
    rec = get_product(product_id)
    _refuse_if_released(rec, "dynamic-registration settings")
    actions: list[Action] = [
        ProductRecord.register_type.set(register_type),
        ProductRecord.updated_at.set(clock.now_s()),
    ]
    if register_limit is not None:
        actions.append(ProductRecord.register_limit.set(register_limit))
    made = register_type != 0 and not rec.product_secret
    if made:
        actions.append(ProductRecord.product_secret.set(ids.product_secret()))
        actions.append(ProductRecord.secret_rotated_at.set(clock.now_s()))
    try:
        rec.update(actions=actions, condition=ProductRecord.status == "developing")
    except UpdateError:
        raise _lost_race(product_id) from None
    return registration_view(rec, include_secret=made)  # a new secret is shown once, here


def rotate_secret(product_id: str) -> dict[str, Any]:
    """Rotation is a security control, so it is allowed in every lifecycle state."""
    rec = get_product(product_id)
    rec.update(
        actions=[
            ProductRecord.product_secret.set(ids.product_secret()),
            ProductRecord.secret_rotated_at.set(clock.now_s()),
            ProductRecord.updated_at.set(clock.now_s()),
        ],
        condition=ProductRecord.product_id.exists(),
    )
    return registration_view(rec, include_secret=True)  # the new secret, shown once


# ---------------------------------------------------------- custom topics


def _require_custom(rec: ProductRecord) -> None:
    if rec.data_protocol != "custom":
        raise errors.NOT_CUSTOM_PROTOCOL(
            f"product {rec.product_id} uses the thing-model protocol; custom topics are for custom-protocol products",
            "data_protocol",
        )


def topic_view(pid: str, topic: dict[str, Any]) -> dict[str, Any]:
    return {"name": topic["name"], "permission": topic["permission"], "topic": f"{pid}/${{deviceName}}/{topic['name']}"}


def list_topics(product_id: str) -> list[dict[str, Any]]:
    rec = get_product(product_id)
    return [topic_view(product_id, t) for t in (rec.topics or [])]


def add_topic(product_id: str, name: str, permission: str) -> dict[str, Any]:
    rec = get_product(product_id)
    _require_custom(rec)
    topics = list(rec.topics or [])
    if any(t["name"] == name for t in topics):
        raise errors.TOPIC_EXISTS(f"topic {name} already exists", "name")
    if len(topics) >= MAX_TOPICS:
        raise errors.TOPIC_LIMIT(f"a product has at most {MAX_TOPICS} custom topics", "name")
    new = {"name": name, "permission": permission}
    try:
        rec.update(
            actions=[ProductRecord.topics.set(topics + [new]), ProductRecord.updated_at.set(clock.now_s())],
            condition=ProductRecord.updated_at == rec.updated_at,
        )
    except UpdateError:
        raise errors.CONCURRENT_CHANGE("the topics changed concurrently; retry", "name") from None
    return topic_view(product_id, new)


def delete_topic(product_id: str, name: str) -> None:
    rec = get_product(product_id)
    topics = list(rec.topics or [])
    kept = [t for t in topics if t["name"] != name]
    if len(kept) == len(topics):
        raise errors.TOPIC_NOT_EXIST(f"topic {name} does not exist", "name")
    try:
        rec.update(
            actions=[ProductRecord.topics.set(kept), ProductRecord.updated_at.set(clock.now_s())],
            condition=ProductRecord.updated_at == rec.updated_at,
        )
    except UpdateError:
        raise errors.CONCURRENT_CHANGE("the topics changed concurrently; retry", "name") from None
