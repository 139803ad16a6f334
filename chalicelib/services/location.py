"""The location service (SPEC §10): fixes, spaces, fences, districts, resolver table, alarms,
positions and trajectories.  Geometry lives in ``media/geo.py``; the HTTP routes in
``handlers/location.py``.

**Fixes** (the uplink's batch stage :func:`on_batch`): each accepted report that carries a
location attribute gets one fix {lat, lon, accuracy m, source gps|wifi|cell, time}:

* ``GPS_Info`` / ``GPS_ExtInfo``: used directly; accuracy = a reported ``accuracy`` member (m) if
  the product's model has one, else :data:`GPS_DEFAULT_ACCURACY_M`; a ``GPS_ExtInfo`` with
  ``location_state`` 0 is "not located";
* ``Wifi_Info`` (APs by MAC) and ``Cell_Info`` / ``LBS_BS`` (``mcc:460;mnc:0;lac:…;cid:…``):
  resolved through the account's uploaded table (``geo_cells``; one ``BatchGetItem`` per batch
  that has such reports); several known APs → the RSSI-weighted centroid;
* the best source wins (GPS, then Wi-Fi, then cell); nothing resolvable → the fix is kept with
  ``unresolved`` = the reason and no position.

The fix costs no request of its own: it rides on the report's content-log row (``fix``) and, as
the device's latest position, on its shadow update (``position``).

**Fence state** rides on that same shadow update: one attribute per fence the device is inside
(``gf_{fence_id}`` = the time it entered).  For every fence bound to the device, each fix of
the batch (in time order) is *definitely inside*, *definitely outside* or undecided (hysteresis
band, or accuracy worse than the fence's tolerance: ``media/geo``); the last definite answer is
SET or REMOVEd with the update.  (Per-fence attributes rather than one string set: DynamoDB
refuses ``ADD s :in DELETE s :out`` on one attribute — "two document paths overlap".)  The update
returns the old item (``ALL_OLD``), so the old inside-set costs nothing: walking the batch's
decisions from it, every change in a triggering direction is **one alarm row** (written with
the batch's rows) and one ``fence.alarm`` domain event.  The first fix of a device inside a fence
raises ``enter`` (as Tencent does).  The changes apply only while the newest fix's property is
still written: a fix older than the stored one (dropped by the per-property time guard) moves
no fence state.  A fix crossing nothing adds no request.

**The engine** (:func:`engine`): every fence of the account in one STRtree, cached per process
and rebuilt when the account's fence version (``meta#version``, bumped by every fence or binding
change) moved — checked at most every :data:`REFRESH_S` seconds, never per fix.
"""

from __future__ import annotations

import csv
import io
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError
from pynamodb.exceptions import DoesNotExist

from ..core import clock, errors
from ..core.observability import logger
from ..media import geo, mapdraw
from ..models import dynamo
from ..models.devices import DeviceRecord, ShadowRecord
from ..models.location import (
    AlarmRecord,
    CellRecord,
    DistrictRecord,
    FenceRecord,
    SpaceRecord,
    VersionRecord,
)
from ..models.telemetry import DeviceLogRecord
from . import events
from .catalog import product_info
from .paging import checked_start, expect_key, fill_page
from .uplink_view import BatchResult, DeviceView

ACCOUNT = "main"
GPS_DEFAULT_ACCURACY_M = 10.0
REFRESH_S = 5.0
FENCE_ATTR = "gf_"
ALARM_DAYS = 365
SPACE_NAME_MAX, SPACE_REMARK_MAX, FENCE_NAME_MAX = 20, 25, 10
MAX_BINDINGS = 1000
MAX_TRAJECTORY_DEVICES = 3
MONTH_MS = 31 * 86400 * 1000
DEFAULT_TRAJECTORY_ACCURACY_M = 60.0
MAX_CELLS = 10_000
TRIGGERS = ("enter", "exit", "both")
LEVELS = ("province", "city", "district")
EVENT_KIND = "fence.alarm"


def _now() -> int:
    return clock.now_ms()


def _id(prefix: str) -> str:
    return prefix + secrets.token_hex(5)


# ===================================================================== spaces


def space_resource(space_id: str) -> str:
    return f"space/{space_id}"


def fence_resource(space_id: str, fence_id: str) -> str:
    return f"space/{space_id}/fence/{fence_id}"


def device_resource(pid: str, dn: str) -> str:
    return f"product/{pid}/device/{dn}"


def space_view(rec: SpaceRecord, fences: int | None = None) -> dict[str, Any]:
    out = {
        "space_id": rec.space_id,
        "name": rec.name,
        "products": list(rec.products or []),
        "remark": rec.remark or "",
        "created_at": int(rec.created_at),
        "updated_at": int(rec.updated_at),
    }
    if fences is not None:
        out["fence_count"] = fences
    return out


def _check_products(products: list[str]) -> None:
    for i, pid in enumerate(products):
        if product_info(pid) is None:
            raise errors.PRODUCT_NOT_EXIST(f"product {pid} does not exist", f"products[{i}]")


