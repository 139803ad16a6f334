"""Cloud-API location actions (SPEC §10) onto the /v1/spaces, /v1/fences, /v1/alarms, /v1/positions
and /v1/trajectories routes.

Field translation (Tencent ↔ Fleetbox):

* spaces: ``SpaceName`` ↔ name, ``ProductIdList`` ↔ products, ``Description`` ↔ remark (≤ 25);
  ``AuthorizeType`` 0 (read-only, SPEC §10's only kind) — 1 (read-write) is refused; ``Icon`` is
  not stored (a non-empty one is refused); ``ProjectId`` accepted, not stored;
* fences: ``FenceId`` is Fleetbox's fence id, a **string** (Tencent's is an integer);
  ``FenceArea`` is GeoJSON text: a Polygon/MultiPolygon geometry (or a Feature holding one) ↔ a
  polygon fence, a Point with ``properties.radius`` (metres; a Feature) ↔ a circle fence; a district
  fence answers a Feature with ``properties.district_id`` and no geometry (district fences are made
  through the HTTP API).  Fleetbox fences carry no description: a non-empty ``FenceDesc`` is refused;
* bindings: a fence's trigger is one for all its devices (SPEC §10), so ``AlertCondition``
  (In ↔ enter, Out ↔ exit, InOrOut ↔ both) must be the fence's; ``FenceEnable`` false and a
  ``Method`` are not supported;
* alarms: ``AlertType`` In/Out ↔ enter/exit, times in ms; positions and trajectories are WGS-84 as
  devices report them (``CoordinateType`` is not supported); a trajectory is every fix in the range,
  whatever its accuracy (``Accuracy`` says it).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from ...core import errors
from ...core.schema import Array, Boolean, Integer, IntEnum, Model, String
from .. import location as location_routes
from .devices import DEVICE_NAME
from .products import OFFSET, PRODUCT_ID, PROJECT_ID, limit_field
from .registry import Invoker, Req, action

#: the route modules these actions call (imported first so their routes are registered)
ROUTES_FROM = (location_routes,)

SPACES = "/v1/spaces"
SPACE = "/v1/spaces/{space_id}"
FENCES = "/v1/spaces/{space_id}/fences"
FENCE = "/v1/fences/{fence_id}"
ALARMS = "GET /v1/alarms"
POSITIONS = "GET /v1/positions"
TRAJECTORIES = "GET /v1/trajectories"

SPACE_ID = String(required=True, min_len=1, max_len=64, code=errors.SPACE_NOT_EXIST)
FENCE_ID = String(required=True, min_len=1, max_len=64, code=errors.FENCE_NOT_EXIST, description="Fleetbox's id")
SPACE_FIELDS = {
    "name": "SpaceName",
    "products": "ProductIdList",
    "remark": "Description",
    "space_id": "SpaceId",
    "fence_id": "FenceId",
    "circle": "FenceArea",
    "polygon": "FenceArea",
    "type": "FenceArea",
    "devices": "Items",
    "trigger": "AlertCondition",
    "start": "StartTime",
    "end": "EndTime",
    "product_id": "ProductId",
    "device_name": "DeviceName",
    "product_ids": "ProductIdList",
}
SPACE_REQUEST = {
    "SpaceName": location_routes.space_name(True),
    "AuthorizeType": IntEnum((0,), default=0, code=errors.INVALID_PARAMETER),
    "ProductIdList": Array(PRODUCT_ID, max_items=100, code=errors.PRODUCTS_INVALID),
    "Description": location_routes.REMARK,
    "Icon": String(max_len=0, code=errors.INVALID_PARAMETER, rule="is not supported (not stored)"),
}
_TRIGGER = {"In": "enter", "Out": "exit", "InOrOut": "both"}
_TRIGGER_BACK = {v: k for k, v in _TRIGGER.items()}
_ALARM = {"enter": "In", "exit": "Out"}
#: the trajectory route's widest accuracy filter: Tencent answers every fix
MAX_ACCURACY_M = 100_000
FENCE_DESC = String(
    max_len=0, code=errors.INVALID_PARAMETER, rule="is not supported: Fleetbox fences have no description"
)


def window(items: list[Any], req: Req) -> list[Any]:
    """Tencent's Offset/Limit over a list a route answers whole."""
    return items[req["Offset"] : req["Offset"] + req["Limit"]]


