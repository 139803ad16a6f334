"""HTTP routes for cloud-API SecretId/SecretKey pairs (SPEC §2, §14): the credentials of ``POST /``."""

from __future__ import annotations

from typing import Any

from chalice import Blueprint

from ..core import errors
from ..core.schema import String
from ..services import cloudkeys
from . import schemas as s
from .access import key_target, listed_principal
from .api import Ctx, decode_token, encode_token, route

bp = Blueprint(__name__)
TAG = "access"


@route(
    bp,
    "POST",
    "/v1/cloud-keys",
    action="CreateCloudApiKey",
    resource=key_target,
    tag=TAG,
    summary="Issue a cloud-API SecretId/SecretKey pair for a principal (the caller by default); "
    "the SecretKey is shown once",
    body=s.CloudKeyCreate,
    response=s.CloudKey,
    status=201,
)
def create_cloud_key(ctx: Ctx) -> dict[str, Any]:
    target = ctx.body.get("principal_id") or ctx.caller.principal_id
    return cloudkeys.create_key(target, ctx.body.get("name", ""))


@route(
    bp,
    "GET",
    "/v1/cloud-keys",
    action="ListCloudApiKeys",
    resource="principal/*",
    listing=True,
    tag=TAG,
    summary="List a principal's cloud-API pairs (the caller's by default); SecretKeys are never shown",
    response=s.CloudKeyPage,
    query={**s.PAGING, "principal_id": String(min_len=1, max_len=64, code=errors.PRINCIPAL_ID_INVALID)},
)
def list_cloud_keys(ctx: Ctx) -> dict[str, Any]:
    items, nxt = cloudkeys.list_keys(listed_principal(ctx), ctx.query["limit"], decode_token(ctx.query.get("next")))
    return {"items": items, "total": None, "next": encode_token(nxt)}


def _cloud_key_owner(params: Any, body: Any) -> tuple[str, Any]:
    rec = cloudkeys.get_key(params["secret_id"])
    return f"principal/{rec.principal_id}", rec


@route(
    bp,
    "DELETE",
    "/v1/cloud-keys/{secret_id}",
    action="DeleteCloudApiKey",
    resource=lambda p, b: "principal/*",
    owner=_cloud_key_owner,
    tag=TAG,
    summary="Revoke a cloud-API pair: its SecretId is unknown on the next request",
    status=204,
)
def delete_cloud_key(ctx: Ctx) -> None:
    cloudkeys.delete_key(ctx.item.secret_id)
