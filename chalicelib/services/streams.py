"""Message push data streams (SPEC §9.3).

A stream = device-data input (a product and chosen properties; none chosen = all) → a filter
(conditions on properties joined all-AND or all-OR; operators ``= != > >= < <=`` and
``contains``) → outputs.  The **custom push** output POSTs
``{"RequestId","ProductId","DeviceName","MsgTitle","MsgContent"}`` to a server through the
webhook engine (signed with its token as in §9.2, Standard Webhooks headers too, retries and
dead letters; delivery log target ``stream/{id}``).  Title and content are templates:
``${property}`` / ``$property`` name the filtered data, ``${ProductId}``, ``${DeviceName}`` and
``${Alias}`` (the device's ``alias`` tag, else its name) the system fields.  The **chat push**
output ``{"type":"chat","channel":"slack:T…:C…"|"feishu:<id>","title"?,"content"?}`` renders the
same templates into a chat message delivered through the chat path (``delivery.deliver_chat``:
retries, dead letters; delivery log target ``stream/{id}[/i]``); its channel is checked when the
stream is saved (well formed; a Feishu channel registered).

Streams run on every accepted property ``report`` (from the rule engine's uplink hook); a
disabled stream processes nothing.  Enabling a stream verifies its URLs (Echostr).
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from ..core import clock, errors, ids
from ..core.config import settings
from ..core.observability import logger
from ..models.devices import DeviceRecord
from ..models.products import ProductRecord
from ..models.rules import StreamRecord
from ..protocol.chat import Message
from . import catalog, chat_alerts, delivery
from .paging import checked_start, expect_key, fill_page
from .uplink_view import Accepted

ACCOUNT = "main"
OPS = ("=", "!=", ">", ">=", "<", "<=", "contains")
MAX_CONDITIONS = 10
MAX_OUTPUTS = 5
_REF = re.compile(r"\$\{([A-Za-z0-9_]+)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


# ===================================================================== validation


def _conditions(values: Any) -> list[dict[str, Any]]:
    if values is None:
        return []
    if not isinstance(values, list) or len(values) > MAX_CONDITIONS:
        raise errors.CONDITION_INVALID(f"conditions must be a list of at most {MAX_CONDITIONS}", "conditions")
    out = []
    for i, c in enumerate(values):
        p = f"conditions[{i}]"
        if not isinstance(c, dict) or set(c) - {"property", "op", "value"}:
            raise errors.CONDITION_INVALID(f"{p} must be {{property, op, value}}", p)
        prop, op, value = c.get("property"), c.get("op"), c.get("value")
        if not isinstance(prop, str) or not re.fullmatch(r"[A-Za-z0-9_]{1,64}", prop):
            raise errors.CONDITION_INVALID(f"{p}.property must be a property id", f"{p}.property")
        if op not in OPS:
            raise errors.CONDITION_INVALID(f"{p}.op must be one of {' '.join(OPS)}", f"{p}.op")
        if isinstance(value, (dict, list)) or value is None:
            raise errors.CONDITION_INVALID(f"{p}.value must be a number, string or boolean", f"{p}.value")
        out.append({"property": prop, "op": op, "value": value})
    return out


def _outputs(values: Any, previous: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    if not isinstance(values, list) or not 1 <= len(values) <= MAX_OUTPUTS:
        raise errors.OUTPUT_INVALID(f"outputs must hold 1-{MAX_OUTPUTS} outputs", "outputs")
    out = []
    for i, o in enumerate(values):
        p = f"outputs[{i}]"
        if not isinstance(o, dict):
            raise errors.OUTPUT_INVALID(f"{p} must be an object", p)
        o = {k: v for k, v in o.items() if k not in ("token_set", "secret_set")}
        if o.get("type") not in ("custom_push", "chat"):
            raise errors.OUTPUT_INVALID(f"{p}.type must be custom_push or chat", f"{p}.type")
        for name, limit in (("title", 256), ("content", 2048)):
            v = o.get(name, "")
            if not isinstance(v, str) or len(v) > limit:
                raise errors.OUTPUT_INVALID(f"{p}.{name} must be a string of at most {limit} characters", f"{p}.{name}")
        if o["type"] == "chat":
            channel = chat_alerts.check_channel(o.get("channel"), f"{p}.channel")
            if not (o.get("title") or o.get("content")):
                raise errors.OUTPUT_INVALID(f"{p}: a chat push needs a title or a content", f"{p}.content")
            out.append(
                {"type": "chat", "channel": channel, "title": o.get("title", ""), "content": o.get("content", "")}
            )
            continue
        url = delivery.check_url(o.get("url"), f"{p}.url")
        token = o.get("token")
        if token is not None and (not isinstance(token, str) or not re.fullmatch(r"[A-Za-z0-9_\-]{1,64}", token)):
            raise errors.OUTPUT_INVALID(f"{p}.token must be 1-64 letters, digits, _ or -", f"{p}.token")
        # views only say token_set/secret_set: an edit that re-sends the same URL keeps them
        if "token" not in o:
            token = delivery.kept_secret({"url": url}, previous, "token")
        secret = o.get("secret") or delivery.kept_secret({"url": url}, previous, "secret")
        item = {
            "type": "custom_push",
            "url": url,
            "title": o.get("title", ""),
            "content": o.get("content", ""),
            "secret": secret or delivery.new_secret(),
        }
        if token:
            item["token"] = token
        out.append(item)
    return out


def _properties(values: Any) -> list[str]:
    if values is None:
        return []
    if (
        not isinstance(values, list)
        or len(values) > 100
        or not all(isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9_]{1,64}", v) for v in values)
    ):
        raise errors.PROPERTIES_INVALID("properties must be a list of property ids", "properties")
    return list(dict.fromkeys(values))


def _verify(outputs: list[dict[str, Any]]) -> None:
    for i, o in enumerate(outputs):
        if o.get("type") == "chat":
            continue  # a chat channel was checked when saved; it has no Echostr endpoint
        delivery.verify_callback(o["url"], o.get("token"), f"outputs[{i}].url")


# ===================================================================== CRUD


def resource_of(rec: StreamRecord) -> str:
    """A stream is a resource of its product (SPEC §2): ``product/{pid}/stream/{id}``."""
    return f"product/{rec.product_id}/stream/{rec.stream_id}"


def resource_of_id(stream_id: str) -> str:
    try:
        return resource_of(StreamRecord.get(ACCOUNT, stream_id))
    except StreamRecord.DoesNotExist:
        return f"stream/{stream_id}"


def _secrets_of(outputs: list[dict[str, Any]] | None) -> set[str]:
    return {o[k] for o in outputs or [] for k in delivery.SECRET_FIELDS if o.get(k)}


def view(rec: StreamRecord, reveal: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
    """The stream as responses show it: output tokens and secrets only in ``reveal``."""
    return {
        "id": rec.stream_id,
        "name": rec.name,
        "product_id": rec.product_id,
        "resource": resource_of(rec),
        "properties": rec.properties or [],
        "match": rec.match,
        "conditions": rec.conditions or [],
        "outputs": [delivery.masked(o, frozenset(reveal)) for o in rec.outputs or []],
        "enabled": bool(rec.enabled),
        "created_at": int(rec.created_at),
        "updated_at": int(rec.updated_at),
    }


def owner(stream_id: str) -> tuple[str, StreamRecord]:
    """(resource, record) of a stream, for the route kit's per-item decision."""
    rec = _get(stream_id)
    return resource_of(rec), rec


