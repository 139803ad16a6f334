"""The uplink pipeline (SPEC §6.4): one batch of device → cloud messages, stage by stage.

``process_batch`` takes the uplink stream's batch (:class:`~chalicelib.protocol.events.UplinkMessage`)
and runs these stages, in order; each is a function below, and each family stage and hand-off is
one line in :data:`FAMILY_STAGES` / :data:`HANDOFFS`:

1. **parse** — topic and JSON body; a message on an unknown topic is dropped (logged);
2. **group** — per device, in arrival order, with its product from the catalogue; a gateway's
   message for a subdevice is checked against the topology (SPEC §6.5);
3. **read** — devices whose messages depend on their state (anything but ``report``) are read
   with their shadows, one ``BatchGetItem`` per 50 devices; unknown or disabled devices are
   dropped with a diagnostic;
4. **handle** — each message goes to the stage of its topic family (:data:`FAMILY_STAGES`): the
   thing-model protocol (``telemetry``), gateways, OTA and resources (``ota.device``), custom
   topics; a stage records on the :class:`~.uplink_view.DeviceView` what to store and answer;
   every message gets one content-log row, which also carries the cloud's reply to it and, for a
   report, the accepted values (the report's history);
5. **store** — one ``UpdateItem`` per device per batch on its **shadow** (``services/shadow.py``,
   a small item apart from the device record): the newest value per property into the
   ``reported`` map, each guarded by ``attribute_not_exists OR time <=`` so only newer times win,
   a complete shadow and its ``enabled`` flag in the same condition (no read), the fields any
   stage set, and ``ReturnValues=ALL_OLD`` to learn the previous activity day and region for
   free (a device without a shadow yet gets one from its record, once); then one
   ``BatchWriteItem`` per 25 log and history rows of the whole batch;
6. **reply** — the answers, through the device publisher, on the topic form the device used;
7. **count** — one ``UpdateItem`` per product for every analytics counter (analytics.Tally);
8. **hand off** — the accepted messages to the rule engine and the data streams
   (:data:`HANDOFFS`); indexes a hand-off could not take are re-delivered.

The common path — a valid one-property ``report`` — costs one shadow update and one row (two
write units: measured by ``bench/uplink.py``) plus the batch's share of the counter updates,
and no read; ``tests/integration/test_telemetry.py`` counts the requests.  One bad message never blocks its neighbours: a
malformed payload is answered or logged as a diagnostic and counts as processed; only storage
failures (throttling after retries) mark the messages of the devices concerned as failed so the
stream redelivers them.  History rows have deterministic sort keys, so a redelivered batch
overwrites rather than duplicates them.

Adding a stage: a family stage is ``fn(dev: DeviceView, m: Received) -> None``; a hand-off is
``fn(accepted: list[Accepted]) -> Iterable[int]`` (the batch indexes to re-deliver).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..core import clock
from ..core.observability import logger
from ..models import dynamo
from ..models.devices import DeviceRecord, ShadowRecord
from ..models.dynamo import plain, to_av, transient
from ..protocol import diagnostics, topics
from ..protocol.events import UplinkMessage
from . import analytics, device_logs, downlink, gateways, location, rules, shadow, streams, telemetry
from .catalog import product_info
from .ota import device as ota_device
from .uplink_view import Accepted, BatchResult, DeviceView, Received

MAX_CONDITIONED_PROPS = 60

#: topic family -> the stage that handles its messages
FAMILY_STAGES: dict[str, Callable[[DeviceView, Received], None]] = {
    "thing/up/property": telemetry.on_property,
    "thing/up/event": telemetry.on_event,
    "thing/up/action": telemetry.on_action,
    "sys/operation": telemetry.on_time_service,
    "gateway/operation": gateways.on_operation,
    topics.CUSTOM: telemetry.on_custom,
    "ota/report": ota_device.on_ota_report,
    "resource/up/service": ota_device.on_resource_report,
}
#: families whose payloads their stage parses itself (passthrough: no JSON check here)
RAW_FAMILIES = (topics.CUSTOM, "ota/report", "resource/up/service")

#: after every message is handled, before the writes: stages over the whole batch's reports
#: (``fn(devices with reports, result)``; they may add requests to ``result.requests``)
BATCH_STAGES: tuple[Callable[[list[DeviceView], BatchResult], None], ...] = (location.on_batch,)

#: after the writes: who else sees the accepted messages
HANDOFFS: tuple[Callable[[list[Accepted]], Iterable[int]], ...] = (
    rules.on_accepted,
    streams.on_accepted,
)


# ===================================================================== 1. parse


def parse(index: int, msg: UplinkMessage) -> Received | None:
    parsed = topics.parse(msg.topic)
    if parsed is None or parsed.direction == topics.DOWN:
        logger.warning("uplink on an unknown topic dropped", extra={"topic": msg.topic[:256]})
        return None
    m = Received(index, msg, parsed)
    if parsed.family in RAW_FAMILIES:
        return m  # passthrough here; their stages own their payloads
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


# ===================================================================== the batch


def process_batch(messages: list[UplinkMessage]) -> BatchResult:
    """Process one uplink batch; never raises for a bad message (see the module doc)."""
    result = BatchResult()
    tally = analytics.Tally()
    devices = group(messages, result)
    read_devices([d for d in devices.values() if d.read], result)
    for dev in devices.values():
        if dev.failed:
            continue
        if dev.read and (dev.rec is None or not dev.rec.enabled):
            drop(dev, tally, disabled=dev.rec is not None)
            continue
        handle_all(dev)
    for stage in BATCH_STAGES:
        try:
            stage([d for d in devices.values() if not d.failed and not d.dropped and d.reports], result)
        except Exception as exc:  # noqa: BLE001 - a batch stage's storage failure re-delivers, others are logged
            if transient(exc):
                for d in devices.values():
                    d.failed = d.failed or bool(d.reports)
            else:
                logger.exception("uplink batch stage failed", extra={"stage": getattr(stage, "__qualname__", "")})
    for dev in devices.values():
        if not dev.failed and not dev.dropped:
            store_device(dev, tally, result)
    store_rows([(d, row) for d in devices.values() if not d.failed for row in d.rows], result)
    reply_and_count(devices, tally, result)
    result.requests += tally.flush()
    result.failed.extend(hand_off(devices))
    result.failed = sorted(set(result.failed))
    return result


# ===================================================================== 2. group


def group(messages: list[UplinkMessage], result: BatchResult) -> dict[tuple[str, str], DeviceView]:
    devices: dict[tuple[str, str], DeviceView] = {}
    for index, msg in enumerate(messages):
        try:
            m = parse(index, msg)
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
            dev = devices[key] = DeviceView(key[0], key[1], product)
        if msg.client_id and msg.client_id != m.topic.client_id and not _may_act(msg.client_id, m.topic):
            m.refused_by = msg.client_id  # logged and refused below, once the device is known
        dev.msgs.append(m)
        if not m.is_report or m.refused_by:
            dev.read = True
    return devices


def _may_act(client_id: str, topic: topics.Topic) -> bool:
    """A gateway may publish for a subdevice it has bound and brought online (SPEC §6.5)."""
    try:
        gw_pid, gw_dn = topics.split_client_id(client_id)
    except ValueError:
        return False
    try:
        return gateways.may_act_for(gw_pid, gw_dn, topic.product_id, topic.device_name)
    except Exception:  # noqa: BLE001
        logger.exception("gateway permission check failed")
        return False


# ===================================================================== 3. read


def read_devices(devs: list[DeviceView], result: BatchResult) -> None:
    """Each device's record and shadow, one ``BatchGetItem`` per 50 devices (100 keys)."""
    tables = (DeviceRecord.Meta.table_name, ShadowRecord.Meta.table_name)
    by_key = {(d.pid, d.dn): d for d in devs}
    keys = list(by_key)
    for start in range(0, len(keys), 50):
        chunk = keys[start : start + 50]
        wanted = [{"product_id": {"S": p}, "device_name": {"S": n}} for p, n in chunk]
        pending: dict[str, Any] = {t: {"ConsistentRead": True, "Keys": wanted} for t in tables}
        shadows: dict[tuple[str, str], ShadowRecord] = {}
        try:
            for attempt in range(8):
                result.requests += 1
                out = dynamo.client().batch_get_item(RequestItems=pending)
                responses = out.get("Responses") or {}
                for item in responses.get(tables[0], []):
                    rec = DeviceRecord.from_raw_data(item)
                    by_key[(rec.product_id, rec.device_name)].rec = rec
                for item in responses.get(tables[1], []):
                    found = ShadowRecord.from_raw_data(item)
                    shadows[(found.product_id, found.device_name)] = found
                pending = out.get("UnprocessedKeys") or {}
                if not pending:
                    break
                time.sleep(min(0.05 * 2**attempt, 1.0))
            if pending:
                raise RuntimeError("device reads stayed unprocessed")
        except Exception as exc:  # noqa: BLE001
            logger.exception("device reads failed")
            for key in chunk:
                # a throttled read is redelivered; anything else would fail forever: the devices
                # count as unknown and their messages are dropped (logged above)
                by_key[key].failed = transient(exc)
            continue
        for key in chunk:
            dev = by_key[key]
            if dev.rec is not None:
                dev.shadow = shadow.state(dev.rec, shadows.get(key))


