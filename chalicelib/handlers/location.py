"""HTTP routes of the location service (SPEC §10, §16): spaces, fences and their bindings,
districts, the cell / Wi-Fi resolver table, alarms, positions, trajectories, the map picture.

Resources: a space is ``space/{id}``, a fence ``space/{sid}/fence/{fid}``; alarms, positions
and trajectories are decided per device (``product/{pid}/device/{dn}``), so a caller limited to
one product never sees another product's devices."""

from __future__ import annotations

from typing import Any

from chalice import Blueprint, Response

from ..core import errors
from ..core.schema import Array, Enum, Integer, Json, Model, Number, String, page_of
from ..services import location
from .api import Ctx, decode_token, page_answer, route
from .schemas import PAGING

bp = Blueprint(__name__)
TAG = "location"


def name_field(max_len: int, code: errors.ErrorCode, required: bool) -> String:
    return String(required=required, min_len=1, max_len=max_len, code=code, rule=f"must be 1-{max_len} characters")


def space_name(required: bool) -> String:
    return name_field(location.SPACE_NAME_MAX, errors.SPACE_NAME_INVALID, required)


def fence_name(required: bool) -> String:
    return name_field(location.FENCE_NAME_MAX, errors.FENCE_NAME_INVALID, required)


PRODUCT_IDS = Array(String(min_len=1, max_len=64), max_items=100, code=errors.PRODUCTS_INVALID)
REMARK = String(
    max_len=location.SPACE_REMARK_MAX,
    code=errors.SPACE_REMARK_INVALID,
    rule=f"must be at most {location.SPACE_REMARK_MAX} characters",
)
SpaceCreate = Model("SpaceCreate", {"name": space_name(True), "products": PRODUCT_IDS, "remark": REMARK})
SpacePut = Model("SpacePut", {"name": space_name(False), "products": PRODUCT_IDS, "remark": REMARK})
Space = Model(
    "Space",
    {
        "space_id": String(),
        "name": String(),
        "products": Array(String()),
        "remark": String(),
        "fence_count": Integer(),
        "created_at": Integer(),
        "updated_at": Integer(),
    },
)

