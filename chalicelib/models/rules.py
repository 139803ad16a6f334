"""Rule engine and message push tables (SPEC §9): rules, data streams, dead letters, delivery log.

Per-rule statistics are atomic counters on the ``counters`` table (pk ``rule-stats``), so a
rule edit (a whole-item save here) never races a counter update.
"""

from __future__ import annotations

from pynamodb.attributes import BooleanAttribute, NumberAttribute, UnicodeAttribute
from pynamodb.models import Model

from .base import JSONText, meta


class RuleRecord(Model):
    """One rule per (account, name); actions and error actions inline (≤ 10 each)."""

    Meta = meta("rules")

    account = UnicodeAttribute(hash_key=True)
    name = UnicodeAttribute(range_key=True)
    description = UnicodeAttribute(default="")
    sql = UnicodeAttribute()
    enabled = BooleanAttribute(default=False)
    actions = JSONText(default=list)
    error_actions = JSONText(default=list)
    created_at = NumberAttribute()
    updated_at = NumberAttribute()
    #: why the engine disabled a target by itself (a 410 Gone), shown to the user
    note = UnicodeAttribute(null=True)


class StreamRecord(Model):
    """A message push data stream (SPEC §9.3)."""

    Meta = meta("streams")

    account = UnicodeAttribute(hash_key=True)
    stream_id = UnicodeAttribute(range_key=True)
    name = UnicodeAttribute()
    product_id = UnicodeAttribute()
    properties = JSONText(default=list)
    match = UnicodeAttribute(default="all")
    conditions = JSONText(default=list)
    outputs = JSONText(default=list)
    enabled = BooleanAttribute(default=False)
    created_at = NumberAttribute()
    updated_at = NumberAttribute()


class DeadLetterRecord(Model):
    """A delivery that exhausted its retries (and error actions), with the reason; replayable.
    sk ``{ms:013d}{random}`` lists newest first; TTL ``expires_at``."""

    Meta = meta("dead_letters")

    account = UnicodeAttribute(hash_key=True)
    letter_id = UnicodeAttribute(range_key=True)
    target = UnicodeAttribute()
    rule = UnicodeAttribute(null=True)
    #: what policies decide on: the rule's or stream's resource (``product/{pid}/rule/{name}``, …)
    resource = UnicodeAttribute(null=True)
    product_id = UnicodeAttribute(null=True)
    device_name = UnicodeAttribute(null=True)
    reason = UnicodeAttribute()
    attempts = NumberAttribute(default=0)
    status = UnicodeAttribute(default="dead")  # dead | replaying | replayed
    job = JSONText()
    webhook_id = UnicodeAttribute(null=True)
    created_at = NumberAttribute()
    updated_at = NumberAttribute()
    replays = NumberAttribute(default=0)
    expires_at = NumberAttribute(null=True)


class DeliveryRecord(Model):
    """One delivery attempt to a target (pk target id, sk ``{ms:013d}#{seq}``); TTL ``expires_at``."""

    Meta = meta("deliveries")

    target = UnicodeAttribute(hash_key=True)
    ts = UnicodeAttribute(range_key=True)
    webhook_id = UnicodeAttribute(null=True)
    attempt = NumberAttribute(default=1)
    ok = BooleanAttribute(default=False)
    status = NumberAttribute(null=True)
    latency_ms = NumberAttribute(default=0)
    error = UnicodeAttribute(null=True)
    snippet = UnicodeAttribute(null=True)
    expires_at = NumberAttribute(null=True)