def drop(dev: DeviceView, tally: analytics.Tally, *, disabled: bool) -> None:
    """Messages of an unknown, deleted or disabled device: dropped, a diagnostic where it is known."""
    dev.dropped = True
    dev.rows, dev.replies = [], []
    if not disabled:
        logger.info("uplink of an unknown device dropped", extra={"device": f"{dev.pid}/{dev.dn}"})
        return
    for m in dev.msgs:
        dev.log("content", direction="up", topic=m.msg.topic, payload=m.msg.payload, ts_ms=m.msg.timestamp_ms or None)
        dev.diagnostic(diagnostics.DEV_PUB_UNAUTHORIZED, "the device is disabled: message dropped", m)
    tally.add(dev.pid, "uplink", len(dev.msgs))
    tally.add(dev.pid, "uplink_fail", len(dev.msgs))


# ===================================================================== 4. handle


def handle_all(dev: DeviceView) -> None:
    for m in dev.msgs:
        try:
            handle(dev, m)
        except Exception as exc:  # noqa: BLE001 - one message never blocks the batch
            if transient(exc):
                dev.failed = True
                return
            logger.exception("uplink message failed", extra={"topic": m.msg.topic[:256]})
            dev.failure(diagnostics.DEV_CONN_SYSTEM_ERR, "the cloud could not process this message", m)