def _name_taken(name: str, exclude: str | None = None) -> bool:
    return any(s.name == name and s.space_id != exclude for s in _spaces())


def _spaces() -> list[SpaceRecord]:
    return list(SpaceRecord.query(ACCOUNT, SpaceRecord.sk.startswith("space#")))


def create_space(body: dict[str, Any]) -> dict[str, Any]:
    products = list(dict.fromkeys(body.get("products") or []))
    _check_products(products)
    if _name_taken(body["name"]):
        raise errors.SPACE_NAME_EXISTS(f"a space named {body['name']} already exists", "name")
    now = _now()
    sid = _id("sp_")
    rec = SpaceRecord(
        account=ACCOUNT,
        sk=f"space#{sid}",
        space_id=sid,
        name=body["name"],
        products=products,
        remark=body.get("remark") or "",
        created_at=now,
        updated_at=now,
    )
    rec.save(condition=SpaceRecord.sk.does_not_exist())
    return space_view(rec, 0)


def _get(model: Any, kind: str, item_id: str, missing: errors.ErrorCode) -> Any:
    try:
        return model.get(ACCOUNT, f"{kind}#{item_id}", consistent_read=True)
    except DoesNotExist:
        raise missing(f"{kind} {item_id} does not exist", f"{kind}_id") from None


def get_space(space_id: str) -> SpaceRecord:
    return _get(SpaceRecord, "space", space_id, errors.SPACE_NOT_EXIST)


def space_owner(space_id: str) -> tuple[str, SpaceRecord]:
    return space_resource(space_id), get_space(space_id)


def modify_space(rec: SpaceRecord, body: dict[str, Any]) -> dict[str, Any]:
    if "name" in body and body["name"] != rec.name and _name_taken(body["name"], rec.space_id):
        raise errors.SPACE_NAME_EXISTS(f"a space named {body['name']} already exists", "name")
    if "products" in body:
        products = list(dict.fromkeys(body["products"]))
        _check_products(products)
        rec.products = products
    if "name" in body:
        rec.name = body["name"]
    if "remark" in body:
        rec.remark = body["remark"]
    rec.updated_at = _now()
    rec.save()
    return space_view(rec, len(_fences_of(rec.space_id)))


def delete_space(rec: SpaceRecord) -> None:
    count = len(_fences_of(rec.space_id))
    if count:
        raise errors.SPACE_HAS_FENCES(f"space {rec.space_id} still has {count} fence(s); delete them first", "space_id")
    rec.delete()


def list_spaces(visible: Callable[[str], bool], limit: int, start: dict[str, Any] | None) -> tuple[list, Any]:
    expect_key(start, {"account": "S", "sk": "S"}, {"account": ACCOUNT})

    def fetch(key: dict[str, Any] | None) -> tuple[list[SpaceRecord], Any]:
        with checked_start(key):
            res = SpaceRecord.query(
                ACCOUNT, SpaceRecord.sk.startswith("space#"), limit=max(limit, 25), last_evaluated_key=key
            )
            return list(res), res.last_evaluated_key

    items, nxt = fill_page(
        fetch,
        lambda r: visible(space_resource(r.space_id)),
        lambda r: {"account": {"S": ACCOUNT}, "sk": {"S": r.sk}},
        limit,
        start,
    )
    return [space_view(r) for r in items], nxt


# ===================================================================== districts


def import_districts(body: dict[str, Any]) -> dict[str, Any]:
    doc = body["features"]
    made = []
    parsed = []
    for i, feat in enumerate(doc):
        where = f"features[{i}]"
        if not isinstance(feat, dict) or feat.get("type") != "Feature":
            raise errors.GEOMETRY_INVALID(f"{where} must be a GeoJSON Feature", where)
        props = feat.get("properties")
        if not isinstance(props, dict):
            raise errors.GEOMETRY_INVALID(f"{where}.properties must be an object with level and name", where)
        level, name = props.get("level"), props.get("name")
        if level not in LEVELS:
            raise errors.LEVEL_INVALID(f"{where}.properties.level must be one of {', '.join(LEVELS)}", where)
        if not isinstance(name, str) or not 0 < len(name) <= 64:
            raise errors.DISTRICT_NAME_INVALID(f"{where}.properties.name must be 1-64 characters", where)
        try:
            geom = geo.polygon_of(feat.get("geometry"))
        except geo.GeoError as exc:
            raise errors.GEOMETRY_INVALID(f"{where}.geometry {exc}", f"{where}.geometry") from None
        parsed.append((level, name, geom))
    now = _now()
    with DistrictRecord.batch_write() as batch:
        for level, name, geom in parsed:
            did = _id("dt_")
            batch.save(
                DistrictRecord(
                    account=ACCOUNT,
                    sk=f"district#{did}",
                    district_id=did,
                    name=name,
                    level=level,
                    geometry=geo.to_geojson(geom),
                    created_at=now,
                )
            )
            made.append({"district_id": did, "name": name, "level": level})
    return {"items": made, "total": len(made)}


