"""Dynamic registration endpoints (SPEC §6.3): ``POST /device/register`` (v2) and ``POST /register/dev`` (legacy).

Public routes — devices sign with their ProductSecret, there is no bearer — so they are plain
Chalice routes, not the route kit's.  Every answer, refusals and internal errors included, is
HTTP 200 with ``Content-Type: application/json`` exactly (SPEC §6.6: the SDK raises on any
other status, and treats the body as success unless the type is exactly that).
"""
from __future__ import annotations

import json
from typing import Any

from chalice import Blueprint, Response

from ..core import ids
from ..core.observability import logger
from ..protocol import registration as proto
from ..services import registration

bp = Blueprint(__name__)


def _answer(body: dict[str, Any], request_id: str) -> Response:
    return Response(body=json.dumps(body, separators=(",", ":"), ensure_ascii=False), status_code=200,
                    headers={"Content-Type": "application/json", "x-request-id": request_id})


def _raw_body(request: Any) -> bytes:
    raw = request.raw_body
    if raw is None:
        return b""
    return raw if isinstance(raw, bytes) else str(raw).encode("utf-8")


def _signed_paths(request: Any) -> list[str]:
    """The paths a device may have signed: as received (API Gateway keeps the stage prefix in the
    context's path), and the route's own."""
    context = request.context or {}
    return [p for p in (context.get("path"), request.path, proto.V2_PATH) if isinstance(p, str) and p]


@bp.route(proto.V2_PATH, methods=["POST"], content_types=["*/*"])
def register_v2() -> Response:
    request_id = ids.request_id()
    try:
        request = bp.current_request
        raw = _raw_body(request)
        body = registration.handle(
            "v2", lambda: proto.parse_v2(request.headers, raw, request.headers.get("host"), _signed_paths(request)),
            request_id)
    except Exception:  # never a 5xx: the SDK would never see why
        logger.exception("registration endpoint failed", extra={"request_id": request_id})
        body = proto.v2_error(proto.refuse("internal"), request_id)
    return _answer(body, request_id)


@bp.route(proto.LEGACY_PATH, methods=["POST"], content_types=["*/*"])
def register_legacy() -> Response:
    request_id = ids.request_id()
    try:
        raw = _raw_body(bp.current_request)
        body = registration.handle("legacy", lambda: proto.parse_legacy(raw), request_id)
    except Exception:
        logger.exception("registration endpoint failed", extra={"request_id": request_id})
        body = proto.legacy_error(proto.refuse("internal"), request_id)
    return _answer(body, request_id)