def space_info(s: dict[str, Any]) -> dict[str, Any]:
    return {
        "ProjectId": None,
        "SpaceId": s["space_id"],
        "SpaceName": s["name"],
        "AuthorizeType": 0,
        "Description": s.get("remark", ""),
        "ProductIdList": s.get("products") or [],
        "Icon": "",
        "CreateTime": s["created_at"],
        "UpdateTime": s["updated_at"],
        "Zoom": None,
    }


def _space_body(req: Req) -> dict[str, Any]:
    return {
        route: req[tencent]
        for tencent, route in (("SpaceName", "name"), ("ProductIdList", "products"), ("Description", "remark"))
        if tencent in req
    }


@action(
    "CreatePositionSpace",
    {"ProjectId": PROJECT_ID, **SPACE_REQUEST},
    routes=[f"POST {SPACES}"],
    summary="Create a position space",
    fields=SPACE_FIELDS,
)
def create_space(req: Req, call: Invoker) -> dict[str, Any]:
    return {"SpaceId": call(f"POST {SPACES}", body=_space_body(req))["space_id"]}


@action(
    "ModifyPositionSpace",
    {"SpaceId": SPACE_ID, **SPACE_REQUEST, "SpaceName": location_routes.space_name(False)},
    routes=[f"PUT {SPACE}"],
    summary="Edit a position space",
    fields=SPACE_FIELDS,
)
def modify_space(req: Req, call: Invoker) -> dict[str, Any]:
    call(f"PUT {SPACE}", params={"space_id": req["SpaceId"]}, body=_space_body(req))
    return {}


@action(
    "DeletePositionSpace",
    {"SpaceId": SPACE_ID},
    routes=[f"DELETE {SPACE}"],
    summary="Delete a position space (refused while it has fences)",
    fields=SPACE_FIELDS,
)
def delete_space(req: Req, call: Invoker) -> dict[str, Any]:
    call(f"DELETE {SPACE}", params={"space_id": req["SpaceId"]})
    return {}


@action(
    "GetPositionSpaceList",
    {"ProjectId": PROJECT_ID, "Offset": OFFSET, "Limit": limit_field(10, 100)},
    routes=[f"GET {SPACES}"],
    summary="The position spaces the caller may read",
    fields=SPACE_FIELDS,
)
def list_spaces(req: Req, call: Invoker) -> dict[str, Any]:
    items, total = call.page(f"GET {SPACES}", offset=req["Offset"], limit=req["Limit"])
    return {"List": [space_info(s) for s in items], "Total": total}


# ------------------------------------------------------------------ fences


def _fence_shape(text: str) -> dict[str, Any]:
    """The route's type + shape for a FenceArea GeoJSON text."""
    try:
        doc = json.loads(text)
    except ValueError:
        raise errors.GEOMETRY_INVALID("FenceArea must be GeoJSON text", "FenceArea") from None
    geometry = doc.get("geometry") if isinstance(doc, dict) and doc.get("type") == "Feature" else doc
    if isinstance(geometry, dict) and geometry.get("type") == "Point":
        props = doc.get("properties") if isinstance(doc, dict) else None
        coords = geometry.get("coordinates")
        radius = props.get("radius") if isinstance(props, dict) else None
        if not (isinstance(coords, list) and len(coords) >= 2 and radius is not None):
            raise errors.GEOMETRY_INVALID(
                'a circle FenceArea is a Feature {"geometry":{"type":"Point","coordinates":[lon,lat]},'
                '"properties":{"radius":metres}}',
                "FenceArea",
            )
        return {"type": "circle", "circle": {"lat": coords[1], "lon": coords[0], "radius": radius}}
    return {"type": "polygon", "polygon": doc if isinstance(doc, dict) else {}}


