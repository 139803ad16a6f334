"""Device data tables: property/event history, device logs, pending calls, gateway topology."""

from __future__ import annotations

from pynamodb.attributes import BooleanAttribute, MapAttribute, NumberAttribute, UnicodeAttribute
from pynamodb.models import Model

from .base import JSONText, meta


class HistoryRecord(Model):
    """pk "{pid}/{dn}/p/{prop}" (a property) or "{pid}/{dn}/e" (events); sk "{ms:013d}#{seq}"."""

    Meta = meta("history")

    key = UnicodeAttribute(hash_key=True)
    ts = UnicodeAttribute(range_key=True)
    value = JSONText(null=True)
    event_id = UnicodeAttribute(null=True)
    event_type = UnicodeAttribute(null=True)
    expires_at = NumberAttribute(null=True)


class DeviceLogRecord(Model):
    """pk "{pid}/{dn}/{kind}" with kind content | presence | diagnostic; sk "{ms:013d}#{seq}"; TTL 30 days.

    A content row of an uplink message also carries the cloud's answer to it (``reply_*``: one
    row, one write, for the request and its reply), and a property report's row carries the
    accepted values (``props``: property id -> JSON text) — it is then the report's history row
    too (``services/device_data.py`` reads history from both tables), kept as long as history.
    """

    Meta = meta("device_logs")

    key = UnicodeAttribute(hash_key=True)
    ts = UnicodeAttribute(range_key=True)
    direction = UnicodeAttribute(null=True)
    topic = UnicodeAttribute(null=True)
    payload = UnicodeAttribute(null=True)
    code = UnicodeAttribute(null=True)
    message = UnicodeAttribute(null=True)
    expires_at = NumberAttribute(null=True)
    reply_topic = UnicodeAttribute(null=True)
    reply_payload = UnicodeAttribute(null=True)
    reply_at = NumberAttribute(null=True)
    props = MapAttribute(null=True)  # type: ignore[var-annotated]
    #: a report's position fix (services/location): {lat, lon, accuracy, source, time} or
    #: {source, time, unresolved: reason}; the trajectory is a key query filtered on it
    fix = MapAttribute(null=True)  # type: ignore[var-annotated]


class CallRecord(Model):
    """A control or action sent to a device, matched to its reply by clientToken."""

    Meta = meta("calls")

    key = UnicodeAttribute(hash_key=True)  # "{pid}/{dn}"
    token = UnicodeAttribute(range_key=True)  # clientToken
    kind = UnicodeAttribute()  # control | action
    action_id = UnicodeAttribute(null=True)
    params = JSONText(null=True)
    status = UnicodeAttribute(default="pending")  # pending | replied | timeout
    code = NumberAttribute(null=True)
    reply = JSONText(null=True)
    created_at = NumberAttribute()
    replied_at = NumberAttribute(null=True)
    expires_at = NumberAttribute(null=True)


class TopologyRecord(Model):
    """Gateway → subdevice bindings."""

    Meta = meta("topology")

    gateway = UnicodeAttribute(hash_key=True)  # "{gw_pid}/{gw_dn}"
    sub = UnicodeAttribute(range_key=True)  # "{pid}/{dn}"
    bound_at = NumberAttribute()
    online = BooleanAttribute(default=False)
