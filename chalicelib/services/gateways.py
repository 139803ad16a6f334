"""Gateways and subdevices (SPEC §6.5): topology operations on ``gateway/operation``.

A gateway publishes ``{"type": "bind"|"unbind"|"online"|"offline", "payload": {"devices":
[{"product_id", "device_name", …}]}}`` or ``{"type": "describe_sub_devices"}`` and gets the
answer on ``gateway/operation/result`` (same topic form): the same ``type`` and, per device,
a ``result`` — 0 for success, otherwise:

=====  ======================================================================
400    malformed entry (missing ids, signature fields)
401    bind signature wrong, unknown sign method, or timestamp more than 5 minutes off
403    not allowed: the gateway's product is not a gateway, the device's product is
       not a subdevice product, the device is disabled, or it has no key secret
404    the subdevice's product or the subdevice does not exist
409    unbind/online/offline of a device not bound to this gateway, or bind of a
       device bound to another gateway (unbind it there first)
=====  ======================================================================

Bind signature: ``base64(HMAC-SHA256 or HMAC-SHA1(key = the subdevice's secret string as
ASCII, "{subPid}{subDn};{random};{timestamp}"))`` with ``signmethod`` ``hmacsha256``
(default) or ``hmacsha1``, checked in constant time by :mod:`chalicelib.protocol.gateway_sig`;
the timestamp (Unix seconds) must be within 5 minutes of the cloud's clock.

After ``online`` the gateway may publish on the subdevice's topics:
:func:`may_act_for` answers that for the local broker's ACL and the uplink path, from a
short in-process cache that this module's own changes invalidate.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from pynamodb.exceptions import DoesNotExist, TransactWriteError

from ..core import clock, errors
from ..core.observability import logger
from ..models.devices import DeviceRecord
from ..models.telemetry import TopologyRecord
from ..models.txn import Transaction
from ..protocol import diagnostics, gateway_sig
from . import catalog, device_logs, presence
from .devices import get_device
from .paging import checked_start
from .uplink_view import DeviceView, Received

RESULT_OK, RESULT_MALFORMED, RESULT_SIGNATURE, RESULT_FORBIDDEN, RESULT_NOT_FOUND, RESULT_CONFLICT = (
    0,
    400,
    401,
    403,
    404,
    409,
)
TYPES = ("bind", "unbind", "online", "offline", "describe_sub_devices")
MAX_DEVICES_PER_REQUEST = 50
SIGNATURE_WINDOW_S = 300
CACHE_TTL_S = 5.0

_cache: dict[tuple[str, str, str, str], tuple[float, bool]] = {}
_cache_lock = threading.Lock()


def _gw(gw_pid: str, gw_dn: str) -> str:
    return f"{gw_pid}/{gw_dn}"


# ------------------------------------------------------------------ permission


def may_act_for(gw_pid: str, gw_dn: str, sub_pid: str, sub_dn: str) -> bool:
    """Whether gateway ``gw`` has bound ``sub`` and brought it online (cached ~5 s)."""
    key = (gw_pid, gw_dn, sub_pid, sub_dn)
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None and now - hit[0] < CACHE_TTL_S:
        return hit[1]
    try:
        rec = TopologyRecord.get(_gw(gw_pid, gw_dn), f"{sub_pid}/{sub_dn}")
        allowed = bool(rec.online)
    except DoesNotExist:
        allowed = False
    _remember(key, allowed)
    return allowed


def _remember(key: tuple[str, str, str, str], allowed: bool) -> None:
    with _cache_lock:
        if len(_cache) > 50_000:
            _cache.clear()
        _cache[key] = (time.monotonic(), allowed)


def forget_cache() -> None:
    with _cache_lock:
        _cache.clear()


# ------------------------------------------------------------------ the protocol


def on_operation(dev: DeviceView, m: Received) -> None:
    """The uplink stage of ``gateway/operation``: answer on ``gateway/operation/result``."""
    answer = handle(dev.pid, dev.dn, dev.product, m.body or {})
    if answer is None:
        dev.failure(diagnostics.PAYLOAD_NO_FIELD, "unknown gateway operation", m)
        return
    dev.reply(m, answer)


def on_disconnected(pid: str, dn: str, ts_ms: int) -> None:
    """The lifecycle hand-off: a gateway that went offline takes its online subdevices with it."""
    product = catalog.product_info(pid)
    if product is not None and product.device_type == "gateway":
        gateway_offline(pid, dn, ts_ms)


def handle(gw_pid: str, gw_dn: str, gw_product: Any, body: dict[str, Any]) -> dict[str, Any] | None:
    """Answer one ``gateway/operation`` message; None for an unknown ``type``."""
    kind = body.get("type")
    if kind not in TYPES:
        return None
    answer: dict[str, Any] = {"type": kind}
    if "clientToken" in body:
        answer["clientToken"] = body["clientToken"]
    if kind == "describe_sub_devices":
        subs = [
            {"product_id": r.sub.split("/", 1)[0], "device_name": r.sub.split("/", 1)[1]}
            for r in TopologyRecord.query(_gw(gw_pid, gw_dn))
        ]
        answer["payload"] = {"devices": subs}
        return answer
    payload = body.get("payload")
    entries = payload.get("devices") if isinstance(payload, dict) else None
    if not isinstance(entries, list):
        answer["payload"] = {"devices": []}
        answer["result"] = RESULT_MALFORMED
        return answer
    results = []
    for entry in entries[:MAX_DEVICES_PER_REQUEST]:
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("product_id"), str)
            or not isinstance(entry.get("device_name"), str)
        ):
            results.append(
                {
                    "product_id": entry.get("product_id") if isinstance(entry, dict) else None,
                    "device_name": entry.get("device_name") if isinstance(entry, dict) else None,
                    "result": RESULT_MALFORMED,
                }
            )
            continue
        sub_pid, sub_dn = entry["product_id"], entry["device_name"]
        if gw_product is None or gw_product.device_type != "gateway":
            code = RESULT_FORBIDDEN
        else:
            code = _OPERATIONS[kind](gw_pid, gw_dn, sub_pid, sub_dn, entry)
        results.append({"product_id": sub_pid, "device_name": sub_dn, "result": code})
    answer["payload"] = {"devices": results}
    return answer


def _sub_device(sub_pid: str, sub_dn: str) -> tuple[int, DeviceRecord | None]:
    product = catalog.product_info(sub_pid) if len(sub_pid) == 10 else None
    if product is None:
        return RESULT_NOT_FOUND, None
    if product.device_type != "subdevice":
        return RESULT_FORBIDDEN, None
    try:
        rec = DeviceRecord.get(sub_pid, sub_dn, consistent_read=True)
    except DoesNotExist:
        return RESULT_NOT_FOUND, None
    if not rec.enabled:
        return RESULT_FORBIDDEN, rec
    return RESULT_OK, rec


def _bind(gw_pid: str, gw_dn: str, sub_pid: str, sub_dn: str, entry: dict[str, Any]) -> int:
    if entry.get("signature") is None or entry.get("random") is None or entry.get("timestamp") is None:
        return RESULT_MALFORMED
    code, rec = _sub_device(sub_pid, sub_dn)
    if code != RESULT_OK or rec is None:
        return code
    if not rec.secret:
        return RESULT_FORBIDDEN  # certificate-authenticated subdevices cannot prove a key
    try:
        skew = abs(clock.now_s() - int(float(entry["timestamp"])))
    except (TypeError, ValueError):
        return RESULT_MALFORMED
    if skew > SIGNATURE_WINDOW_S or not gateway_sig.verify(
        sub_pid, sub_dn, rec.secret, entry["random"], entry["timestamp"], entry["signature"], entry.get("signmethod")
    ):
        device_logs.diagnostic(
            sub_pid,
            sub_dn,
            diagnostics.DEV_PUB_UNAUTHORIZED,
            f"bind by gateway {_gw(gw_pid, gw_dn)} refused: "
            + ("timestamp out of window" if skew > SIGNATURE_WINDOW_S else "signature mismatch"),
        )
        return RESULT_SIGNATURE
    gw = _gw(gw_pid, gw_dn)
    if rec.gateway and rec.gateway != gw:
        return RESULT_CONFLICT
    tx = Transaction()
    try:
        with tx:
            tx.save(
                "topology",
                TopologyRecord(gateway=gw, sub=f"{sub_pid}/{sub_dn}", bound_at=clock.now_s(), online=False),
                condition=TopologyRecord.sub.does_not_exist(),
            )
            tx.update(
                "device",
                DeviceRecord(sub_pid, sub_dn),
                actions=[DeviceRecord.gateway.set(gw)],
                condition=DeviceRecord.device_name.exists()
                & (DeviceRecord.gateway.does_not_exist() | (DeviceRecord.gateway == gw)),
            )
    except TransactWriteError as exc:
        failed = tx.failed(exc)
        if "topology" in failed:
            return RESULT_OK  # already bound here: bind is idempotent
        if "device" in failed:
            return RESULT_CONFLICT
        raise
    _remember((gw_pid, gw_dn, sub_pid, sub_dn), False)
    return RESULT_OK


def _bound(gw_pid: str, gw_dn: str, sub_pid: str, sub_dn: str) -> TopologyRecord | None:
    try:
        return TopologyRecord.get(_gw(gw_pid, gw_dn), f"{sub_pid}/{sub_dn}", consistent_read=True)
    except DoesNotExist:
        return None


def _unbind(gw_pid: str, gw_dn: str, sub_pid: str, sub_dn: str, entry: dict[str, Any]) -> int:
    link = _bound(gw_pid, gw_dn, sub_pid, sub_dn)
    if link is None:
        return RESULT_CONFLICT
    gw = _gw(gw_pid, gw_dn)
    link.delete()
    try:
        DeviceRecord(sub_pid, sub_dn).update(
            actions=[DeviceRecord.gateway.remove()], condition=DeviceRecord.gateway == gw
        )
    except Exception:  # noqa: BLE001 - deleted meanwhile or rebound: nothing of ours to undo
        logger.info("unbind: the device no longer names this gateway", extra={"device": f"{sub_pid}/{sub_dn}"})
    _remember((gw_pid, gw_dn, sub_pid, sub_dn), False)
    if link.online:
        presence.sub_offline(sub_pid, sub_dn, gw_pid, gw_dn)
    return RESULT_OK


def _online(gw_pid: str, gw_dn: str, sub_pid: str, sub_dn: str, entry: dict[str, Any]) -> int:
    return _set_online(gw_pid, gw_dn, sub_pid, sub_dn, True)


def _offline(gw_pid: str, gw_dn: str, sub_pid: str, sub_dn: str, entry: dict[str, Any]) -> int:
    return _set_online(gw_pid, gw_dn, sub_pid, sub_dn, False)


def _set_online(gw_pid: str, gw_dn: str, sub_pid: str, sub_dn: str, online: bool) -> int:
    link = _bound(gw_pid, gw_dn, sub_pid, sub_dn)
    if link is None:
        return RESULT_CONFLICT
    if online:
        code, _ = _sub_device(sub_pid, sub_dn)
        if code != RESULT_OK:
            return code
    link.update(actions=[TopologyRecord.online.set(online)])
    _remember((gw_pid, gw_dn, sub_pid, sub_dn), online)
    if online:
        presence.sub_online(sub_pid, sub_dn, gw_pid, gw_dn)
    else:
        presence.sub_offline(sub_pid, sub_dn, gw_pid, gw_dn)
    return RESULT_OK


_OPERATIONS = {"bind": _bind, "unbind": _unbind, "online": _online, "offline": _offline}


def gateway_offline(gw_pid: str, gw_dn: str, ts_ms: int | None = None) -> int:
    """The gateway disconnected: its online subdevices go offline with it.  Returns how many."""
    count = 0
    for link in TopologyRecord.query(_gw(gw_pid, gw_dn), filter_condition=TopologyRecord.online == True):  # noqa: E712
        sub_pid, sub_dn = link.sub.split("/", 1)
        link.update(actions=[TopologyRecord.online.set(False)])
        _remember((gw_pid, gw_dn, sub_pid, sub_dn), False)
        presence.sub_offline(sub_pid, sub_dn, gw_pid, gw_dn, ts_ms)
        count += 1
    return count


# ------------------------------------------------------------------ the API


def subdevices(
    gw_pid: str, gw_dn: str, limit: int, start: dict[str, Any] | None
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The gateway's bound subdevices (topology), paged by the raw key of the last one."""
    get_device(gw_pid, gw_dn)
    gw = _gw(gw_pid, gw_dn)
    if start is not None:
        if (
            set(start) != {"gateway", "sub"}
            or start.get("gateway") != {"S": gw}
            or set(start.get("sub") or {}) != {"S"}
        ):
            raise errors.NEXT_TOKEN_INVALID("next is not a token this listing issued", "next")
    items: list[dict[str, Any]] = []
    with checked_start(start):
        res = TopologyRecord.query(gw, last_evaluated_key=start, limit=limit)
        for rec in res:
            pid, dn = rec.sub.split("/", 1)
            items.append(
                {"product_id": pid, "device_name": dn, "bound_at": int(rec.bound_at), "online": bool(rec.online)}
            )
        last = res.last_evaluated_key
    return items, (
        {"gateway": {"S": gw}, "sub": {"S": items[-1]["product_id"] + "/" + items[-1]["device_name"]}}
        if last and items
        else None
    )
