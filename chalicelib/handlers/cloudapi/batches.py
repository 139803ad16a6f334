"""Cloud-API mass-production actions (SPEC §7.1) onto the /v1/batches routes.

Field translation (Tencent ↔ Fleetbox): ``BurnMethod`` 0 ↔ per_device_secret, 1 ↔
per_product_secret; ``GenerationMethod`` 0 ↔ auto, 1 ↔ upload; ``BatchCnt`` ↔ quantity;
``GenerationQRCode`` 1/0 ↔ qr_code; ``Status`` 0 created, 1 processing, 2 uploading, 3 done *or
failed* (Tencent has no failed state: a failed batch is 3 with ``LastFailedReason``);
``DownloadUrl`` ↔ the ZIP (or CSV) link, answered only to callers allowed ``DescribeDeviceSecret``
when the output holds device secrets (as the route's ``include_secret``).

Differences: ``GenerationMethod`` 1 takes the DeviceName list from a file at ``UploadUrl``;
Fleetbox takes that list inline (``names_csv``) and fetches no URL, so an upload batch is refused
here (create it with ``POST /v1/batches``) — and with it ``BurnMethod`` 1, which Fleetbox allows with
uploads only.  ``GetBatchProductionsList`` has no product filter in Tencent's model: it walks the
products the caller may see and each one's batch list (``DescribeBatchProductions`` per product;
a product whose batches the caller may not list contributes none).
"""

from __future__ import annotations

from typing import Any

from ...core import errors
from ...core.config import settings
from ...core.schema import IntEnum, String
from .. import batches as batch_routes
from .. import products as product_routes
from .products import OFFSET, PRODUCT_ID, PROJECT_ID, limit_field
from .registry import Invoker, Req, action

#: the route modules these actions call (imported first so their routes are registered)
ROUTES_FROM = (batch_routes, product_routes)

CREATE = "POST /v1/batches"
ONE = "GET /v1/batches/{batch_id}"
PER_PRODUCT = "GET /v1/products/{product_id}/batches"
PRODUCTS = "GET /v1/products"

_BURN = {0: "per_device_secret", 1: "per_product_secret"}
_BURN_BACK = {v: k for k, v in _BURN.items()}
_GENERATION = {0: "auto", 1: "upload"}
_GENERATION_BACK = {v: k for k, v in _GENERATION.items()}
_STATUS = {"created": 0, "processing": 1, "uploading": 2, "done": 3, "failed": 3}
BATCH_FIELDS = {
    "batch_id": "BatchProductionId",
    "quantity": "BatchCnt",
    "burn_method": "BurnMethod",
    "generation": "GenerationMethod",
    "qr_code": "GenerationQRCode",
}
BATCH_ID = String(required=True, min_len=1, max_len=64, code=errors.BATCH_NOT_EXIST)


@action(
    "CreateBatchProduction",
    {
        "ProjectId": PROJECT_ID,
        "ProductId": PRODUCT_ID,
        "BurnMethod": IntEnum(tuple(_BURN), required=True, code=errors.BURN_METHOD_INVALID),
        "GenerationMethod": IntEnum(tuple(_GENERATION), required=True, code=errors.GENERATION_INVALID),
        "UploadUrl": String(max_len=2048, code=errors.GENERATION_INVALID),
        "BatchCnt": batch_routes.BatchCreate.fields["quantity"],
        "GenerationQRCode": IntEnum((0, 1), default=0, code=errors.QR_CODE_INVALID),
    },
    routes=[CREATE],
    summary="Start a batch of system-generated devices (GenerationMethod 0); uploads are refused",
    fields=BATCH_FIELDS,
)
def create_batch(req: Req, call: Invoker) -> dict[str, Any]:
    if req["GenerationMethod"] == 1:
        raise errors.GENERATION_INVALID(
            "GenerationMethod 1 (a DeviceName file at UploadUrl) is not supported here: Fleetbox fetches no "
            "file URL; send the names inline with POST /v1/batches (names_csv)",
            "GenerationMethod",
        )
    if req["BurnMethod"] == 1:
        raise errors.BURN_METHOD_INVALID(
            "BurnMethod 1 (dynamic registration) needs GenerationMethod 1, which is not supported here", "BurnMethod"
        )
    body: dict[str, Any] = {
        "product_id": req["ProductId"],
        "burn_method": _BURN[req["BurnMethod"]],
        "generation": _GENERATION[req["GenerationMethod"]],
        "qr_code": req["GenerationQRCode"] == 1,
    }
    if "BatchCnt" in req:
        body["quantity"] = req["BatchCnt"]
    made = call(CREATE, body=body)
    return {"ProjectId": req.get("ProjectId"), "ProductId": made["product_id"], "BatchProductionId": made["id"]}


@action(
    "DescribeBatchProduction",
    {"ProductId": PRODUCT_ID, "BatchProductionId": BATCH_ID},
    routes=[ONE],
    summary="One batch: status, counts; DownloadUrl of secret-holding outputs only with DescribeDeviceSecret",
    fields=BATCH_FIELDS,
)
def describe_batch(req: Req, call: Invoker) -> dict[str, Any]:
    pid = req["ProductId"]
    include = call.principal.allows("DescribeDeviceSecret", f"product/{pid}")
    batch = call(ONE, params={"batch_id": req["BatchProductionId"]}, query={"include_secret": include})
    if batch["product_id"] != pid or batch["kind"] != "devices":
        raise errors.BATCH_NOT_EXIST(
            f"batch {req['BatchProductionId']} is not a batch of product {pid}", "BatchProductionId"
        )
    return {
        "BatchCnt": batch["quantity"],
        "BurnMethod": _BURN_BACK[batch["burn_method"]],
        "CreateTime": batch["created_at"],
        "DownloadUrl": batch.get("download_url"),
        "GenerationMethod": _GENERATION_BACK[batch["generation"]],
        "UploadUrl": None,
        "SuccessCount": batch["success_count"],
        "LastFailedReason": batch.get("last_failure_reason"),
        "Status": _STATUS[batch["status"]],
    }


@action(
    "GetBatchProductionsList",
    {"ProjectId": PROJECT_ID, "Offset": OFFSET, "Limit": limit_field(10, 100)},
    routes=[PRODUCTS, PER_PRODUCT],
    summary="The device batches of every product the caller may see, newest first",
    fields=BATCH_FIELDS,
)
def list_batches(req: Req, call: Invoker) -> dict[str, Any]:
    cap = settings().cloudapi_max_walk
    products, _ = call.page(PRODUCTS, offset=0, limit=cap)
    found: list[dict[str, Any]] = []
    for product in products:
        if not call.principal.allows("DescribeBatchProductions", f"product/{product['product_id']}"):
            continue  # the route would refuse this product's list: it contributes nothing
        batches, _ = call.page(PER_PRODUCT, params={"product_id": product["product_id"]}, offset=0, limit=cap)
        found.extend(
            {
                "BatchProductionId": b["id"],
                "ProductId": b["product_id"],
                "BurnMethod": _BURN_BACK[b["burn_method"]],
                "CreateTime": b["created_at"],
                "ProductName": product["name"],
            }
            for b in batches
            if b["kind"] == "devices"
        )
    found.sort(key=lambda b: (b["CreateTime"], b["BatchProductionId"]), reverse=True)
    offset = req["Offset"]
    return {"BatchProductions": found[offset : offset + req["Limit"]], "TotalCnt": len(found)}
