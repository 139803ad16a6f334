"""Atomic counters and uniqueness guards (pk/sk), e.g. the device quota and product names."""

from __future__ import annotations

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.models import Model

from .base import meta


class CounterRecord(Model):
    Meta = meta("counters")

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    count = NumberAttribute(default=0)
    owner = UnicodeAttribute(null=True)
    expires_at = NumberAttribute(null=True)  # DynamoDB TTL (epoch seconds)


QUOTA_PK, QUOTA_DEVICES = "quota", "devices"
#: audio/video products count on their own quota (SPEC §7.4)
QUOTA_AV_DEVICES = "devices-av"
PRODUCT_NAME_PK = "product-name"
