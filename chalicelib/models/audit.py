"""The audit log: pk = UTC day, sk = millisecond time + request id (newest-first queries)."""

from __future__ import annotations

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.models import Model

from .base import meta


class AuditRecord(Model):
    Meta = meta("audit")

    day = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    ts = NumberAttribute()
    principal_id = UnicodeAttribute()
    key_id = UnicodeAttribute(null=True)
    action = UnicodeAttribute()
    resource = UnicodeAttribute()
    status = NumberAttribute()
    result = UnicodeAttribute()
    request_id = UnicodeAttribute()
    source_ip = UnicodeAttribute(null=True)
    channel = UnicodeAttribute(null=True)  # chat:slack:T/C, cloudapi, … (None: HTTP)
    detail = UnicodeAttribute(null=True)  # a short secret-free note (chat command words, why denied)
    expires_at = NumberAttribute(null=True)  # DynamoDB TTL (epoch seconds)
