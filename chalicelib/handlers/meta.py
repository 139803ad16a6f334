"""``GET /openapi.json``: the OpenAPI 3 document, generated from the route registry."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from chalice import Blueprint, Response

from ..core.schema import Model, collect_models
from . import schemas as s
from .api import ROUTES, RouteSpec

bp = Blueprint(__name__)

_STATUS_TEXT = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No content",
    400: "Invalid request",
    401: "Missing or invalid credential",
    403: "The caller's policy denies this",
    404: "Not found",
    409: "Conflicts with the current state",
    413: "Too large",
    415: "Unsupported media type",
    429: "Rate limited",
    500: "Internal error",
}


def _operation(spec: RouteSpec, models: dict[str, Model]) -> dict[str, Any]:
    params: list[dict[str, Any]] = []
    for name in re.findall(r"{(\w+)}", spec.path):
        params.append({"name": name, "in": "path", "required": True, "schema": {"type": "string"}})
    for name, fld in spec.query.items():
        collect_models(fld, models)
        params.append(
            {
                "name": name,
                "in": "query",
                "required": fld.required,
                "schema": fld.schema(),
                **({"description": fld.description} if fld.description else {}),
            }
        )
    op: dict[str, Any] = {
        "operationId": f"{spec.method.lower()}_{re.sub(r'[^A-Za-z0-9]+', '_', spec.path).strip('_')}",
        "summary": spec.summary,
        "tags": [spec.tag],
        "parameters": params,
    }
    if spec.action:
        op["x-fleetbox-action"] = f"iotexplorer:{spec.action}" if ":" not in spec.action else spec.action
    if spec.public:
        op["security"] = []
    if spec.body is not None:
        collect_models(spec.body, models)
        op["requestBody"] = {
            "required": spec.body.required or isinstance(spec.body, Model),
            "content": {spec.consumes: {"schema": spec.body.schema()}},
        }
    responses: dict[str, Any] = {}
    if spec.status == 204:
        responses["204"] = {"description": _STATUS_TEXT[204]}
    elif spec.response is not None:
        collect_models(spec.response, models)
        responses[str(spec.status)] = {
            "description": _STATUS_TEXT.get(spec.status, "OK"),
            "content": {spec.produces: {"schema": spec.response.schema()}},
        }
    else:
        responses[str(spec.status)] = {"description": _STATUS_TEXT.get(spec.status, "OK")}
    codes = {400, 404, 409, 415, 500}
    if not spec.public:
        codes |= {401, 403}
    codes |= set(spec.errors)
    for code in sorted(codes):
        responses[str(code)] = {
            "description": _STATUS_TEXT.get(code, "Error"),
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    op["responses"] = responses
    return op


@lru_cache(maxsize=1)
def document() -> str:
    models: dict[str, Model] = {}
    collect_models(s.ErrorBody, models)
    paths: dict[str, dict[str, Any]] = {}
    for spec in ROUTES:
        paths.setdefault(spec.path, {})[spec.method.lower()] = _operation(spec, models)
    doc = {
        "openapi": "3.0.3",
        "info": {
            "title": "Fleetbox API",
            "version": "1.0.0",
            "description": "Serverless device platform. Every /v1 route needs `Authorization: Bearer <api key>`; "
            "errors are {error:{code,message,field},request_id}.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "fbk_<id>.<secret>"}
            },
            "schemas": {name: m.definition() for name, m in sorted(models.items())},
        },
    }
    return json.dumps(doc, ensure_ascii=False)


@bp.route("/openapi.json", methods=["GET"])
def openapi() -> Response:
    return Response(body=document(), status_code=200, headers={"Content-Type": "application/json"})
