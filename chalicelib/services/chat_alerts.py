"""Alerts in chat (SPEC §12, §10 alarms "pushed to … chat", §9.3 chat push).

* **Channels** are named by a ref: ``slack:{team}:{channel}`` (no registration: the chat's bot
  token posts to any channel the bot was invited to) or ``feishu:{bot id}``, a Feishu/Lark custom
  bot registered through ``/v1/chat/bots`` (:func:`create_channel`: its webhook URL, SSRF-checked,
  and its signing secret, write-only; resource ``chat-bot/{id}``).
* **Subscriptions**: a channel receives one alert kind (:data:`ALERT_KINDS`) of one product or of
  every product.  Subscribing the same (channel, kind, product) twice is idempotent: the id is
  derived from the three, and the second call answers the existing subscription.
* **Alerts**: every domain event reaches :func:`on_event` (a durable subscriber of
  ``services/events``); the channels subscribed to its alert kind each get one neutral
  :class:`~chalicelib.protocol.chat.Message`, built here from the event's whitelisted facts (never
  a secret), through the rate limiter (``chat_limit``: one message per (channel, event kind,
  device) per window, the rest counted and summarised by the ``chat.summary`` job) and the
  delivery engine (``delivery.deliver_chat``: retries, dead letters, delivery log).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from typing import Any

from pynamodb.exceptions import PutError

from ..core import clock, errors, ids
from ..models.chat_alerts import ChatChannelRecord, ChatSubscriptionRecord
from ..models.products import ProductRecord
from ..models.rules import StreamRecord
from ..protocol.chat import Message
from ..protocol.slack import SLACK_ID
from . import chat_limit, delivery, jobs
from .paging import checked_start, expect_key, fill_page

SUB_PK = "sub"
#: the streams table's partition (services/streams.py ACCOUNT)
STREAMS_ACCOUNT = "main"
CHANNEL_PK = "channel"
PLATFORMS = ("slack", "feishu")
#: alert kind -> the domain event kinds it carries (services/events.py)
ALERT_KINDS: dict[str, tuple[str, ...]] = {
    "alarms": ("fence.alarm",),
    "ota": (
        "ota.device.failed",
        "ota.task.done",
        "ota.task.aborted",
        "resource.device.failed",
        "resource.task.done",
        "resource.task.aborted",
    ),
    "batch": ("batch.done", "batch.failed"),
    "rules": ("rule.dead_letter",),
    "video": ("video.task.done", "video.task.failed"),
}
#: a Slack channel ref as the chat's :class:`~chalicelib.protocol.chat.Where` spells it
_SLACK_REF = re.compile(rf"slack:({SLACK_ID.pattern}):({SLACK_ID.pattern})")
_FEISHU_REF = re.compile(r"feishu:(fs-[a-z0-9]{12})")
#: the plural noun of a summary ("12 more alarms from P/dev …")
_NOUN = {
    "alarms": "alarms",
    "ota": "OTA alerts",
    "batch": "batch alerts",
    "rules": "rule alerts",
    "video": "video alerts",
}


def alert_kind_of(event_kind: str) -> str | None:
    for kind, kinds in ALERT_KINDS.items():
        if event_kind in kinds:
            return kind
    return None


# ===================================================================== channels


def check_channel(ref: Any, field: str) -> str:
    """A well-formed channel ref; a Feishu channel must be registered."""
    if not isinstance(ref, str) or not ref:
        raise errors.CHAT_CHANNEL_INVALID(f"{field} must be slack:T…:C… or feishu:<bot id>", field)
    if _SLACK_REF.fullmatch(ref):
        return ref
    m = _FEISHU_REF.fullmatch(ref)
    if m:
        _get_channel(m.group(1), field)
        return ref
    raise errors.CHAT_CHANNEL_INVALID(
        f"{field} must be slack:<team id>:<channel id> (e.g. slack:T0123ABC:C0456DEF) or feishu:<id of a bot registered at /v1/chat/bots>",
        field,
    )


def channel_resource(channel_id: str) -> str:
    return f"chat-bot/{channel_id}"


def bot_resource_of(channel: Any) -> str | None:
    """The resource of the registered bot a channel ref names (None for Slack channels): posting
    into a bot — a subscription or a stream's chat push — needs the right to see it."""
    if isinstance(channel, str) and channel.startswith("feishu:"):
        return channel_resource(channel.split(":", 1)[1])
    return None


def _get_channel(channel_id: str, field: str = "bot_id") -> ChatChannelRecord:
    try:
        return ChatChannelRecord.get(CHANNEL_PK, channel_id, consistent_read=True)
    except ChatChannelRecord.DoesNotExist:
        raise errors.CHAT_CHANNEL_NOT_EXIST(f"chat channel {channel_id} does not exist", field) from None


