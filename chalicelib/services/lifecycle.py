"""Device lifecycle events (SPEC §5, §6.4): a connect or disconnect, stage by stage.

``handle`` takes one IoT Core lifecycle event (locally, the broker's connect and disconnect, in
the same shape: ``protocol.events.presence_event``) and runs:

1. **parse** — the client id names the device (an unknown one is ignored), the event time;
2. **apply** — ``presence.connect`` / ``presence.disconnect``: status, times, session, presence
   log and counters; a stale or repeated event changes nothing and stops here;
3. **hand off** — to each of :data:`ON_DISCONNECT` (a gateway takes its subdevices offline) and
   :data:`ON_CHANGE` (the rule engine sees a StatusChange message on ``$status/{pid}/{dn}``).

A hand-off that fails is logged; the device's own status is already right.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..core import clock
from ..core.observability import logger
from ..protocol import topics
from . import gateways, presence, rules

#: after a real disconnect: fn(product_id, device_name, ts_ms)
ON_DISCONNECT: tuple[Callable[[str, str, int], None], ...] = (gateways.on_disconnected,)
#: after any real status change: fn(product_id, device_name, online, ts_ms)
ON_CHANGE: tuple[Callable[[str, str, bool, int], None], ...] = (rules.on_status,)


def handle(event: Mapping[str, Any]) -> dict[str, Any]:
    """One IoT Core lifecycle event (``protocol.events.presence_event`` shape)."""
    client_id = event.get("clientId")
    try:
        pid, dn = topics.split_client_id(client_id)  # type: ignore[arg-type]
    except ValueError:
        logger.info("presence event for an unknown client id ignored", extra={"client_id": str(client_id)[:80]})
        return {"applied": False, "reason": "unknown_client"}
    ts_ms = event.get("timestamp")
    ts_ms = (
        int(ts_ms) if isinstance(ts_ms, (int, float)) and not isinstance(ts_ms, bool) and ts_ms > 0 else clock.now_ms()
    )
    session = event.get("sessionIdentifier")
    session = str(session) if session else None
    kind = event.get("eventType")
    if kind == "connected":
        keepalive = event.get("keepAlive")
        ip = event.get("ipAddress")
        message = f"Device connect, keepalive {keepalive if keepalive is not None else 'n/a'}, clientip {ip or 'n/a'}"
        applied = presence.connect(
            pid, dn, session=session, ip=ip if isinstance(ip, str) else None, ts_ms=ts_ms, message=message
        )
    elif kind == "disconnected":
        reason = str(event.get("disconnectReason") or "")
        message = "Device keepalive timeout" if reason == presence.KEEPALIVE_TIMEOUT else "Device disconnect"
        applied = presence.disconnect(pid, dn, session=session, ts_ms=ts_ms, message=message, reason=reason or None)
        if applied:
            _each(ON_DISCONNECT, pid, dn, ts_ms)
    else:
        return {"applied": False, "reason": "unknown_event_type"}
    if applied:
        _each(ON_CHANGE, pid, dn, kind == "connected", ts_ms)
    return {"applied": applied, "device": f"{pid}/{dn}", "event": kind}


def _each(handoffs: tuple[Callable[..., None], ...], *args: Any) -> None:
    for handoff in handoffs:
        try:
            handoff(*args)
        except Exception:  # noqa: BLE001 - the device's own status is already right
            logger.exception(
                "lifecycle hand-off failed",
                extra={"handoff": getattr(handoff, "__qualname__", str(handoff)), "device": f"{args[0]}/{args[1]}"},
            )