def _district(district_id: str) -> DistrictRecord:
    return _get(DistrictRecord, "district", district_id, errors.DISTRICT_NOT_EXIST)


def list_districts() -> list[dict[str, Any]]:
    return [
        {"district_id": d.district_id, "name": d.name, "level": d.level}
        for d in DistrictRecord.query(ACCOUNT, DistrictRecord.sk.startswith("district#"))
    ]


# ===================================================================== fences


def _fences_of(space_id: str) -> list[FenceRecord]:
    return [f for f in _all_fences() if f.space_id == space_id]


def _all_fences() -> list[FenceRecord]:
    return list(FenceRecord.query(ACCOUNT, FenceRecord.sk.startswith("fence#")))


def _shape_of(body: dict[str, Any], kind: str) -> dict[str, Any]:
    """The fence's stored shape from the request, validated (errors name the field)."""
    if kind == "circle":
        circle = body.get("circle")
        if not isinstance(circle, dict):
            raise errors.missing("circle")
        return {"lat": circle["lat"], "lon": circle["lon"], "radius": circle["radius"]}
    if kind == "polygon":
        if body.get("polygon") is None:
            raise errors.missing("polygon")
        try:
            geom = geo.polygon_of(body["polygon"])
        except geo.GeoError as exc:
            raise errors.GEOMETRY_INVALID(f"polygon {exc}", "polygon") from None
        return {"geometry": geo.to_geojson(geom)}
    did = body.get("district_id")
    if not did:
        raise errors.missing("district_id")
    _district(did)
    return {"district_id": did}


def fence_view(rec: FenceRecord) -> dict[str, Any]:
    shape = dict(rec.shape or {})
    out: dict[str, Any] = {
        "fence_id": rec.fence_id,
        "space_id": rec.space_id,
        "name": rec.name,
        "type": rec.kind,
        "trigger": rec.trigger,
        "accuracy_tolerance": rec.tolerance,
        "devices": [_split(d) for d in rec.devices or []],
        "created_at": int(rec.created_at),
        "updated_at": int(rec.updated_at),
    }
    if rec.kind == "circle":
        out["circle"] = shape
    elif rec.kind == "polygon":
        out["polygon"] = shape.get("geometry")
    else:
        out["district_id"] = shape.get("district_id")
    return out


def _split(key: str) -> dict[str, str]:
    pid, _, dn = key.partition("/")
    return {"product_id": pid, "device_name": dn}


def _check_devices(space: SpaceRecord, devices: Iterable[dict[str, str]], field_name: str) -> list[str]:
    keys = []
    for i, d in enumerate(devices):
        pid, dn = d["product_id"], d["device_name"]
        if pid not in (space.products or []):
            raise errors.DEVICE_NOT_IN_SPACE(
                f"product {pid} is not associated with space {space.space_id}", f"{field_name}[{i}].product_id"
            )
        try:
            DeviceRecord.get(pid, dn)
        except DoesNotExist:
            raise errors.DEVICE_NOT_EXIST(
                f"device {pid}/{dn} does not exist", f"{field_name}[{i}].device_name"
            ) from None
        keys.append(f"{pid}/{dn}")
    return list(dict.fromkeys(keys))


def create_fence(space: SpaceRecord, body: dict[str, Any]) -> dict[str, Any]:
    if any(f.name == body["name"] for f in _fences_of(space.space_id)):
        raise errors.FENCE_NAME_EXISTS(f"space {space.space_id} already has a fence named {body['name']}", "name")
    shape = _shape_of(body, body["type"])
    devices = _check_devices(space, body.get("devices") or [], "devices")
    now = _now()
    fid = _id("fc_")
    rec = FenceRecord(
        account=ACCOUNT,
        sk=f"fence#{fid}",
        fence_id=fid,
        space_id=space.space_id,
        name=body["name"],
        kind=body["type"],
        shape=shape,
        trigger=body.get("trigger") or "both",
        tolerance=body.get("accuracy_tolerance", 100),
        devices=devices,
        created_at=now,
        updated_at=now,
    )
    rec.save(condition=FenceRecord.sk.does_not_exist())
    bump_version()
    return fence_view(rec)


def get_fence(fence_id: str) -> FenceRecord:
    return _get(FenceRecord, "fence", fence_id, errors.FENCE_NOT_EXIST)


def fence_owner(fence_id: str) -> tuple[str, FenceRecord]:
    rec = get_fence(fence_id)
    return fence_resource(rec.space_id, rec.fence_id), rec


def modify_fence(rec: FenceRecord, body: dict[str, Any]) -> dict[str, Any]:
    if "name" in body and body["name"] != rec.name and any(f.name == body["name"] for f in _fences_of(rec.space_id)):
        raise errors.FENCE_NAME_EXISTS(f"space {rec.space_id} already has a fence named {body['name']}", "name")
    kind = body.get("type", rec.kind)
    if "type" in body or any(k in body for k in ("circle", "polygon", "district_id")):
        rec.shape = _shape_of(body, kind)
        rec.kind = kind
    for src, dst in (("name", "name"), ("trigger", "trigger"), ("accuracy_tolerance", "tolerance")):
        if src in body:
            setattr(rec, dst, body[src])
    before = set(rec.devices or [])
    if "devices" in body:
        rec.devices = _check_devices(get_space(rec.space_id), body["devices"], "devices")
    rec.updated_at = _now()
    rec.save()
    bump_version()
    forget_state(rec.fence_id, before - set(rec.devices or []))
    return fence_view(rec)