Circle = Model(
    "Circle",
    {
        "lat": Number(required=True, minimum=-90, maximum=90, code=errors.CIRCLE_INVALID),
        "lon": Number(required=True, minimum=-180, maximum=180, code=errors.CIRCLE_INVALID),
        "radius": Number(required=True, minimum=1, maximum=1_000_000, code=errors.CIRCLE_INVALID, description="metres"),
    },
    code=errors.CIRCLE_INVALID,
)
DeviceRef = Model(
    "DeviceRef",
    {
        "product_id": String(required=True, min_len=1, max_len=64, code=errors.PRODUCT_ID_INVALID),
        "device_name": String(required=True, min_len=1, max_len=48, code=errors.DEVICE_NAME_INVALID),
    },
)
DEVICES = Array(DeviceRef, max_items=location.MAX_BINDINGS, code=errors.DEVICE_NAMES_INVALID)
TRIGGER = Enum(location.TRIGGERS, code=errors.TRIGGER_INVALID)
TOLERANCE = Number(
    minimum=1,
    maximum=100_000,
    code=errors.TOLERANCE_INVALID,
    description="fixes less accurate than this (m) are ignored",
)
POLYGON = Json(
    object_only=True, code=errors.GEOMETRY_INVALID, description="GeoJSON Polygon or MultiPolygon (holes allowed)"
)
FENCE_FIELDS = {
    "circle": Circle,
    "polygon": POLYGON,
    "district_id": String(min_len=1, max_len=64, code=errors.DISTRICT_NOT_EXIST),
    "trigger": TRIGGER,
    "accuracy_tolerance": TOLERANCE,
    "devices": DEVICES,
}
FENCE_TYPE = ("circle", "polygon", "district")
FenceCreate = Model(
    "FenceCreate",
    {"name": fence_name(True), "type": Enum(FENCE_TYPE, required=True, code=errors.FENCE_TYPE_INVALID), **FENCE_FIELDS},
)
FencePut = Model(
    "FencePut", {"name": fence_name(False), "type": Enum(FENCE_TYPE, code=errors.FENCE_TYPE_INVALID), **FENCE_FIELDS}
)
Fence = Model(
    "Fence",
    {
        "fence_id": String(),
        "space_id": String(),
        "name": String(),
        "type": Enum(FENCE_TYPE),
        "trigger": TRIGGER,
        "accuracy_tolerance": Number(),
        "circle": Circle,
        "polygon": Json(),
        "district_id": String(),
        "devices": Array(DeviceRef),
        "created_at": Integer(),
        "updated_at": Integer(),
    },
)
Bindings = Model(
    "FenceBindings",
    {
        "devices": Array(
            DeviceRef, min_items=1, max_items=location.MAX_BINDINGS, required=True, code=errors.DEVICE_NAMES_INVALID
        )
    },
)
Districts = Model(
    "DistrictImport",
    {
        "type": Enum(("FeatureCollection",), required=True, code=errors.GEOMETRY_INVALID),
        "features": Array(Json(), min_items=1, max_items=500, required=True, code=errors.GEOMETRY_INVALID),
    },
)
District = Model("District", {"district_id": String(), "name": String(), "level": Enum(location.LEVELS)})
CellEntry = Model(
    "CellEntry",
    {
        "cell": String(max_len=64, code=errors.CELL_KEY_INVALID, description="mcc-mnc-lac-cid"),
        "mac": String(max_len=17, code=errors.CELL_KEY_INVALID),
        "lat": Number(required=True, minimum=-90, maximum=90, code=errors.CELL_KEY_INVALID),
        "lon": Number(required=True, minimum=-180, maximum=180, code=errors.CELL_KEY_INVALID),
        "accuracy": Number(minimum=1, maximum=100_000, code=errors.CELL_KEY_INVALID),
    },
)
Cells = Model(
    "CellTable",
    {
        "csv": String(
            max_len=2_000_000,
            code=errors.CSV_INVALID,
            description="key,lat,lon[,accuracy] per line; key = mcc-mnc-lac-cid or a MAC",
        ),
        "entries": Array(CellEntry, max_items=location.MAX_CELLS, code=errors.CSV_INVALID),
    },
)
Alarm = Model(
    "FenceAlarm",
    {
        "product_id": String(),
        "device_name": String(),
        "fence_id": String(),
        "space_id": String(),
        "type": Enum(("enter", "exit")),
        "time": Integer(description="ms"),
        "lat": Number(),
        "lon": Number(),
        "accuracy": Number(),
    },
)
Position = Model(
    "Position",
    {
        "product_id": String(),
        "device_name": String(),
        "lat": Number(),
        "lon": Number(),
        "accuracy": Number(),
        "source": Enum(("gps", "wifi", "cell")),
        "time": Integer(),
    },
)
TIME = {
    "start": Integer(minimum=0, code=errors.START_INVALID, description="ms"),
    "end": Integer(minimum=0, code=errors.END_INVALID, description="ms"),
}


def space_res(params: Any, body: Any) -> str:
    return location.space_resource(params.get("space_id", "*"))


def space_owner(params: Any, body: Any) -> tuple[str, Any]:
    return location.space_owner(params["space_id"])


def fence_owner(params: Any, body: Any) -> tuple[str, Any]:
    return location.fence_owner(params["fence_id"])


@route(
    bp, "POST", "/v1/spaces", action="CreatePositionSpace", resource="space/*", tag=TAG,
    summary="Create a position space (name ≤ 20, unique; products; remark ≤ 25)",
    body=SpaceCreate, response=Space, status=201,
)  # fmt: skip
def create_space(ctx: Ctx) -> dict[str, Any]:
    return location.create_space(ctx.body)


@route(
    bp, "GET", "/v1/spaces", action="GetPositionSpaceList", resource="space/*", listing=True,
    item_action="DescribePositionSpace", tag=TAG, summary="List the spaces the caller may read",
    query=PAGING, response=page_of(Space),
)  # fmt: skip
def list_spaces(ctx: Ctx) -> dict[str, Any]:
    items, nxt = location.list_spaces(ctx.visible, ctx.query["limit"], decode_token(ctx.query.get("next")))
    return page_answer(ctx, items, nxt)


@route(
    bp, "GET", "/v1/spaces/{space_id}", action="DescribePositionSpace", resource=space_res, owner=space_owner,
    tag=TAG, summary="One space", response=Space,
)  # fmt: skip
def get_space(ctx: Ctx) -> dict[str, Any]:
    return location.space_view(ctx.item, len(location.list_fences(ctx.item.space_id, lambda _r: True)))