def handle(dev: DeviceView, m: Received) -> None:
    dev.request(m)
    if m.topic.family != topics.CUSTOM:
        dev.dollar = m.topic.dollar
    if m.refused_by:
        dev.failure(
            diagnostics.DEV_PUB_UNAUTHORIZED, f"client {m.refused_by} may not publish on this device's topics", m
        )
        return
    if m.bad_json:
        dev.failure(diagnostics.PAYLOAD_NOT_JSON, "the payload is not a JSON object", m)
        return
    stage = FAMILY_STAGES.get(m.topic.family)
    if stage is not None:
        stage(dev, m)


# ===================================================================== 5. store


def store_device(dev: DeviceView, tally: analytics.Tally, result: BatchResult) -> None:
    """The device's one shadow ``UpdateItem`` (retried with fresher guards if a newer value won
    meanwhile); a ``report_info`` also updates the device record (rare: once per boot)."""
    today = analytics.day_of(None)
    if (dev.info is not None or dev.fields) and not _update_record(dev, tally, result):
        return
    if (
        dev.read
        and not _has_changes(dev)
        and dev.shadow is not None
        and dev.shadow.active_day == today
        and dev.shadow.dollar == dev.dollar
    ):
        return
    ensured = False
    for _ in range(4):
        request = _shadow_update(dev, today)
        try:
            result.requests += 1
            out = dynamo.client().update_item(**request)
        except ClientError as exc:
            code = dynamo.error_code(exc)
            item = exc.response.get("Item") if code == "ConditionalCheckFailedException" else None
            if code == "ConditionalCheckFailedException" and item and "reported" in item:
                stored = ShadowRecord.from_raw_data(item)
                if stored.enabled is False:
                    drop(dev, tally, disabled=True)
                    return
                _keep_newer(dev, plain(stored.reported))
                continue
            if code in ("ConditionalCheckFailedException", "ValidationException") and not ensured:
                # no shadow yet, or a partial one: make it from the device record (which copies a
                # record's values written before shadows existed), then write again
                ensured = True
                result.requests += 3  # two consistent reads and one transaction
                if shadow.ensure(dev.pid, dev.dn) is None:
                    drop(dev, tally, disabled=False)
                    return
                continue
            if code == "ValidationException":
                # not a passing condition: retrying would fail forever (e.g. the item outgrew 400 KB)
                _refused(dev, exc)
                return
            logger.exception("device update failed", extra={"device": f"{dev.pid}/{dev.dn}"})
            dev.failed = True
            return
        except BotoCoreError:
            logger.exception("device update failed", extra={"device": f"{dev.pid}/{dev.dn}"})
            dev.failed = True
            return
        old = ShadowRecord.from_raw_data(out["Attributes"]) if out.get("Attributes") else None
        _after_update(dev, old, today, request["ExpressionAttributeValues"].get(":rp"), tally)
        if dev.shadow_extra_valid():
            old_plain = dynamo.item(out.get("Attributes") or {})
            for callback in dev.on_stored:
                callback(old_plain)
        return
    logger.error("device update kept losing to newer values", extra={"device": f"{dev.pid}/{dev.dn}"})
    dev.failed = True