def delete_fence(rec: FenceRecord) -> None:
    rec.delete()
    bump_version()
    forget_state(rec.fence_id, rec.devices or [])


def forget_state(fence_id: str, device_keys: Iterable[str]) -> None:
    """Devices no longer bound to a fence forget whether they were inside it: bound again later,
    their next fix decides afresh (a first fix inside raises ``enter``), never from stale state."""
    client = dynamo.client()
    for key in device_keys:
        pid, _, dn = key.partition("/")
        try:
            client.update_item(
                TableName=ShadowRecord.Meta.table_name,
                Key={"product_id": {"S": pid}, "device_name": {"S": dn}},
                UpdateExpression="REMOVE #f",
                ConditionExpression="attribute_exists(#dn)",
                ExpressionAttributeNames={"#f": FENCE_ATTR + fence_id, "#dn": "device_name"},
            )
        except ClientError as exc:
            if dynamo.error_code(exc) != "ConditionalCheckFailedException":
                raise  # (a device without a shadow has no state to forget)


def bind(rec: FenceRecord, devices: list[dict[str, str]]) -> dict[str, Any]:
    keys = _check_devices(get_space(rec.space_id), devices, "devices")
    merged = list(dict.fromkeys(list(rec.devices or []) + keys))
    if len(merged) > MAX_BINDINGS:
        raise errors.BINDING_LIMIT(f"a fence binds at most {MAX_BINDINGS} devices", "devices")
    rec.devices = merged
    rec.updated_at = _now()
    rec.save()
    bump_version()
    return fence_view(rec)


def unbind(rec: FenceRecord, devices: list[dict[str, str]]) -> dict[str, Any]:
    drop = {f"{d['product_id']}/{d['device_name']}" for d in devices}
    dropped = [d for d in rec.devices or [] if d in drop]
    rec.devices = [d for d in rec.devices or [] if d not in drop]
    rec.updated_at = _now()
    rec.save()
    bump_version()
    forget_state(rec.fence_id, dropped)
    return fence_view(rec)


def list_fences(space_id: str, visible: Callable[[str], bool]) -> list[dict[str, Any]]:
    return [fence_view(f) for f in _fences_of(space_id) if visible(fence_resource(f.space_id, f.fence_id))]


def bump_version() -> None:
    VersionRecord(account=ACCOUNT, sk="meta#version").update(actions=[VersionRecord.version.add(1)])
    _ENGINE.checked = 0.0  # this process sees its own change at once


# ===================================================================== resolver table


def import_cells(body: dict[str, Any]) -> dict[str, Any]:
    """The account's cell / access-point table: CSV text (``key,lat,lon,accuracy`` where key is
    ``mcc-mnc-lac-cid`` or a MAC) or JSON entries {cell|mac, lat, lon, accuracy}."""
    entries: list[tuple[str, float, float, float]] = []
    if body.get("csv") is not None:
        try:
            rows = list(csv.reader(io.StringIO(body["csv"])))
        except csv.Error as exc:
            raise errors.CSV_INVALID(f"the CSV cannot be read: {exc}", "csv") from None
        if rows and rows[0] and rows[0][0].strip().lower() in ("key", "cell", "mac", "id"):
            rows = rows[1:]
        source: list[Any] = [{"key": r[0] if r else "", "lat": r[1:2], "lon": r[2:3], "acc": r[3:4]} for r in rows]
        for i, raw in enumerate(source):
            try:
                lat, lon = float(raw["lat"][0]), float(raw["lon"][0])
                acc = float(raw["acc"][0]) if raw["acc"] else 100.0
            except (ValueError, IndexError):
                raise errors.CSV_INVALID(f"row {i + 1}: expected key,lat,lon[,accuracy]", "csv") from None
            entries.append((raw["key"].strip(), lat, lon, acc))
    else:
        for i, e in enumerate(body.get("entries") or []):
            values = (
                [e.get(k, 100.0 if k == "accuracy" else None) for k in ("lat", "lon", "accuracy")]
                if isinstance(e, dict)
                else []
            )
            if len(values) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                raise errors.CELL_KEY_INVALID(
                    f"entries[{i}]: expected {{cell|mac, lat, lon[, accuracy]}} numbers", "entries"
                )
            key = e.get("cell") or e.get("mac") or ""
            lat, lon, acc = (float(v) for v in values if isinstance(v, (int, float)))
            entries.append((key if isinstance(key, str) else "", lat, lon, acc))
    if not entries:
        raise errors.missing("csv")
    if len(entries) > MAX_CELLS:
        raise errors.CSV_TOO_LARGE(f"at most {MAX_CELLS} entries per upload", "csv")
    records = []
    for i, (key, lat, lon, acc) in enumerate(entries):
        store_key = _cell_store_key(key)
        if store_key is None:
            raise errors.CELL_KEY_INVALID(
                f"entry {i + 1}: {key[:40]!r} is neither mcc-mnc-lac-cid nor a MAC address", "csv"
            )
        if not (-90 <= lat <= 90 and -180 <= lon <= 180) or not 0 < acc <= 100_000:
            raise errors.CELL_KEY_INVALID(f"entry {i + 1}: lat/lon out of range or accuracy not in 0-100000 m", "csv")
        records.append(CellRecord(key=store_key, lat=lat, lon=lon, accuracy=acc))
    with CellRecord.batch_write() as batch:
        for r in records:
            batch.save(r)
    return {"imported": len(records)}