def fence_area(f: dict[str, Any]) -> str:
    if f["type"] == "circle":
        c = f["circle"]
        doc: dict[str, Any] = {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [c["lon"], c["lat"]]},
            "properties": {"radius": c["radius"]},
        }
    elif f["type"] == "polygon":
        doc = f["polygon"]
    else:
        doc = {"type": "Feature", "geometry": None, "properties": {"district_id": f.get("district_id")}}
    return json.dumps(doc, separators=(",", ":"))


def fence_info(f: dict[str, Any]) -> dict[str, Any]:
    return {
        "GeoFence": {
            "FenceId": f["fence_id"],
            "SpaceId": f["space_id"],
            "FenceName": f["name"],
            "FenceDesc": "",
            "FenceArea": fence_area(f),
        },
        "CreateTime": f["created_at"],
        "UpdateTime": f["updated_at"],
    }


def _fence_in_space(call: Invoker, fence_id: str, space_id: str) -> dict[str, Any]:
    fence = call(f"GET {FENCE}", params={"fence_id": fence_id})
    if fence["space_id"] != space_id:
        raise errors.FENCE_NOT_EXIST(f"space {space_id} has no fence {fence_id}", "FenceId")
    return dict(fence)


@action(
    "CreatePositionFence",
    {
        "SpaceId": SPACE_ID,
        "FenceName": location_routes.fence_name(True),
        "FenceArea": String(required=True, min_len=1, max_len=1_000_000, code=errors.GEOMETRY_INVALID),
        "FenceDesc": FENCE_DESC,
    },
    routes=[f"POST {FENCES}"],
    summary="Create a fence (FenceArea GeoJSON: a polygon, or a Point with properties.radius)",
    fields=SPACE_FIELDS,
)
def create_fence(req: Req, call: Invoker) -> dict[str, Any]:
    body = {"name": req["FenceName"], **_fence_shape(req["FenceArea"])}
    call(f"POST {FENCES}", params={"space_id": req["SpaceId"]}, body=body)
    return {}


@action(
    "ModifyPositionFence",
    {
        "SpaceId": SPACE_ID,
        "FenceId": FENCE_ID,
        "FenceName": location_routes.fence_name(False),
        "FenceArea": String(min_len=1, max_len=1_000_000, code=errors.GEOMETRY_INVALID),
        "FenceDesc": FENCE_DESC,
    },
    routes=[f"GET {FENCE}", f"PUT {FENCE}"],
    summary="Rename or redraw a fence",
    fields=SPACE_FIELDS,
)
def modify_fence(req: Req, call: Invoker) -> dict[str, Any]:
    _fence_in_space(call, req["FenceId"], req["SpaceId"])
    body: dict[str, Any] = {}
    if "FenceName" in req:
        body["name"] = req["FenceName"]
    if "FenceArea" in req:
        body.update(_fence_shape(req["FenceArea"]))
    call(f"PUT {FENCE}", params={"fence_id": req["FenceId"]}, body=body)
    return {}


@action(
    "DeletePositionFence",
    {"SpaceId": SPACE_ID, "FenceId": FENCE_ID},
    routes=[f"GET {FENCE}", f"DELETE {FENCE}"],
    summary="Delete a fence",
    fields=SPACE_FIELDS,
)
def delete_fence(req: Req, call: Invoker) -> dict[str, Any]:
    _fence_in_space(call, req["FenceId"], req["SpaceId"])
    call(f"DELETE {FENCE}", params={"fence_id": req["FenceId"]})
    return {}


@action(
    "DescribePositionFenceList",
    {"SpaceId": SPACE_ID, "Offset": OFFSET, "Limit": limit_field(10, 100)},
    routes=[f"GET {FENCES}"],
    summary="The fences of a space the caller may read",
    fields=SPACE_FIELDS,
)
def list_fences(req: Req, call: Invoker) -> dict[str, Any]:
    # the route answers a space's fences in one page (no paging parameters)
    fences = call(f"GET {FENCES}", params={"space_id": req["SpaceId"]})["items"]
    return {"List": [fence_info(f) for f in window(fences, req)], "Total": len(fences)}


