"""Integration fixtures: moto's mock_aws with the stage's real tables, and the Chalice test client."""
from __future__ import annotations

import json
from typing import Any, Iterator

import pytest
from moto import mock_aws


@pytest.fixture()
def aws() -> Iterator[None]:
    from infra.local.bootstrap import bootstrap

    with mock_aws():
        bootstrap("test")
        yield


class Api:
    """A thin JSON wrapper over chalice.test.Client (what a user's HTTP client would see)."""

    def __init__(self, client: Any, key: str | None):
        self.client = client
        self.key = key

    def call(self, method: str, path: str, body: Any = None, key: str | None = "default",
             headers: dict[str, str] | None = None, raw: str | bytes | None = None) -> Any:
        hdrs = {"Content-Type": "application/json"}
        use = self.key if key == "default" else key
        if use:
            hdrs["Authorization"] = f"Bearer {use}"
        hdrs.update(headers or {})
        payload = raw if raw is not None else (json.dumps(body) if body is not None else None)
        resp = getattr(self.client.http, method.lower())(path, headers=hdrs, body=payload)
        resp.json = json.loads(resp.body) if resp.body else None
        return resp

    def get(self, path: str, **kw: Any) -> Any:
        return self.call("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.call("POST", path, body, **kw)

    def put(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.call("PUT", path, body, **kw)

    def patch(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.call("PATCH", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.call("DELETE", path, **kw)

    def as_key(self, key: str | None) -> "Api":
        return Api(self.client, key)


@pytest.fixture()
def api(aws: None) -> Iterator[Api]:
    from chalice.test import Client

    from app import app
    from chalicelib.services import access

    key = access.seed_root()
    with Client(app) as client:
        yield Api(client, key)


PRODUCT = {"name": "Lamp", "category": "smart-life/lighting/lamp", "device_type": "device", "comm_method": "wifi",
           "auth_type": "key", "data_protocol": "thing_model"}


@pytest.fixture()
def product(api: Api) -> dict[str, Any]:
    resp = api.post("/v1/products", PRODUCT)
    assert resp.status_code == 201, resp.body
    return resp.json