def channel_view(rec: ChatChannelRecord) -> dict[str, Any]:
    """A registered channel as responses show it: the secret never, only ``secret_set``."""
    return {
        "id": rec.sk,
        "ref": f"{rec.platform}:{rec.sk}",
        "platform": rec.platform,
        "name": rec.name,
        "webhook_url": rec.webhook_url,
        "secret_set": bool(rec.secret),
        "resource": channel_resource(rec.sk),
        "created_at": int(rec.created_at),
    }


def create_channel(body: dict[str, Any]) -> dict[str, Any]:
    if body["platform"] != "feishu":
        raise errors.CHAT_PLATFORM_INVALID(
            "platform must be feishu (Slack channels need no registration: subscribe slack:T…:C… directly)",
            "platform",
        )
    url = delivery.check_url(body["webhook_url"], "webhook_url")
    rec = ChatChannelRecord(
        pk=CHANNEL_PK,
        sk=ids.short_id("fs-"),
        platform="feishu",
        name=body["name"],
        webhook_url=url,
        secret=body.get("secret") or None,
        created_at=clock.now_s(),
    )
    rec.save()
    return channel_view(rec)


def channel_owner(channel_id: str) -> tuple[str, ChatChannelRecord]:
    rec = _get_channel(channel_id)
    return channel_resource(rec.sk), rec


def delete_channel(channel_id: str) -> None:
    rec = _get_channel(channel_id)
    ref = f"{rec.platform}:{rec.sk}"
    if any(True for _ in ChatSubscriptionRecord.query(SUB_PK, filter_condition=ChatSubscriptionRecord.channel == ref)):
        raise errors.CHAT_CHANNEL_IN_USE(
            f"chat channel {channel_id} still has alert subscriptions: delete them first", "bot_id"
        )
    for stream in StreamRecord.query(STREAMS_ACCOUNT):
        if any(o.get("channel") == ref for o in stream.outputs or []):
            raise errors.CHAT_CHANNEL_IN_USE(
                f"chat channel {channel_id} is an output of data stream {stream.stream_id}: edit it first", "bot_id"
            )
    rec.delete()


def list_channels(
    *, visible: Callable[[str], bool], limit: int, start: dict[str, Any] | None
) -> tuple[list[dict[str, Any]], Any]:
    def fetch(key: dict[str, Any] | None) -> tuple[list[ChatChannelRecord], Any]:
        res = ChatChannelRecord.query(CHANNEL_PK, limit=max(limit, 25), last_evaluated_key=key)
        return list(res), res.last_evaluated_key

    expect_key(start, {"pk": "S", "sk": "S"}, {"pk": CHANNEL_PK})
    with checked_start(start):
        recs, nxt = fill_page(
            fetch,
            lambda r: visible(channel_resource(r.sk)),
            lambda r: {"pk": {"S": CHANNEL_PK}, "sk": {"S": r.sk}},
            limit,
            start,
        )
    return [channel_view(r) for r in recs], nxt


# ===================================================================== subscriptions


def subscription_resource(product_id: str | None) -> str:
    """What a subscription is decided on: its product, or the whole account (``*``)."""
    return f"product/{product_id}" if product_id else "*"


def _sub_id(channel: str, kind: str, product_id: str | None) -> str:
    raw = f"{channel}\n{kind}\n{product_id or '*'}"
    return "cs-" + hashlib.sha256(raw.encode()).hexdigest()[:16]


def subscription_view(rec: ChatSubscriptionRecord) -> dict[str, Any]:
    return {
        "id": rec.sk,
        "channel": rec.channel,
        "kind": rec.kind,
        "product_id": rec.product_id,
        "resource": subscription_resource(rec.product_id),
        "created_at": int(rec.created_at),
        "created_by": rec.created_by,
    }


def _product_exists(pid: str) -> None:
    try:
        ProductRecord.get(pid)
    except ProductRecord.DoesNotExist:
        raise errors.PRODUCT_NOT_EXIST(f"product {pid} does not exist", "product_id") from None


def subscribe(body: dict[str, Any], created_by: str | None) -> dict[str, Any]:
    """Subscribe a channel to an alert kind; idempotent (the same answer for the same triple)."""
    channel = check_channel(body["channel"], "channel")
    kind = body["kind"]
    pid = body.get("product_id") or None
    if pid:
        _product_exists(pid)
    rec = ChatSubscriptionRecord(
        pk=SUB_PK,
        sk=_sub_id(channel, kind, pid),
        channel=channel,
        kind=kind,
        product_id=pid,
        created_at=clock.now_s(),
        created_by=created_by,
    )
    try:
        rec.save(condition=ChatSubscriptionRecord.sk.does_not_exist())
    except PutError as exc:
        if getattr(exc, "cause_response_code", None) != "ConditionalCheckFailedException":
            raise
        rec = ChatSubscriptionRecord.get(SUB_PK, rec.sk, consistent_read=True)
    return subscription_view(rec)


