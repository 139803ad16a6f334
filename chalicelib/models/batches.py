"""Mass production (SPEC §7): batch jobs, serial numbers, QR bindings."""

from __future__ import annotations

from pynamodb.attributes import BooleanAttribute, NumberAttribute, UnicodeAttribute
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, KeysOnlyProjection
from pynamodb.models import Model

from .base import JSONText, meta


class BatchesByProduct(GlobalSecondaryIndex["BatchRecord"]):
    class Meta:
        index_name = "product-index"
        projection = AllProjection()

    product_id = UnicodeAttribute(hash_key=True)
    created_at = NumberAttribute(range_key=True)


class ActiveBatches(GlobalSecondaryIndex["BatchRecord"]):
    """Sparse: only batches still running carry ``active`` (the resume sweep queries it)."""

    class Meta:
        index_name = "active-index"
        projection = KeysOnlyProjection()

    active = UnicodeAttribute(hash_key=True)
    batch_id = UnicodeAttribute(range_key=True)


class BatchRecord(Model):
    """One batch job; its checkpoint (``next_chunk`` and the counts) lives here."""

    Meta = meta("batches")

    batch_id = UnicodeAttribute(hash_key=True)
    #: "devices" (SPEC §7.1) or "serial_numbers" (§7.2)
    kind = UnicodeAttribute(default="devices")
    product_id = UnicodeAttribute()
    burn_method = UnicodeAttribute(null=True)
    generation = UnicodeAttribute(null=True)
    qr_code = BooleanAttribute(default=False)
    #: rows in the batch (auto: the quantity; upload: every row of the file, bad ones included)
    quantity = NumberAttribute()
    #: device licences reserved at creation (released at the end for rows that did not create)
    reserved = NumberAttribute(default=0)
    quota_released = BooleanAttribute(null=True)
    #: the quota the licences came from: "devices" or "devices-av" (SPEC §7.4)
    quota_sk = UnicodeAttribute(null=True)
    #: seed of the deterministic auto names / serial numbers: name(i) = f(seed, i)
    seed = UnicodeAttribute(null=True)
    chunk_size = NumberAttribute()
    chunks = NumberAttribute()
    status = UnicodeAttribute(default="created")
    next_chunk = NumberAttribute(default=0)
    #: deliveries of the current chunk (a chunk that keeps failing reports its rows instead)
    attempts = NumberAttribute(default=0)
    processed = NumberAttribute(default=0)
    success_count = NumberAttribute(default=0)
    failure_count = NumberAttribute(default=0)
    last_failure_reason = UnicodeAttribute(null=True)
    #: the first failed rows: [{"row", "device_name", "reason"}] (the CSV has them all)
    failures = JSONText(null=True)
    csv_key = UnicodeAttribute(null=True)
    zip_key = UnicodeAttribute(null=True)
    active = UnicodeAttribute(null=True)
    created_at = NumberAttribute()
    updated_at = NumberAttribute()
    finished_at = NumberAttribute(null=True)
    created_by = UnicodeAttribute(null=True)

    by_product = BatchesByProduct()
    active_index = ActiveBatches()


class SerialNumberRecord(Model):
    """A serial number printed on a cellular device (SPEC §7.2); linked to its device by IMEI."""

    Meta = meta("serial_numbers")

    product_id = UnicodeAttribute(hash_key=True)
    sn = UnicodeAttribute(range_key=True)
    batch_id = UnicodeAttribute(null=True)
    imei = UnicodeAttribute(null=True)
    device_name = UnicodeAttribute(null=True)
    created_at = NumberAttribute()
    linked_at = NumberAttribute(null=True)


class BindingsByUser(GlobalSecondaryIndex["BindingRecord"]):
    class Meta:
        index_name = "user-index"
        projection = AllProjection()

    user_id = UnicodeAttribute(hash_key=True)
    bound_at = NumberAttribute(range_key=True)


class BindingRecord(Model):
    """The current binding of one device (pk ``{pid}/{dn}``): one owner at a time (SPEC §7.3)."""

    Meta = meta("bindings")

    device = UnicodeAttribute(hash_key=True)
    binding_id = UnicodeAttribute()
    product_id = UnicodeAttribute()
    device_name = UnicodeAttribute()
    user_id = UnicodeAttribute()
    family_id = UnicodeAttribute(null=True)
    #: how the device was identified: "device" | "sn" | "product"
    via = UnicodeAttribute()
    bound_at = NumberAttribute()
    bound_by = UnicodeAttribute(null=True)

    by_user = BindingsByUser()
