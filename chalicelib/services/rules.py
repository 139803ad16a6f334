"""Rules (SPEC §9.1): CRUD, enable/disable, statistics, and the uplink hook that turns matches
into forward jobs.

* A rule is compiled when it is saved (:mod:`rules_sql`: errors carry the SQL position) and its
  actions validated by their forwarder modules (``chalicelib/forwarders/<kind>.py``).
  Enabling a rule with HTTP actions runs the Echostr verification of each URL first.
* The uplink path (:func:`on_accepted`, a hand-off of ``uplink.process_batch``) and
  presence (:func:`on_status`) evaluate the account's enabled rules from an in-process cache
  (re-read every ``FLEETBOX_RULES_CACHE_S``, 5 s), indexed by the first level of their topic
  filter, and queue one forward job per (message, matching rule, action) with SendMessageBatch.
  Nothing waits for a destination.
* If the forward queue refuses jobs even after retries, each refused job is written as a dead
  letter ("the forward queue refused the job…", replayable); only if that write fails too are
  the messages reported as failed so the uplink stream re-delivers them.  An accepted message
  therefore always ends up delivered, dead-lettered, or re-delivered.
* Statistics per rule are atomic counters in the ``counters`` table, one UpdateItem per rule
  per batch: ``hits`` (messages that matched), ``forwards_ok`` (successful deliveries, one per
  action), ``failures`` (failed attempts, retries included), ``dead_letters``.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pynamodb.exceptions import PutError

from ..core import clock, errors
from ..core.config import settings
from ..core.observability import logger
from ..models import dynamo
from ..models.rules import RuleRecord
from ..protocol import topics
from . import analytics, delivery, device_logs, events, rules_sql
from .paging import checked_start, expect_key, fill_page
from .uplink_view import Accepted

ACCOUNT = "main"
NAME_RE = re.compile(r"[A-Za-z0-9_]{1,32}")
MAX_ACTIONS = 10
STATS_PK = "rule-stats"
#: the domain event a batch of dead letters of one rule emits (chat alerts "rules")
RULE_DEAD_LETTER = "rule.dead_letter"
STAT_NAMES = ("hits", "forwards_ok", "failures", "dead_letters")
STATUS_PREFIX = "$status"


# ===================================================================== validation


def _sql_error(exc: rules_sql.SqlError) -> errors.FleetboxError:
    err = errors.SQL_INVALID(f"sql: {exc.message} (at character {exc.position})", "sql")
    err.details = {"position": exc.position}
    return err


def compile_sql(sql: str) -> rules_sql.CompiledRule:
    try:
        return rules_sql.compile_rule(sql)
    except rules_sql.SqlError as exc:
        raise _sql_error(exc) from None


def _actions(values: Any, path: str, previous: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    if values is None:
        return []
    if not isinstance(values, list):
        raise errors.ACTION_INVALID(f"{path} must be a list", path)
    if len(values) > MAX_ACTIONS:
        raise errors.ACTION_LIMIT(f"{path} holds at most {MAX_ACTIONS} actions", path)
    out = []
    for i, action in enumerate(values):
        p = f"{path}[{i}]"
        if not isinstance(action, dict):
            raise errors.ACTION_INVALID(f"{p} must be an object", p)
        kind = action.get("type")
        if kind not in delivery.ACTION_KINDS:
            raise errors.ACTION_INVALID(f"{p}.type must be one of {', '.join(delivery.ACTION_KINDS)}", f"{p}.type")
        if kind == "http":
            # views only say token_set/secret_set: an edit that re-sends the same URL keeps them
            same = [a for a in previous or [] if a.get("type") == "http"]
            action = {k: v for k, v in action.items() if k not in ("token_set", "secret_set")}
            action["token"] = delivery.kept_secret(action, same, "token")
            if not action.get("secret"):
                action["secret"] = delivery.kept_secret({"url": action.get("url")}, same, "secret")
        out.append(delivery.validate_action(action, p))
    return out


def _verify(actions: list[dict[str, Any]], path: str) -> None:
    for i, action in enumerate(actions):
        delivery.verify_action(action, f"{path}[{i}]")


# ===================================================================== CRUD


def resource_of(name: str, compiled: rules_sql.CompiledRule | None) -> str:
    """A rule is a resource of the product its topic filter names (SPEC §2), else of the account:
    ``product/{pid}/rule/{name}`` or ``rule/{name}``."""
    pid = topics.product_of_filter(compiled.filter_levels) if compiled is not None else None
    return f"product/{pid}/rule/{name}" if pid else f"rule/{name}"


def resource_of_sql(name: str, sql: Any) -> str:
    """The resource a rule with this SQL would be (``rule/{name}`` when the SQL does not compile)."""
    try:
        return resource_of(name, rules_sql.compile_rule(sql)) if isinstance(sql, str) else f"rule/{name}"
    except rules_sql.SqlError:
        return f"rule/{name}"


def _secrets_of(actions: Iterable[dict[str, Any]]) -> set[str]:
    return delivery.secrets_of(actions)


def view(rec: RuleRecord, stats: dict[str, int] | None = None, reveal: Iterable[str] = ()) -> dict[str, Any]:
    """The rule as responses show it: secrets only in ``reveal`` (those this request made)."""
    compiled = compile_sql(rec.sql)
    shown = frozenset(reveal)
    return {
        "name": rec.name,
        "description": rec.description or "",
        "sql": rec.sql,
        "enabled": bool(rec.enabled),
        "topic_filter": compiled.topic_filter,
        "resource": resource_of(rec.name, compiled),
        "actions": [delivery.masked(a, shown) for a in rec.actions or []],
        "error_actions": [delivery.masked(a, shown) for a in rec.error_actions or []],
        "created_at": int(rec.created_at),
        "updated_at": int(rec.updated_at),
        "note": rec.note,
        "stats": stats if stats is not None else get_stats(rec.name),
    }


def owner(name: str) -> tuple[str, RuleRecord]:
    """(resource, record) of a stored rule, for the route kit's per-item decision."""
    rec = _get(name, consistent=False)
    return resource_of(rec.name, compile_sql(rec.sql)), rec