def _cell_store_key(key: str) -> str | None:
    parts = key.split("-")
    if len(parts) == 4 and all(p.strip().isdigit() for p in parts):
        return geo.cell_key(*(int(p) for p in parts))
    return geo.mac_key(key) if ":" in key or len(key) == 12 else None


# ===================================================================== fixes (uplink stage)


@dataclass
class Fix:
    source: str
    time: int
    lat: float | None = None
    lon: float | None = None
    accuracy: float | None = None
    unresolved: str | None = None
    prop: str = ""

    def doc(self) -> dict[str, Any]:
        if self.unresolved:
            return {"source": self.source, "time": self.time, "unresolved": self.unresolved}
        return {
            "lat": self.lat,
            "lon": self.lon,
            "accuracy": round(self.accuracy or 0.0, 1),
            "source": self.source,
            "time": self.time,
        }


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _gps(value: Any, at: int, prop: str) -> Fix | None:
    if not isinstance(value, dict):
        return None
    lat, lon = _num(value.get("latitude")), _num(value.get("longitude"))
    if lat is None or lon is None:
        return None
    if value.get("location_state") == 0:
        return Fix("gps", at, unresolved="GPS reports no fix (location_state 0)", prop=prop)
    acc = _num(value.get("accuracy"))
    return Fix("gps", at, lat, lon, acc if acc is not None and acc >= 0 else GPS_DEFAULT_ACCURACY_M, prop=prop)


def _cell_keys(values: dict[str, Any]) -> tuple[str | None, str | None]:
    """(cell key, problem) of a report's Cell_Info or LBS_BS."""
    cell = values.get("Cell_Info")
    if isinstance(cell, dict):
        nums = [cell.get(k) for k in ("mcc", "mnc", "lac", "cid")]
        if all(isinstance(n, int) for n in nums):
            return geo.cell_key(*nums), None  # type: ignore[arg-type]
        return None, "Cell_Info lacks mcc, mnc, lac or cid"
    text = values.get("LBS_BS")
    if isinstance(text, str):
        try:
            p = geo.parse_lbs(text)
        except geo.GeoError as exc:
            return None, str(exc)
        return geo.cell_key(p["mcc"], p["mnc"], p["lac"], p["cid"]), None
    return None, None


def _wifi(values: dict[str, Any]) -> list[tuple[str, float | None]]:
    aps = values.get("Wifi_Info")
    out = []
    if isinstance(aps, list):
        for ap in aps:
            if isinstance(ap, dict) and isinstance(ap.get("Mac"), str):
                key = geo.mac_key(ap["Mac"])
                if key:
                    out.append((key, _num(ap.get("Rssi"))))
    return out


def _lookup(keys: set[str], result: BatchResult) -> dict[str, tuple[float, float, float]]:
    """Resolver rows for ``keys``: one BatchGetItem per 100 keys."""
    found: dict[str, tuple[float, float, float]] = {}
    table = CellRecord.Meta.table_name
    wanted = sorted(keys)
    for start in range(0, len(wanted), 100):
        pending: dict[str, Any] = {table: {"Keys": [{"key": {"S": k}} for k in wanted[start : start + 100]]}}
        for attempt in range(8):
            result.requests += 1
            out = dynamo.client().batch_get_item(RequestItems=pending)
            for item in (out.get("Responses") or {}).get(table, []):
                row = dynamo.item(item)
                found[row["key"]] = (float(row["lat"]), float(row["lon"]), float(row["accuracy"]))
            pending = out.get("UnprocessedKeys") or {}
            if not pending:
                break
            time.sleep(min(0.05 * 2**attempt, 1.0))
    return found


