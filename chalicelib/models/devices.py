"""The devices table (pk product, sk device name; GSIs for status and firmware version) and the
shadows table beside it (same key, no index): the small, hot part of a device that every uplink
writes — latest reported values, pending desired values, topic form, activity day, region.

Why apart: an update is billed on the whole item's size and again on every index whose projection
holds it, so writing ``reported`` into the device record (tags, secret, info, two all-projection
indexes) cost 3–5 write units per report; the shadow costs one.

A shadow carries ``generation`` = the device record's ``created_at``: a shadow whose generation
differs from its device's (left by a device deleted and created again) is ignored by readers.
Records written before the shadow existed keep ``reported``/``desired``/``dollar``/… on the device
record; readers fall back to them, and the uplink copies them into the shadow the first time it
meets such a device (``attribute_exists(reported)`` fails on a missing or partial shadow).
"""

from __future__ import annotations

from pynamodb.attributes import BooleanAttribute, ListAttribute, MapAttribute, NumberAttribute, UnicodeAttribute
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from .base import meta


class StatusIndex(GlobalSecondaryIndex["DeviceRecord"]):
    class Meta:
        index_name = "status-index"
        projection = AllProjection()

    product_id = UnicodeAttribute(hash_key=True)
    status = UnicodeAttribute(range_key=True)


class FirmwareIndex(GlobalSecondaryIndex["DeviceRecord"]):
    class Meta:
        index_name = "firmware-index"
        projection = AllProjection()

    product_id = UnicodeAttribute(hash_key=True)
    firmware_version = UnicodeAttribute(range_key=True)


class DeviceRecord(Model):
    Meta = meta("devices")

    product_id = UnicodeAttribute(hash_key=True)
    device_name = UnicodeAttribute(range_key=True)
    secret = UnicodeAttribute(null=True)
    status = UnicodeAttribute(default="inactive")
    enabled = BooleanAttribute(default=True)
    tags = MapAttribute(default=dict)  # type: ignore[var-annotated]
    #: exact "key=value" tag terms (list `contains` = exact tag match)
    search_terms = ListAttribute[str](of=UnicodeAttribute, default=list)
    #: lower-cased name and tags, one per line
    search_text = UnicodeAttribute(default="")
    firmware_version = UnicodeAttribute(null=True)
    created_at = NumberAttribute()
    updated_at = NumberAttribute()
    activated_at = NumberAttribute(null=True)
    last_online_at = NumberAttribute(null=True)
    created_by = UnicodeAttribute(null=True)
    origin = UnicodeAttribute(default="api")
    #: the batch job that created the device (SPEC §7.1): a re-run chunk recognises its own devices
    batch_id = UnicodeAttribute(null=True)
    # -- connectivity (SPEC §5, §6.4) --
    #: legacy (the shadow holds them now; records written before it keep theirs, read as a fallback
    #: and copied into the shadow once): latest reported values, prop -> {"value": v, "time": ms},
    #: and desired values pending, prop -> {"value": v, "time": ms, "token": clientToken}
    reported = MapAttribute(null=True)  # type: ignore[var-annotated]
    desired = MapAttribute(null=True)  # type: ignore[var-annotated]
    #: report_info: fw_ver, module_hardinfo, module_softinfo, mac, imei, lat, lon, device_label
    info = MapAttribute(null=True)  # type: ignore[var-annotated]
    #: "{pid}/{dn}" of the gateway this subdevice is bound to
    gateway = UnicodeAttribute(null=True)
    last_offline_at = NumberAttribute(null=True)
    client_ip = UnicodeAttribute(null=True)
    #: the MQTT session currently connected (stale disconnects of an older session are ignored)
    session_id = UnicodeAttribute(null=True)
    #: the topic form the device last used: True = "$thing/...", False = "thing/...", None = unknown
    #: (the cloud publishes controls, actions and OTA on that form, on both when unknown); the
    #: uplink writes it here only when it changes (it compares with the shadow's copy)
    dollar = BooleanAttribute(null=True)
    #: legacy (now on the shadow): "YYYYMMDD" (UTC) of the device's last activity, and its region
    #: for the distribution statistics (a reported label wins over the position's region)
    active_day = UnicodeAttribute(null=True)
    region_label = UnicodeAttribute(null=True)
    region_pos = UnicodeAttribute(null=True)
    #: certificate-authenticated products: the device's X.509 certificate and key (PEM)
    cert_pem = UnicodeAttribute(null=True)
    key_pem = UnicodeAttribute(null=True)

    status_index = StatusIndex()
    firmware_index = FirmwareIndex()


class ShadowRecord(Model):
    """The device's shadow (see the module doc): pk product, sk device name."""

    Meta = meta("shadows")

    product_id = UnicodeAttribute(hash_key=True)
    device_name = UnicodeAttribute(range_key=True)
    #: the device record's ``created_at`` this shadow belongs to
    generation = NumberAttribute(null=True)
    #: mirrors the device's ``enabled`` so the uplink's one write can refuse a disabled device
    enabled = BooleanAttribute(null=True)
    #: latest reported values: prop -> {"value": v, "time": ms}; absent = not complete yet
    reported = MapAttribute(null=True)  # type: ignore[var-annotated]
    #: desired values pending for the device: prop -> {"value": v, "time": ms, "token": clientToken}
    desired = MapAttribute(null=True)  # type: ignore[var-annotated]
    #: the topic form of the device's last message (the record keeps a copy written on change)
    dollar = BooleanAttribute(null=True)
    #: "YYYYMMDD" (UTC) of the device's last activity: the first activity of a day counts it active
    active_day = UnicodeAttribute(null=True)
    #: region for the distribution statistics: a reported label wins over the position's region
    region_label = UnicodeAttribute(null=True)
    region_pos = UnicodeAttribute(null=True)