def _get(name: str, consistent: bool = True) -> RuleRecord:
    try:
        return RuleRecord.get(ACCOUNT, name, consistent_read=consistent)
    except RuleRecord.DoesNotExist:
        raise errors.RULE_NOT_EXIST(f"rule {name} does not exist", "name") from None


def create(body: dict[str, Any]) -> dict[str, Any]:
    name = body["name"]
    compile_sql(body["sql"])
    actions = _actions(body.get("actions"), "actions")
    error_actions = _actions(body.get("error_actions"), "error_actions")
    enabled = bool(body.get("enabled", False))
    if enabled:
        _verify(actions, "actions")
        _verify(error_actions, "error_actions")
    now = clock.now_s()
    rec = RuleRecord(
        account=ACCOUNT,
        name=name,
        description=body.get("description") or "",
        sql=body["sql"],
        enabled=enabled,
        actions=actions,
        error_actions=error_actions,
        created_at=now,
        updated_at=now,
    )
    try:
        rec.save(condition=RuleRecord.name.does_not_exist())
    except PutError as exc:
        if getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException":
            raise errors.RULE_ALREADY_EXISTS(f"rule {name} already exists", "name") from None
        raise
    _reset_stats(name)  # a rule re-created under an old name starts from zero
    forget()
    # shown once: the tokens given and the signing secrets made for this rule
    return view(rec, {k: 0 for k in STAT_NAMES}, reveal=_secrets_of(actions + error_actions))


def describe(name: str, *, include_secret: bool = False) -> dict[str, Any]:
    rec = _get(name, consistent=False)
    return view(rec, reveal=_secrets_of((rec.actions or []) + (rec.error_actions or [])) if include_secret else ())


def modify(name: str, body: dict[str, Any]) -> dict[str, Any]:
    rec = _get(name)
    before = _secrets_of((rec.actions or []) + (rec.error_actions or []))
    if "sql" in body:
        compile_sql(body["sql"])
        rec.sql = body["sql"]
    if "description" in body:
        rec.description = body["description"] or ""
    if "actions" in body:
        rec.actions = _actions(body["actions"], "actions", rec.actions)
    if "error_actions" in body:
        rec.error_actions = _actions(body["error_actions"], "error_actions", rec.error_actions)
    if "enabled" in body:
        rec.enabled = bool(body["enabled"])
    if rec.enabled and ("actions" in body or "error_actions" in body or body.get("enabled")):
        _verify(rec.actions or [], "actions")
        _verify(rec.error_actions or [], "error_actions")
    rec.note = None
    rec.updated_at = clock.now_s()
    rec.save()
    forget()
    # a new URL gets a new signing secret: shown in this answer only
    return view(rec, reveal=_secrets_of((rec.actions or []) + (rec.error_actions or [])) - before)