# ------------------------------------------------------------------ bindings

BIND_DEVICE = Model(
    "FenceBindDeviceItem",
    {
        "DeviceName": DEVICE_NAME,
        "AlertCondition": String(code=errors.TRIGGER_INVALID),
        "FenceEnable": Boolean(code=errors.INVALID_PARAMETER),
        "Method": String(max_len=0, code=errors.INVALID_PARAMETER, rule="is not supported"),
    },
)
BIND_ITEMS = Array(
    Model(
        "FenceBindProductItem",
        {"ProductId": PRODUCT_ID, "Devices": Array(BIND_DEVICE, required=True, min_items=1, max_items=1000)},
    ),
    required=True,
    min_items=1,
    max_items=100,
    code=errors.DEVICE_NAMES_INVALID,
)


def _devices(items: Iterable[dict[str, Any]], trigger: str | None) -> list[dict[str, str]]:
    out = []
    for i, item in enumerate(items):
        for j, dev in enumerate(item["Devices"]):
            where = f"Items[{i}].Devices[{j}]"
            cond = dev.get("AlertCondition")
            if cond is not None and trigger is not None and _TRIGGER.get(cond) != trigger:
                raise errors.TRIGGER_INVALID(
                    f"{where}.AlertCondition must be the fence's, {_TRIGGER_BACK[trigger]}: a Fleetbox fence has "
                    "one trigger for all its devices",
                    f"{where}.AlertCondition",
                )
            if dev.get("FenceEnable") is False:
                raise errors.INVALID_PARAMETER(
                    f"{where}.FenceEnable false is not supported: unbind the device instead", f"{where}.FenceEnable"
                )
            out.append({"product_id": item["ProductId"], "device_name": dev["DeviceName"]})
    return out


@action(
    "CreateFenceBind",
    {"FenceId": FENCE_ID, "Items": BIND_ITEMS},
    routes=[f"GET {FENCE}", f"POST {FENCE}/bindings"],
    summary="Bind devices to a fence (AlertCondition must be the fence's trigger)",
    fields=SPACE_FIELDS,
)
def create_bind(req: Req, call: Invoker) -> dict[str, Any]:
    fence = call(f"GET {FENCE}", params={"fence_id": req["FenceId"]})
    devices = _devices(req["Items"], fence["trigger"])
    call(f"POST {FENCE}/bindings", params={"fence_id": req["FenceId"]}, body={"devices": devices})
    return {}


@action(
    "DeleteFenceBind",
    {"FenceId": FENCE_ID, "Items": BIND_ITEMS},
    routes=[f"POST {FENCE}/bindings/delete"],
    summary="Unbind devices from a fence",
    fields=SPACE_FIELDS,
)
def delete_bind(req: Req, call: Invoker) -> dict[str, Any]:
    devices = _devices(req["Items"], None)
    call(f"POST {FENCE}/bindings/delete", params={"fence_id": req["FenceId"]}, body={"devices": devices})
    return {}


@action(
    "DescribeFenceBindList",
    {"FenceId": FENCE_ID, "Offset": OFFSET, "Limit": limit_field(10, 100)},
    routes=[f"GET {FENCE}"],
    summary="A fence's bound devices, by product (Offset/Limit over the products)",
    fields=SPACE_FIELDS,
)
def list_binds(req: Req, call: Invoker) -> dict[str, Any]:
    fence = call(f"GET {FENCE}", params={"fence_id": req["FenceId"]})
    by_product: dict[str, list[dict[str, Any]]] = {}
    cond = _TRIGGER_BACK[fence["trigger"]]
    for d in fence.get("devices") or []:
        by_product.setdefault(d["product_id"], []).append(
            {"DeviceName": d["device_name"], "AlertCondition": cond, "FenceEnable": True, "Method": ""}
        )
    groups = [{"ProductId": pid, "Devices": devs} for pid, devs in by_product.items()]
    return {"List": window(groups, req), "Total": len(groups)}


# ------------------------------------------------------------------ alarms, positions, trajectories