def subscription_owner(sub_id: str) -> tuple[str, ChatSubscriptionRecord]:
    try:
        rec = ChatSubscriptionRecord.get(SUB_PK, sub_id, consistent_read=True)
    except ChatSubscriptionRecord.DoesNotExist:
        raise errors.CHAT_SUBSCRIPTION_NOT_EXIST(f"chat subscription {sub_id} does not exist", "id") from None
    return subscription_resource(rec.product_id), rec


def unsubscribe(sub_id: str) -> None:
    subscription_owner(sub_id)
    ChatSubscriptionRecord(pk=SUB_PK, sk=sub_id).delete()


def list_subscriptions(
    *, visible: Callable[[str], bool], channel: str | None, limit: int, start: dict[str, Any] | None
) -> tuple[list[dict[str, Any]], Any]:
    cond = ChatSubscriptionRecord.channel == channel if channel else None

    def fetch(key: dict[str, Any] | None) -> tuple[list[ChatSubscriptionRecord], Any]:
        res = ChatSubscriptionRecord.query(SUB_PK, filter_condition=cond, limit=max(limit, 25), last_evaluated_key=key)
        return list(res), res.last_evaluated_key

    expect_key(start, {"pk": "S", "sk": "S"}, {"pk": SUB_PK})
    with checked_start(start):
        recs, nxt = fill_page(
            fetch,
            lambda r: visible(subscription_resource(r.product_id)),
            lambda r: {"pk": {"S": SUB_PK}, "sk": {"S": r.sk}},
            limit,
            start,
        )
    return [subscription_view(r) for r in recs], nxt


def subscribers(kind: str, product_id: str) -> list[ChatSubscriptionRecord]:
    """The subscriptions an alert of ``kind`` about ``product_id`` reaches, one per channel."""
    found: dict[str, ChatSubscriptionRecord] = {}
    for rec in ChatSubscriptionRecord.query(SUB_PK, filter_condition=ChatSubscriptionRecord.kind == kind):
        if rec.product_id in (None, product_id):
            # a channel subscribed both to the product and to every product gets one message;
            # the product's own subscription owns the delivery (its dead letters, its resource)
            if rec.channel not in found or rec.product_id:
                found[rec.channel] = rec
    return list(found.values())


# ===================================================================== alerts


def _subject(event: Any) -> str:
    """What the rate limiter counts per: the device, else the task/batch/rule the event is about."""
    d = event.data
    pid = event.product_id or "-"
    if d.get("device_name"):
        return f"{pid}/{d['device_name']}"
    for key in ("task_id", "batch_id", "rule"):
        if d.get(key):
            return f"{pid}/{d[key]}"
    return pid


