"""HTTP routes for API keys, principals and policies, applications and the audit log."""

from __future__ import annotations

from typing import Any

from chalice import Blueprint

from ..core import clock, errors
from ..core.auth import qualify
from ..core.schema import Integer, String
from ..services import access, audit
from . import schemas as s
from .api import Ctx, decode_token, encode_token, route

bp = Blueprint(__name__)
TAG = "access"


def principal_res(params: Any, body: Any) -> str:
    return f"principal/{params['principal_id']}"


def key_target(params: Any, body: Any) -> str:
    target = body.get("principal_id") if isinstance(body, dict) else None
    return f"principal/{target}" if isinstance(target, str) and target else "principal/self"


def listed_principal(ctx: Ctx) -> str:
    """Whose credentials a list shows: ``?principal_id=`` (the list's action must allow that
    principal), or the caller's own."""
    target = ctx.query.get("principal_id") or ctx.caller.principal_id
    if target != ctx.caller.principal_id:
        ctx.require(ctx.spec.action or "", f"principal/{target}")
    return target


@route(
    bp,
    "POST",
    "/v1/keys",
    action="CreateApiKey",
    resource=key_target,
    tag=TAG,
    summary="Issue an API key for a principal (the caller by default); the key is shown once",
    body=s.KeyCreate,
    response=s.ApiKey,
    status=201,
)
def create_key(ctx: Ctx) -> dict[str, Any]:
    # without principal_id the caller's own key is made; the policy saw resource "principal/self"
    target = ctx.body.get("principal_id") or ctx.caller.principal_id
    return access.create_key(target, ctx.body.get("name", ""))


@route(
    bp,
    "GET",
    "/v1/keys",
    action="ListApiKeys",
    resource="principal/*",
    listing=True,
    tag=TAG,
    summary="List a principal's API keys (the caller's by default); secrets are never shown",
    response=s.ApiKeyPage,
    query={**s.PAGING, "principal_id": String(min_len=1, max_len=64, code=errors.PRINCIPAL_ID_INVALID)},
)
def list_keys(ctx: Ctx) -> dict[str, Any]:
    target = listed_principal(ctx)
    items, nxt = access.list_keys(target, ctx.query["limit"], decode_token(ctx.query.get("next")))
    return {"items": items, "total": None, "next": encode_token(nxt)}


@route(
    bp,
    "DELETE",
    "/v1/keys/{key_id}",
    action="DeleteApiKey",
    resource=lambda p, b: f"key/{p['key_id']}",
    tag=TAG,
    summary="Revoke an API key",
    status=204,
)
def delete_key(ctx: Ctx) -> None:
    access.delete_key(ctx.params["key_id"])


@route(
    bp,
    "POST",
    "/v1/principals",
    action="CreatePrincipal",
    resource="principal/*",
    tag=TAG,
    summary="Create a principal (sub-account, staff, chat operator) with a policy",
    body=s.PrincipalCreate,
    response=s.Principal,
    status=201,
)
def create_principal(ctx: Ctx) -> dict[str, Any]:
    return access.create_principal(ctx.body["name"], ctx.body.get("kind", "user"), ctx.body.get("policy"))


@route(
    bp,
    "GET",
    "/v1/principals/{principal_id}",
    action="DescribePrincipal",
    resource=principal_res,
    tag=TAG,
    summary="Get a principal and its policy",
    response=s.Principal,
)
def get_principal(ctx: Ctx) -> dict[str, Any]:
    return access.principal_view(access.get_principal(ctx.params["principal_id"]))


@route(
    bp,
    "DELETE",
    "/v1/principals/{principal_id}",
    action="DeletePrincipal",
    resource=principal_res,
    tag=TAG,
    summary="Delete a principal; its API keys stop working at once",
    status=204,
)
def delete_principal(ctx: Ctx) -> None:
    if ctx.params["principal_id"] == ctx.caller.principal_id:
        raise errors.DELETE_SELF("a principal cannot delete itself", "principal_id")
    access.delete_principal(ctx.params["principal_id"])


