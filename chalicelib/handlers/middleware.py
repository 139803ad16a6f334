"""HTTP middleware: every response, even Chalice's own, carries x-request-id and our error envelope."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from chalice import Response

from ..core import errors, ids

_CHALICE_CODES = {
    "MethodNotAllowedError": errors.METHOD_NOT_ALLOWED,
    "UnsupportedMediaType": errors.UNSUPPORTED_MEDIA_TYPE,
    "BadRequestError": errors.INVALID_REQUEST,
    "NotFoundError": errors.ROUTE_NOT_FOUND,
    "InternalServerError": errors.INTERNAL_ERROR,
    "BadRequest": errors.INVALID_REQUEST,
}


def http_envelope(event: Any, get_response: Callable[[Any], Response]) -> Response:
    response = get_response(event)
    request_id = response.headers.get("x-request-id")
    if request_id is None:
        request_id = ids.request_id()
        response.headers["x-request-id"] = request_id
        body = response.body
        if response.status_code >= 400 and isinstance(body, dict) and "Code" in body:
            # a response Chalice made itself (405, 415, unhandled error): same envelope as ours
            code = _CHALICE_CODES.get(str(body.get("Code")), errors.INVALID_REQUEST)
            err = errors.FleetboxError(code, str(body.get("Message", "")), None, status=response.status_code)
            response.body = json.dumps(err.body(request_id))
            response.headers["Content-Type"] = "application/json"
    return response
