"""Device → cloud messages (SPEC §6.4): a batch of uplinks validated, stored and answered.

:func:`process_batch` takes the uplink stream's batch (:class:`~chalicelib.protocol.events.UplinkMessage`)
and, per device and in arrival order, runs the thing-model protocol: ``report``,
``get_status``, ``clear_control``, ``report_info``, ``control_reply``, ``event_post`` /
``events_post``, ``action_reply``, the time service, gateway operations, and content-only
logging for custom topics and the families other services own (OTA, resources).

The common path — a valid ``report`` — costs at most three DynamoDB requests, measured in
``tests/integration/test_telemetry.py``:

1. one ``UpdateItem`` per device per batch: the newest value per property into the
   ``reported`` map, each guarded by ``attribute_not_exists OR time <=`` so only newer times
   win, the device's existence and ``enabled`` flag in the same condition (no read), and
   ``ReturnValues=ALL_OLD`` to learn the previous activity day and region for free;
2. one ``BatchWriteItem`` per 25 rows for history and content/diagnostic log rows of the
   whole batch;
3. one ``UpdateItem`` per product per batch for every analytics counter (analytics.Tally).

Devices that send anything but reports are read first (one ``BatchGetItem`` per 100 devices)
because their answers depend on their state.  Replies go out through the device publisher
after the writes, on the topic form the device used (``$thing/...`` or ``thing/...``).

One bad message never blocks its neighbours: a malformed payload is answered or logged as a
diagnostic and counts as processed; only storage failures (throttling after retries) mark
the messages of the devices concerned as failed so the stream redelivers them.  History rows
have deterministic sort keys, so a redelivered batch overwrites rather than duplicates them.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Iterable

from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.exceptions import UpdateError

from ..core import clock
from ..core.config import settings
from ..core.observability import logger
from ..models.devices import DeviceRecord
from ..models.products import ProductRecord
from ..models.telemetry import CallRecord, HistoryRecord
from ..protocol import topics
from ..protocol.events import UplinkMessage
from . import analytics, device_logs, publisher, thing_model
from .txn import connection

MODEL_TTL_S = 10.0
MAX_CONDITIONED_PROPS = 60
MAX_EVENTS_PER_MESSAGE = 100
MAX_STATUS_CHARS = 512
FW_VER_RE = re.compile(r"[A-Za-z0-9._\-]{1,32}")
INFO_STRINGS = ("module_hardinfo", "module_softinfo", "mac", "imei")
POSITION_PROPERTIES = ("GPS_Info", "GPS_ExtInfo")
CODE_OK, CODE_INVALID, CODE_NOT_FOUND = 0, 400, 404
_RETRYABLE = {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
              "InternalServerError", "ServiceUnavailable", "TransactionConflictException", "LimitExceededException"}


# ===================================================================== products (cached)


@dataclass(frozen=True)
class ProductInfo:
    product_id: str
    data_protocol: str
    device_type: str
    model: thing_model.CompiledModel
    doc: dict
    custom_topics: tuple
    updated_at: int


_products: dict[str, tuple[float, ProductInfo | None]] = {}
_products_lock = threading.Lock()


def _info_of(rec: ProductRecord, previous: ProductInfo | None) -> ProductInfo:
    if previous is not None and previous.updated_at == int(rec.updated_at):
        return previous
    doc = thing_model.export_model(rec.thing_model) if rec.thing_model else {}
    return ProductInfo(rec.product_id, rec.data_protocol, rec.device_type, thing_model.compile_model(doc), doc,
                       tuple(rec.topics or ()), int(rec.updated_at))


def product_info(product_id: str, *, fresh: bool = False) -> ProductInfo | None:
    """The product with its compiled thing model, cached in-process for :data:`MODEL_TTL_S`."""
    now = time.monotonic()
    with _products_lock:
        hit = _products.get(product_id)
    if hit is not None and not fresh and now - hit[0] < MODEL_TTL_S:
        return hit[1]
    try:
        rec = ProductRecord.get(product_id, consistent_read=fresh)
    except ProductRecord.DoesNotExist:
        info = None
    else:
        info = _info_of(rec, hit[1] if hit else None)
    with _products_lock:
        _products[product_id] = (now, info)
    return info


def forget_products() -> None:
    """Drop the product cache (tests; a thing-model import elsewhere is seen within the TTL)."""
    with _products_lock:
        _products.clear()


# ===================================================================== value codecs


def to_av(value: Any) -> dict[str, Any]:
    """A JSON value as a DynamoDB AttributeValue."""
    if value is None:
        return {"NULL": True}
    if value is True or value is False:
        return {"BOOL": value}
    if isinstance(value, int):
        return {"N": str(value)}
    if isinstance(value, float):
        return {"N": repr(value) if math.isfinite(value) else "0"}
    if isinstance(value, Decimal):
        return {"N": str(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, dict):
        return {"M": {str(k): to_av(v) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        return {"L": [to_av(v) for v in value]}
    return {"S": str(value)}


def _number(text: str) -> int | float:
    d = Decimal(text)
    return int(d) if d == d.to_integral_value() and "e" not in text.lower() and "." not in text else float(d)


def from_av(av: dict[str, Any]) -> Any:
    (kind, v), = av.items()
    if kind == "N":
        return _number(v)
    if kind == "M":
        return {k: from_av(x) for k, x in v.items()}
    if kind == "L":
        return [from_av(x) for x in v]
    if kind == "NULL":
        return None
    return v


def plain(value: Any) -> Any:
    """Decimals (DynamoDB numbers) back to int/float, recursively; PynamoDB maps to dicts."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _ddb() -> Any:
    """The botocore client PynamoDB uses (same pool, retries and endpoint)."""
    return connection().client


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def transient(exc: BaseException) -> bool:
    """Whether a storage failure is worth a redelivery (throttling, service errors) rather than a bug."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, BotoCoreError):
            return True
        if isinstance(exc, ClientError) and _error_code(exc) in _RETRYABLE:
            return True
        exc = getattr(exc, "cause", None) or exc.__cause__  # PynamoDB wraps botocore errors
        seen += 1
    return False


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


def _token(body: dict) -> str:
    token = body.get("clientToken")
    if token is None:
        return ""
    return token if isinstance(token, str) else json.dumps(token)


def _status_text(problems: Iterable[thing_model.Problem]) -> str:
    text = "; ".join(p.message for p in problems)
    return text if len(text) <= MAX_STATUS_CHARS else text[:MAX_STATUS_CHARS - 1] + "…"


def _seq(msg: UplinkMessage, salt: str) -> str:
    """Deterministic per message: a redelivered batch rewrites the same history rows."""
    h = hashlib.blake2s(digest_size=5)
    h.update(f"{msg.timestamp_ms}|{msg.topic}|{salt}|".encode())
    h.update(msg.payload)
    return h.hexdigest()


def history_key(pid: str, dn: str, prop: str | None = None) -> str:
    return f"{pid}/{dn}/p/{prop}" if prop is not None else f"{pid}/{dn}/e"


def _history_row(key: str, ts: int, seq: str, value: Any, **extra: Any) -> HistoryRecord:
    return HistoryRecord(key=key, ts=f"{ts:013d}#{seq}", value=value,
                         expires_at=max(ts // 1000, clock.now_s()) + settings().history_days * 86400, **extra)


def position_of(value: Any) -> tuple[Any, Any] | None:
    if isinstance(value, dict) and "latitude" in value and "longitude" in value:
        return value["latitude"], value["longitude"]
    return None


# ===================================================================== the batch


@dataclass
class BatchResult:
    """``failed``: indexes of the messages the stream must redeliver; the rest were processed."""

    processed: int = 0
    failed: list[int] = field(default_factory=list)
    dropped: int = 0
    requests: int = 0


@dataclass
class _Msg:
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
class _Reply:
    topic: str
    payload: dict
    index: int
    qos: int = 0


class _Device:
    """One device's share of a batch: what it asked, what to write, what to answer."""

    def __init__(self, pid: str, dn: str, product: ProductInfo) -> None:
        self.pid, self.dn, self.product = pid, dn, product
        self.msgs: list[_Msg] = []
        self.rec: DeviceRecord | None = None
        self.read = False
        self.updates: dict[str, tuple[Any, int]] = {}
        self.clear_desired = False
        self.info: dict[str, Any] | None = None
        self.firmware: str | None = None
        self.label: str | None = None          # new region label (report_info)
        self.position: tuple[Any, Any] | None = None
        self.dollar: bool | None = None
        self.rows: list[Any] = []
        self.replies: list[_Reply] = []
        self.failed = False
        self.dropped = False
        self.uplink_fail = 0
        self._stored: dict[str, Any] | None = None

    def _stored_reported(self) -> dict[str, Any]:
        if self._stored is None:
            self._stored = plain(self.rec.reported) if self.rec is not None and self.rec.reported is not None else {}
        return self._stored

    # -- state as seen by this batch (reads only for devices that were read)
    def reported(self) -> dict[str, dict[str, Any]]:
        base = dict(self._stored_reported())
        for prop, (value, t) in self.updates.items():
            base[prop] = {"value": value, "time": t}
        return base

    def desired(self) -> dict[str, dict[str, Any]]:
        if self.clear_desired or self.rec is None or self.rec.desired is None:
            return {}
        return plain(self.rec.desired)

    def stored_time(self, prop: str) -> int | None:
        if prop in self.updates:
            return self.updates[prop][1]
        entry = self._stored_reported().get(prop)
        if isinstance(entry, dict) and isinstance(entry.get("time"), (int, float)):
            return int(entry["time"])
        return None

    def log(self, kind: str, **kw: Any) -> None:
        self.rows.append(device_logs.entry(self.pid, self.dn, kind, **kw))

    def diagnostic(self, code: str, message: str, m: _Msg) -> None:
        self.log("diagnostic", code=code, message=message, topic=m.msg.topic, direction="up",
                 payload=m.msg.payload, ts_ms=m.msg.timestamp_ms or None)

    def reply(self, m: _Msg, payload: dict, topic: str | None = None, qos: int = 0) -> None:
        target = topic or m.topic.reply()
        if target is None:
            return
        self.replies.append(_Reply(target, payload, m.index, qos))
        self.log("content", direction="down", topic=target, payload=payload)


