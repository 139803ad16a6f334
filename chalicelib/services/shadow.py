"""The device shadow (``models.devices.ShadowRecord``): the small item every uplink writes.

What lives here: latest reported values, pending desired values, the topic form the device uses
(``dollar``), its last activity day and its region.  The uplink pipeline writes its one
``UpdateItem`` per device per batch here (``services/uplink.py``); this module owns everything
else about the shadow:

* :func:`state` — the values of one device as readers see them: the shadow when it belongs to the
  device record (same ``generation``), else what a record written before the shadow existed still
  holds (nothing stored is lost by the move);
* :func:`ensure` — create or complete a device's shadow from its record, in one transaction with
  a condition on the record (it exists, same generation, same ``enabled``), so a shadow is never
  written for a device deleted meanwhile and never carries a stale ``enabled``;
* :func:`fresh` — the shadow written with a new device (in its creation transaction);
* :func:`mirror_enabled`, :func:`note_activity`, :func:`store_desired` — the few other writers.

The device's delete transaction deletes its shadow (``services/devices.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from ..core import clock, errors
from ..models import dynamo
from ..models.devices import DeviceRecord, ShadowRecord
from ..models.dynamo import plain, to_av

#: fields a record written before the shadow existed holds on the device record itself
LEGACY_FIELDS = ("reported", "desired", "dollar", "active_day", "region_label", "region_pos")


@dataclass
class State:
    """One device's shadow values as readers see them."""

    reported: dict[str, Any]
    desired: dict[str, Any]
    dollar: bool | None = None
    active_day: str | None = None
    region_label: str | None = None
    region_pos: str | None = None
    #: True when these values come from the shadow item (False: the record's legacy fields)
    from_shadow: bool = False

    @property
    def region(self) -> str | None:
        return self.region_label or self.region_pos


def _key(pid: str, dn: str) -> dict[str, Any]:
    return {"product_id": {"S": pid}, "device_name": {"S": dn}}


def belongs(shadow: ShadowRecord | None, rec: DeviceRecord) -> bool:
    """The shadow holds this device's values: it has them and is of this record's generation."""
    return (
        shadow is not None
        and shadow.reported is not None
        and (shadow.generation is None or int(shadow.generation) == int(rec.created_at))
    )


def state(rec: DeviceRecord, shadow: ShadowRecord | None) -> State:
    source: Any = shadow if belongs(shadow, rec) else rec
    return State(
        reported=plain(source.reported) if source.reported is not None else {},
        desired=plain(source.desired) if source.desired is not None else {},
        dollar=source.dollar,
        active_day=source.active_day,
        region_label=source.region_label,
        region_pos=source.region_pos,
        from_shadow=source is shadow,
    )


def read(rec: DeviceRecord) -> State:
    """The state of a device whose record the caller holds (one consistent ``GetItem``)."""
    try:
        shadow = ShadowRecord.get(rec.product_id, rec.device_name, consistent_read=True)
    except ShadowRecord.DoesNotExist:
        shadow = None
    return state(rec, shadow)


def fresh(rec: DeviceRecord) -> ShadowRecord:
    """The shadow of a device being created (saved in the same transaction as the record)."""
    return ShadowRecord(
        product_id=rec.product_id,
        device_name=rec.device_name,
        generation=rec.created_at,
        enabled=rec.enabled,
        reported={},
        desired={},
    )