@route(
    bp,
    "PUT",
    "/v1/principals/{principal_id}/policy",
    action="PutPrincipalPolicy",
    resource=principal_res,
    tag=TAG,
    summary="Replace a principal's policy",
    body=s.PolicyPut,
    response=s.Principal,
)
def put_policy(ctx: Ctx) -> dict[str, Any]:
    return access.put_policy(ctx.params["principal_id"], dict(ctx.body))


def _require_products(ctx: Ctx, action: str, products: list[str]) -> None:
    """An application may only be given products its creator may act on (no scope widening)."""
    for pid in products:
        ctx.require(action, f"product/{pid}")


def application_res(params: Any, body: Any) -> str:
    return f"application/{params['application_id']}"


@route(
    bp,
    "POST",
    "/v1/applications",
    action="CreateApplication",
    resource="application/*",
    tag=TAG,
    summary="Create an application with its products; three key pairs (android, ios, miniprogram) are issued",
    body=s.ApplicationCreate,
    response=s.Application,
    status=201,
)
def create_application(ctx: Ctx) -> dict[str, Any]:
    _require_products(ctx, "CreateApplication", ctx.body.get("products", []))
    return access.create_application(ctx.body["name"], ctx.body.get("remark", ""), ctx.body.get("products", []))


@route(
    bp,
    "GET",
    "/v1/applications/{application_id}",
    action="DescribeApplication",
    resource=application_res,
    tag=TAG,
    summary="Get an application and its keys (without secrets)",
    response=s.Application,
)
def get_application(ctx: Ctx) -> dict[str, Any]:
    return access.describe_application(ctx.params["application_id"])


@route(
    bp,
    "DELETE",
    "/v1/applications/{application_id}",
    action="DeleteApplication",
    resource=application_res,
    tag=TAG,
    summary="Delete an application; its keys stop working at once",
    status=204,
)
def delete_application(ctx: Ctx) -> None:
    access.delete_application(ctx.params["application_id"])


@route(
    bp,
    "PUT",
    "/v1/applications/{application_id}/products",
    action="ModifyApplicationProducts",
    resource=application_res,
    tag=TAG,
    summary="Replace the products an application may see",
    body=s.ApplicationProducts,
    response=s.Application,
)
def put_application_products(ctx: Ctx) -> dict[str, Any]:
    _require_products(ctx, "ModifyApplicationProducts", ctx.body["products"])
    return access.set_application_products(ctx.params["application_id"], ctx.body["products"])


@route(
    bp,
    "GET",
    "/v1/audit",
    action="DescribeAuditLog",
    resource="account/audit",
    tag=TAG,
    summary="The audit log, newest first (default: the last 7 days)",
    response=s.AuditPage,
    query={
        **s.PAGING,
        "principal_id": String(min_len=1, max_len=64, code=errors.PRINCIPAL_ID_INVALID),
        "action": String(min_len=1, max_len=128, code=errors.ACTION_INVALID),
        "start": Integer(minimum=0, maximum=4_102_444_800, code=errors.START_INVALID, description="Unix seconds"),
        "end": Integer(minimum=0, maximum=4_102_444_800, code=errors.END_INVALID, description="Unix seconds"),
    },
)
def get_audit(ctx: Ctx) -> dict[str, Any]:
    end = ctx.query.get("end") or clock.now_s()
    start = ctx.query.get("start") if ctx.query.get("start") is not None else end - 7 * 86_400
    if start > end:
        raise errors.TIME_RANGE_INVALID("start must not be after end", "start")
    if end - start > 92 * 86_400:
        raise errors.TIME_RANGE_INVALID("the range may span at most 92 days", "start")
    action = ctx.query.get("action")
    if action:
        action = qualify(action)
    items, nxt = audit.query(
        start=start,
        end=end,
        principal_id=ctx.query.get("principal_id"),
        action=action,
        limit=ctx.query["limit"],
        cursor=decode_token(ctx.query.get("next")),
    )
    return {"items": items, "total": None, "next": encode_token(nxt)}
