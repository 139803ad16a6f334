"""What every stage of the uplink pipeline sees: one parsed message, one device's share of a batch.

The pipeline (``services/uplink.py``) builds these; the stages — the thing-model protocol
(``telemetry``), gateways, OTA and resources (``ota.device``), and the hand-offs after the
writes (rules, streams, location) — read them and use only their public methods:

* :class:`Received` — one message: its raw record, parsed topic, JSON body, index in the batch;
* :class:`DeviceView` — one device's share of the batch: its product, its stored record (when
  the pipeline had to read it), what the batch reported (:meth:`report_value`), what to write
  (:meth:`log`, :meth:`diagnostic`, :meth:`add_row`, :meth:`set_fields`) and what to answer
  (:meth:`reply`);
* :class:`Accepted` — a message the pipeline processed, as the hand-offs receive it.

No stage reaches into another's privates: adding a stage is one line in ``uplink.py``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..core import clock
from ..core.config import settings
from ..models.devices import DeviceRecord
from ..models.telemetry import DeviceLogRecord, HistoryRecord
from ..protocol import topics
from ..protocol.events import UplinkMessage
from . import device_logs, shadow, thing_model
from .catalog import ProductInfo

CODE_OK, CODE_INVALID, CODE_NOT_FOUND = 0, 400, 404
MAX_STATUS_CHARS = 512
POSITION_PROPERTIES = ("GPS_Info", "GPS_ExtInfo")
#: a report stamped within this of its arrival keeps its values on its content-log row (sorted by
#: the report's own time: the log shows it at most this far from its arrival); one stamped further
#: away (a device replaying stored data, a wrong clock) gets classic history rows as well
REPORT_ROW_SKEW_MS = 60_000


# ===================================================================== helpers


def time_ms(value: Any, default_ms: int) -> int:
    """A device timestamp in seconds or milliseconds (0, missing or garbage → ``default_ms``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return default_ms
    try:
        number = float(value)
    except ValueError:
        return default_ms
    if not math.isfinite(number) or number <= 0 or number > thing_model.MAX_TIMESTAMP:
        return default_ms
    return int(number * 1000) if number < 100_000_000_000 else int(number)


def token_of(body: dict) -> str:
    """The request's ``clientToken`` as the reply echoes it."""
    token = body.get("clientToken")
    if token is None:
        return ""
    return token if isinstance(token, str) else json.dumps(token)


def status_text(problems: Iterable[thing_model.Problem]) -> str:
    text = "; ".join(p.message for p in problems)
    return text if len(text) <= MAX_STATUS_CHARS else text[: MAX_STATUS_CHARS - 1] + "…"


def reply_payload(method: str, body: dict, code: int, status: str, **extra: Any) -> dict:
    """A ``*_reply``: method, the request's clientToken, a numeric code and a status (SPEC §6.4, §6.6)."""
    return {"method": method, "clientToken": token_of(body), "code": code, "status": status, **extra}


def message_seq(msg: UplinkMessage, salt: str) -> str:
    """Deterministic per message: a redelivered batch rewrites the same history rows."""
    h = hashlib.blake2s(digest_size=5)
    h.update(f"{msg.timestamp_ms}|{msg.topic}|{salt}|".encode())
    h.update(msg.payload)
    return h.hexdigest()


def history_key(pid: str, dn: str, prop: str | None = None) -> str:
    return f"{pid}/{dn}/p/{prop}" if prop is not None else f"{pid}/{dn}/e"


def history_row(key: str, ts: int, seq: str, value: Any, **extra: Any) -> HistoryRecord:
    return HistoryRecord(
        key=key,
        ts=f"{ts:013d}#{seq}",
        value=value,
        expires_at=max(ts // 1000, clock.now_s()) + settings().history_days * 86400,
        **extra,
    )


def position_of(value: Any) -> tuple[Any, Any] | None:
    if isinstance(value, dict) and "latitude" in value and "longitude" in value:
        return value["latitude"], value["longitude"]
    return None


# ===================================================================== the views


@dataclass
class Received:
    """One uplink message of the batch, parsed."""

    index: int
    msg: UplinkMessage
    topic: topics.Topic
    body: dict | None = None
    bad_json: bool = False
    #: the client id of a publisher that may not use this device's topics
    refused_by: str | None = None

    @property
    def method(self) -> Any:
        return self.body.get("method") if self.body is not None else None

    @property
    def is_report(self) -> bool:
        return self.topic.family == "thing/up/property" and self.method == "report"


@dataclass
class Reply:
    topic: str
    payload: dict
    index: int
    qos: int = 0


@dataclass(frozen=True)
class Accepted:
    """A message the pipeline processed, as the hand-offs after the writes see it."""

    index: int
    product_id: str
    device_name: str
    topic: str  # without a leading "$"
    family: str  # topics.FAMILIES key, or "custom"
    payload: bytes
    qos: int
    timestamp_ms: int
    body: dict | None  # the JSON body (None for custom topics or non-JSON payloads)


@dataclass
class BatchResult:
    """``failed``: indexes of the messages the stream must redeliver; the rest were processed."""

    processed: int = 0
    failed: list[int] = field(default_factory=list)
    dropped: int = 0
    requests: int = 0


class DeviceView:
    """One device's share of a batch: what it asked, what to write, what to answer."""

    def __init__(self, pid: str, dn: str, product: ProductInfo) -> None:
        self.pid, self.dn, self.product = pid, dn, product
        self.msgs: list[Received] = []
        #: the stored device and its shadow, when the pipeline read them (every message but
        #: reports needs them)
        self.rec: DeviceRecord | None = None
        self.shadow: shadow.State | None = None
        self.read = False
        #: property -> (value, time ms): the newest values of this batch, for the shadow update
        self.updates: dict[str, tuple[Any, int]] = {}
        self.clear_desired = False
        self.info: dict[str, Any] | None = None
        self.firmware: str | None = None
        self.label: str | None = None  # new region label (report_info)
        self.position: tuple[Any, Any] | None = None
        self.dollar: bool | None = None
        #: extra attributes for the device's one update (set by a stage; see :meth:`set_fields`)
        self.fields: dict[str, Any] = {}
        self.rows: list[Any] = []
        #: (message, report time ms, accepted values) of each report, in batch order (location)
        self.reports: list[tuple[Received, int, dict[str, Any]]] = []
        #: extra shadow attributes a batch stage wants SET / REMOVEd with the one update, valid
        #: only while ``shadow_guard`` (property, time) is still among the values written — a
        #: value older than the stored one (dropped by the time guard) must not carry them
        self.shadow_set: dict[str, Any] = {}
        self.shadow_remove: list[str] = []
        self.shadow_guard: tuple[str, int] | None = None
        #: called with the shadow's previous attributes (plain values) once the update landed
        self.on_stored: list[Callable[[dict[str, Any]], None]] = []
        #: message index -> its content-log row (the reply to it is written on the same row)
        self.request_rows: dict[int, DeviceLogRecord] = {}
        self.replies: list[Reply] = []
        self.failed = False
        self.dropped = False
        self.uplink_fail = 0

    def _stored_reported(self) -> dict[str, Any]:
        return self.shadow.reported if self.shadow is not None else {}

    # -- state as seen by this batch (reads only for devices that were read)
    def reported(self) -> dict[str, dict[str, Any]]:
        base = dict(self._stored_reported())
        for prop, (value, t) in self.updates.items():
            base[prop] = {"value": value, "time": t}
        return base

    def desired(self) -> dict[str, dict[str, Any]]:
        if self.clear_desired or self.shadow is None:
            return {}
        return self.shadow.desired

    def stored_time(self, prop: str) -> int | None:
        if prop in self.updates:
            return self.updates[prop][1]
        entry = self._stored_reported().get(prop)
        if isinstance(entry, dict) and isinstance(entry.get("time"), (int, float)):
            return int(entry["time"])
        return None

    def report_value(self, prop: str, value: Any, at_ms: int) -> None:
        """A newly reported value: newest wins for the shadow (older ones only reach history)."""
        known = self.stored_time(prop)
        if known is None or known <= at_ms:
            self.updates[prop] = (value, at_ms)
            if prop in POSITION_PROPERTIES and position_of(value) is not None:
                self.position = position_of(value)

    def set_fields(self, **values: Any) -> None:
        """Attributes a stage wants written with the device's one update of this batch."""
        self.fields.update(values)

    # -- what to write
    def add_row(self, row: Any) -> None:
        """A history or log row, written with the batch (BatchWriteItem)."""
        self.rows.append(row)

    def log(self, kind: str, **kw: Any) -> None:
        self.rows.append(device_logs.entry(self.pid, self.dn, kind, **kw))

    def request(self, m: Received) -> None:
        """The message's content-log row (its reply, if any, is written on it)."""
        row = device_logs.entry(
            self.pid,
            self.dn,
            "content",
            direction="up",
            topic=m.msg.topic,
            payload=m.msg.payload,
            ts_ms=m.msg.timestamp_ms or None,
        )
        self.request_rows[m.index] = row
        self.rows.append(row)

    def report(self, m: Received, at: int, seq: str, values: dict[str, Any]) -> None:
        """A report's accepted values: kept on its content-log row when stamped near its arrival
        (one row for the log and the history), as history rows otherwise."""
        row = self.request_rows.get(m.index)
        arrived = m.msg.timestamp_ms or clock.now_ms()
        if row is not None and values and abs(at - arrived) <= REPORT_ROW_SKEW_MS:
            row.ts = f"{at:013d}#{seq}"  # deterministic: a redelivered batch rewrites the same row
            row.props = {
                prop: json.dumps(value, separators=(",", ":"), ensure_ascii=False) for prop, value in values.items()
            }
            row.expires_at = max(row.expires_at or 0, max(at // 1000, clock.now_s()) + settings().history_days * 86400)
        else:
            for prop, value in values.items():
                self.add_row(history_row(history_key(self.pid, self.dn, prop), at, seq, value))
        for prop, value in values.items():
            self.report_value(prop, value, at)
        if values:
            self.reports.append((m, at, values))

    def shadow_extra_valid(self) -> bool:
        """Whether the stage's extra shadow changes still ride on a value this update writes."""
        if self.shadow_guard is None:
            return bool(self.shadow_set or self.shadow_remove)
        prop, at = self.shadow_guard
        return prop in self.updates and self.updates[prop][1] == at

    def content_row(self, m: Received) -> DeviceLogRecord | None:
        return self.request_rows.get(m.index)

    def diagnostic(self, code: str, message: str, m: Received) -> None:
        self.log(
            "diagnostic",
            code=code,
            message=message,
            topic=m.msg.topic,
            direction="up",
            payload=m.msg.payload,
            ts_ms=m.msg.timestamp_ms or None,
        )

    def failure(self, code: str, message: str, m: Received) -> None:
        """A message this device got wrong: counted as an uplink failure, with its diagnostic."""
        self.uplink_fail += 1
        self.diagnostic(code, message, m)

    # -- what to answer
    def reply(self, m: Received, payload: dict, topic: str | None = None, qos: int = 0) -> None:
        target = topic or m.topic.reply()
        if target is None:
            return
        self.replies.append(Reply(target, payload, m.index, qos))
        row = self.request_rows.get(m.index)
        if row is not None and row.reply_topic is None:
            row.reply_topic, row.reply_payload, row.reply_at = target, device_logs.payload_text(payload), clock.now_ms()
        else:
            self.log("content", direction="down", topic=target, payload=payload)
