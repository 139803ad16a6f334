"""Assertions shared by the integration tests."""
from __future__ import annotations

from typing import Any


def expect_error(resp: Any, status: int, code: str, field: str | None) -> dict[str, Any]:
    """The error envelope of SPEC §16, with the exact status, code and field."""
    assert resp.status_code == status, resp.body
    body = resp.json
    assert set(body) == {"error", "request_id"}, body
    assert body["error"]["code"] == code, body
    assert body["error"].get("field") == field, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    assert body["request_id"] == resp.headers["x-request-id"], body
    return body["error"]
