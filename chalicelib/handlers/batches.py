"""HTTP routes for mass production (SPEC §7): batch jobs, serial numbers, QR binding, product QR."""

from __future__ import annotations

from typing import Any

from chalice import Blueprint, Response

from ..core import errors
from ..core.schema import Array, Boolean, Enum, Integer, Model, String, page_of
from ..media import qr
from ..services import batches, binding, production, serials
from ..services import products as product_rules
from . import schemas as s
from .api import Ctx, decode_token, encode_token, route

bp = Blueprint(__name__)
TAG = "mass production"


def product_res(params: Any, body: Any) -> str:
    return f"product/{params['product_id']}"


def body_product_res(params: Any, body: Any) -> str:
    pid = body.get("product_id") if isinstance(body, dict) else None
    return f"product/{pid}" if isinstance(pid, str) and pid else "product/*"


PRODUCT_ID = String(
    required=True,
    pattern=product_rules.PRODUCT_ID_RE.pattern,
    code=errors.PRODUCT_ID_INVALID,
    rule="must be a 10-character ProductId",
)

BatchCreate = Model(
    "BatchCreate",
    {
        "product_id": PRODUCT_ID,
        "burn_method": Enum(batches.BURN_METHODS, required=True, code=errors.BURN_METHOD_INVALID),
        "generation": Enum(batches.GENERATIONS, required=True, code=errors.GENERATION_INVALID),
        "quantity": Integer(
            minimum=1,
            maximum=production.MAX_QUANTITY,
            code=errors.QUANTITY_INVALID,
            description="devices to make (auto); 1-10,000",
        ),
        "names_csv": String(
            min_len=1,
            code=errors.NAMES_CSV_INVALID,
            description="CSV text, first column = DeviceName (generation upload)",
        ),
        "qr_code": Boolean(default=False, code=errors.QR_CODE_INVALID, description="one QR PNG per device in a ZIP"),
    },
)
FailedRow = Model(
    "FailedRow",
    {"row": Integer(required=True), "device_name": String(required=True), "reason": String(required=True)},
    allow_extra=True,
)
Batch = Model(
    "Batch",
    {
        "id": String(required=True),
        "kind": Enum((production.KIND_DEVICES, production.KIND_SERIALS), required=True),
        "product_id": String(required=True),
        "status": Enum(production.STATUSES, required=True),
        "progress": Integer(required=True, description="percent of rows processed"),
        "quantity": Integer(required=True),
        "processed": Integer(required=True),
        "success_count": Integer(required=True),
        "failure_count": Integer(required=True),
        "last_failure_reason": String(nullable=True),
        "failures": Array(FailedRow),
        "download_url": String(nullable=True, description="ZIP with QR codes, else the CSV; time-limited"),
        "csv_url": String(nullable=True),
        "download_expires_at": Integer(nullable=True),
        "created_by": String(nullable=True),
        "created_at": Integer(required=True),
    },
    allow_extra=True,
)

SerialNumbersCreate = Model(
    "SerialNumbersCreate",
    {
        "quantity": Integer(required=True, minimum=1, maximum=production.MAX_QUANTITY, code=errors.QUANTITY_INVALID),
    },
)
SerialBindingsImport = Model(
    "SerialBindingsImport",
    {
        "csv": String(
            required=True, min_len=1, code=errors.CSV_INVALID, description="`SN,IMEI` rows (see the template)"
        ),
    },
)
ImportRow = Model(
    "ImportRow",
    {
        "row": Integer(required=True),
        "sn": String(nullable=True),
        "imei": String(nullable=True),
        "reason": String(required=True),
    },
    allow_extra=True,
)
ImportReport = Model(
    "SerialBindingsReport",
    {
        "total": Integer(required=True),
        "succeeded": Integer(required=True),
        "failed": Integer(required=True),
        "failures": Array(ImportRow, required=True),
    },
    allow_extra=True,
)