def _get(stream_id: str) -> StreamRecord:
    try:
        return StreamRecord.get(ACCOUNT, stream_id, consistent_read=True)
    except StreamRecord.DoesNotExist:
        raise errors.STREAM_NOT_EXIST(f"stream {stream_id} does not exist", "stream_id") from None


def _product_exists(pid: str) -> None:
    try:
        ProductRecord.get(pid)
    except ProductRecord.DoesNotExist:
        raise errors.PRODUCT_NOT_EXIST(f"product {pid} does not exist", "product_id") from None


def create(body: dict[str, Any]) -> dict[str, Any]:
    _product_exists(body["product_id"])
    outputs = _outputs(body.get("outputs"))
    enabled = bool(body.get("enabled", False))
    if enabled:
        _verify(outputs)
    now = clock.now_s()
    rec = StreamRecord(
        account=ACCOUNT,
        stream_id=ids.short_id("st-"),
        name=body["name"],
        product_id=body["product_id"],
        properties=_properties(body.get("properties")),
        match=body.get("match") or "all",
        conditions=_conditions(body.get("conditions")),
        outputs=outputs,
        enabled=enabled,
        created_at=now,
        updated_at=now,
    )
    rec.save()
    forget()
    return view(rec, reveal=_secrets_of(outputs))  # shown once