@route(
    bp, "PUT", "/v1/spaces/{space_id}", action="ModifyPositionSpace", resource=space_res, owner=space_owner,
    tag=TAG, summary="Edit a space", body=SpacePut, response=Space,
)  # fmt: skip
def put_space(ctx: Ctx) -> dict[str, Any]:
    return location.modify_space(ctx.item, ctx.body)


@route(
    bp, "DELETE", "/v1/spaces/{space_id}", action="DeletePositionSpace", resource=space_res, owner=space_owner,
    tag=TAG, summary="Delete a space (refused while it has fences)", status=204,
)  # fmt: skip
def delete_space(ctx: Ctx) -> None:
    location.delete_space(ctx.item)


@route(
    bp, "POST", "/v1/spaces/{space_id}/fences", action="CreatePositionFence", resource=space_res, owner=space_owner,
    tag=TAG, summary="Create a fence: circle (centre + radius m), polygon (GeoJSON, holes allowed) or district",
    body=FenceCreate, response=Fence, status=201,
)  # fmt: skip
def create_fence(ctx: Ctx) -> dict[str, Any]:
    return location.create_fence(ctx.item, ctx.body)


@route(
    bp, "GET", "/v1/spaces/{space_id}/fences", action="GetFenceList", resource=space_res, listing=True,
    item_action="DescribePositionFence", tag=TAG, summary="The fences of a space the caller may read",
    response=page_of(Fence),
)  # fmt: skip
def list_fences(ctx: Ctx) -> dict[str, Any]:
    location.get_space(ctx.params["space_id"])
    items = location.list_fences(ctx.params["space_id"], ctx.visible)
    return {"items": items, "total": len(items), "next": None}


@route(
    bp, "GET", "/v1/fences/{fence_id}", action="DescribePositionFence", resource="space/*", owner=fence_owner,
    tag=TAG, summary="One fence", response=Fence,
)  # fmt: skip
def get_fence(ctx: Ctx) -> dict[str, Any]:
    return location.fence_view(ctx.item)


@route(
    bp, "PUT", "/v1/fences/{fence_id}", action="ModifyPositionFence", resource="space/*", owner=fence_owner,
    tag=TAG, summary="Edit a fence (info or redraw)", body=FencePut, response=Fence,
)  # fmt: skip
def put_fence(ctx: Ctx) -> dict[str, Any]:
    return location.modify_fence(ctx.item, ctx.body)


@route(
    bp, "DELETE", "/v1/fences/{fence_id}", action="DeletePositionFence", resource="space/*", owner=fence_owner,
    tag=TAG, summary="Delete a fence", status=204,
)  # fmt: skip
def delete_fence(ctx: Ctx) -> None:
    location.delete_fence(ctx.item)


@route(
    bp, "POST", "/v1/fences/{fence_id}/bindings", action="CreateFenceBind", resource="space/*", owner=fence_owner,
    tag=TAG, summary="Bind devices (of the space's products) to a fence", body=Bindings, response=Fence,
)  # fmt: skip
def bind(ctx: Ctx) -> dict[str, Any]:
    return location.bind(ctx.item, ctx.body["devices"])


@route(
    bp, "POST", "/v1/fences/{fence_id}/bindings/delete", action="DeleteFenceBind", resource="space/*",
    owner=fence_owner, tag=TAG, summary="Unbind devices from a fence", body=Bindings, response=Fence,
)  # fmt: skip
def unbind(ctx: Ctx) -> dict[str, Any]:
    return location.unbind(ctx.item, ctx.body["devices"])


@route(
    bp, "POST", "/v1/districts", action="CreateDistricts", resource="district/*", tag=TAG,
    summary="Import administrative areas: a GeoJSON FeatureCollection, properties level + name",
    body=Districts, response=page_of(District), status=201,
)  # fmt: skip
def import_districts(ctx: Ctx) -> dict[str, Any]:
    return location.import_districts(ctx.body)


@route(
    bp, "GET", "/v1/districts", action="GetDistrictList", resource="district/*", tag=TAG,
    summary="The imported districts", response=page_of(District),
)  # fmt: skip
def list_districts(ctx: Ctx) -> dict[str, Any]:
    items = location.list_districts()
    return {"items": items, "total": len(items), "next": None}