def _parse(index: int, msg: UplinkMessage) -> _Msg | None:
    parsed = topics.parse(msg.topic)
    if parsed is None or parsed.direction == topics.DOWN:
        logger.warning("uplink on an unknown topic dropped", extra={"topic": msg.topic[:256]})
        return None
    m = _Msg(index, msg, parsed)
    if parsed.family == topics.CUSTOM or parsed.family in ("ota/report", "resource/up/service"):
        return m  # passthrough here; other services own their payloads
    try:
        body = json.loads(msg.payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        m.bad_json = True
        return m
    if isinstance(body, dict):
        m.body = body
    else:
        m.bad_json = True
    return m


def process_batch(messages: list[UplinkMessage]) -> BatchResult:
    """Process one uplink batch; never raises for a bad message (see the module doc)."""
    result = BatchResult()
    devices: dict[tuple[str, str], _Device] = {}
    tally = analytics.Tally()
    for index, msg in enumerate(messages):
        try:
            m = _parse(index, msg)
        except Exception:  # noqa: BLE001 - a poison record must not stop the batch
            logger.exception("uplink parse failed")
            m = None
        if m is None:
            result.dropped += 1
            continue
        key = (m.topic.product_id, m.topic.device_name)
        dev = devices.get(key)
        if dev is None:
            try:
                product = product_info(key[0])
            except Exception as exc:  # noqa: BLE001
                if transient(exc):
                    result.failed.append(index)
                    continue
                logger.exception("product lookup failed; message dropped", extra={"topic": msg.topic[:256]})
                product = None
            if product is None:
                result.dropped += 1
                continue
            dev = devices[key] = _Device(key[0], key[1], product)
        if msg.client_id and msg.client_id != m.topic.client_id and not _may_act(msg.client_id, m.topic):
            m.refused_by = msg.client_id  # logged and refused below, once the device is known
        dev.msgs.append(m)
        if not m.is_report or m.refused_by:
            dev.read = True

    _read_devices([d for d in devices.values() if d.read], result)

    for dev in devices.values():
        if dev.failed:
            continue
        if dev.read and (dev.rec is None or not dev.rec.enabled):
            _drop(dev, tally)
            continue
        for m in dev.msgs:
            try:
                _handle(dev, m)
            except Exception as exc:  # noqa: BLE001 - one message never blocks the batch
                if transient(exc):
                    dev.failed = True
                    break
                logger.exception("uplink message failed", extra={"topic": m.msg.topic[:256]})
                dev.uplink_fail += 1
                dev.diagnostic(device_logs.DEV_CONN_SYSTEM_ERR, "the cloud could not process this message", m)

    for dev in devices.values():
        if not dev.failed and not dev.dropped:
            _write_device(dev, tally, result)

    _write_rows([(d, row) for d in devices.values() if not d.failed for row in d.rows], result)

    late_rows: list[tuple[_Device | None, Any]] = []
    for dev in devices.values():
        if dev.failed:
            result.failed.extend(m.index for m in dev.msgs)
            continue
        if dev.dropped:
            result.dropped += len(dev.msgs)
            continue
        result.processed += len(dev.msgs)
        tally.add(dev.pid, "uplink", len(dev.msgs), dev.msgs[0].msg.timestamp_ms or None)
        tally.add(dev.pid, "uplink_fail", dev.uplink_fail, dev.msgs[0].msg.timestamp_ms or None)
        for reply in dev.replies:
            ok = deliver(reply.topic, reply.payload, reply.qos)
            tally.add(dev.pid, "downlink", 1)
            if not ok:
                tally.add(dev.pid, "downlink_fail", 1)
                late_rows.append((None, device_logs.entry(
                    dev.pid, dev.dn, "diagnostic", code=device_logs.PUB_TO_DEV_NO_SUBSCRIBER, direction="down",
                    topic=reply.topic, payload=reply.payload,
                    message="no subscriber received the reply: the device is not subscribed to this topic")))
    if late_rows:
        _write_rows(late_rows, result)
    result.requests += tally.flush()
    result.failed.extend(_to_rules(devices))
    result.failed = sorted(set(result.failed))
    return result


def _to_rules(devices: dict[tuple[str, str], _Device]) -> list[int]:
    """Hand the batch's accepted messages to the rule engine (SPEC §9.1); the indexes it
    returns could not be queued nor recorded and are re-delivered by the stream."""
    from . import rules  # noqa: PLC0415 - the engine imports forwarders lazily

    accepted = [m for d in devices.values() if not d.failed and not d.dropped for m in d.msgs if not m.refused_by]
    redo = rules.on_uplink([rules.Inbound(m.topic.product_id, m.topic.device_name, m.msg.topic.lstrip("$"),
                                          m.msg.payload, m.msg.qos, m.msg.timestamp_ms or clock.now_ms())
                            for m in accepted])
    return [accepted[i].index for i in redo]


def deliver(topic: str, payload: dict, qos: int = 0) -> bool:
    """Publish to a device; False when nobody received it or the publisher failed."""
    try:
        return bool(publisher.publish(topic, payload, qos))
    except Exception:  # noqa: BLE001 - a failed downlink is a diagnostic, not a failed batch
        logger.exception("device publish failed", extra={"topic": topic})
        return False


def _may_act(client_id: str, topic: topics.Topic) -> bool:
    """A gateway may publish for a subdevice it has bound and brought online (SPEC §6.5)."""
    from . import gateways  # noqa: PLC0415 - gateways imports this module

    try:
        gw_pid, gw_dn = topics.split_client_id(client_id)
    except ValueError:
        return False
    try:
        return gateways.may_act_for(gw_pid, gw_dn, topic.product_id, topic.device_name)
    except Exception:  # noqa: BLE001
        logger.exception("gateway permission check failed")
        return False


def _read_devices(devs: list[_Device], result: BatchResult) -> None:
    table = DeviceRecord.Meta.table_name
    by_key = {(d.pid, d.dn): d for d in devs}
    keys = list(by_key)
    for start in range(0, len(keys), 100):
        chunk = keys[start:start + 100]
        pending: dict[str, Any] = {table: {"ConsistentRead": True, "Keys": [
            {"product_id": {"S": p}, "device_name": {"S": n}} for p, n in chunk]}}
        try:
            for attempt in range(8):
                result.requests += 1
                out = _ddb().batch_get_item(RequestItems=pending)
                for item in (out.get("Responses") or {}).get(table, []):
                    rec = DeviceRecord.from_raw_data(item)
                    by_key[(rec.product_id, rec.device_name)].rec = rec
                pending = out.get("UnprocessedKeys") or {}
                if not pending:
                    break
                time.sleep(min(0.05 * 2 ** attempt, 1.0))
            if pending:
                raise RuntimeError("device reads stayed unprocessed")
        except Exception as exc:  # noqa: BLE001
            logger.exception("device reads failed")
            for key in chunk:
                # a throttled read is redelivered; anything else would fail forever: the devices
                # count as unknown and their messages are dropped (logged above)
                by_key[key].failed = transient(exc)


def _drop(dev: _Device, tally: analytics.Tally) -> None:
    """Messages of an unknown, deleted or disabled device: dropped, a diagnostic where it is known."""
    dev.dropped = True
    dev.rows, dev.replies = [], []
    if dev.rec is None:
        logger.info("uplink of an unknown device dropped", extra={"device": f"{dev.pid}/{dev.dn}"})
        return
    for m in dev.msgs:
        dev.log("content", direction="up", topic=m.msg.topic, payload=m.msg.payload, ts_ms=m.msg.timestamp_ms or None)
        dev.diagnostic(device_logs.DEV_PUB_UNAUTHORIZED, "the device is disabled: message dropped", m)
    tally.add(dev.pid, "uplink", len(dev.msgs))
    tally.add(dev.pid, "uplink_fail", len(dev.msgs))


# ===================================================================== one message


def _handle(dev: _Device, m: _Msg) -> None:
    msg = m.msg
    dev.log("content", direction="up", topic=msg.topic, payload=msg.payload, ts_ms=msg.timestamp_ms or None)
    if m.topic.family != topics.CUSTOM:
        dev.dollar = m.topic.dollar
    if m.refused_by:
        dev.uplink_fail += 1
        dev.diagnostic(device_logs.DEV_PUB_UNAUTHORIZED,
                       f"client {m.refused_by} may not publish on this device's topics", m)
        return
    family = m.topic.family
    if family in (topics.CUSTOM, "ota/report", "resource/up/service"):
        handler = FAMILY_HANDLERS.get(family)
        if handler is not None:
            handler(dev, m)
        return
    if m.bad_json:
        dev.uplink_fail += 1
        dev.diagnostic(device_logs.PAYLOAD_NOT_JSON, "the payload is not a JSON object", m)
        return
    handler = FAMILY_HANDLERS.get(family)
    if handler is not None:
        handler(dev, m)


def _reply_payload(method: str, body: dict, code: int, status: str, **extra: Any) -> dict:
    return {"method": method, "clientToken": _token(body), "code": code, "status": status, **extra}


def _property(dev: _Device, m: _Msg) -> None:
    body = m.body or {}
    method = body.get("method")
    if method is None or method == "control_reply":
        if "clientToken" in body:
            _call_reply(dev, m, "control")
        else:
            dev.uplink_fail += 1
            dev.diagnostic(device_logs.PAYLOAD_NO_FIELD, "the message has no method", m)
        return
    handler = _PROPERTY_METHODS.get(method) if isinstance(method, str) else None
    if handler is None:
        dev.uplink_fail += 1
        dev.diagnostic(device_logs.PAYLOAD_NO_FIELD, f"unknown method {str(method)[:40]!r} on a property topic", m)
        return
    handler(dev, m, body)


def _report(dev: _Device, m: _Msg, body: dict) -> None:
    if "params" not in body:
        dev.uplink_fail += 1
        dev.diagnostic(device_logs.PAYLOAD_NO_FIELD, "report without params", m)
        dev.reply(m, _reply_payload("report_reply", body, CODE_INVALID, "params is required"))
        return
    accepted, problems = dev.product.model.check_properties(body.get("params"))
    at = time_ms(body.get("timestamp"), m.msg.timestamp_ms or clock.now_ms())
    seq = _seq(m.msg, "r")
    for prop, value in accepted.items():
        dev.rows.append(_history_row(history_key(dev.pid, dev.dn, prop), at, seq, value))
        known = dev.stored_time(prop)
        if known is None or known <= at:
            dev.updates[prop] = (value, at)
            if prop in POSITION_PROPERTIES and position_of(value) is not None:
                dev.position = position_of(value)
    for problem in problems:
        dev.diagnostic(device_logs.THING_MODEL_INVALID, problem.message, m)
    if problems:
        dev.uplink_fail += 1
        dev.reply(m, _reply_payload("report_reply", body, int(problems[0].code), _status_text(problems)))
    else:
        dev.reply(m, _reply_payload("report_reply", body, CODE_OK, "success"))


def _get_status(dev: _Device, m: _Msg, body: dict) -> None:
    kind = body.get("type")
    if kind not in (None, "report", "control"):
        dev.uplink_fail += 1
        dev.reply(m, _reply_payload("get_status_reply", body, CODE_INVALID, "type must be report or control"))
        return
    data: dict[str, Any] = {}
    if kind in (None, "report"):
        data["reported"] = {k: v.get("value") for k, v in dev.reported().items() if isinstance(v, dict)}
    if kind in (None, "control"):
        data["control"] = {k: v.get("value") for k, v in dev.desired().items() if isinstance(v, dict)}
    extra: dict[str, Any] = {"type": kind} if kind else {}
    dev.reply(m, _reply_payload("get_status_reply", body, CODE_OK, "success", **extra, data=data))


def _clear_control(dev: _Device, m: _Msg, body: dict) -> None:
    dev.clear_desired = True
    dev.reply(m, _reply_payload("clear_control_reply", body, CODE_OK, "success"))


def _report_info(dev: _Device, m: _Msg, body: dict) -> None:
    params = body.get("params")
    problems: list[str] = []
    if not isinstance(params, dict):
        dev.uplink_fail += 1
        dev.diagnostic(device_logs.PAYLOAD_NO_FIELD, "report_info without params", m)
        dev.reply(m, _reply_payload("report_info_reply", body, CODE_INVALID, "params is required"))
        return
    fw = params.get("fw_ver")
    if not isinstance(fw, str) or not FW_VER_RE.fullmatch(fw):
        dev.uplink_fail += 1
        reason = "fw_ver is required" if fw is None else "fw_ver must be 1-32 characters of A-Z a-z 0-9 . _ -"
        dev.diagnostic(device_logs.PAYLOAD_NO_FIELD if fw is None else device_logs.THING_MODEL_INVALID, reason, m)
        dev.reply(m, _reply_payload("report_info_reply", body, CODE_INVALID, reason))
        return
    info: dict[str, Any] = {"fw_ver": fw}
    for name in INFO_STRINGS:
        value = params.get(name)
        if value is None:
            continue
        if isinstance(value, str) and len(value) <= 128:
            info[name] = value
        else:
            problems.append(f"{name} must be a string of at most 128 characters")
    lat, lon = params.get("lat"), params.get("lon")
    if lat is not None or lon is not None:
        try:
            la, lo = float(lat), float(lon)
            if not (-90 <= la <= 90 and -180 <= lo <= 180):
                raise ValueError
            info["lat"], info["lon"] = la, lo
            dev.position = (la, lo)
        except (TypeError, ValueError):
            problems.append("lat/lon must be a WGS-84 position (lat -90..90, lon -180..180)")
    label = params.get("device_label")
    if label is not None:
        if isinstance(label, dict) and len(label) <= 20 and all(
                isinstance(k, str) and 0 < len(k) <= 32 and isinstance(v, str) and len(v) <= 128
                for k, v in label.items()):
            info["device_label"] = dict(label)
            dev.label = analytics.region_label(label.get("region")) or ""
        else:
            problems.append("device_label must be an object of at most 20 string labels")
    info["time"] = m.msg.timestamp_ms or clock.now_ms()
    dev.info, dev.firmware = info, fw
    if problems:
        dev.uplink_fail += 1
        for text in problems:
            dev.diagnostic(device_logs.THING_MODEL_INVALID, text, m)
        dev.reply(m, _reply_payload("report_info_reply", body, CODE_INVALID, "; ".join(problems)))
    else:
        dev.reply(m, _reply_payload("report_info_reply", body, CODE_OK, "success"))


def _events(dev: _Device, m: _Msg) -> None:
    body = m.body or {}
    method = body.get("method")
    if method not in ("event_post", "events_post"):
        dev.uplink_fail += 1
        dev.diagnostic(device_logs.PAYLOAD_NO_FIELD, f"unknown method {str(method)[:40]!r} on an event topic", m)
        return
    reply_method = "event_reply" if method == "event_post" else "events_reply"
    if "events" in body:
        events = body.get("events")
        if not isinstance(events, list) or not events or len(events) > MAX_EVENTS_PER_MESSAGE:
            dev.uplink_fail += 1
            dev.reply(m, _reply_payload(reply_method, body, CODE_INVALID,
                                        f"events must be a list of 1-{MAX_EVENTS_PER_MESSAGE} events", data={}))
            return
    elif method == "event_post":
        events = [body]
    else:
        dev.uplink_fail += 1
        dev.diagnostic(device_logs.PAYLOAD_NO_FIELD, "events_post without events", m)
        dev.reply(m, _reply_payload(reply_method, body, CODE_INVALID, "events is required", data={}))
        return
    first: tuple[int, str] | None = None
    received = m.msg.timestamp_ms or clock.now_ms()
    for i, event in enumerate(events):
        if not isinstance(event, dict):
            first = first or (CODE_INVALID, f"events[{i}] is not an object")
            continue
        event_id = event.get("eventId")
        accepted, problems = dev.product.model.check_event(event_id, event.get("params"))
        if problems and problems[0].code == thing_model.PROBLEM_NOT_DEFINED and \
                dev.product.model.event_type(event_id) is None:
            first = first or (CODE_NOT_FOUND, problems[0].message)
            dev.diagnostic(device_logs.THING_MODEL_INVALID, problems[0].message, m)
            continue
        at = time_ms(event.get("timestamp"), received)
        dev.rows.append(_history_row(history_key(dev.pid, dev.dn), at, _seq(m.msg, f"e{i}"), accepted,
                                     event_id=event_id, event_type=dev.product.model.event_type(event_id)))
        for problem in problems:
            dev.diagnostic(device_logs.THING_MODEL_INVALID, f"{event_id}: {problem.message}", m)
        if problems:
            first = first or (int(problems[0].code), f"{event_id}: {_status_text(problems)}")
    if first is None:
        dev.reply(m, _reply_payload(reply_method, body, CODE_OK, "success", data={}))
    else:
        dev.uplink_fail += 1
        dev.reply(m, _reply_payload(reply_method, body, first[0], first[1][:MAX_STATUS_CHARS], data={}))


def _action(dev: _Device, m: _Msg) -> None:
    body = m.body or {}
    method = body.get("method")
    if method not in (None, "action_reply") or "clientToken" not in body:
        dev.uplink_fail += 1
        dev.diagnostic(device_logs.PAYLOAD_NO_FIELD, "an action topic carries action_reply with its clientToken", m)
        return
    _call_reply(dev, m, "action")


def _call_reply(dev: _Device, m: _Msg, kind: str) -> None:
    """control_reply / action_reply: matched to the call by clientToken (never across devices)."""
    body = m.body or {}
    token = _token(body)
    code = body.get("code")
    code = int(code) if isinstance(code, (int, float)) and not isinstance(code, bool) and math.isfinite(code) else None
    status = body.get("status")
    status = status.replace("\x00", "") if isinstance(status, str) else None
    reply: dict[str, Any] = {"code": code, "status": status}
    if kind == "action":
        reply["response"] = body.get("response") if isinstance(body.get("response"), dict) else {}
    if not token or len(token) > 128:
        dev.uplink_fail += 1
        dev.diagnostic(device_logs.PAYLOAD_NO_FIELD, f"{kind}_reply without a usable clientToken", m)
        return
    actions = [CallRecord.status.set("replied"), CallRecord.reply.set(reply), CallRecord.replied_at.set(clock.now_s())]
    actions.append(CallRecord.code.set(code) if code is not None else CallRecord.code.remove())
    rec = CallRecord(key=f"{dev.pid}/{dev.dn}", token=token)
    try:
        rec.update(actions=actions, condition=CallRecord.token.exists() & (CallRecord.kind == kind)
                   & CallRecord.status.is_in("pending", "timeout"))
    except UpdateError as exc:
        if transient(exc):
            raise
        logger.info("reply matches no pending call", extra={"device": f"{dev.pid}/{dev.dn}", "kind": kind})
        return
    if kind == "action" and isinstance(body.get("response"), dict):
        _, problems = dev.product.model.check_action_output(rec.action_id or "", body["response"])
        for problem in problems:
            dev.diagnostic(device_logs.THING_MODEL_INVALID, f"{rec.action_id}: {problem.message}", m)


def _time_service(dev: _Device, m: _Msg) -> None:
    body = m.body or {}
    resource = body.get("resource")
    if body.get("type") != "get" or not isinstance(resource, list) or "time" not in resource:
        dev.uplink_fail += 1
        dev.diagnostic(device_logs.PAYLOAD_NO_FIELD, 'sys/operation supports {"type":"get","resource":["time"]}', m)
        return
    now = clock.now_ms()
    received = min(m.msg.timestamp_ms or now, now)
    dev.reply(m, {"type": "get", "time": now // 1000, "ntptime1": received, "ntptime2": now})


def _gateway(dev: _Device, m: _Msg) -> None:
    from . import gateways  # noqa: PLC0415 - gateways imports this module

    answer = gateways.handle(dev.pid, dev.dn, dev.product, m.body or {})
    if answer is None:
        dev.uplink_fail += 1
        dev.diagnostic(device_logs.PAYLOAD_NO_FIELD, "unknown gateway operation", m)
        return
    dev.reply(m, answer)


def _content_only(dev: _Device, m: _Msg) -> None:
    """Custom topics (passthrough: the broker / IoT policy already enforced the permission)."""


_PROPERTY_METHODS: dict[str, Callable[[_Device, _Msg, dict], None]] = {
    "report": _report,
    "get_status": _get_status,
    "clear_control": _clear_control,
    "report_info": _report_info,
}

def _ota_report(dev: _Device, m: _Msg) -> None:
    from . import ota  # noqa: PLC0415 - imported on first OTA message only

    ota.on_ota_report(dev, m)


def _resource_report(dev: _Device, m: _Msg) -> None:
    from . import ota  # noqa: PLC0415

    ota.on_resource_report(dev, m)


#: topic family -> handler; other services (OTA, resources) add theirs here
FAMILY_HANDLERS: dict[str, Callable[[_Device, _Msg], None]] = {
    "thing/up/property": _property,
    "thing/up/event": _events,
    "thing/up/action": _action,
    "sys/operation": _time_service,
    "gateway/operation": _gateway,
    topics.CUSTOM: _content_only,
    "ota/report": _ota_report,
    "resource/up/service": _resource_report,
}


# ===================================================================== writing


def _write_device(dev: _Device, tally: analytics.Tally, result: BatchResult) -> None:
    """The device's one UpdateItem (retried with fresher guards if a newer value won meanwhile)."""
    today = analytics.day_of(None)
    if dev.read and not _has_changes(dev) and dev.rec is not None and dev.rec.active_day == today \
            and dev.rec.dollar == dev.dollar:
        return
    ensured = False
    for _ in range(4):
        names: dict[str, str] = {"#dn": "device_name", "#en": "enabled", "#ad": "active_day"}
        values: dict[str, Any] = {":true": {"BOOL": True}, ":day": {"S": today}}
        sets = ["#ad = :day"]
        conds = ["attribute_exists(#dn)", "#en = :true"]
        if dev.updates:
            names.update({"#r": "reported", "#t": "time"})
            guard = len(dev.updates) <= MAX_CONDITIONED_PROPS
            for i, (prop, (value, at)) in enumerate(sorted(dev.updates.items())):
                names[f"#p{i}"] = prop
                values[f":v{i}"] = {"M": {"value": to_av(value), "time": {"N": str(at)}}}
                sets.append(f"#r.#p{i} = :v{i}")
                if guard:
                    values[f":t{i}"] = {"N": str(at)}
                    conds.append(f"(attribute_not_exists(#r.#p{i}) OR #r.#p{i}.#t <= :t{i})")
        if dev.dollar is not None:
            names["#dl"] = "dollar"
            values[":dl"] = {"BOOL": dev.dollar}
            sets.append("#dl = :dl")
        if dev.clear_desired:
            names["#ds"] = "desired"
            values[":empty"] = {"M": {}}
            sets.append("#ds = :empty")
        if dev.info is not None:
            names.update({"#info": "info", "#fw": "firmware_version"})
            values.update({":info": to_av(dev.info), ":fw": {"S": dev.firmware or ""}})
            sets += ["#info = :info", "#fw = :fw"]
        if dev.label is not None:
            names["#rl"] = "region_label"
            values[":rl"] = {"S": dev.label} if dev.label else {"NULL": True}
            sets.append("#rl = :rl")
        pos_region = analytics.region_of(*dev.position) if dev.position is not None else None
        if pos_region is not None:
            names["#rp"] = "region_pos"
            values[":rp"] = {"S": pos_region}
            sets.append("#rp = :rp")
        request = {"TableName": DeviceRecord.Meta.table_name,
                   "Key": {"product_id": {"S": dev.pid}, "device_name": {"S": dev.dn}},
                   "UpdateExpression": "SET " + ", ".join(sets), "ConditionExpression": " AND ".join(conds),
                   "ExpressionAttributeNames": names, "ExpressionAttributeValues": values,
                   "ReturnValues": "ALL_OLD", "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}
        try:
            result.requests += 1
            out = _ddb().update_item(**request)
        except ClientError as exc:
            code = _error_code(exc)
            if code == "ConditionalCheckFailedException":
                item = exc.response.get("Item")
                if not item:
                    dev.rec = None
                    _drop(dev, tally)
                    return
                old = DeviceRecord.from_raw_data(item)
                if not old.enabled:
                    dev.rec = old
                    _drop(dev, tally)
                    return
                _keep_newer(dev, old)
                continue
            if code == "ValidationException":
                if not ensured:
                    ensured = True
                    _ensure_maps(dev, result)  # a record written before the reported map existed
                    continue
                # not a passing condition: retrying would fail forever (e.g. the item outgrew 400 KB)
                logger.exception("device state refused by DynamoDB", extra={"device": f"{dev.pid}/{dev.dn}"})
                dev.log("diagnostic", code=device_logs.DEV_CONN_SYSTEM_ERR,
                        message=f"the device state could not be stored: {str(exc)[:200]}")
                return
            logger.exception("device update failed", extra={"device": f"{dev.pid}/{dev.dn}"})
            dev.failed = True
            return
        except BotoCoreError:
            logger.exception("device update failed", extra={"device": f"{dev.pid}/{dev.dn}"})
            dev.failed = True
            return
        old = DeviceRecord.from_raw_data(out["Attributes"]) if out.get("Attributes") else None
        _after_update(dev, old, today, pos_region, tally)
        return
    logger.error("device update kept losing to newer values", extra={"device": f"{dev.pid}/{dev.dn}"})
    dev.failed = True


def _has_changes(dev: _Device) -> bool:
    return bool(dev.updates or dev.clear_desired or dev.info is not None or dev.label is not None
                or dev.position is not None)


def _keep_newer(dev: _Device, old: DeviceRecord) -> None:
    stored = plain(old.reported) if old.reported is not None else {}
    for prop in list(dev.updates):
        entry = stored.get(prop)
        if isinstance(entry, dict) and isinstance(entry.get("time"), (int, float)) \
                and int(entry["time"]) > dev.updates[prop][1]:
            del dev.updates[prop]


def _ensure_maps(dev: _Device, result: BatchResult) -> None:
    result.requests += 1
    _ddb().update_item(TableName=DeviceRecord.Meta.table_name,
                       Key={"product_id": {"S": dev.pid}, "device_name": {"S": dev.dn}},
                       UpdateExpression="SET #r = if_not_exists(#r, :e), #d = if_not_exists(#d, :e)",
                       ConditionExpression="attribute_exists(#dn)",
                       ExpressionAttributeNames={"#r": "reported", "#d": "desired", "#dn": "device_name"},
                       ExpressionAttributeValues={":e": {"M": {}}})


def _after_update(dev: _Device, old: DeviceRecord | None, today: str, pos_region: str | None,
                  tally: analytics.Tally) -> None:
    first = dev.msgs[0].msg.timestamp_ms or None
    if old is None or old.active_day != today:
        tally.add(dev.pid, "active", 1, first)
    if old is None:
        return
    old_region = old.region_label or old.region_pos
    label = old.region_label if dev.label is None else (dev.label or None)
    new_region = label or pos_region or old.region_pos
    if new_region != old_region:
        analytics.move_region(dev.pid, old_region, new_region)


def _write_rows(rows: list[tuple[_Device | None, Any]], result: BatchResult) -> None:
    """All rows of the batch in BatchWriteItem requests of 25, unprocessed items retried; the
    devices whose rows did not land are marked failed (their messages are redelivered)."""
    tagged = [(dev, row.Meta.table_name, row.serialize()) for dev, row in rows]
    for start in range(0, len(tagged), 25):
        chunk = tagged[start:start + 25]
        request: dict[str, list[Any]] = {}
        for _, table, item in chunk:
            request.setdefault(table, []).append({"PutRequest": {"Item": item}})
        try:
            for attempt in range(8):
                result.requests += 1
                out = _ddb().batch_write_item(RequestItems=request)
                request = out.get("UnprocessedItems") or {}
                if not request:
                    break
                time.sleep(min(0.05 * 2 ** attempt, 1.0))
            if request:
                raise RuntimeError("rows stayed unprocessed")
        except ClientError as exc:
            if _error_code(exc) != "ValidationException":
                _rows_failed(chunk)
                continue
            _put_one_by_one(chunk, result)  # one bad row must not sink its neighbours
        except Exception:  # noqa: BLE001
            _rows_failed(chunk)


def _rows_failed(chunk: list[tuple[_Device | None, str, dict[str, Any]]]) -> None:
    logger.exception("history/log rows failed")
    for dev, _, _ in chunk:
        if dev is not None:
            dev.failed = True


def _put_one_by_one(chunk: list[tuple[_Device | None, str, dict[str, Any]]], result: BatchResult) -> None:
    for dev, table, item in chunk:
        try:
            result.requests += 1
            _ddb().put_item(TableName=table, Item=item)
        except ClientError as exc:
            if _error_code(exc) == "ValidationException":
                logger.error("a history/log row was refused and dropped",
                             extra={"table": table, "key": item.get("key"), "error": str(exc)[:200]})
                continue
            _rows_failed([(dev, table, item)])
        except BotoCoreError:
            _rows_failed([(dev, table, item)])


# ===================================================================== cloud → device


def send(pid: str, dn: str, family: str, message: dict, *, dollar: bool | None, qos: int = 1) -> bool:
    """Publish a cloud-originated downlink (control, action) on the form the device last used —
    both forms when unknown — with its content log and counters.  True if any form was received."""
    forms = [dollar] if dollar is not None else [False, True]
    delivered = False
    for form in forms:
        topic = topics.down(family, pid, dn, dollar=form)
        ok = deliver(topic, message, qos)
        delivered = delivered or ok
        device_logs.write(pid, dn, "content", direction="down", topic=topic, payload=message)
    analytics.count(pid, "downlink", 1)
    if not delivered:
        analytics.count(pid, "downlink_fail", 1)
        device_logs.diagnostic(pid, dn, device_logs.PUB_TO_DEV_NO_SUBSCRIBER,
                               "no subscriber received the message: the device is offline or not subscribed",
                               topic=topics.down(family, pid, dn, dollar=bool(dollar)), payload=message,
                               direction="down")
    return delivered