BindingCreate = Model(
    "BindingCreate",
    {
        "code": String(
            required=True,
            min_len=1,
            max_len=1024,
            code=errors.CODE_INVALID,
            description="the scanned QR content: device JSON code, SN code or product code",
        ),
        "user_id": String(
            required=True,
            min_len=1,
            max_len=64,
            pattern=binding.USER_ID_RE.pattern,
            code=errors.USER_ID_INVALID,
            rule="must be 1-64 characters of A-Z a-z 0-9 _ . @ : -",
        ),
        "family_id": String(
            min_len=1,
            max_len=64,
            pattern=r"[A-Za-z0-9_.@:\-]+",
            code=errors.FAMILY_ID_INVALID,
            rule="must be 1-64 characters of A-Z a-z 0-9 _ . @ : -",
        ),
        "device_name": String(
            min_len=1,
            max_len=48,
            code=errors.DEVICE_NAME_INVALID,
            description="with a product code: the DeviceName the device reported while pairing",
        ),
    },
)
Binding = Model(
    "Binding",
    {
        "id": String(required=True),
        "product_id": String(required=True),
        "device_name": String(required=True),
        "user_id": String(required=True),
        "family_id": String(nullable=True),
        "via": String(required=True),
        "bound_at": Integer(required=True),
    },
    allow_extra=True,
)


def binding_res(params: Any, body: Any) -> str:
    return f"product/{binding.product_of_code(body.get('code') if isinstance(body, dict) else None)}"


def binding_id_res(params: Any, body: Any) -> str:
    return f"product/{binding.product_of_id(params['binding_id'])}"


# ------------------------------------------------------------------ batches


@route(
    bp,
    "POST",
    "/v1/batches",
    action="CreateBatchProduction",
    resource=body_product_res,
    tag=TAG,
    summary="Start a batch job (released products; 1-10,000 devices; optional QR codes)",
    body=BatchCreate,
    response=Batch,
    status=202,
    errors_=(413,),
    precheck=lambda ctx: batches.check(dict(ctx.body)),
)
def create_batch(ctx: Ctx) -> dict[str, Any]:
    return batches.create(dict(ctx.body), created_by=ctx.principal.principal_id if ctx.principal else None)


def batch_owner(params: Any, body: Any) -> tuple[str, Any]:
    rec = production.get_batch(params["batch_id"])
    return f"product/{rec.product_id}", rec


INCLUDE_SECRET = {
    "include_secret": Boolean(
        default=False,
        code=errors.INCLUDE_SECRET_INVALID,
        description="device batches: the download links (their CSV holds every "
        "device secret; needs iotexplorer:DescribeDeviceSecret)",
    )
}


@route(
    bp,
    "GET",
    "/v1/batches/{batch_id}",
    action="DescribeBatchProduction",
    resource="product/*",
    owner=batch_owner,
    tag=TAG,
    summary="A batch job: status, progress, counts; download URLs when done (device "
    "batches: with include_secret=true and DescribeDeviceSecret)",
    response=Batch,
    query=INCLUDE_SECRET,
)
def get_batch(ctx: Ctx) -> dict[str, Any]:
    include = ctx.query["include_secret"] and production.holds_secrets(ctx.item)
    if include:
        ctx.require("DescribeDeviceSecret", ctx.resource)
    return production.view(ctx.item, include_secret=include)


@route(
    bp,
    "GET",
    "/v1/products/{product_id}/batches",
    action="DescribeBatchProductions",
    resource=product_res,
    tag=TAG,
    summary="A product's batch jobs, newest first (no download links: GET the batch for them)",
    response=page_of(Batch),
    query={**s.PAGING},
)
def list_batches(ctx: Ctx) -> dict[str, Any]:
    items, nxt = production.list_batches(
        ctx.params["product_id"], ctx.query["limit"], decode_token(ctx.query.get("next"))
    )
    return {"items": items, "total": None if nxt or "next" in ctx.query else len(items), "next": encode_token(nxt)}


# ------------------------------------------------------------------ serial numbers