def _shadow_update(dev: DeviceView, today: str) -> dict[str, Any]:
    """The shadow's ``UpdateItem``: conditioned on a complete, enabled shadow, and per property on
    the stored value being older; returns the old item (activity day, region) for free."""
    names: dict[str, str] = {"#r": "reported", "#en": "enabled", "#ad": "active_day"}
    values: dict[str, Any] = {":true": {"BOOL": True}, ":day": {"S": today}}
    sets = ["#ad = :day"]
    conds = ["attribute_exists(#r)", "#en = :true"]
    if dev.updates:
        names["#t"] = "time"
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
    if dev.label is not None:
        names["#rl"] = "region_label"
        values[":rl"] = {"S": dev.label} if dev.label else {"NULL": True}
        sets.append("#rl = :rl")
    pos_region = analytics.region_of(*dev.position) if dev.position is not None else None
    if pos_region is not None:
        names["#rp"] = "region_pos"
        values[":rp"] = {"S": pos_region}
        sets.append("#rp = :rp")
    removes: list[str] = []
    if dev.shadow_extra_valid():
        for i, (attr, value) in enumerate(sorted(dev.shadow_set.items())):
            names[f"#x{i}"] = attr
            values[f":x{i}"] = to_av(value)
            sets.append(f"#x{i} = :x{i}")
        for i, attr in enumerate(dev.shadow_remove):
            names[f"#y{i}"] = attr
            removes.append(f"#y{i}")
    return {
        "TableName": ShadowRecord.Meta.table_name,
        "Key": {"product_id": {"S": dev.pid}, "device_name": {"S": dev.dn}},
        "UpdateExpression": "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else ""),
        "ConditionExpression": " AND ".join(conds),
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
        "ReturnValues": "ALL_OLD",
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }


def _update_record(dev: DeviceView, tally: analytics.Tally, result: BatchResult) -> bool:
    """``report_info`` (and any stage's fields) onto the device record; False when the device is
    gone or the write failed (then the device's messages are dropped or redelivered)."""
    names: dict[str, str] = {"#dn": "device_name"}
    values: dict[str, Any] = {}
    sets = []
    if dev.info is not None:
        names.update({"#info": "info", "#fw": "firmware_version"})
        values.update({":info": to_av(dev.info), ":fw": {"S": dev.firmware or ""}})
        sets += ["#info = :info", "#fw = :fw"]
    for i, (name, value) in enumerate(sorted(dev.fields.items())):
        names[f"#f{i}"] = name
        values[f":f{i}"] = to_av(value)
        sets.append(f"#f{i} = :f{i}")
    try:
        result.requests += 1
        dynamo.client().update_item(
            TableName=DeviceRecord.Meta.table_name,
            Key={"product_id": {"S": dev.pid}, "device_name": {"S": dev.dn}},
            UpdateExpression="SET " + ", ".join(sets),
            ConditionExpression="attribute_exists(#dn)",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )
        return True
    except ClientError as exc:
        code = dynamo.error_code(exc)
        if code == "ConditionalCheckFailedException":
            drop(dev, tally, disabled=False)
            return False
        if code == "ValidationException":
            _refused(dev, exc)
            return True
        logger.exception("device update failed", extra={"device": f"{dev.pid}/{dev.dn}"})
    except BotoCoreError:
        logger.exception("device update failed", extra={"device": f"{dev.pid}/{dev.dn}"})
    dev.failed = True
    return False


def _refused(dev: DeviceView, exc: ClientError) -> None:
    logger.exception("device state refused by DynamoDB", extra={"device": f"{dev.pid}/{dev.dn}"})
    dev.log(
        "diagnostic",
        code=diagnostics.DEV_CONN_SYSTEM_ERR,
        message=f"the device state could not be stored: {str(exc)[:200]}",
    )


def _has_changes(dev: DeviceView) -> bool:
    return bool(
        dev.updates
        or dev.clear_desired
        or dev.label is not None
        or dev.position is not None
        or dev.shadow_set
        or dev.shadow_remove
    )


def _keep_newer(dev: DeviceView, stored: dict[str, Any]) -> None:
    for prop in list(dev.updates):
        entry = stored.get(prop)
        if (
            isinstance(entry, dict)
            and isinstance(entry.get("time"), (int, float))
            and int(entry["time"]) > dev.updates[prop][1]
        ):
            del dev.updates[prop]


def _after_update(
    dev: DeviceView, old: ShadowRecord | None, today: str, pos: dict[str, Any] | None, tally: analytics.Tally
) -> None:
    first = dev.msgs[0].msg.timestamp_ms or None
    if old is None or old.active_day != today:
        tally.add(dev.pid, "active", 1, first)
    if dev.dollar is not None and (old is None or old.dollar != dev.dollar):
        _note_topic_form(dev)
    if old is None:
        return
    pos_region = pos["S"] if pos else None
    old_region = old.region_label or old.region_pos
    label = old.region_label if dev.label is None else (dev.label or None)
    new_region = label or pos_region or old.region_pos
    if new_region != old_region:
        analytics.move_region(dev.pid, old_region, new_region)


def _note_topic_form(dev: DeviceView) -> None:
    """The device's topic form changed (its first message, or a new firmware): the device record
    keeps it too, for the paths that address many devices from their records (OTA, controls)."""
    try:
        dynamo.client().update_item(
            TableName=DeviceRecord.Meta.table_name,
            Key={"product_id": {"S": dev.pid}, "device_name": {"S": dev.dn}},
            UpdateExpression="SET #dl = :dl",
            ConditionExpression="attribute_exists(#dn)",
            ExpressionAttributeNames={"#dl": "dollar", "#dn": "device_name"},
            ExpressionAttributeValues={":dl": {"BOOL": bool(dev.dollar)}},
        )
    except (ClientError, BotoCoreError):
        # the downlinks then use both forms until the next change is noted: never lost
        logger.warning("topic form not noted on the device record", extra={"device": f"{dev.pid}/{dev.dn}"})