def fixes_of(values: dict[str, Any], at: int, table: dict[str, tuple[float, float, float]] | None) -> Fix | None:
    """The report's fix (best source first), or None when it carries no location attribute."""
    for prop in ("GPS_ExtInfo", "GPS_Info"):
        if prop in values:
            gps = _gps(values[prop], at, prop)
            if gps is not None and gps.unresolved is None:
                return gps
    reasons = []
    aps = _wifi(values)
    if aps:
        known = [(table or {}).get(k) for k, _ in aps]
        points = [(p[0], p[1], p[2], geo.rssi_weight(r)) for p, (_, r) in zip(known, aps, strict=True) if p]
        if points:
            lat, lon, acc = geo.weighted_centroid(points)
            return Fix("wifi", at, lat, lon, acc, prop="Wifi_Info")
        reasons.append("no access point is in the resolver table")
    cell, problem = _cell_keys(values)
    cell_prop = "Cell_Info" if "Cell_Info" in values else "LBS_BS"
    if cell is not None:
        hit = (table or {}).get(cell)
        if hit:
            return Fix("cell", at, hit[0], hit[1], hit[2], prop=cell_prop)
        reasons.append(f"cell {cell[5:]} is not in the resolver table")
    elif problem:
        reasons.append(problem)
    for prop in ("GPS_ExtInfo", "GPS_Info"):
        if prop in values:
            gps = _gps(values[prop], at, prop)
            if gps is not None:
                return gps
    if reasons:
        source = "wifi" if aps else "cell"
        return Fix(source, at, unresolved="; ".join(reasons), prop="Wifi_Info" if aps else cell_prop)
    return None


def on_batch(devices: list[DeviceView], result: BatchResult) -> None:
    """The uplink's location stage: fixes onto content rows and shadows, fence state, alarms."""
    keys: set[str] = set()
    for dev in devices:
        for _, _, values in dev.reports:
            cell, _ = _cell_keys(values)
            if cell:
                keys.add(cell)
            keys.update(k for k, _ in _wifi(values))
    table = _lookup(keys, result) if keys else {}
    per_device: list[tuple[DeviceView, list[Fix]]] = []
    for dev in devices:
        fixes = []
        for m, at, values in dev.reports:
            fix = fixes_of(values, at, table)
            if fix is None:
                continue
            row = dev.content_row(m)
            if row is not None:
                row.fix = fix.doc()
            fixes.append(fix)
        if fixes:
            per_device.append((dev, sorted(fixes, key=lambda f: f.time)))
    if not per_device:
        return
    resolved = [(dev, [f for f in fixes if f.unresolved is None]) for dev, fixes in per_device]
    eng = engine(result)
    lats = [f.lat for _, fs in resolved for f in fs]
    lons = [f.lon for _, fs in resolved for f in fs]
    accs = [f.accuracy for _, fs in resolved for f in fs]
    if eng.bound and lats:
        decided, near = eng.index.classify(lats, lons, accs)  # type: ignore[arg-type]
    else:
        decided, near = [{} for _ in lats], [set() for _ in lats]
    i = 0
    for dev, fixes in resolved:
        if not fixes:
            continue
        newest = fixes[-1]
        dev.shadow_set["position"] = newest.doc()
        dev.shadow_guard = (newest.prop, newest.time)
        bound = eng.bound.get(f"{dev.pid}/{dev.dn}", set())
        steps: dict[str, list[tuple[str, Fix]]] = {}
        for fix in fixes:
            answer, close = decided[i], near[i]
            i += 1
            for fid in bound:
                d = answer.get(fid)
                if d is None and fid not in close and fid in eng.fences:
                    # far from the fence: definitely outside, for a fix accurate enough to use
                    d = geo.OUT if (fix.accuracy or 0.0) <= float(eng.fences[fid].tolerance) else None
                if d is not None:
                    steps.setdefault(fid, []).append((d, fix))
        for fid, seq in steps.items():
            attr = FENCE_ATTR + fid
            if seq[-1][0] == geo.IN:
                dev.shadow_set[attr] = seq[-1][1].time
            else:
                dev.shadow_remove.append(attr)
        if steps:
            dev.on_stored.append(_alarms_after(dev, steps, eng))


def _alarms_after(dev: DeviceView, steps: dict[str, list[tuple[str, Fix]]], eng: Engine) -> Callable[[dict], None]:
    def raise_alarms(old: dict[str, Any]) -> None:
        for fid, seq in steps.items():
            inside = (FENCE_ATTR + fid) in old
            fence = eng.fences.get(fid)
            if fence is None:
                continue
            for d, fix in seq:
                now_inside = d == geo.IN
                if now_inside == inside:
                    continue
                inside = now_inside
                kind = "enter" if now_inside else "exit"
                if fence.trigger in (kind, "both"):
                    _alarm(dev, fence, kind, fix)

    return raise_alarms


def _alarm(dev: DeviceView, fence: FenceRecord, kind: str, fix: Fix) -> None:
    """One alarm row (written with the batch's rows) and its ``fence.alarm`` domain event."""
    facts: dict[str, Any] = {
        "device_name": dev.dn,
        "fence_id": fence.fence_id,
        "space_id": fence.space_id,
        "type": kind,
        "lat": fix.lat,
        "lon": fix.lon,
        "accuracy": fix.accuracy,
    }
    dev.add_row(
        AlarmRecord(
            product_id=dev.pid,
            sk=f"{fix.time:013d}#{dev.dn}#{fence.fence_id}#{kind}",
            at=fix.time,
            expires_at=fix.time // 1000 + ALARM_DAYS * 86400,
            **facts,
        )
    )
    events.emit(EVENT_KIND, dev.pid, fence_name=fence.name, time=fix.time, **facts)


