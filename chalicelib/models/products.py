"""The products table: one item per product, thing model and custom topics inline."""

from __future__ import annotations

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from .base import JSONText, meta

ACCOUNT = "main"


class ProductsByAccount(GlobalSecondaryIndex["ProductRecord"]):
    class Meta:
        index_name = "account-index"
        projection = AllProjection()

    account = UnicodeAttribute(hash_key=True)
    created_at = NumberAttribute(range_key=True)


class ProductRecord(Model):
    Meta = meta("products")

    product_id = UnicodeAttribute(hash_key=True)
    account = UnicodeAttribute(default=ACCOUNT)
    name = UnicodeAttribute()
    category = UnicodeAttribute()
    device_type = UnicodeAttribute()
    subdevice_protocol = UnicodeAttribute(null=True)
    comm_method = UnicodeAttribute()
    auth_type = UnicodeAttribute()
    data_protocol = UnicodeAttribute()
    description = UnicodeAttribute(default="")
    binding_strategy = UnicodeAttribute(default="preemptive")
    status = UnicodeAttribute(default="developing")
    created_at = NumberAttribute()
    updated_at = NumberAttribute()
    created_by = UnicodeAttribute(null=True)
    device_count = NumberAttribute(default=0)
    thing_model = JSONText(null=True)
    topics = JSONText(null=True)
    register_type = NumberAttribute(default=0)
    register_limit = NumberAttribute(default=0)
    registered_count = NumberAttribute(default=0)
    product_secret = UnicodeAttribute(null=True)
    secret_rotated_at = NumberAttribute(null=True)
    #: key of the product QR code's signature (SPEC §3), made on first request
    qr_secret = UnicodeAttribute(null=True)
    #: the AI video analysis function (SPEC §11): video summary tasks only when enabled, and
    #: where their results are POSTed ({"url", "token"?, "secret"}; written by services/video.py)
    ai_video = NumberAttribute(default=0)
    video_callback = JSONText(null=True)

    by_account = ProductsByAccount()