@route(
    bp, "POST", "/v1/geo-cells", action="CreateLocationResolverTable", resource="geo-cells", tag=TAG,
    summary="Upload known cells / Wi-Fi access points (CSV or JSON) for cell and Wi-Fi positioning",
    body=Cells, response=Model("CellImport", {"imported": Integer()}),
)  # fmt: skip
def import_cells(ctx: Ctx) -> dict[str, Any]:
    return location.import_cells(ctx.body)


@route(
    bp, "GET", "/v1/alarms", action="DescribeFenceEventList", resource="product/*", listing=True, tag=TAG,
    summary="Fence alarms of a product, oldest first (time range, fence, device filters)",
    query={
        "product_id": String(required=True, min_len=1, max_len=64, code=errors.PRODUCT_ID_INVALID),
        "device_name": String(min_len=1, max_len=48, code=errors.DEVICE_NAME_INVALID),
        "fence_id": String(min_len=1, max_len=64, code=errors.FENCE_NOT_EXIST),
        **TIME,
        **PAGING,
    },
    response=page_of(Alarm),
)  # fmt: skip
def list_alarms(ctx: Ctx) -> dict[str, Any]:
    items, nxt = location.list_alarms(ctx.query, ctx.visible, decode_token(ctx.query.get("next")))
    return page_answer(ctx, items, nxt)


@route(
    bp, "GET", "/v1/positions", action="DescribeDevicePositionList", resource="product/*", listing=True, tag=TAG,
    summary="Latest position of every device of the given products",
    query={"product_ids": String(required=True, min_len=1, max_len=1000, code=errors.PRODUCTS_INVALID, description="comma-separated")},
    response=page_of(Position),
)  # fmt: skip
def positions(ctx: Ctx) -> dict[str, Any]:
    products = [p for p in ctx.query["product_ids"].split(",") if p][:100]
    items = location.positions(products, ctx.visible)
    return {"items": items, "total": len(items), "next": None}


@route(
    bp, "GET", "/v1/trajectories", action="GetDeviceLocationHistory", resource="product/*", listing=True, tag=TAG,
    summary="Fixes of up to 3 devices within the last month, as JSON or GeoJSON",
    query={
        "devices": String(required=True, min_len=1, max_len=400, code=errors.DEVICES_INVALID, description="product_id/device_name, comma-separated (≤ 3)"),
        **TIME,
        "accuracy": Integer(minimum=1, maximum=100_000, default=60, code=errors.ACCURACY_INVALID, description="metres"),
        "format": Enum(("json", "geojson"), default="json", code=errors.FORMAT_INVALID),
    },
    response=Json(),
)  # fmt: skip
def trajectories(ctx: Ctx) -> dict[str, Any]:
    return location.trajectories(ctx.query, ctx.visible)


def _map(ctx: Ctx, fmt: str) -> Response:
    body = location.map_picture(
        ctx.item,
        fmt,
        ctx.query.get("device"),
        ctx.query.get("start"),
        lambda res: ctx.allowed("DescribeDevicePositionList", res),
    )
    if fmt == "png":
        return Response(body=body, status_code=200, headers={"Content-Type": "image/png"})
    # SVG is text: API Gateway returns it as is (only binary media types are base64-encoded)
    return Response(body=body.decode("utf-8"), status_code=200, headers={"Content-Type": "image/svg+xml"})


MAP_QUERY = {
    "device": String(
        min_len=3, max_len=120, code=errors.DEVICES_INVALID, description="product_id/device_name: draw its trajectory"
    ),
    "start": Integer(minimum=0, code=errors.START_INVALID, description="trajectory start (ms; default 24 h ago)"),
}


@route(
    bp, "GET", "/v1/spaces/{space_id}/map.svg", action="DescribePositionSpace", resource=space_res,
    owner=space_owner, tag=TAG, summary="The space drawn offline: fences, latest positions, a trajectory, a scale bar",
    query=MAP_QUERY, produces="image/svg+xml",
)  # fmt: skip
def map_svg(ctx: Ctx) -> Response:
    return _map(ctx, "svg")


@route(
    bp, "GET", "/v1/spaces/{space_id}/map.png", action="DescribePositionSpace", resource=space_res,
    owner=space_owner, tag=TAG, summary="The space map as PNG", query=MAP_QUERY, produces="image/png",
)  # fmt: skip
def map_png(ctx: Ctx) -> Response:
    return _map(ctx, "png")