def store_rows(rows: list[tuple[DeviceView | None, Any]], result: BatchResult) -> None:
    """All rows of the batch in BatchWriteItem requests of 25, unprocessed items retried; the
    devices whose rows did not land are marked failed (their messages are redelivered)."""
    tagged = [(dev, row.Meta.table_name, row.serialize()) for dev, row in rows]
    for start in range(0, len(tagged), 25):
        chunk = tagged[start : start + 25]
        request: dict[str, list[Any]] = {}
        for _, table, item in chunk:
            request.setdefault(table, []).append({"PutRequest": {"Item": item}})
        try:
            for attempt in range(8):
                result.requests += 1
                out = dynamo.client().batch_write_item(RequestItems=request)
                request = out.get("UnprocessedItems") or {}
                if not request:
                    break
                time.sleep(min(0.05 * 2**attempt, 1.0))
            if request:
                raise RuntimeError("rows stayed unprocessed")
        except ClientError as exc:
            if dynamo.error_code(exc) != "ValidationException":
                _rows_failed(chunk)
                continue
            _put_one_by_one(chunk, result)  # one bad row must not sink its neighbours
        except Exception:  # noqa: BLE001
            _rows_failed(chunk)


def _rows_failed(chunk: list[tuple[DeviceView | None, str, dict[str, Any]]]) -> None:
    logger.exception("history/log rows failed")
    for dev, _, _ in chunk:
        if dev is not None:
            dev.failed = True


def _put_one_by_one(chunk: list[tuple[DeviceView | None, str, dict[str, Any]]], result: BatchResult) -> None:
    for dev, table, item in chunk:
        try:
            result.requests += 1
            dynamo.client().put_item(TableName=table, Item=item)
        except ClientError as exc:
            if dynamo.error_code(exc) == "ValidationException":
                logger.error(
                    "a history/log row was refused and dropped",
                    extra={"table": table, "key": item.get("key"), "error": str(exc)[:200]},
                )
                continue
            _rows_failed([(dev, table, item)])
        except BotoCoreError:
            _rows_failed([(dev, table, item)])


# ===================================================================== 6-7. reply, count


def reply_and_count(devices: dict[tuple[str, str], DeviceView], tally: analytics.Tally, result: BatchResult) -> None:
    late_rows: list[tuple[DeviceView | None, Any]] = []
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
            ok = downlink.deliver(reply.topic, reply.payload, reply.qos)
            tally.add(dev.pid, "downlink", 1)
            if not ok:
                tally.add(dev.pid, "downlink_fail", 1)
                late_rows.append(
                    (
                        None,
                        device_logs.entry(
                            dev.pid,
                            dev.dn,
                            "diagnostic",
                            code=diagnostics.PUB_TO_DEV_NO_SUBSCRIBER,
                            direction="down",
                            topic=reply.topic,
                            payload=reply.payload,
                            message="no subscriber received the reply: the device is not subscribed to this topic",
                        ),
                    )
                )
    if late_rows:
        store_rows(late_rows, result)


# ===================================================================== 8. hand off


def accepted_of(devices: dict[tuple[str, str], DeviceView]) -> list[Accepted]:
    return [
        Accepted(
            m.index,
            m.topic.product_id,
            m.topic.device_name,
            m.msg.topic.lstrip("$"),
            m.topic.family,
            m.msg.payload,
            m.msg.qos,
            m.msg.timestamp_ms or clock.now_ms(),
            m.body,
        )
        for d in devices.values()
        if not d.failed and not d.dropped
        for m in d.msgs
        if not m.refused_by
    ]


def hand_off(devices: dict[tuple[str, str], DeviceView]) -> list[int]:
    """The accepted messages to every hand-off; the batch indexes any of them could not take."""
    accepted = accepted_of(devices)
    if not accepted:
        return []
    redo: set[int] = set()
    for handoff in HANDOFFS:
        try:
            redo.update(handoff(accepted))
        except Exception:  # noqa: BLE001 - a hand-off that fails outright re-delivers what it was given
            logger.exception(
                "uplink hand-off failed; its messages will be re-delivered",
                extra={"handoff": getattr(handoff, "__qualname__", str(handoff))},
            )
            redo.update(a.index for a in accepted)
    return sorted(redo)