def describe(stream_id: str, *, include_secret: bool = False) -> dict[str, Any]:
    rec = _get(stream_id)
    return view(rec, reveal=_secrets_of(rec.outputs) if include_secret else frozenset())


def modify(stream_id: str, body: dict[str, Any]) -> dict[str, Any]:
    rec = _get(stream_id)
    before = _secrets_of(rec.outputs)
    if "name" in body:
        rec.name = body["name"]
    if "properties" in body:
        rec.properties = _properties(body["properties"])
    if "match" in body:
        rec.match = body["match"]
    if "conditions" in body:
        rec.conditions = _conditions(body["conditions"])
    if "outputs" in body:
        rec.outputs = _outputs(body["outputs"], rec.outputs)
    if "enabled" in body:
        rec.enabled = bool(body["enabled"])
    if rec.enabled and ("outputs" in body or body.get("enabled")):
        _verify(rec.outputs)
    rec.updated_at = clock.now_s()
    rec.save()
    forget()
    return view(rec, reveal=_secrets_of(rec.outputs) - before)  # a new URL's new secret, shown once


def set_enabled(stream_id: str, enabled: bool) -> dict[str, Any]:
    rec = _get(stream_id)
    if enabled:
        _verify(rec.outputs or [])
    rec.enabled = enabled
    rec.updated_at = clock.now_s()
    rec.save()
    forget()
    return view(rec)


def delete(stream_id: str) -> None:
    _get(stream_id)
    StreamRecord(account=ACCOUNT, stream_id=stream_id).delete()
    forget()


def list_streams(
    *, visible: Callable[[str], bool], limit: int, start: dict[str, Any] | None
) -> tuple[list[dict[str, Any]], Any]:
    """Streams ``visible(resource)`` lets the caller read."""

    def fetch(key: dict[str, Any] | None) -> tuple[list[StreamRecord], Any]:
        res = StreamRecord.query(ACCOUNT, limit=max(limit, 25), last_evaluated_key=key)
        return list(res), res.last_evaluated_key

    expect_key(start, {"account": "S", "stream_id": "S"}, {"account": ACCOUNT})
    with checked_start(start):
        recs, nxt = fill_page(
            fetch,
            lambda r: visible(resource_of(r)),
            lambda r: {"account": {"S": ACCOUNT}, "stream_id": {"S": r.stream_id}},
            limit,
            start,
        )
    return [view(r) for r in recs], nxt


# ===================================================================== evaluation

_cache: tuple[float, dict[str, list[StreamRecord]]] | None = None
_lock = threading.Lock()


def forget() -> None:
    global _cache
    with _lock:
        _cache = None


