"""Chat alert tables (SPEC §12): subscriptions, registered send-only channels, rate-limit windows.

One table (``chat_alerts``, pk/sk) holds three kinds of item:

* ``pk = "sub"``, ``sk = {subscription id}`` — a channel receives one alert kind (of one product,
  or of every product);
* ``pk = "channel"``, ``sk = {channel id}`` — a registered channel of a send-only platform (a
  Feishu/Lark custom bot: its webhook URL and signing secret);
* ``pk = "win#{key}"`` / ``"cnt#{key}#{gen}"``, ``sk = "-"`` — the rate limiter's window of one
  (channel, event kind, device) and the count of what it suppressed (TTL ``expires_at``), written
  with conditional UpdateItems by ``services/chat_limit.py``.
"""

from __future__ import annotations

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.models import Model

from .base import meta


class ChatSubscriptionRecord(Model):
    Meta = meta("chat_alerts")

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    channel = UnicodeAttribute()
    kind = UnicodeAttribute()
    #: None: every product's alerts of this kind
    product_id = UnicodeAttribute(null=True)
    created_at = NumberAttribute()
    created_by = UnicodeAttribute(null=True)


class ChatChannelRecord(Model):
    Meta = meta("chat_alerts")

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    platform = UnicodeAttribute()
    name = UnicodeAttribute()
    webhook_url = UnicodeAttribute()
    #: the signing secret (write-only: never shown after it is set)
    secret = UnicodeAttribute(null=True)
    created_at = NumberAttribute()