def ensure(pid: str, dn: str, attempts: int = 4) -> DeviceRecord | None:
    """Make the device's shadow complete (copying a legacy record's values); the record, or None
    when the device does not exist.  Values already in the shadow are kept (``if_not_exists``); a
    shadow of another generation (a deleted device's) is replaced."""
    client = dynamo.client()
    for _ in range(attempts):
        try:
            rec = DeviceRecord.get(pid, dn, consistent_read=True)
        except DeviceRecord.DoesNotExist:
            return None
        try:
            old = ShadowRecord.get(pid, dn, consistent_read=True)
        except ShadowRecord.DoesNotExist:
            old = None
        replace = old is not None and old.generation is not None and int(old.generation) != int(rec.created_at)
        names = {"#g": "generation", "#en": "enabled"}
        values: dict[str, Any] = {":g": {"N": str(int(rec.created_at))}, ":en": {"BOOL": bool(rec.enabled)}}
        sets = ["#g = :g", "#en = :en"]
        removes: list[str] = []
        for i, name in enumerate(LEGACY_FIELDS):
            value = getattr(rec, name)
            if name in ("reported", "desired"):
                value = plain(value) if value is not None else {}
            names[f"#l{i}"] = name
            if value is None:
                if replace:
                    removes.append(f"#l{i}")
                continue
            values[f":l{i}"] = to_av(value)
            sets.append(f"#l{i} = :l{i}" if replace else f"#l{i} = if_not_exists(#l{i}, :l{i})")
        update = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        used = {n for n in names if n in update}
        try:
            client.transact_write_items(
                TransactItems=[
                    {
                        "ConditionCheck": {
                            "TableName": DeviceRecord.Meta.table_name,
                            "Key": _key(pid, dn),
                            "ConditionExpression": "#c = :g AND #en = :en",
                            "ExpressionAttributeNames": {"#c": "created_at", "#en": "enabled"},
                            "ExpressionAttributeValues": {":g": values[":g"], ":en": values[":en"]},
                        }
                    },
                    {
                        "Update": {
                            "TableName": ShadowRecord.Meta.table_name,
                            "Key": _key(pid, dn),
                            "UpdateExpression": update,
                            "ExpressionAttributeNames": {n: v for n, v in names.items() if n in used},
                            "ExpressionAttributeValues": {k: v for k, v in values.items() if k in update},
                        }
                    },
                ]
            )
            return rec
        except ClientError as exc:
            if dynamo.error_code(exc) not in ("TransactionCanceledException", "TransactionConflictException"):
                raise
            # the record changed (deleted, re-created, enabled flipped) between our read and write
    raise RuntimeError(f"the shadow of {pid}/{dn} kept losing to concurrent changes")


def mirror_enabled(pid: str, dn: str, enabled: bool) -> None:
    """A device enabled or disabled: the shadow follows (only an existing one; :func:`ensure`
    copies the flag when it creates one)."""
    try:
        dynamo.client().update_item(
            TableName=ShadowRecord.Meta.table_name,
            Key=_key(pid, dn),
            UpdateExpression="SET #en = :en",
            ConditionExpression="attribute_exists(#dn)",
            ExpressionAttributeNames={"#en": "enabled", "#dn": "device_name"},
            ExpressionAttributeValues={":en": {"BOOL": enabled}},
        )
    except ClientError as exc:
        if dynamo.error_code(exc) != "ConditionalCheckFailedException":
            raise


def note_activity(rec: DeviceRecord, day: str) -> str | None:
    """The device was active on ``day`` (a connect): returns the day it was last active before."""
    out = dynamo.client().update_item(
        TableName=ShadowRecord.Meta.table_name,
        Key=_key(rec.product_id, rec.device_name),
        UpdateExpression="SET #ad = :day",
        ExpressionAttributeNames={"#ad": "active_day"},
        ExpressionAttributeValues={":day": {"S": day}},
        ReturnValues="ALL_OLD",
    )
    old = out.get("Attributes") or {}
    if "active_day" in old and belongs(ShadowRecord.from_raw_data(old), rec):
        return str(old["active_day"]["S"])
    return rec.active_day  # first activity since the shadow existed: the record's legacy day


def store_desired(pid: str, dn: str, values: dict[str, Any], token: str) -> None:
    """Control values kept for a device that did not receive them (delivered on its next get_status)."""
    now = clock.now_ms()
    names = {"#d": "desired"}
    attrs: dict[str, Any] = {}
    sets = []
    for i, (prop, value) in enumerate(sorted(values.items())):
        names[f"#p{i}"] = prop
        attrs[f":v{i}"] = {"M": {"value": to_av(value), "time": {"N": str(now)}, "token": {"S": token}}}
        sets.append(f"#d.#p{i} = :v{i}")
    for attempt in range(2):
        try:
            dynamo.client().update_item(
                TableName=ShadowRecord.Meta.table_name,
                Key=_key(pid, dn),
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression="attribute_exists(#d)",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=attrs,
            )
            return
        except ClientError as exc:
            if dynamo.error_code(exc) != "ConditionalCheckFailedException" or attempt:
                raise
        if ensure(pid, dn) is None:  # no shadow yet (or a partial one): make it, then write
            raise errors.DEVICE_NOT_EXIST(f"device {pid}/{dn} does not exist", "device_name")
