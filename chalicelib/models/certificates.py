"""The account's device CA (pk "ca", sk "device") and other certificate material."""

from __future__ import annotations

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.models import Model

from .base import meta


class CertificateRecord(Model):
    Meta = meta("certificates")

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    cert_pem = UnicodeAttribute()
    key_pem = UnicodeAttribute()
    created_at = NumberAttribute()