# ===================================================================== the engine


@dataclass
class Engine:
    version: int = -1
    checked: float = 0.0
    index: geo.FenceIndex = field(default_factory=geo.FenceIndex)
    fences: dict[str, FenceRecord] = field(default_factory=dict)
    #: "{pid}/{dn}" -> ids of the fences bound to it
    bound: dict[str, set[str]] = field(default_factory=dict)


_ENGINE = Engine()
_LOCK = threading.Lock()


def forget() -> None:
    """Drop the cached index (tests: a fresh database restarts the version count)."""
    global _ENGINE
    with _LOCK:
        _ENGINE = Engine()


def geo_fence(rec: FenceRecord, districts: dict[str, Any]) -> geo.Fence | None:
    shape = rec.shape or {}
    tol = float(rec.tolerance)
    if rec.kind == "circle":
        return geo.Fence(rec.fence_id, "circle", tol, center=(shape["lat"], shape["lon"]), radius_m=shape["radius"])
    doc = shape.get("geometry") if rec.kind == "polygon" else districts.get(shape.get("district_id", ""))
    if doc is None:
        return None
    return geo.Fence(rec.fence_id, rec.kind, tol, geom=geo.polygon_of(doc))


def engine(result: BatchResult | None = None) -> Engine:
    """The cached index, rebuilt when the account's fence version moved (checked every REFRESH_S)."""
    global _ENGINE
    with _LOCK:
        now = time.monotonic()
        if now - _ENGINE.checked < REFRESH_S and _ENGINE.version >= 0:
            return _ENGINE
        if result is not None:
            result.requests += 1
        try:
            version = int(VersionRecord.get(ACCOUNT, "meta#version").version)
        except DoesNotExist:
            version = 0
        if version == _ENGINE.version:
            _ENGINE.checked = now
            return _ENGINE
        fences = _all_fences()
        districts = {
            d.district_id: d.geometry for d in DistrictRecord.query(ACCOUNT, DistrictRecord.sk.startswith("district#"))
        }
        if result is not None:
            result.requests += 2
        built = [g for g in (geo_fence(f, districts) for f in fences) if g is not None]
        bound: dict[str, set[str]] = {}
        for f in fences:
            for d in f.devices or []:
                bound.setdefault(d, set()).add(f.fence_id)
        _ENGINE = Engine(version, now, geo.FenceIndex.build(built), {f.fence_id: f for f in fences}, bound)
        logger.info("fence index rebuilt", extra={"fences": len(built), "version": version})
        return _ENGINE


# ===================================================================== queries


def alarm_view(r: AlarmRecord) -> dict[str, Any]:
    return {
        "product_id": r.product_id,
        "device_name": r.device_name,
        "fence_id": r.fence_id,
        "space_id": r.space_id,
        "type": r.type,
        "time": int(r.at),
        "lat": float(r.lat),
        "lon": float(r.lon),
        "accuracy": float(r.accuracy),
    }


def list_alarms(
    query: dict[str, Any], visible: Callable[[str], bool], start: dict[str, Any] | None
) -> tuple[list[dict[str, Any]], Any]:
    pid = query["product_id"]
    lo, hi = _range(query)
    expect_key(start, {"product_id": "S", "sk": "S"}, {"product_id": pid})
    cond = None
    if query.get("device_name"):
        cond = AlarmRecord.device_name == query["device_name"]
    if query.get("fence_id"):
        c = AlarmRecord.fence_id == query["fence_id"]
        cond = c if cond is None else cond & c
    limit = query["limit"]

    def fetch(key: dict[str, Any] | None) -> tuple[list[AlarmRecord], Any]:
        with checked_start(key):
            res = AlarmRecord.query(
                pid,
                AlarmRecord.sk.between(f"{lo:013d}", f"{hi:013d}~"),
                filter_condition=cond,
                scan_index_forward=True,
                limit=max(limit, 25),
                last_evaluated_key=key,
            )
            return list(res), res.last_evaluated_key

    items, nxt = fill_page(
        fetch,
        lambda r: visible(device_resource(r.product_id, r.device_name)),
        lambda r: {"product_id": {"S": r.product_id}, "sk": {"S": r.sk}},
        limit,
        start,
    )
    return [alarm_view(r) for r in items], nxt


def _range(query: dict[str, Any]) -> tuple[int, int]:
    now = _now()
    hi = int(query.get("end") or now)
    lo = int(query["start"]) if query.get("start") is not None else hi - 7 * 86400 * 1000
    if lo > hi:
        raise errors.TIME_RANGE_INVALID("start must not be after end", "start")
    return lo, hi


