"""The chat alerts' rate limiter (SPEC §12: "alerts are rate-limited per (event, device) so one
flapping device cannot flood a channel").

Per key — (channel, event kind, device) — a **window** of ``chat_alert_window_s`` seconds opens
with the first alert, which is sent; every further alert of the key inside the window is
**counted**, not sent.  The count is summarised once the window is over ("N more alarms from P/dev
suppressed in the last minute") by a delayed job (``chat.summary``) queued when the window opened,
so the summary arrives even when no further event comes.

Everything is atomic DynamoDB, safe under concurrent workers:

* opening: ``UpdateItem`` on the window item ``win#{key}``: ``SET until = now + W ADD gen 1``
  under the condition ``attribute_not_exists(until) OR until <= now`` — exactly one caller opens
  a window (and learns its generation ``gen``);
* counting: ``UpdateItem ADD n 1`` on ``cnt#{key}#{gen}`` under ``attribute_not_exists(closed)``;
* closing (the summary job, after the window): ``UpdateItem SET closed = true`` under
  ``attribute_not_exists(closed)`` returning the old ``n`` — the count is read and frozen in one
  step, so a count that races the close either lands before it (and is summarised) or is refused
  and retried as a new window's first alert (and is sent).  Nothing is lost or counted twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from botocore.exceptions import ClientError

from ..core import clock
from ..core.config import settings
from ..models import dynamo

#: how long the limiter's items outlive their window (they are TTL-deleted after)
KEEP_S = 86400
#: a burst of races (window closing while counting) is retried this often before giving up
MAX_ROUNDS = 5


@dataclass(frozen=True)
class Admission:
    """The limiter's answer: ``send`` (the window's first alert: ``gen`` is its generation, the
    summary is due at ``until_ms``) or counted (``send`` False)."""

    send: bool
    key: str
    gen: int
    until_ms: int


def window_s() -> int:
    return max(1, int(settings().chat_alert_window_s))


def window_text(seconds: int) -> str:
    """ "the last minute" for 60 s, else "the last N s" / "the last N min"."""
    if seconds == 60:
        return "the last minute"
    if seconds % 60 == 0:
        return f"the last {seconds // 60} min"
    return f"the last {seconds} s"


def key_of(channel: str, event_kind: str, subject: str) -> str:
    """A bounded key for (channel, event kind, device or other subject)."""
    raw = f"{channel}\n{event_kind}\n{subject}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def _conditional_failed(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def _table() -> str:
    return settings().table("chat_alerts")


def _open(key: str, now_ms: int, w_ms: int) -> Admission | None:
    until = now_ms + w_ms
    try:
        out = dynamo.client().update_item(
            TableName=_table(),
            Key={"pk": {"S": f"win#{key}"}, "sk": {"S": "-"}},
            UpdateExpression="SET #u = :until, #x = :exp ADD #g :one",
            ConditionExpression="attribute_not_exists(#u) OR #u <= :now",
            ExpressionAttributeNames={"#u": "until", "#g": "gen", "#x": "expires_at"},
            ExpressionAttributeValues={
                ":until": {"N": str(until)},
                ":now": {"N": str(now_ms)},
                ":one": {"N": "1"},
                ":exp": {"N": str(until // 1000 + KEEP_S)},
            },
            ReturnValues="UPDATED_NEW",
        )
    except ClientError as exc:
        if _conditional_failed(exc):
            return None
        raise
    return Admission(True, key, int(out["Attributes"]["gen"]["N"]), until)


def _current(key: str) -> tuple[int, int] | None:
    out = dynamo.client().get_item(
        TableName=_table(), Key={"pk": {"S": f"win#{key}"}, "sk": {"S": "-"}}, ConsistentRead=True
    )
    item = out.get("Item")
    if not item or "gen" not in item or "until" not in item:
        return None
    return int(item["gen"]["N"]), int(item["until"]["N"])


def _count(key: str, gen: int, until_ms: int) -> bool:
    try:
        dynamo.client().update_item(
            TableName=_table(),
            Key={"pk": {"S": f"cnt#{key}#{gen}"}, "sk": {"S": "-"}},
            UpdateExpression="SET #x = :exp ADD #n :one",
            ConditionExpression="attribute_not_exists(#c)",
            ExpressionAttributeNames={"#n": "n", "#c": "closed", "#x": "expires_at"},
            ExpressionAttributeValues={":one": {"N": "1"}, ":exp": {"N": str(until_ms // 1000 + KEEP_S)}},
        )
    except ClientError as exc:
        if _conditional_failed(exc):
            return False
        raise
    return True


def admit(channel: str, event_kind: str, subject: str) -> Admission:
    """Send this alert (the first of its window) or count it (see the module doc)."""
    key = key_of(channel, event_kind, subject)
    w_ms = window_s() * 1000
    for _ in range(MAX_ROUNDS):
        now = clock.now_ms()
        opened = _open(key, now, w_ms)
        if opened is not None:
            return opened
        cur = _current(key)
        if cur is None:
            continue
        gen, until = cur
        if until > now and _count(key, gen, until):
            return Admission(False, key, gen, until)
        # the window ended between the two calls (or its count is closed): open the next one
    # a pathological race: send rather than drop (an extra message beats a lost alert)
    return Admission(True, key, 0, clock.now_ms() + w_ms)


def close(key: str, gen: int) -> int:
    """Freeze and return what window ``gen`` of ``key`` suppressed (0 if nothing, or if it was
    closed already — a re-delivered summary job sends nothing twice)."""
    try:
        out = dynamo.client().update_item(
            TableName=_table(),
            Key={"pk": {"S": f"cnt#{key}#{gen}"}, "sk": {"S": "-"}},
            UpdateExpression="SET #c = :t, #x = :exp",
            ConditionExpression="attribute_not_exists(#c)",
            ExpressionAttributeNames={"#c": "closed", "#x": "expires_at"},
            ExpressionAttributeValues={":t": {"BOOL": True}, ":exp": {"N": str(clock.now_s() + KEEP_S)}},
            ReturnValues="ALL_OLD",
        )
    except ClientError as exc:
        if _conditional_failed(exc):
            return 0
        raise
    old = out.get("Attributes") or {}
    return int(old["n"]["N"]) if "n" in old else 0
