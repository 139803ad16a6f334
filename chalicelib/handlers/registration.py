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
from ..core.schema import Integer, Json, Model, String
from ..protocol import registration as proto
from ..services import registration
from .api import document

bp = Blueprint(__name__)

# documentation models: the bodies are parsed by protocol/registration (signatures cover the raw bytes)
_V2_BODY = Model(
    "DeviceRegisterV2Request",
    {"ProductId": String(required=True), "DeviceName": String(required=True)},
    allow_extra=True,
)
_V2_ANSWER = Model(
    "DeviceRegisterV2Answer",
    {
        "Response": Json(
            object_only=True,
            required=True,
            description='{"Len","Payload","RequestId"} or {"Error":{"Code","Message"},"RequestId"}',
        )
    },
    allow_extra=True,
)
_LEGACY_BODY = Model(
    "DeviceRegisterLegacyRequest",
    {
        "deviceName": String(required=True),
        "nonce": Integer(required=True),
        "productId": String(required=True),
        "timestamp": Integer(required=True),
        "signature": String(required=True),
    },
    allow_extra=True,
)
_LEGACY_ANSWER = Model(
    "DeviceRegisterLegacyAnswer",
    {
        "code": Integer(required=True, description="0 = success"),
        "message": String(required=True),
        "len": Integer(),
        "payload": String(),
        "requestId": String(),
    },
    allow_extra=True,
)
document(
    "POST",
    proto.V2_PATH,
    tag="registration",
    body=_V2_BODY,
    response=_V2_ANSWER,
    summary="Dynamic registration (v2; X-TC-* signature headers; always HTTP 200)",
)
document(
    "POST",
    proto.LEGACY_PATH,
    tag="registration",
    body=_LEGACY_BODY,
    response=_LEGACY_ANSWER,
    summary="Dynamic registration (legacy; signed body; always HTTP 200)",
)


def _answer(body: dict[str, Any], request_id: str) -> Response:
    return Response(
        body=json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        status_code=200,
        headers={"Content-Type": "application/json", "x-request-id": request_id},
    )


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
            "v2",
            lambda: proto.parse_v2(request.headers, raw, request.headers.get("host"), _signed_paths(request)),
            request_id,
        )
    except Exception:  # noqa: BLE001 - never a 5xx: the SDK would never see why
        logger.exception("registration endpoint failed", extra={"request_id": request_id})
        body = proto.v2_error(proto.refuse("internal"), request_id)
    return _answer(body, request_id)


@bp.route(proto.LEGACY_PATH, methods=["POST"], content_types=["*/*"])
def register_legacy() -> Response:
    request_id = ids.request_id()
    try:
        raw = _raw_body(bp.current_request)
        body = registration.handle("legacy", lambda: proto.parse_legacy(raw), request_id)
    except Exception:  # noqa: BLE001 - never a 5xx: the SDK would never see why
        logger.exception("registration endpoint failed", extra={"request_id": request_id})
        body = proto.legacy_error(proto.refuse("internal"), request_id)
    return _answer(body, request_id)
