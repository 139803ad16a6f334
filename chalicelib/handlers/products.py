"""HTTP routes for products, thing models, dynamic registration and custom topics."""

from __future__ import annotations

from typing import Any

from chalice import Blueprint

from ..core import errors
from ..core.schema import Boolean, Enum, String
from ..services import products, thing_model
from . import schemas as s
from .api import Ctx, decode_token, encode_token, route

bp = Blueprint(__name__)
TAG = "products"


def product_res(params: Any, body: Any) -> str:
    return f"product/{params['product_id']}"


@route(
    bp,
    "POST",
    "/v1/products",
    action="CreateStudioProduct",
    resource="product/*",
    tag=TAG,
    summary="Create a product",
    body=s.ProductCreate,
    response=s.Product,
    status=201,
)
def create_product(ctx: Ctx) -> dict[str, Any]:
    return products.create(ctx.body, created_by=ctx.principal.principal_id if ctx.principal else None)


@route(
    bp,
    "GET",
    "/v1/products",
    action="GetStudioProductList",
    resource="product/*",
    listing=True,
    item_action="DescribeStudioProduct",
    tag=TAG,
    summary="List the products the caller may see, newest first",
    response=s.ProductPage,
    query={
        **s.PAGING,
        "q": String(max_len=40, description="fuzzy match on name or ProductId"),
        "status": Enum(("developing", "released"), code=errors.STATUS_INVALID),
    },
)
def list_products(ctx: Ctx) -> dict[str, Any]:
    items, nxt = products.list_products(
        allowed=lambda pid: ctx.visible(f"product/{pid}"),
        q=ctx.query.get("q"),
        status=ctx.query.get("status"),
        limit=ctx.query["limit"],
        start=decode_token(ctx.query.get("next")),
    )
    # the total is known for free only when the first page is also the last
    complete = nxt is None and "next" not in ctx.query
    return {"items": items, "total": len(items) if complete else None, "next": encode_token(nxt)}


@route(
    bp,
    "GET",
    "/v1/products/{product_id}",
    action="DescribeStudioProduct",
    resource=product_res,
    tag=TAG,
    summary="Get a product",
    response=s.Product,
)
def get_product(ctx: Ctx) -> dict[str, Any]:
    return products.describe(ctx.params["product_id"])


@route(
    bp,
    "PATCH",
    "/v1/products/{product_id}",
    action="ModifyStudioProduct",
    resource=product_res,
    tag=TAG,
    summary="Modify a product (name/description while developing; others only without devices)",
    body=s.ProductPatch,
    response=s.Product,
)
def patch_product(ctx: Ctx) -> dict[str, Any]:
    return products.modify(ctx.params["product_id"], dict(ctx.body))


@route(
    bp,
    "DELETE",
    "/v1/products/{product_id}",
    action="DeleteStudioProduct",
    resource=product_res,
    tag=TAG,
    summary="Delete a product (refused while it has devices)",
    status=204,
)
def delete_product(ctx: Ctx) -> None:
    products.delete(ctx.params["product_id"])


@route(
    bp,
    "POST",
    "/v1/products/{product_id}/publish",
    action="ReleaseStudioProduct",
    resource=product_res,
    tag=TAG,
    summary="Release the product (freezes its thing model and settings)",
    response=s.Product,
)
def publish(ctx: Ctx) -> dict[str, Any]:
    return products.set_status(ctx.params["product_id"], "released")


@route(
    bp,
    "POST",
    "/v1/products/{product_id}/unpublish",
    action="UnreleaseStudioProduct",
    resource=product_res,
    tag=TAG,
    summary="Return a released product to developing",
    response=s.Product,
)
def unpublish(ctx: Ctx) -> dict[str, Any]:
    return products.set_status(ctx.params["product_id"], "developing")


@route(
    bp,
    "GET",
    "/v1/products/{product_id}/thing-model",
    action="DescribeModelDefinition",
    resource=product_res,
    tag=TAG,
    summary="Get (export) the thing model",
    response=s.ThingModel,
)
def get_model(ctx: Ctx) -> dict[str, Any]:
    return products.get_thing_model(ctx.params["product_id"])


@route(
    bp,
    "PUT",
    "/v1/products/{product_id}/thing-model",
    action="ModifyModelDefinition",
    resource=product_res,
    tag=TAG,
    summary="Import a thing model (replaces the whole model after validation)",
    body=s.ThingModel,
    response=s.ThingModel,
)
def put_model(ctx: Ctx) -> dict[str, Any]:
    return products.put_thing_model(ctx.params["product_id"], ctx.body)


@route(
    bp,
    "GET",
    "/v1/standard-features",
    action="DescribeStandardFeatures",
    resource="catalogue/standard-features",
    tag=TAG,
    summary="The standard-features catalogue",
    response=s.StandardFeatures,
)
def standard_features(ctx: Ctx) -> dict[str, Any]:
    return {"items": thing_model.standard_features()}


@route(
    bp,
    "GET",
    "/v1/products/{product_id}/dynamic-registration",
    action="DescribeProductDynamicRegister",
    resource=product_res,
    tag=TAG,
    summary="Dynamic-registration settings (the product secret only with include_secret=true and "
    "DescribeProductSecret)",
    response=s.Registration,
    query={"include_secret": Boolean(default=False, code=errors.INCLUDE_SECRET_INVALID)},
)
def get_registration(ctx: Ctx) -> dict[str, Any]:
    if ctx.query["include_secret"]:
        ctx.require("DescribeProductSecret", ctx.resource)
    return products.get_registration(ctx.params["product_id"], ctx.query["include_secret"])


@route(
    bp,
    "PUT",
    "/v1/products/{product_id}/dynamic-registration",
    action="UpdateProductDynamicRegister",
    resource=product_res,
    tag=TAG,
    summary="Set dynamic registration (the product secret is made when first enabled)",
    body=s.RegistrationPut,
    response=s.Registration,
)
def put_registration(ctx: Ctx) -> dict[str, Any]:
    return products.put_registration(
        ctx.params["product_id"], ctx.body["register_type"], ctx.body.get("register_limit")
    )


@route(
    bp,
    "POST",
    "/v1/products/{product_id}/secret/rotate",
    action="ResetProductSecret",
    resource=product_res,
    tag=TAG,
    summary="Rotate the product secret",
    response=s.Registration,
)
def rotate_secret(ctx: Ctx) -> dict[str, Any]:
    return products.rotate_secret(ctx.params["product_id"])


@route(
    bp,
    "GET",
    "/v1/products/{product_id}/topics",
    action="ListTopicPolicy",
    resource=product_res,
    tag=TAG,
    summary="Custom topics",
    response=s.TopicList,
)
def list_topics(ctx: Ctx) -> dict[str, Any]:
    return {"items": products.list_topics(ctx.params["product_id"])}


@route(
    bp,
    "POST",
    "/v1/products/{product_id}/topics",
    action="CreateTopicPolicy",
    resource=product_res,
    tag=TAG,
    summary="Add a custom topic (custom-protocol products)",
    body=s.TopicCreate,
    response=s.Topic,
    status=201,
)
def add_topic(ctx: Ctx) -> dict[str, Any]:
    return products.add_topic(ctx.params["product_id"], ctx.body["name"], ctx.body["permission"])


@route(
    bp,
    "DELETE",
    "/v1/products/{product_id}/topics/{name}",
    action="DeleteTopicPolicy",
    resource=product_res,
    tag=TAG,
    summary="Delete a custom topic",
    status=204,
)
def delete_topic(ctx: Ctx) -> None:
    products.delete_topic(ctx.params["product_id"], ctx.params["name"])