@route(
    bp,
    "POST",
    "/v1/products/{product_id}/serial-numbers",
    action="CreateSerialNumbers",
    resource=product_res,
    tag=TAG,
    summary="Generate N serial numbers with QR codes (ZIP + CSV; a job)",
    body=SerialNumbersCreate,
    response=Batch,
    status=202,
)
def create_serials(ctx: Ctx) -> dict[str, Any]:
    return serials.generate(
        ctx.params["product_id"], ctx.body["quantity"], created_by=ctx.principal.principal_id if ctx.principal else None
    )


@route(
    bp,
    "GET",
    "/v1/products/{product_id}/serial-numbers/template",
    action="DescribeSerialNumberTemplate",
    resource=product_res,
    tag=TAG,
    summary="The SN,IMEI relationship file template (CSV)",
    produces="text/csv",
)
def serial_template(ctx: Ctx) -> Response:
    return Response(
        body=serials.TEMPLATE,
        status_code=200,
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": 'attachment; filename="sn_imei_template.csv"',
        },
    )


@route(
    bp,
    "POST",
    "/v1/products/{product_id}/serial-numbers/bindings",
    action="ImportSerialNumberBindings",
    resource=product_res,
    tag=TAG,
    summary="Import the SN,IMEI file: creates or links devices (DeviceName = IMEI)",
    body=SerialBindingsImport,
    response=ImportReport,
    errors_=(413,),
)
def import_serials(ctx: Ctx) -> dict[str, Any]:
    return serials.import_relations(
        ctx.params["product_id"], ctx.body["csv"], created_by=ctx.principal.principal_id if ctx.principal else None
    )


# ------------------------------------------------------------------ product QR


@route(
    bp,
    "GET",
    "/v1/products/{product_id}/qrcode",
    action="DescribeProductQRCode",
    resource=product_res,
    tag=TAG,
    summary="The product QR code (PNG: send Accept: image/png; ?format=svg, or json for its content)",
    produces="image/png",
    query={"format": Enum(("png", "svg", "json"), default="png", code=errors.FORMAT_INVALID)},
)
def product_qrcode(ctx: Ctx) -> Any:
    content = binding.product_code(ctx.params["product_id"])
    fmt = ctx.query["format"]
    if fmt == "json":
        return {"product_id": ctx.params["product_id"], "content": content}
    if fmt == "svg":
        return Response(body=qr.svg(content), status_code=200, headers={"Content-Type": "image/svg+xml"})
    return Response(body=qr.png(content), status_code=200, headers={"Content-Type": "image/png"})


# ------------------------------------------------------------------ binding


@route(
    bp,
    "POST",
    "/v1/bindings",
    action="BindDevice",
    resource=binding_res,
    tag=TAG,
    summary="Bind a device to an end user by its scanned QR code (binding strategy of the product applies)",
    body=BindingCreate,
    response=Binding,
    status=201,
)
def bind(ctx: Ctx) -> dict[str, Any]:
    return binding.bind(
        ctx.body, principal=ctx.principal, developer=lambda pid: ctx.allowed("BindUnreleasedDevice", f"product/{pid}")
    )


@route(
    bp,
    "DELETE",
    "/v1/bindings/{binding_id}",
    action="UnbindDevice",
    resource=binding_id_res,
    tag=TAG,
    summary="Unbind (the id of a binding taken over since is refused)",
    status=204,
)
def unbind(ctx: Ctx) -> None:
    binding.unbind(ctx.params["binding_id"])


@route(
    bp,
    "GET",
    "/v1/users/{user_id}/devices",
    action="DescribeUserDevices",
    resource="product/*",
    listing=True,
    item_action="DescribeDevice",
    tag=TAG,
    summary="The devices bound to an end user, newest binding first",
    response=page_of(Binding),
    query={**s.PAGING},
)
def user_devices(ctx: Ctx) -> dict[str, Any]:
    items, nxt = binding.user_devices(
        ctx.params["user_id"], ctx.query["limit"], decode_token(ctx.query.get("next")), allowed=ctx.visible
    )
    return {"items": items, "total": None if nxt or "next" in ctx.query else len(items), "next": encode_token(nxt)}
