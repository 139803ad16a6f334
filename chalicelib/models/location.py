"""Location service tables (SPEC §10).

* ``location`` (pk ``account``, sk ``kind#id``): spaces, fences (with their bindings) and imported
  districts of the account, plus ``meta#version`` — a counter bumped by every fence change, which
  the alarm engine's per-process index checks at most every few seconds;
* ``alarms`` (pk product, sk ``{ms:013d}#{device}#{fence}#{type}``): one row per crossing, TTL;
* ``geo_cells`` (pk ``key`` = ``cell:{mcc}-{mnc}-{lac}-{cid}`` or ``wifi:{mac}``): the account's
  uploaded resolver table (lat, lon, accuracy m).

Fixes themselves cost no table: a report's fix rides on its content-log row (``fix``), the
latest one and the device's inside-set of fences on its shadow (``services/location``).
"""

from __future__ import annotations

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.models import Model

from .base import JSONText, meta


class SpaceRecord(Model):
    Meta = meta("location")

    account = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)  # space#{id}
    space_id = UnicodeAttribute()
    name = UnicodeAttribute()
    products = JSONText(default=list)
    remark = UnicodeAttribute(default="")
    created_at = NumberAttribute()
    updated_at = NumberAttribute()


class FenceRecord(Model):
    Meta = meta("location")

    account = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)  # fence#{id}
    fence_id = UnicodeAttribute()
    space_id = UnicodeAttribute()
    name = UnicodeAttribute()
    kind = UnicodeAttribute()  # circle | polygon | district
    #: circle: {"lat","lon","radius"}; polygon: GeoJSON geometry; district: {"district_id"}
    shape = JSONText()
    trigger = UnicodeAttribute(default="both")  # enter | exit | both
    tolerance = NumberAttribute(default=100)
    #: bound devices: ["{pid}/{dn}", …]
    devices = JSONText(default=list)
    created_at = NumberAttribute()
    updated_at = NumberAttribute()


class DistrictRecord(Model):
    Meta = meta("location")

    account = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)  # district#{id}
    district_id = UnicodeAttribute()
    name = UnicodeAttribute()
    level = UnicodeAttribute()  # province | city | district
    geometry = JSONText()
    created_at = NumberAttribute()


class VersionRecord(Model):
    Meta = meta("location")

    account = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)  # meta#version
    version = NumberAttribute(default=0)


class AlarmRecord(Model):
    Meta = meta("alarms")

    product_id = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    device_name = UnicodeAttribute()
    fence_id = UnicodeAttribute()
    space_id = UnicodeAttribute()
    type = UnicodeAttribute()  # enter | exit
    at = NumberAttribute()
    lat = NumberAttribute()
    lon = NumberAttribute()
    accuracy = NumberAttribute()
    expires_at = NumberAttribute(null=True)


class CellRecord(Model):
    Meta = meta("geo_cells")

    key = UnicodeAttribute(hash_key=True)
    lat = NumberAttribute()
    lon = NumberAttribute()
    accuracy = NumberAttribute()