def _short(value: Any, limit: int = 300) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def message_for(event: Any) -> Message:
    """The neutral message of an event: only whitelisted facts (ids, names, counts, reasons); emoji
    as Unicode, which every platform shows (Slack's ``:x:`` codes would reach Feishu as text)."""
    d, kind, pid = event.data, event.kind, event.product_id
    dn = d.get("device_name")
    who = f"{pid}/{dn}" if dn else pid
    fields: list[tuple[str, str]] = [("Product", str(pid))]
    if dn:
        fields.append(("Device", str(dn)))
    if kind == "fence.alarm":
        verb = "entered" if d.get("type") == "enter" else "left"
        text = f"🚨 {who} {verb} fence {d.get('fence_name') or d.get('fence_id')}"
        fields += [
            ("Fence", f"{d.get('fence_name') or ''} ({d.get('fence_id')})"),
            ("Type", str(d.get("type"))),
            ("Position", f"{d.get('lat')}, {d.get('lon')}"),
        ]
        if d.get("time"):
            fields.append(("Time", time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(int(d["time"]) / 1000))))
    elif kind.endswith(".device.failed"):
        what = "OTA upgrade" if kind.startswith("ota.") else "Resource distribution"
        text = f"❌ {what} failed on {who} (task {d.get('task_id')})"
        fields += [("Task", str(d.get("task_id"))), ("Reason", _short(d.get("reason") or "unknown"))]
        if d.get("target_version"):
            fields.append(("Target version", str(d["target_version"])))
    elif kind.startswith(("ota.", "resource.")) and kind.endswith((".task.done", ".task.aborted")):
        what = "OTA task" if kind.startswith("ota.") else "Resource task"
        verb = "finished" if kind.endswith(".done") else "was aborted"
        text = f"{what} {d.get('task_id')} of {pid} {verb}"
        fields.append(("Task", str(d.get("task_id"))))
        stats = d.get("statistics")
        if isinstance(stats, dict):
            fields += [(str(k), str(v)) for k, v in stats.items() if isinstance(v, (int, float))][:8]
        if d.get("reason"):
            fields.append(("Reason", _short(d["reason"])))
    elif kind.startswith("batch."):
        verb = "finished" if kind == "batch.done" else "failed"
        text = f"Batch {d.get('batch_id')} of {pid} {verb}"
        fields += [
            ("Batch", str(d.get("batch_id"))),
            ("Succeeded", str(d.get("success_count", 0))),
            ("Failed", str(d.get("failure_count", 0))),
        ]
        if d.get("reason"):
            fields.append(("Reason", _short(d["reason"])))
    elif kind == "rule.dead_letter":
        text = f"⚠️ rule {d.get('rule')} dead-lettered {d.get('dead_letters', 1)} message(s)"
        fields += [("Rule", str(d.get("rule"))), ("Dead letters", str(d.get("dead_letters", 1)))]
    elif kind.startswith("video.task."):
        done = kind.endswith(".done")
        text = f"Video summary task {d.get('task_id')} on {who} {'finished' if done else 'failed'}"
        fields += [("Task", str(d.get("task_id"))), ("Service", str(d.get("service_type")))]
        if done and d.get("classes"):
            fields.append(("Detected", ", ".join(str(c) for c in d["classes"])[:300]))
        if not done and d.get("reason"):
            fields.append(("Reason", _short(d["reason"])))
    else:
        text = f"{kind} on {who}"
    return Message(text=text, fields=fields, in_channel=True)


def summary_message(n: int, alert_kind: str, subject: str, window: int) -> Message:
    noun = _NOUN.get(alert_kind, "alerts")
    return Message(
        text=f"{n} more {noun} from {subject} suppressed in {chat_limit.window_text(window)}", in_channel=True
    )


def on_event(event: Any) -> None:
    """Durable subscriber of every domain event: the subscribed channels' alerts (module doc).
    Raises when a delivery could neither be queued nor recorded (the dispatch is retried)."""
    kind = alert_kind_of(event.kind)
    if kind is None:
        return
    subs = subscribers(kind, event.product_id)
    if not subs:
        return
    subject = _subject(event)
    message = message_for(event)
    dn = event.data.get("device_name")
    for sub in subs:
        admission = chat_limit.admit(sub.channel, event.kind, subject)
        if not admission.send:
            continue
        delivery.deliver_chat(
            sub.channel,
            message,
            target_id=f"chat/{sub.sk}",
            product_id=event.product_id or None,
            device_name=dn,
            resource=subscription_resource(sub.product_id),
        )
        if admission.gen:
            jobs.enqueue(
                "chat.summary",
                {
                    "key": admission.key,
                    "gen": admission.gen,
                    "sub": sub.sk,
                    "channel": sub.channel,
                    "kind": kind,
                    "subject": subject,
                    "pid": event.product_id,
                    "dn": dn,
                    "window": chat_limit.window_s(),
                    "until_ms": admission.until_ms,
                },
                # the job runs once the window is over (+1 s: a count racing the end lands first)
                delay_s=max(0, (admission.until_ms - clock.now_ms()) // 1000 + 1),
            )


def summary_step(body: dict[str, Any]) -> None:
    """Job ``chat.summary``: after a window, tell its channel how many alerts it suppressed."""
    remaining_ms = int(body.get("until_ms") or 0) - clock.now_ms()
    if remaining_ms > 0:  # early (a clock skew between workers): come back when the window is over
        jobs.enqueue("chat.summary", body, delay_s=remaining_ms // 1000 + 1)
        return
    n = chat_limit.close(body["key"], int(body["gen"]))
    if n <= 0:
        return
    try:
        _, sub = subscription_owner(body["sub"])
        resource = subscription_resource(sub.product_id)
    except errors.FleetboxError:
        resource = subscription_resource(body.get("pid"))
    delivery.deliver_chat(
        body["channel"],
        summary_message(n, body["kind"], body["subject"], int(body.get("window") or chat_limit.window_s())),
        target_id=f"chat/{body['sub']}",
        product_id=body.get("pid") or None,
        device_name=body.get("dn"),
        resource=resource,
    )


def _resource_of_sub(sub_id: str) -> str:
    try:
        return subscription_owner(sub_id)[0]
    except errors.FleetboxError:
        return f"chat/{sub_id}"


# a chat delivery's dead letters and delivery log are decided on its subscription's resource
delivery.register_owner("chat", _resource_of_sub)
