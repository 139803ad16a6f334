"""Online/offline (SPEC §5, §6.4): IoT Core lifecycle events — locally the broker's connects
and disconnects — update a device's status, times and presence log.

* connected → ``online``, ``activated_at`` on the first connect only (plus the activation
  counters), ``last_online_at``, ``client_ip``, the session id, and the log line
  ``Device connect, keepalive {k}, clientip {ip}``;
* disconnected → ``offline``, ``last_offline_at`` and ``Device disconnect`` — or ``Device
  keepalive timeout`` when IoT Core says ``MQTT_KEEP_ALIVE_TIMEOUT``.  A disconnect of an
  older session than the one stored (a device that reconnected before IoT Core reported
  the old connection gone) is ignored, as is a repeated one;
* unknown client ids are ignored.

Subdevices behind a gateway go online/offline through :func:`sub_online` /
:func:`sub_offline` with the session ``gateway/{gw_pid}/{gw_dn}``.  What else happens when a
device connects or disconnects (a gateway's subdevices, the rule engine's StatusChange) is the
lifecycle pipeline's (``services/lifecycle.py``).

Counters (analytics): the product's ``online`` gauge moves ±1 on every real status change,
``activated`` and the day's ``activations`` on a first connect, the day's ``active`` on the
first activity of a day, and the day's ``online_peak``.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from ..core import clock
from ..core.observability import logger
from ..models import dynamo
from ..models.devices import DeviceRecord
from . import analytics, device_logs, shadow

KEEPALIVE_TIMEOUT = "MQTT_KEEP_ALIVE_TIMEOUT"
ONLINE, OFFLINE = "online", "offline"


def gateway_session(gw_pid: str, gw_dn: str) -> str:
    return f"gateway/{gw_pid}/{gw_dn}"


def _update(pid: str, dn: str, request: dict[str, Any]) -> DeviceRecord | None:
    """A conditional device update returning the old item; None when the condition failed."""
    request = {
        "TableName": DeviceRecord.Meta.table_name,
        "Key": {"product_id": {"S": pid}, "device_name": {"S": dn}},
        "ReturnValues": "ALL_OLD",
        **request,
    }
    try:
        out = dynamo.client().update_item(**request)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            return None
        raise
    return DeviceRecord.from_raw_data(out["Attributes"]) if out.get("Attributes") else None


def connect(pid: str, dn: str, *, session: str | None, ip: str | None, ts_ms: int, message: str) -> bool:
    """Mark the device online; False when it does not exist."""
    now_s = ts_ms // 1000
    today = analytics.day_of(ts_ms)
    names = {
        "#dn": "device_name",
        "#st": "status",
        "#lo": "last_online_at",
        "#act": "activated_at",
        "#sid": "session_id",
    }
    values: dict[str, Any] = {":on": {"S": ONLINE}, ":t": {"N": str(now_s)}}
    sets = ["#st = :on", "#lo = :t", "#act = if_not_exists(#act, :t)"]
    removes = []
    if session:
        values[":sid"] = {"S": session}
        sets.append("#sid = :sid")
    else:
        removes.append("#sid")
    if ip:
        names["#ip"] = "client_ip"
        values[":ip"] = {"S": ip[:64]}
        sets.append("#ip = :ip")
    expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
    old = _update(
        pid,
        dn,
        {
            "UpdateExpression": expression,
            "ConditionExpression": "attribute_exists(#dn)",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        },
    )
    if old is None:
        logger.info("presence event for an unknown device ignored", extra={"device": f"{pid}/{dn}"})
        return False
    device_logs.write(pid, dn, "presence", code="connected", message=message, ts_ms=ts_ms)
    tally = analytics.Tally()
    gauges: dict[str, int] = {}
    if old.activated_at is None:
        tally.add(pid, "activations", 1, ts_ms)
        gauges["activated"] = 1
    if shadow.note_activity(old, today) != today:  # the activity day lives on the shadow
        tally.add(pid, "active", 1, ts_ms)
    if old.status != ONLINE:
        gauges["online"] = 1
    tally.flush()
    if gauges:
        now = analytics.adjust_totals(pid, gauges)
        if "online" in gauges and "online" in now:
            analytics.note_online_peak(pid, now["online"], ts_ms)
    return True


def disconnect(pid: str, dn: str, *, session: str | None, ts_ms: int, message: str, reason: str | None = None) -> bool:
    """Mark the device offline unless the disconnect belongs to an older session (or repeats)."""
    names = {"#dn": "device_name", "#st": "status", "#lf": "last_offline_at"}
    values: dict[str, Any] = {":off": {"S": OFFLINE}, ":on": {"S": ONLINE}, ":t": {"N": str(ts_ms // 1000)}}
    condition = "attribute_exists(#dn) AND #st = :on"
    if session:
        names["#sid"] = "session_id"
        values[":sid"] = {"S": session}
        condition += " AND (#sid = :sid OR attribute_not_exists(#sid))"
    old = _update(
        pid,
        dn,
        {
            "UpdateExpression": "SET #st = :off, #lf = :t",
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        },
    )
    if old is None:
        logger.info("stale or repeated disconnect ignored", extra={"device": f"{pid}/{dn}", "session": session})
        return False
    device_logs.write(pid, dn, "presence", code=reason or "disconnected", message=message, ts_ms=ts_ms)
    analytics.adjust_totals(pid, {"online": -1})
    return True


def sub_online(pid: str, dn: str, gw_pid: str, gw_dn: str, ts_ms: int | None = None) -> bool:
    ts = ts_ms or clock.now_ms()
    return connect(
        pid,
        dn,
        session=gateway_session(gw_pid, gw_dn),
        ip=None,
        ts_ms=ts,
        message=f"Device connect via gateway {gw_pid}/{gw_dn}",
    )


def sub_offline(pid: str, dn: str, gw_pid: str, gw_dn: str, ts_ms: int | None = None) -> bool:
    ts = ts_ms or clock.now_ms()
    return disconnect(
        pid,
        dn,
        session=gateway_session(gw_pid, gw_dn),
        ts_ms=ts,
        message=f"Device disconnect via gateway {gw_pid}/{gw_dn}",
        reason="GATEWAY_OFFLINE",
    )