def set_enabled(name: str, enabled: bool) -> dict[str, Any]:
    rec = _get(name)
    if enabled:
        _verify(rec.actions or [], "actions")
        _verify(rec.error_actions or [], "error_actions")
        # a target the engine stopped after a 410 is tried again once the user re-enables
        rec.actions = [{k: v for k, v in a.items() if k != "disabled"} for a in rec.actions or []]
        rec.note = None
    rec.enabled = enabled
    rec.updated_at = clock.now_s()
    rec.save()
    forget()
    return view(rec)


def delete(name: str) -> None:
    _get(name)
    RuleRecord(account=ACCOUNT, name=name).delete()
    _reset_stats(name)
    forget()


def list_rules(
    *, visible: Callable[[str], bool], limit: int, start: dict[str, Any] | None
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Rules by name that ``visible(resource)`` lets the caller see (a page is filled from as many
    queries as it takes)."""
    expect_key(start, {"account": "S", "name": "S"}, {"account": ACCOUNT})
    with checked_start(start):
        recs, last = fill_page(
            lambda key: _page_of(RuleRecord.query(ACCOUNT, limit=max(limit, 25), last_evaluated_key=key)),
            lambda r: visible(resource_of(r.name, _compiled_or_none(r.sql))),
            lambda r: {"account": {"S": ACCOUNT}, "name": {"S": r.name}},
            limit,
            start,
        )
    stats = get_stats_many([r.name for r in recs])
    return [view(r, stats.get(r.name)) for r in recs], last


def _page_of(res: Any) -> tuple[list[Any], Any]:
    items = list(res)
    return items, res.last_evaluated_key


def _compiled_or_none(sql: str) -> rules_sql.CompiledRule | None:
    try:
        return rules_sql.compile_rule(sql)
    except rules_sql.SqlError:
        return None


def disable_action(name: str, index: int, reason: str) -> None:
    """A target answered 410 Gone: stop sending to it (the user re-enables the rule to resume)."""
    try:
        rec = _get(name)
        actions = list(rec.actions or [])
        if index < len(actions):
            actions[index] = dict(actions[index], disabled=reason[:200])
            rec.actions = actions
            rec.note = f"action {index} stopped: {reason[:200]}"
            rec.save()
            forget()
    except Exception:  # noqa: BLE001
        logger.exception("could not stop a gone target", extra={"rule": name})


def debug(name: str, body: dict[str, Any]) -> dict[str, Any]:
    """Run a rule (saved, or the ``sql`` given) on a sample topic and payload; nothing is forwarded."""
    sql = body.get("sql") or _get(name, consistent=False).sql
    compiled = compile_sql(sql)
    topic = body["topic"]
    payload = body.get("payload")
    if isinstance(payload, str):
        raw = payload.encode()
    elif payload is None:
        raw = b""
    else:
        raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    if body.get("payload_base64"):
        try:
            raw = base64.b64decode(body["payload_base64"], validate=True)
        except ValueError:
            raise errors.PAYLOAD_INVALID("payload_base64 is not base64", "payload_base64") from None
    pid, dn, topic = _debug_device(topic)
    pid = body.get("product_id") or pid
    dn = body.get("device_name") or dn
    levels = topic.split("/")
    msg = rules_sql.Message(pid, dn, topic, raw, clock.now_ms(), 0, levels=levels)
    matched_topic = compiled.matches(levels)
    parsed = rules_sql.parse_payload(raw)
    output = compiled.evaluate(parsed, msg) if matched_topic else None
    result: dict[str, Any] = {
        "topic_matched": matched_topic,
        "matched": output is not None,
        "payload_json": parsed is not rules_sql.UNDEFINED,
    }
    if isinstance(output, (bytes, bytearray)):
        result["output_base64"] = base64.b64encode(output).decode()
        result["output"] = None
    else:
        result["output"] = output
    return result


def _debug_device(topic: str) -> tuple[str, str, str]:
    """(productId, deviceName, topic as rules see it) of a sample topic, exactly as the live path
    derives them: device topics parsed (``$`` forms as their canonical topic), ``$status/{pid}/{dn}``
    as itself."""
    levels = topic.split("/")
    if levels[0] == STATUS_PREFIX and len(levels) == 3:
        return levels[1], levels[2], topic
    parsed = topics.parse(topic)
    if parsed is not None:
        return parsed.product_id, parsed.device_name, topic.lstrip("$")
    return "", "", topic


# ===================================================================== statistics


def add_stats(name: str, deltas: dict[str, int]) -> None:
    deltas = {k: v for k, v in deltas.items() if v and k in STAT_NAMES}
    if not deltas:
        return
    if deltas.get("dead_letters"):
        # people are told (chat alerts "rules"); the rule engine itself never sees rule.* events
        live = lookup(name)
        m = re.fullmatch(r"product/([^/]+)/rule/.*", live.resource) if live is not None else None
        events.emit(RULE_DEAD_LETTER, m.group(1) if m else "", rule=name, dead_letters=int(deltas["dead_letters"]))
    names = {f"#{k}": k for k in deltas}
    values = {f":{k}": {"N": str(v)} for k, v in deltas.items()}
    dynamo.client().update_item(
        TableName=settings().table("counters"),
        Key={"pk": {"S": STATS_PK}, "sk": {"S": name}},
        UpdateExpression="ADD " + ", ".join(f"#{k} :{k}" for k in deltas),
        ExpressionAttributeNames=names,
        ExpressionAttributeValues=values,
    )


def _reset_stats(name: str) -> None:
    dynamo.client().delete_item(TableName=settings().table("counters"), Key={"pk": {"S": STATS_PK}, "sk": {"S": name}})


def _stats_of(item: dict[str, Any] | None) -> dict[str, int]:
    item = item or {}
    return {k: int(item[k]["N"]) if k in item else 0 for k in STAT_NAMES}


def get_stats(name: str) -> dict[str, int]:
    out = dynamo.client().get_item(
        TableName=settings().table("counters"), Key={"pk": {"S": STATS_PK}, "sk": {"S": name}}, ConsistentRead=True
    )
    return _stats_of(out.get("Item"))


def get_stats_many(names: list[str]) -> dict[str, dict[str, int]]:
    table = settings().table("counters")
    found: dict[str, dict[str, int]] = {n: _stats_of(None) for n in names}
    for start in range(0, len(names), 100):
        keys = [{"pk": {"S": STATS_PK}, "sk": {"S": n}} for n in names[start : start + 100]]
        pending: dict[str, Any] = {table: {"Keys": keys}}
        while pending:
            out = dynamo.client().batch_get_item(RequestItems=pending)
            for item in (out.get("Responses") or {}).get(table, []):
                found[item["sk"]["S"]] = _stats_of(item)
            pending = out.get("UnprocessedKeys") or {}
    return found


# ===================================================================== compiled cache


@dataclass(frozen=True)
class LiveRule:
    name: str
    compiled: rules_sql.CompiledRule
    actions: list[dict[str, Any]]
    error_actions: list[dict[str, Any]]
    enabled: bool

    @property
    def resource(self) -> str:
        return resource_of(self.name, self.compiled)


@dataclass
class _Cache:
    at: float
    by_name: dict[str, LiveRule]
    #: first filter level ("+"/"#" for wildcards) -> enabled rules
    index: dict[str, list[LiveRule]]


_cache: _Cache | None = None
_cache_lock = threading.Lock()


def forget() -> None:
    """Drop the compiled-rules cache (after an edit in this process; tests)."""
    global _cache
    with _cache_lock:
        _cache = None


def _load() -> _Cache:
    by_name: dict[str, LiveRule] = {}
    index: dict[str, list[LiveRule]] = {}
    for rec in RuleRecord.query(ACCOUNT):
        try:
            compiled = rules_sql.compile_rule(rec.sql)
        except rules_sql.SqlError:
            logger.error("a stored rule no longer compiles; skipped", extra={"rule": rec.name})
            continue
        live = LiveRule(rec.name, compiled, list(rec.actions or []), list(rec.error_actions or []), bool(rec.enabled))
        by_name[rec.name] = live
        if live.enabled:
            first = compiled.filter_levels[0]
            index.setdefault("*" if first in ("+", "#") else first, []).append(live)
    return _Cache(time.monotonic(), by_name, index)


def _current() -> _Cache:
    global _cache
    c = _cache
    if c is not None and time.monotonic() - c.at < settings().rules_cache_s:
        return c
    with _cache_lock:
        c = _cache
        if c is None or time.monotonic() - c.at >= settings().rules_cache_s:
            c = _cache = _load()
    return c


def lookup(name: str) -> LiveRule | None:
    """A rule as the engine runs it (cached; None when it does not exist)."""
    return _current().by_name.get(name)


def candidates(levels: list[str]) -> list[LiveRule]:
    idx = _current().index
    return idx.get(levels[0], []) + idx.get("*", []) if levels else []


# ===================================================================== the uplink hook

_seq = itertools.count()


def _seq_of(ts_ms: int) -> int:
    """An increasing int per process (ms time + a 3-digit counter), the envelopes' ``seq``."""
    return ts_ms * 1000 + next(_seq) % 1000


@dataclass
class Inbound:
    """One accepted message handed to the rule engine."""

    product_id: str
    device_name: str
    topic: str  # without a leading "$"
    payload: bytes
    qos: int
    timestamp_ms: int
    msg_type: str = "Publish"
    event: str | None = None


def evaluate(messages: Iterable[Inbound]) -> tuple[list[dict[str, Any]], list[int], list[tuple[int, str]], list[tuple]]:
    """Jobs for ``messages``: (jobs, index of the message of each job, (message index, rule) of
    every match, diagnostics)."""
    jobs: list[dict[str, Any]] = []
    owners: list[int] = []
    matches: list[tuple[int, str]] = []
    diags: list[tuple] = []
    for i, m in enumerate(messages):
        levels = m.topic.split("/")
        rules = [r for r in candidates(levels) if r.compiled.matches(levels)]
        if not rules:
            continue
        parsed = rules_sql.parse_payload(m.payload)
        ctx = rules_sql.Message(m.product_id, m.device_name, m.topic, m.payload, m.timestamp_ms, m.qos, levels=levels)
        msg_doc: dict[str, Any] | None = None
        for rule in rules:
            try:
                out = rule.compiled.evaluate(parsed, ctx)
            except Exception as exc:  # noqa: BLE001 - a rule bug never blocks the uplink
                diags.append((m, "Rule_Process_SQL_Err", f"rule {rule.name}: {type(exc).__name__}: {str(exc)[:200]}"))
                continue
            if out is None:
                if parsed is rules_sql.UNDEFINED and rule.compiled.uses_payload and m.payload:
                    diags.append(
                        (m, "Payload_Not_JSON", f"rule {rule.name} reads JSON fields; the payload is not JSON")
                    )
                continue
            matches.append((i, rule.name))
            if msg_doc is None:
                msg_doc = {
                    "pid": m.product_id,
                    "dn": m.device_name,
                    "topic": m.topic,
                    "qos": m.qos,
                    "ts": m.timestamp_ms,
                    "seq": _seq_of(m.timestamp_ms),
                    "raw": base64.b64encode(m.payload[:4096]).decode(),
                }
                if m.event:
                    msg_doc["ev"] = m.event
            is_raw = isinstance(out, (bytes, bytearray))
            mt = (
                m.msg_type
                if m.msg_type == "StatusChange"
                else ("Publish" if is_raw or (parsed is not rules_sql.UNDEFINED and out == parsed) else "Forward")
            )
            out_doc = {"b": base64.b64encode(out).decode()} if is_raw else {"j": out}
            for a, action in enumerate(rule.actions):
                if action.get("disabled"):
                    continue
                jobs.append(
                    {
                        "k": "rule",
                        "id": delivery.new_webhook_id(),
                        "n": 0,
                        "t0": None,
                        "st": "a",
                        "r": rule.name,
                        "a": a,
                        "own": rule.resource,
                        "msg": dict(msg_doc, mt=mt),
                        "out": out_doc,
                    }
                )
                owners.append(i)
    return jobs, owners, matches, diags


def on_uplink(messages: list[Inbound]) -> list[int]:
    """Evaluate the enabled rules on accepted messages and queue their forward jobs.

    Returns the indexes (into ``messages``) that must be re-delivered: only those whose jobs
    could neither be queued nor recorded as dead letters.  Never raises.
    """
    if not messages:
        return []
    try:
        jobs, owners, matches, diags = evaluate(messages)
    except Exception:  # noqa: BLE001 - e.g. the rules table unreadable: re-deliver the batch later
        logger.exception("rule evaluation failed; the messages will be re-delivered")
        return list(range(len(messages)))
    retry: set[int] = set()
    dead: dict[str, int] = {}
    if jobs:
        refused = delivery.queue_jobs(jobs)
        for j in refused:
            job = jobs[j]
            try:
                delivery.dead_letter(
                    job,
                    target_id=f"rule/{job['r']}/{job['a']}",
                    reason="the forward queue refused the job (replay it when the queue is back)",
                    attempts=0,
                )
                dead[job["r"]] = dead.get(job["r"], 0) + 1
            except Exception:  # noqa: BLE001
                logger.exception("could not record a refused forward job; the message will be re-delivered")
                retry.add(owners[j])
    _write_diagnostics(messages, diags)
    _count(messages, matches, dead)
    return sorted(retry)


def on_accepted(accepted: list[Accepted]) -> list[int]:
    """The uplink pipeline's hand-off: every accepted device message meets the enabled rules.
    Returns the batch indexes to re-deliver (see :func:`on_uplink`)."""
    redo = on_uplink(
        [Inbound(a.product_id, a.device_name, a.topic, a.payload, a.qos, a.timestamp_ms) for a in accepted]
    )
    return [accepted[i].index for i in redo]


def _write_diagnostics(messages: list[Inbound], diags: list[tuple]) -> None:
    for m, code, text in diags[:100]:
        device_logs.diagnostic(
            m.product_id,
            m.device_name,
            code,
            text,
            topic=m.topic,
            payload=m.payload,
            direction="up",
            ts_ms=m.timestamp_ms,
        )


def _count(messages: list[Inbound], matches: list[tuple[int, str]], dead: dict[str, int]) -> None:
    """Per-rule hits (and dead letters of refused jobs): one update per rule; the product's
    ``rule_hits`` analytics counter: one update per product."""
    per_rule: dict[str, dict[str, int]] = {}
    for _, name in matches:
        per = per_rule.setdefault(name, {})
        per["hits"] = per.get("hits", 0) + 1
    for name, n in dead.items():
        per_rule.setdefault(name, {})["dead_letters"] = n
    for name, deltas in per_rule.items():
        try:
            add_stats(name, deltas)
        except Exception:  # noqa: BLE001 - statistics never fail the uplink
            logger.exception("rule statistics update failed", extra={"rule": name})
    if matches:
        tally = analytics.Tally()
        for i, _ in matches:
            tally.add(messages[i].product_id, "rule_hits", 1, messages[i].timestamp_ms)
        try:
            tally.flush()
        except Exception:  # noqa: BLE001
            logger.exception("rule hit counters failed")


def on_status(product_id: str, device_name: str, online: bool, ts_ms: int) -> None:
    """A device went online/offline: rules see a StatusChange message on ``$status/{pid}/{dn}``
    with payload ``{"event":"Online"|"Offline","productId","deviceName","time"}``."""
    event = "Online" if online else "Offline"
    payload = json.dumps(
        {"event": event, "productId": product_id, "deviceName": device_name, "time": ts_ms}, separators=(",", ":")
    ).encode()
    try:
        on_uplink(
            [
                Inbound(
                    product_id,
                    device_name,
                    f"{STATUS_PREFIX}/{product_id}/{device_name}",
                    payload,
                    1,
                    ts_ms,
                    "StatusChange",
                    event,
                )
            ]
        )
    except Exception:  # noqa: BLE001 - presence must not fail on the rule engine
        logger.exception("status change rules failed", extra={"device": f"{product_id}/{device_name}"})


EVENTS_PREFIX = "$events"


def on_event(event: Any) -> None:
    """Durable subscriber of every domain event (services/events.py): rules see it as a message on
    ``$events/{ProductId}/{kind with / for .}`` with payload ``{"event","eventId","productId","time",…data}``.
    Raises when the forward jobs could neither be queued nor recorded (the dispatch is retried)."""
    if event.kind.startswith("rule."):
        return  # a rule's own failures never feed rules (a failing $events/# rule would loop)
    topic = f"{EVENTS_PREFIX}/{event.product_id or '-'}/{event.kind.replace('.', '/')}"
    doc = {
        "event": event.kind,
        "eventId": event.event_id,
        "productId": event.product_id,
        "time": event.at_ms,
        **event.data,
    }
    payload = json.dumps(doc, separators=(",", ":"), ensure_ascii=False, default=str).encode()
    redo = on_uplink(
        [Inbound(event.product_id, str(event.data.get("device_name") or ""), topic, payload, 1, event.at_ms)]
    )
    if redo:
        raise RuntimeError("the forward queue refused the event's jobs")


def _resource_of_name(name: str) -> str:
    live = lookup(name)
    return live.resource if live is not None else f"rule/{name}"


# the delivery engine runs rule actions with this module's lookups and counters, and decides a
# rule's dead letters and delivery log on the rule's resource
delivery.use_rule_hooks(lookup=lookup, add_stats=add_stats, stop_action=disable_action)
delivery.register_owner("rule", _resource_of_name)