def _by_product() -> dict[str, list[StreamRecord]]:
    global _cache
    c = _cache
    if c is None or time.monotonic() - c[0] >= settings().rules_cache_s:
        found: dict[str, list[StreamRecord]] = {}
        for rec in StreamRecord.query(ACCOUNT, filter_condition=StreamRecord.enabled == True):  # noqa: E712
            found.setdefault(rec.product_id, []).append(rec)
        c = _cache = (time.monotonic(), found)
    return c[1]


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def holds(cond: dict[str, Any], data: dict[str, Any]) -> bool:
    """One condition on the reported data; a property absent from the report never holds."""
    if cond["property"] not in data:
        return False
    have, want, op = data[cond["property"]], cond["value"], cond["op"]
    if op == "contains":
        if isinstance(have, str):
            return str(want) in have
        if isinstance(have, (list, dict)):
            return want in have
        return False
    a, b = _num(have), _num(want)
    if a is None or b is None or isinstance(have, bool) or isinstance(want, bool):
        if op in ("=", "!="):
            same = have == want
            return same if op == "=" else not same
        return False
    return {"=": a == b, "!=": a != b, ">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b}[op]


def passes(rec: StreamRecord, data: dict[str, Any]) -> bool:
    conds = rec.conditions or []
    if not conds:
        return True
    results = (holds(c, data) for c in conds)
    return all(results) if rec.match == "all" else any(results)


def render(template: str, data: dict[str, Any], system: dict[str, str]) -> str:
    def one(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name in system:
            return system[name]
        if name in data:
            v = data[name]
            return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
        return m.group(0)

    return _REF.sub(one, template)


def _alias(pid: str, dn: str) -> str:
    try:
        rec = DeviceRecord.get(pid, dn)
    except DeviceRecord.DoesNotExist:
        return dn
    tags = rec.tags.as_dict() if hasattr(rec.tags, "as_dict") else dict(rec.tags or {})
    return str(tags.get("alias") or dn)


def _accepted(pid: str, params: dict[str, Any]) -> dict[str, Any]:
    """Only the values the thing model accepted (a refused "brightness: 120" is never pushed)."""
    info = catalog.product_info(pid)
    if info is None:
        return {}
    accepted, _ = info.model.check_properties(params)
    return accepted


def on_accepted(accepted: list[Accepted]) -> list[int]:
    """The uplink pipeline's hand-off: accepted property reports feed the data streams.  Never
    asks for a re-delivery (a push that cannot be queued is logged)."""
    reports = [
        (a.product_id, a.device_name, a.body["params"])
        for a in accepted
        if a.family == "thing/up/property"
        and a.body is not None
        and a.body.get("method") == "report"
        and isinstance(a.body.get("params"), dict)
    ]
    if reports:
        on_reports(reports)
    return []


def on_reports(reports: list[tuple[str, str, dict[str, Any]]]) -> None:
    """(product, device, reported params) of accepted property reports → pushes.  Never raises."""
    try:
        streams = _by_product()
    except Exception:  # noqa: BLE001
        logger.exception("streams unavailable; pushes skipped for this batch")
        return
    for pid, dn, raw in reports:
        if pid not in streams:
            continue
        params = _accepted(pid, raw)
        for rec in streams.get(pid, ()):
            chosen = rec.properties or list(params)
            data = {k: params[k] for k in chosen if k in params}
            if not data or not passes(rec, data):
                continue
            alias = None
            for i, out in enumerate(rec.outputs or []):
                if alias is None and ("Alias" in out.get("title", "") + out.get("content", "")):
                    alias = _alias(pid, dn)
                system = {"ProductId": pid, "DeviceName": dn, "Alias": alias or dn}
                target_id = f"stream/{rec.stream_id}" + (f"/{i}" if i else "")
                if out.get("type") == "chat":
                    _chat_push(rec, out, target_id, pid, dn, data, system)
                    continue
                body = {
                    "RequestId": str(uuid.uuid4()),
                    "ProductId": pid,
                    "DeviceName": dn,
                    "MsgTitle": render(out.get("title", ""), data, system),
                    "MsgContent": render(out.get("content", ""), data, system),
                }
                try:
                    delivery.deliver(
                        out,
                        body,
                        target_id=target_id,
                        product_id=pid,
                        device_name=dn,
                        resource=resource_of(rec),
                    )
                except Exception:  # noqa: BLE001 - the uplink never fails on a push
                    logger.exception("stream push could not be queued", extra={"stream": rec.stream_id})


def _chat_push(
    rec: StreamRecord,
    out: dict[str, Any],
    target_id: str,
    pid: str,
    dn: str,
    data: dict[str, Any],
    system: dict[str, str],
) -> None:
    """A chat push (SPEC §9.3): the rendered title (or the content alone) as the message's text,
    the content below it, through the chat delivery path (retries, dead letters)."""
    title = render(out.get("title", ""), data, system)
    content = render(out.get("content", ""), data, system)
    message = Message(text=title or content, sections=[content] if title and content else [], in_channel=True)
    try:
        delivery.deliver_chat(
            out["channel"], message, target_id=target_id, product_id=pid, device_name=dn, resource=resource_of(rec)
        )
    except Exception:  # noqa: BLE001 - the uplink never fails on a push
        logger.exception("stream chat push could not be queued", extra={"stream": rec.stream_id})


# a stream's dead letters and delivery log are decided on the stream's resource
delivery.register_owner("stream", resource_of_id)