@action(
    "DescribeFenceEventList",
    {
        "StartTime": Integer(required=True, minimum=0, code=errors.START_INVALID, description="ms"),
        "EndTime": Integer(required=True, minimum=0, code=errors.END_INVALID, description="ms"),
        "FenceId": String(min_len=1, max_len=64, code=errors.FENCE_NOT_EXIST),
        "Offset": OFFSET,
        "Limit": limit_field(10, 100),
        "ProductId": PRODUCT_ID,
        "DeviceName": String(min_len=1, max_len=48, code=errors.DEVICE_NAME_INVALID),
    },
    routes=[ALARMS],
    summary="A product's fence alarms in a time range (ms), oldest first",
    fields=SPACE_FIELDS,
)
def list_fence_events(req: Req, call: Invoker) -> dict[str, Any]:
    query: dict[str, Any] = {"product_id": req["ProductId"], "start": req["StartTime"], "end": req["EndTime"]}
    if req.get("FenceId"):
        query["fence_id"] = req["FenceId"]
    if req.get("DeviceName"):
        query["device_name"] = req["DeviceName"]
    items, total = call.page(ALARMS, query=query, offset=req["Offset"], limit=req["Limit"])
    return {
        "List": [
            {
                "ProductId": a["product_id"],
                "DeviceName": a["device_name"],
                "FenceId": a["fence_id"],
                "AlertType": _ALARM.get(a["type"], a["type"]),
                "Data": {"AlarmTime": a["time"], "Longitude": a["lon"], "Latitude": a["lat"]},
            }
            for a in items
        ],
        "Total": total,
    }


@action(
    "DescribeDevicePositionList",
    {
        "ProductIdList": Array(PRODUCT_ID, required=True, min_items=1, max_items=100, code=errors.PRODUCTS_INVALID),
        "Offset": OFFSET,
        "Limit": limit_field(10, 100),
    },
    routes=[POSITIONS],
    summary="The latest position of the products' devices the caller may see (Offset/Limit over devices)",
    fields=SPACE_FIELDS,
)
def list_positions(req: Req, call: Invoker) -> dict[str, Any]:
    # the route answers every visible device's position in one page (no paging parameters)
    every = call(POSITIONS, query={"product_ids": ",".join(req["ProductIdList"])})["items"]
    groups: dict[str, list[dict[str, Any]]] = {}
    for p in window(every, req):
        groups.setdefault(p["product_id"], []).append(
            {"DeviceName": p["device_name"], "CreateTime": p["time"], "Longitude": p["lon"], "Latitude": p["lat"]}
        )
    return {
        "Positions": [{"ProductId": pid, "Items": devs, "Total": len(devs)} for pid, devs in groups.items()],
        "Total": len(every),
    }


@action(
    "GetDeviceLocationHistory",
    {
        "ProductId": PRODUCT_ID,
        "DeviceName": DEVICE_NAME,
        "StartTime": Integer(required=True, minimum=0, code=errors.START_INVALID, description="ms"),
        "EndTime": Integer(required=True, minimum=0, code=errors.END_INVALID, description="ms"),
    },
    routes=[TRAJECTORIES],
    summary="A device's fixes in a time range (ms) within the last month, oldest first",
    fields={**SPACE_FIELDS, "devices": "DeviceName"},
)
def location_history(req: Req, call: Invoker) -> dict[str, Any]:
    got = call(
        TRAJECTORIES,
        query={
            "devices": f"{req['ProductId']}/{req['DeviceName']}",
            "start": req["StartTime"],
            "end": req["EndTime"],
            "accuracy": MAX_ACCURACY_M,  # every fix: Accuracy says how good it is
            "format": "json",
        },
    )
    points = got["devices"][0]["points"] if got.get("devices") else []
    return {
        "Positions": [
            {
                "CreateTime": p["time"],
                "Longitude": p["lon"],
                "Latitude": p["lat"],
                "LocationType": p.get("source"),
                "Accuracy": p.get("accuracy"),
            }
            for p in points
        ]
    }