def positions(products: list[str], visible: Callable[[str], bool]) -> list[dict[str, Any]]:
    """Latest position of every device of ``products`` (a key query on the shadows per product)."""
    out = []
    for pid in products:
        last = None
        while True:
            kw: dict[str, Any] = {
                "TableName": ShadowRecord.Meta.table_name,
                "KeyConditionExpression": "product_id = :p",
                "ExpressionAttributeValues": {":p": {"S": pid}},
                "ProjectionExpression": "device_name, #pos",
                "ExpressionAttributeNames": {"#pos": "position"},
            }
            if last:
                kw["ExclusiveStartKey"] = last
            res = dynamo.client().query(**kw)
            for raw in res.get("Items", []):
                row = dynamo.item(raw)
                pos = row.get("position")
                if pos and visible(device_resource(pid, row["device_name"])):
                    out.append({"product_id": pid, "device_name": row["device_name"], **pos})
            last = res.get("LastEvaluatedKey")
            if not last:
                break
    return out


def trajectory(pid: str, dn: str, lo: int, hi: int, max_accuracy: float) -> list[dict[str, Any]]:
    """The device's fixes in [lo, hi], oldest first, accuracy ≤ ``max_accuracy``: a key query over
    its content partition filtered on the ``fix`` attribute."""
    out = []
    skew = 60_000  # a content row sorts by its report time, or by arrival when the stamp was off
    for rec in DeviceLogRecord.query(
        f"{pid}/{dn}/content",
        DeviceLogRecord.ts.between(f"{max(0, lo - skew):013d}", f"{hi + skew:013d}~"),
        filter_condition=DeviceLogRecord.fix.exists(),
    ):
        fix = dynamo.plain(rec.fix)
        if not fix or fix.get("unresolved") or not lo <= int(fix["time"]) <= hi:
            continue
        if float(fix["accuracy"]) <= max_accuracy:
            out.append(fix)
    out.sort(key=lambda f: f["time"])
    return out


def trajectories(query: dict[str, Any], visible: Callable[[str], bool]) -> dict[str, Any]:
    devices = [d for d in query["devices"].split(",") if d]
    if not 0 < len(devices) <= MAX_TRAJECTORY_DEVICES:
        raise errors.DEVICES_INVALID(
            f"devices must name 1-{MAX_TRAJECTORY_DEVICES} devices as product_id/device_name", "devices"
        )
    now = _now()
    hi = int(query.get("end") or now)
    lo = int(query["start"]) if query.get("start") is not None else hi - 86400 * 1000
    if lo > hi:
        raise errors.TIME_RANGE_INVALID("start must not be after end", "start")
    if lo < now - MONTH_MS:
        raise errors.TIME_RANGE_INVALID("trajectories cover at most the last month", "start")
    result = []
    for i, key in enumerate(devices):
        pid, sep, dn = key.partition("/")
        if not sep or not pid or not dn:
            raise errors.DEVICES_INVALID(f"devices[{i}] must be product_id/device_name", "devices")
        if not visible(device_resource(pid, dn)):
            raise errors.forbidden("GetDeviceLocationHistory", device_resource(pid, dn))
        result.append({"product_id": pid, "device_name": dn, "points": trajectory(pid, dn, lo, hi, query["accuracy"])})
    if query.get("format") == "geojson":
        return as_geojson(result)
    return {"devices": result, "start": lo, "end": hi}


def as_geojson(tracks: list[dict[str, Any]]) -> dict[str, Any]:
    feats: list[dict[str, Any]] = []
    for t in tracks:
        pts = t["points"]
        props = {"product_id": t["product_id"], "device_name": t["device_name"]}
        if len(pts) >= 2:
            feats.append(
                {
                    "type": "Feature",
                    "geometry": {"type": "LineString", "coordinates": [[p["lon"], p["lat"]] for p in pts]},
                    "properties": props,
                }
            )
        for p in pts:
            feats.append(
                {
                    "type": "Feature",
                    "geometry": {"type": "Point", "coordinates": [p["lon"], p["lat"]]},
                    "properties": {**props, "time": p["time"], "accuracy": p["accuracy"], "source": p["source"]},
                }
            )
    return {"type": "FeatureCollection", "features": feats}


def map_picture(
    space: SpaceRecord, fmt: str, device: str | None, start: int | None, visible: Callable[[str], bool]
) -> bytes:
    """The space drawn offline: fences, latest positions, optionally one device's trajectory."""
    districts = {
        d.district_id: d.geometry for d in DistrictRecord.query(ACCOUNT, DistrictRecord.sk.startswith("district#"))
    }
    shapes = []
    for f in _fences_of(space.space_id):
        g = geo_fence(f, districts)
        if g is not None:
            shapes.append((f.name, g))
    points = positions(list(space.products or []), visible)
    track: list[dict[str, Any]] = []
    if device:
        pid, sep, dn = device.partition("/")
        if not sep or not pid or not dn or "/" in dn:
            raise errors.DEVICES_INVALID("device must be product_id/device_name", "device")
        hi = _now()
        if start is not None and start > hi:
            raise errors.START_INVALID("start must not be in the future", "start")
        if not visible(device_resource(pid, dn)):
            raise errors.forbidden("GetDeviceLocationHistory", device_resource(pid, dn))
        lo = start if start is not None else hi - 86400 * 1000
        track = trajectory(pid, dn, max(lo, hi - MONTH_MS), hi, 1e9)
    return mapdraw.draw(space.name, shapes, points, track, fmt)
