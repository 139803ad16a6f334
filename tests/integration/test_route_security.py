"""Every registered /v1 route is authenticated and authorised (SPEC §2).

Given the live route table, when each route is called without a credential, then it
answers 401; with a policy that denies exactly that route's action, 403; and a
principal limited to product A gets 403 on every product-scoped route of product B.
"""

from __future__ import annotations

import re

import pytest

from app import app
from chalicelib.handlers.api import FALLBACKS, ROUTES

V1 = [r for r in ROUTES if r.path.startswith("/v1/")]


def test_every_v1_route_goes_through_the_route_kit():
    # Given the routes Chalice actually serves
    served = {
        (path, method)
        for path, methods in app.routes.items()
        for method in methods
        if path.startswith("/v1/") and (path, method) not in FALLBACKS
    }
    # Then each one was registered with an action (none bypasses the policy check)
    kit = {(r.path, r.method) for r in V1 if r.action and not r.public}
    assert served and served == kit


def _fill(path: str, pid: str, dn: str) -> str:
    values = {
        "product_id": pid,
        "device_name": dn,
        "key_id": "aaaaaaaaaaaaaaaa",
        "secret_id": "AKID" + "a" * 32,
        "principal_id": "root",
        "application_id": "app-000000000000",
        "name": "data",
        "property_id": "brightness",
        "action_id": "unlock",
        "client_token": "clientToken-0",
        "batch_id": "batnosuchbatch0000",
        "binding_id": f"{pid}{dn}.aaaaaaaaaaaa",
        "user_id": "u1",
        "firmware_id": "fwaaaaaaaaaaaa",
        "task_id": "otaaaaaaaaaaaa",
        "resource_id": "rsaaaaaaaaaaaa",
        "letter_id": "0000000000000abcd",
        "stream_id": "st-000000000000",
        "space_id": "sp_0000000000",
        "fence_id": "fc_0000000000",
        "identity_id": "slack:T0FLEET01:U0NOBODY1",
        "id": "cs-0000000000000000",
        "bot_id": "fs-000000000000",
    }
    return re.sub(r"{(\w+)}", lambda m: values[m.group(1)], path)


def _principal_key(api, policy: dict) -> str:
    created = api.post("/v1/principals", {"name": "tester", "policy": policy})
    assert created.status_code == 201, created.body
    key = api.post("/v1/keys", {"principal_id": created.json["principal_id"], "name": "t"})
    assert key.status_code == 201, key.body
    return key.json["api_key"]


@pytest.fixture()
def two_products(api):
    ids = []
    for name in ("Product A", "Product B"):
        r = api.post(
            "/v1/products",
            {
                "name": name,
                "category": "custom",
                "device_type": "device",
                "comm_method": "wifi",
                "auth_type": "key",
                "data_protocol": "thing_model",
            },
        )
        assert r.status_code == 201
        ids.append(r.json["product_id"])
        assert api.post(f"/v1/products/{ids[-1]}/devices", {"device_name": "dev1"}).status_code == 201
    return ids


def test_no_credential_is_401_everywhere(api, two_products):
    pid = two_products[0]
    for spec in V1:
        resp = api.call(spec.method, _fill(spec.path, pid, "dev1"), body={}, key=None)
        assert resp.status_code == 401, (spec.method, spec.path, resp.body)
        assert resp.json["error"]["code"] == "AuthFailure.InvalidCredential"
        assert resp.headers["x-request-id"] == resp.json["request_id"]


def test_a_policy_denying_the_action_is_403_everywhere(api, two_products):
    pid = two_products[0]
    for spec in V1:
        # allow everything, deny exactly this action: deny must win
        key = _principal_key(
            api,
            {
                "version": "2.0",
                "statement": [
                    {"effect": "allow", "action": ["*"], "resource": ["*"]},
                    {"effect": "deny", "action": [f"iotexplorer:{spec.action}"], "resource": ["*"]},
                ],
            },
        )
        resp = api.call(spec.method, _fill(spec.path, pid, "dev1"), body={}, key=key)
        assert resp.status_code == 403, (spec.method, spec.path, resp.body)
        assert resp.json["error"]["code"] == "UnauthorizedOperation"


def test_a_principal_limited_to_product_a_cannot_touch_product_b(api, two_products):
    a, b = two_products
    key = _principal_key(
        api,
        {
            "version": "2.0",
            "statement": [
                {"effect": "allow", "action": ["iotexplorer:*"], "resource": [f"product/{a}", f"product/{a}/*"]}
            ],
        },
    )
    scoped = [r for r in V1 if "{product_id}" in r.path]
    assert scoped
    for spec in scoped:
        resp = api.call(spec.method, _fill(spec.path, b, "dev1"), body={}, key=key)
        assert resp.status_code == 403, (spec.method, spec.path, resp.body)
    # and it does see its own product's devices, and only its own products
    limited = api.as_key(key)
    assert limited.get(f"/v1/products/{a}/devices").json["items"][0]["device_name"] == "dev1"
    assert [p["product_id"] for p in limited.get("/v1/products").json["items"]] == [a]
    # B's device is untouched
    assert api.get(f"/v1/products/{b}/devices/dev1").status_code == 200
