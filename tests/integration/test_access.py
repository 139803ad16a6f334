"""API keys, principals and policies, applications and the audit log over HTTP (SPEC §2, §16)."""

from __future__ import annotations

import base64
import json
import re
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.integration.helpers import PRODUCT, expect_error, make_device, make_product

ALLOW_ALL = {"effect": "allow", "action": ["*"], "resource": ["*"]}


# ------------------------------------------------------------------ helpers


def policy(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"version": "2.0", "statement": list(statements)}


def principal(api: Any, pol: dict[str, Any] | None, name: str = "partner") -> dict[str, Any]:
    body: dict[str, Any] = {"name": name}
    if pol is not None:
        body["policy"] = pol
    resp = api.post("/v1/principals", body)
    assert resp.status_code == 201, resp.body
    return resp.json


def new_key(api: Any, principal_id: str, name: str = "k") -> dict[str, Any]:
    resp = api.post("/v1/keys", {"principal_id": principal_id, "name": name})
    assert resp.status_code == 201, resp.body
    return resp.json


def client_for(api: Any, pol: dict[str, Any] | None) -> Any:
    p = principal(api, pol)
    return api.as_key(new_key(api, p["principal_id"])["api_key"])


@pytest.fixture()
def two(api):
    """Products A and B with one device each."""
    a, b = make_product(api, "Product A", model=None), make_product(api, "Product B", model=None)
    make_device(api, a, "dev-a")
    make_device(api, b, "dev-b")
    return a, b


# ------------------------------------------------------------------ principals and keys


def test_create_principal_and_key(api):
    pol = policy({"effect": "allow", "action": "iotexplorer:DescribeStudioProduct", "resource": "*"})
    resp = api.post("/v1/principals", {"name": "partner", "policy": pol})
    assert resp.status_code == 201, resp.body
    p = resp.json
    assert p["name"] == "partner" and p["kind"] == "user"
    # single strings are normalised to lists
    assert p["policy"] == policy(
        {"effect": "allow", "action": ["iotexplorer:DescribeStudioProduct"], "resource": ["*"]}
    )
    got = api.get(f"/v1/principals/{p['principal_id']}")
    assert got.status_code == 200 and got.json == p

    key = new_key(api, p["principal_id"], "ci")
    assert key["principal_id"] == p["principal_id"] and key["name"] == "ci"
    assert key["api_key"].startswith(f"fbk_{key['key_id']}.")
    # the key is never shown again
    listed = api.get("/v1/keys?" + urlencode({"principal_id": p["principal_id"]}))
    assert listed.status_code == 200, listed.body
    assert [k["key_id"] for k in listed.json["items"]] == [key["key_id"]]
    assert "api_key" not in listed.json["items"][0]
    assert key["api_key"] not in listed.body.decode()
    assert key["api_key"].split(".", 1)[1] not in listed.body.decode()


def test_key_for_caller_by_default(api):
    resp = api.post("/v1/keys", {"name": "second root key"})
    assert resp.status_code == 201, resp.body
    assert resp.json["principal_id"] == "root"
    assert api.as_key(resp.json["api_key"]).get("/v1/products").status_code == 200


def test_key_for_unknown_principal(api):
    expect_error(
        api.post("/v1/keys", {"principal_id": "p-000000000000"}),
        404,
        "ResourceNotFound.PrincipalNotExist",
        "principal_id",
    )


def test_unknown_principal_is_404(api):
    expect_error(api.get("/v1/principals/p-000000000000"), 404, "ResourceNotFound.PrincipalNotExist", "principal_id")
    expect_error(
        api.put("/v1/principals/p-000000000000/policy", policy()),
        404,
        "ResourceNotFound.PrincipalNotExist",
        "principal_id",
    )


@pytest.mark.parametrize(
    "body,code,field",
    [
        ({}, "MissingParameter", "name"),
        ({"name": ""}, "InvalidParameterValue.PrincipalNameInvalid", "name"),
        ({"name": "x" * 65}, "InvalidParameterValue.PrincipalNameInvalid", "name"),
        ({"name": "x", "kind": "root"}, "InvalidParameterValue.PrincipalKindInvalid", "kind"),
        ({"name": "x", "kind": "application"}, "InvalidParameterValue.PrincipalKindInvalid", "kind"),
        ({"name": "x", "admin": True}, "UnknownParameter", "admin"),
    ],
)
def test_principal_body_validation(api, body, code, field):
    expect_error(api.post("/v1/principals", body), 400, code, field)


@pytest.mark.parametrize(
    "pol,field",
    [
        ({"version": "1.0", "statement": []}, "policy.version"),
        ({"statement": []}, "policy.version"),
        ({"version": 2.0, "statement": []}, "policy.version"),
        ({"version": "2.0"}, "policy.statement"),
        ({"version": "2.0", "statement": {"effect": "allow"}}, "policy.statement"),
        ({"version": "2.0", "statement": [], "Id": "x"}, "policy.Id"),
        (policy("allow"), "policy.statement[0]"),
        (policy({"effect": "maybe", "action": ["*"], "resource": ["*"]}), "policy.statement[0].effect"),
        (policy({"effect": "Allow", "action": ["*"], "resource": ["*"]}), "policy.statement[0].effect"),
        (policy({"action": ["*"], "resource": ["*"]}), "policy.statement[0].effect"),
        (policy({"effect": "allow", "action": ["bad"], "resource": ["*"]}), "policy.statement[0].action[0]"),
        (
            policy({"effect": "allow", "action": ["*", "iotexplorer:Create Device"], "resource": ["*"]}),
            "policy.statement[0].action[1]",
        ),
        (policy({"effect": "allow", "action": [], "resource": ["*"]}), "policy.statement[0].action"),
        (policy({"effect": "allow", "resource": ["*"]}), "policy.statement[0].action"),
        (policy({"effect": "allow", "action": ["*"], "resource": []}), "policy.statement[0].resource"),
        (policy({"effect": "allow", "action": ["*"], "resource": [""]}), "policy.statement[0].resource[0]"),
        (policy({"effect": "allow", "action": ["*"], "resource": ["product A"]}), "policy.statement[0].resource[0]"),
        (policy({"effect": "allow", "action": ["*"], "resource": [7]}), "policy.statement[0].resource[0]"),
        (
            policy(ALLOW_ALL, {"effect": "deny", "action": ["*"], "resource": ["*"], "condition": {}}),
            "policy.statement[1].condition",
        ),
        ("allow everything", "policy"),
        ([ALLOW_ALL], "policy"),
    ],
)
def test_invalid_policy_refused_with_path(api, pol, field):
    expect_error(
        api.post("/v1/principals", {"name": "bad", "policy": pol}), 400, "InvalidParameterValue.PolicyInvalid", field
    )


def test_put_policy_takes_effect_at_once(api, two):
    a, _ = two
    p = principal(api, policy())
    client = api.as_key(new_key(api, p["principal_id"])["api_key"])
    expect_error(client.get(f"/v1/products/{a}"), 403, "UnauthorizedOperation", None)
    new = policy({"effect": "allow", "action": ["iotexplorer:DescribeStudioProduct"], "resource": [f"product/{a}"]})
    resp = api.put(f"/v1/principals/{p['principal_id']}/policy", new)
    assert resp.status_code == 200, resp.body
    assert resp.json["policy"] == new
    assert api.get(f"/v1/principals/{p['principal_id']}").json["policy"] == new
    assert client.get(f"/v1/products/{a}").status_code == 200
    assert api.put(f"/v1/principals/{p['principal_id']}/policy", policy()).status_code == 200
    expect_error(client.get(f"/v1/products/{a}"), 403, "UnauthorizedOperation", None)


def test_put_invalid_policy_names_the_body_path(api):
    """The body of PUT …/policy *is* the policy: the field is its path inside that body."""
    p = principal(api, policy())
    bad = policy({"effect": "maybe", "action": ["*"], "resource": ["*"]})
    expect_error(
        api.put(f"/v1/principals/{p['principal_id']}/policy", bad),
        400,
        "InvalidParameterValue.PolicyInvalid",
        "statement[0].effect",
    )
    expect_error(
        api.put(f"/v1/principals/{p['principal_id']}/policy", {"version": "1.0", "statement": []}),
        400,
        "InvalidParameterValue.PolicyInvalid",
        "version",
    )
    assert api.get(f"/v1/principals/{p['principal_id']}").json["policy"] == policy()


def test_root_policy_cannot_change(api):
    expect_error(
        api.put("/v1/principals/root/policy", policy()), 409, "UnsupportedOperation.RootPolicy", "principal_id"
    )
    assert api.get("/v1/products").status_code == 200


# ------------------------------------------------------------------ policy evaluation


def test_default_deny(api, two):
    a, _ = two
    for client in (client_for(api, policy()), client_for(api, None)):
        expect_error(client.get("/v1/products"), 403, "UnauthorizedOperation", None)
        expect_error(client.get(f"/v1/products/{a}"), 403, "UnauthorizedOperation", None)
        expect_error(client.get(f"/v1/products/{a}/devices"), 403, "UnauthorizedOperation", None)
        expect_error(client.post("/v1/products", {**PRODUCT, "name": "Sneaky"}), 403, "UnauthorizedOperation", None)
        expect_error(client.get("/v1/quota"), 403, "UnauthorizedOperation", None)
    assert "Sneaky" not in [p["name"] for p in api.get("/v1/products").json["items"]]


def test_deny_wins_over_allow(api, two):
    a, b = two
    client = client_for(
        api,
        policy(
            ALLOW_ALL,
            {"effect": "deny", "action": ["iotexplorer:DeleteDevice"], "resource": ["*"]},
            {"effect": "deny", "action": ["*"], "resource": [f"product/{b}", f"product/{b}/*"]},
        ),
    )
    expect_error(client.delete(f"/v1/products/{a}/devices/dev-a"), 403, "UnauthorizedOperation", None)
    assert api.get(f"/v1/products/{a}/devices/dev-a").status_code == 200
    assert client.get(f"/v1/products/{a}/devices/dev-a").status_code == 200
    assert client.post(f"/v1/products/{a}/devices", {"device_name": "dev-a2"}).status_code == 201
    expect_error(client.get(f"/v1/products/{b}"), 403, "UnauthorizedOperation", None)
    expect_error(client.get(f"/v1/products/{b}/devices/dev-b"), 403, "UnauthorizedOperation", None)
    # deny listed first or last makes no difference
    client2 = client_for(
        api, policy({"effect": "deny", "action": ["iotexplorer:DeleteDevice"], "resource": ["*"]}, ALLOW_ALL)
    )
    expect_error(client2.delete(f"/v1/products/{a}/devices/dev-a"), 403, "UnauthorizedOperation", None)
    assert api.get(f"/v1/products/{a}/devices/dev-a").status_code == 200


def test_action_wildcard(api, two):
    a, _ = two
    client = client_for(api, policy({"effect": "allow", "action": ["iotexplorer:Describe*"], "resource": ["*"]}))
    assert client.get(f"/v1/products/{a}").status_code == 200
    assert client.get(f"/v1/products/{a}/devices/dev-a").status_code == 200
    assert client.get(f"/v1/products/{a}/thing-model").status_code == 200
    assert client.get("/v1/quota").status_code == 200
    expect_error(client.get(f"/v1/products/{a}/devices"), 403, "UnauthorizedOperation", None)  # GetDeviceList
    expect_error(client.post(f"/v1/products/{a}/devices", {"device_name": "x1"}), 403, "UnauthorizedOperation", None)
    expect_error(client.patch(f"/v1/products/{a}", {"description": "x"}), 403, "UnauthorizedOperation", None)
    expect_error(client.delete(f"/v1/products/{a}/devices/dev-a"), 403, "UnauthorizedOperation", None)
    # a narrower wildcard
    client = client_for(api, policy({"effect": "allow", "action": ["iotexplorer:*Device"], "resource": ["*"]}))
    assert client.post(f"/v1/products/{a}/devices", {"device_name": "x2"}).status_code == 201
    expect_error(client.get(f"/v1/products/{a}"), 403, "UnauthorizedOperation", None)


def test_principal_limited_to_one_product(api, two):
    a, b = two
    client = client_for(
        api, policy({"effect": "allow", "action": ["iotexplorer:*"], "resource": [f"product/{a}", f"product/{a}/*"]})
    )
    listed = client.get(f"/v1/products/{a}/devices")
    assert listed.status_code == 200, listed.body
    assert [d["device_name"] for d in listed.json["items"]] == ["dev-a"]
    assert client.get(f"/v1/products/{a}/devices/dev-a").status_code == 200
    assert client.get(f"/v1/products/{a}").status_code == 200
    assert client.post(f"/v1/products/{a}/devices", {"device_name": "dev-a2"}).status_code == 201

    expect_error(client.get(f"/v1/products/{b}"), 403, "UnauthorizedOperation", None)
    expect_error(client.get(f"/v1/products/{b}/devices"), 403, "UnauthorizedOperation", None)
    expect_error(client.get(f"/v1/products/{b}/devices/dev-b"), 403, "UnauthorizedOperation", None)
    expect_error(client.post(f"/v1/products/{b}/devices", {"device_name": "x"}), 403, "UnauthorizedOperation", None)
    expect_error(client.delete(f"/v1/products/{b}/devices/dev-b"), 403, "UnauthorizedOperation", None)
    expect_error(client.patch(f"/v1/products/{b}", {"name": "Mine now"}), 403, "UnauthorizedOperation", None)
    expect_error(client.post("/v1/products", {**PRODUCT, "name": "New"}), 403, "UnauthorizedOperation", None)

    products = client.get("/v1/products")
    assert products.status_code == 200
    assert [p["product_id"] for p in products.json["items"]] == [a]
    assert api.get(f"/v1/products/{b}").json["name"] == "Product B"
    assert [d["device_name"] for d in api.get(f"/v1/products/{b}/devices").json["items"]] == ["dev-b"]


def test_restricted_principal_cannot_escalate(api, two):
    a, _ = two
    p = principal(
        api, policy({"effect": "allow", "action": ["iotexplorer:*"], "resource": [f"product/{a}", f"product/{a}/*"]})
    )
    client = api.as_key(new_key(api, p["principal_id"])["api_key"])
    expect_error(
        client.put(f"/v1/principals/{p['principal_id']}/policy", policy(ALLOW_ALL)), 403, "UnauthorizedOperation", None
    )
    expect_error(client.post("/v1/keys", {"principal_id": "root"}), 403, "UnauthorizedOperation", None)
    expect_error(
        client.post("/v1/principals", {"name": "me2", "policy": policy(ALLOW_ALL)}), 403, "UnauthorizedOperation", None
    )
    expect_error(client.get("/v1/audit"), 403, "UnauthorizedOperation", None)
    expect_error(client.get("/v1/principals/root"), 403, "UnauthorizedOperation", None)
    assert api.get(f"/v1/principals/{p['principal_id']}").json["policy"]["statement"][0]["resource"] == [
        f"product/{a}",
        f"product/{a}/*",
    ]


# ------------------------------------------------------------------ authentication


def test_key_revocation_is_immediate(api, product):
    p = principal(api, policy(ALLOW_ALL))
    k1, k2 = new_key(api, p["principal_id"], "one"), new_key(api, p["principal_id"], "two")
    c1, c2 = api.as_key(k1["api_key"]), api.as_key(k2["api_key"])
    assert c1.get("/v1/products").status_code == 200
    resp = api.delete(f"/v1/keys/{k1['key_id']}")
    assert resp.status_code == 204, resp.body
    expect_error(c1.get("/v1/products"), 401, "AuthFailure.InvalidCredential", None)
    expect_error(
        c1.post("/v1/products", {**PRODUCT, "name": "After revoke"}), 401, "AuthFailure.InvalidCredential", None
    )
    assert c2.get("/v1/products").status_code == 200  # the principal's other key still works
    expect_error(api.delete(f"/v1/keys/{k1['key_id']}"), 404, "ResourceNotFound.ApiKeyNotExist", "key_id")
    listed = api.get("/v1/keys?" + urlencode({"principal_id": p["principal_id"]})).json["items"]
    assert [k["key_id"] for k in listed] == [k2["key_id"]]


def test_a_key_can_revoke_itself(api):
    p = principal(api, policy(ALLOW_ALL))
    k = new_key(api, p["principal_id"])
    c = api.as_key(k["api_key"])
    assert c.delete(f"/v1/keys/{k['key_id']}").status_code == 204
    expect_error(c.get("/v1/products"), 401, "AuthFailure.InvalidCredential", None)


def _fake_key() -> str:
    return "fbk_" + "a" * 16 + "." + "A" * 43


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer junk",
        "Bearer fbk_short.secret",
        f"Bearer {_fake_key()}",
        f"Bearer {_fake_key()}x",
        "Token " + _fake_key(),
    ],
)
def test_malformed_or_unknown_keys_are_401(api, header):
    headers = {} if header is None else {"Authorization": header}
    for method, path in (("GET", "/v1/products"), ("POST", "/v1/products"), ("GET", "/v1/quota")):
        resp = api.call(method, path, body=PRODUCT if method == "POST" else None, key=None, headers=headers)
        expect_error(resp, 401, "AuthFailure.InvalidCredential", None)
    assert api.get("/v1/products").json["items"] == []


def test_right_key_id_wrong_secret_is_401(api):
    real = new_key(api, "root")["api_key"]
    key_id = real.split(".", 1)[0]
    secret = real.split(".", 1)[1]
    forged = key_id + "." + ("B" if secret[0] != "B" else "C") + secret[1:]
    expect_error(api.as_key(forged).get("/v1/products"), 401, "AuthFailure.InvalidCredential", None)
    assert api.as_key(real).get("/v1/products").status_code == 200


# ------------------------------------------------------------------ applications


def test_application_keys_and_scope(api, two):
    a, b = two
    resp = api.post("/v1/applications", {"name": "Home app", "remark": "for the phone app", "products": [a]})
    assert resp.status_code == 201, resp.body
    app = resp.json
    assert app["name"] == "Home app" and app["remark"] == "for the phone app" and app["products"] == [a]
    keys = app["keys"]
    assert sorted(k["platform"] for k in keys) == ["android", "ios", "miniprogram"]
    assert len({k["api_key"] for k in keys}) == 3
    for k in keys:
        client = api.as_key(k["api_key"])
        got = client.get(f"/v1/products/{a}/devices")
        assert got.status_code == 200, got.body
        assert [d["device_name"] for d in got.json["items"]] == ["dev-a"]
        assert client.get(f"/v1/products/{a}/devices/dev-a").status_code == 200
        expect_error(client.get(f"/v1/products/{b}/devices"), 403, "UnauthorizedOperation", None)
        expect_error(client.get(f"/v1/products/{b}/devices/dev-b"), 403, "UnauthorizedOperation", None)
        expect_error(client.get(f"/v1/products/{b}"), 403, "UnauthorizedOperation", None)
        expect_error(
            client.post("/v1/products", {**PRODUCT, "name": f"From {k['platform']}"}),
            403,
            "UnauthorizedOperation",
            None,
        )
        expect_error(client.post(f"/v1/products/{a}/devices", {"device_name": "x"}), 403, "UnauthorizedOperation", None)
        expect_error(client.delete(f"/v1/products/{a}/devices/dev-a"), 403, "UnauthorizedOperation", None)
        listed = client.get("/v1/products")
        assert listed.status_code == 200
        assert [p["product_id"] for p in listed.json["items"]] == [a]
    assert len(api.get("/v1/products").json["items"]) == 2

    # GET shows the keys without their secrets
    got = api.get(f"/v1/applications/{app['application_id']}")
    assert got.status_code == 200
    assert sorted(k["platform"] for k in got.json["keys"]) == ["android", "ios", "miniprogram"]
    assert all("api_key" not in k for k in got.json["keys"])
    for k in keys:
        assert k["api_key"] not in got.body.decode()

    # changing the products changes what the keys see, at once
    client = api.as_key(keys[0]["api_key"])
    resp = api.put(f"/v1/applications/{app['application_id']}/products", {"products": [a, b]})
    assert resp.status_code == 200, resp.body
    assert sorted(resp.json["products"]) == sorted([a, b])
    assert client.get(f"/v1/products/{b}/devices").status_code == 200
    assert sorted(p["product_id"] for p in client.get("/v1/products").json["items"]) == sorted([a, b])
    assert api.put(f"/v1/applications/{app['application_id']}/products", {"products": [b]}).status_code == 200
    expect_error(client.get(f"/v1/products/{a}/devices"), 403, "UnauthorizedOperation", None)
    assert client.get(f"/v1/products/{b}/devices/dev-b").status_code == 200


def test_application_cannot_widen_a_principals_product_scope(api, two):
    """A partner limited to product A, even one allowed to manage applications, cannot mint keys for B."""
    a, b = two
    client = client_for(
        api,
        policy(
            {
                "effect": "allow",
                "action": ["iotexplorer:*"],
                "resource": [f"product/{a}", f"product/{a}/*", "application/*"],
            }
        ),
    )
    own = client.post("/v1/applications", {"name": "Partner app", "products": [a]})
    assert own.status_code == 201, own.body
    expect_error(
        client.post("/v1/applications", {"name": "Stolen", "products": [b]}), 403, "UnauthorizedOperation", None
    )
    expect_error(
        client.put(f"/v1/applications/{own.json['application_id']}/products", {"products": [a, b]}),
        403,
        "UnauthorizedOperation",
        None,
    )
    app_key = api.as_key(own.json["keys"][0]["api_key"])
    expect_error(app_key.get(f"/v1/products/{b}/devices/dev-b?include_secret=true"), 403, "UnauthorizedOperation", None)


def test_free_text_with_lone_surrogate_is_a_400(api, product):
    for path, raw in (
        ("/v1/principals", '{"name": "x\\ud800"}'),
        ("/v1/applications", '{"name": "App", "remark": "x\\ud800"}'),
        ("/v1/keys", '{"name": "x\\ud800"}'),
    ):
        expect_error(api.post(path, raw=raw), 400, "InvalidParameterValue.InvalidJson", "body")


def test_application_policy_is_not_editable(api, product):
    app = api.post("/v1/applications", {"name": "App", "products": [product["product_id"]]}).json
    expect_error(
        api.put(f"/v1/principals/{app['principal_id']}/policy", policy(ALLOW_ALL)),
        409,
        "UnsupportedOperation.ApplicationPolicy",
        "principal_id",
    )


@pytest.mark.parametrize(
    "body,status,code,field",
    [
        ({"name": "x" * 51}, 400, "InvalidParameterValue.ApplicationNameInvalid", "name"),
        ({"name": ""}, 400, "InvalidParameterValue.ApplicationNameInvalid", "name"),
        ({}, 400, "MissingParameter", "name"),
        ({"name": "App", "remark": "r" * 1025}, 400, "InvalidParameterValue.ApplicationRemarkInvalid", "remark"),
        ({"name": "App", "products": ["ZZZZZZZZZZ"]}, 404, "ResourceNotFound.ProductNotExist", "products[0]"),
        ({"name": "App", "products": ["abc"]}, 400, "InvalidParameterValue.ProductIdInvalid", "products[0]"),
        ({"name": "App", "products": "ZZZZZZZZZZ"}, 400, "InvalidParameterValue.ProductsInvalid", "products"),
        ({"name": "App", "owner": "me"}, 400, "UnknownParameter", "owner"),
    ],
)
def test_application_validation(api, body, status, code, field):
    expect_error(api.post("/v1/applications", body), status, code, field)


def test_application_limits_accepted(api, product):
    resp = api.post("/v1/applications", {"name": "n" * 50, "remark": "r" * 1024, "products": []})
    assert resp.status_code == 201, resp.body
    assert resp.json["name"] == "n" * 50 and resp.json["products"] == []


def test_application_unknown_product_in_second_position(api, product):
    pid = product["product_id"]
    expect_error(
        api.post("/v1/applications", {"name": "App", "products": [pid, "ZZZZZZZZZZ"]}),
        404,
        "ResourceNotFound.ProductNotExist",
        "products[1]",
    )
    expect_error(
        api.post("/v1/applications", {"name": "App", "products": [pid, pid]}),
        400,
        "InvalidParameterValue.ProductsInvalid",
        "products[1]",
    )


def test_application_products_update_validation(api, product):
    pid = product["product_id"]
    app = api.post("/v1/applications", {"name": "App", "products": [pid]}).json
    path = f"/v1/applications/{app['application_id']}/products"
    expect_error(api.put(path, {"products": ["ZZZZZZZZZZ"]}), 404, "ResourceNotFound.ProductNotExist", "products[0]")
    expect_error(api.put(path, {}), 400, "MissingParameter", "products")
    assert api.get(f"/v1/applications/{app['application_id']}").json["products"] == [pid]
    expect_error(
        api.get("/v1/applications/app-000000000000"), 404, "ResourceNotFound.ApplicationNotExist", "application_id"
    )
    expect_error(
        api.put("/v1/applications/app-000000000000/products", {"products": []}),
        404,
        "ResourceNotFound.ApplicationNotExist",
        "application_id",
    )


# ------------------------------------------------------------------ audit


def audit_items(api: Any, **query: Any) -> tuple[list[dict[str, Any]], str]:
    resp = api.get("/v1/audit?" + urlencode({"limit": 100, **query}))
    assert resp.status_code == 200, resp.body
    return resp.json["items"], resp.body.decode()


def test_every_mutating_call_is_audited(api):
    pid = make_product(api, "Audited", model=None)
    supplied = base64.b64encode(bytes(range(100, 116))).decode()
    calls: list[tuple[Any, str, str, str, int, str]] = []  # resp, principal, action, resource, status, result

    def track(resp: Any, who: str, action: str, resource: str, status: int, result: str = "Success") -> Any:
        assert resp.status_code == status, resp.body
        calls.append((resp, who, action, resource, status, result))
        return resp

    d1 = track(
        api.post(f"/v1/products/{pid}/devices", {"device_name": "dev1", "secret": supplied}),
        "root",
        "iotexplorer:CreateDevice",
        f"product/{pid}",
        201,
    ).json
    d2 = track(
        api.post(f"/v1/products/{pid}/devices", {"device_name": "dev2"}),
        "root",
        "iotexplorer:CreateDevice",
        f"product/{pid}",
        201,
    ).json
    track(
        api.post(f"/v1/products/{pid}/devices", {"device_name": "bad name"}),
        "root",
        "iotexplorer:CreateDevice",
        f"product/{pid}",
        400,
        "InvalidParameterValue.DeviceNameInvalid",
    )
    track(
        api.patch(f"/v1/products/{pid}/devices/dev2", {"tags": {"k": "v"}}),
        "root",
        "iotexplorer:ModifyDevice",
        f"product/{pid}/device/dev2",
        200,
    )
    reg = track(
        api.put(f"/v1/products/{pid}/dynamic-registration", {"register_type": 1}),
        "root",
        "iotexplorer:UpdateProductDynamicRegister",
        f"product/{pid}",
        200,
    ).json
    rot = track(
        api.post(f"/v1/products/{pid}/secret/rotate"), "root", "iotexplorer:ResetProductSecret", f"product/{pid}", 200
    ).json
    p = principal(api, policy({"effect": "allow", "action": ["iotexplorer:Describe*"], "resource": ["*"]}))
    key = track(
        api.post("/v1/keys", {"principal_id": p["principal_id"], "name": "audited"}),
        "root",
        "iotexplorer:CreateApiKey",
        f"principal/{p['principal_id']}",
        201,
    ).json
    limited = api.as_key(key["api_key"])
    track(
        limited.post(f"/v1/products/{pid}/devices", {"device_name": "dev3"}),
        p["principal_id"],
        "iotexplorer:CreateDevice",
        f"product/{pid}",
        403,
        "UnauthorizedOperation",
    )
    track(
        limited.delete(f"/v1/products/{pid}/devices/dev1"),
        p["principal_id"],
        "iotexplorer:DeleteDevice",
        f"product/{pid}/device/dev1",
        403,
        "UnauthorizedOperation",
    )
    app = track(
        api.post("/v1/applications", {"name": "App", "products": [pid]}),
        "root",
        "iotexplorer:CreateApplication",
        "application/*",
        201,
    ).json
    track(
        api.delete(f"/v1/products/{pid}/devices/dev2"),
        "root",
        "iotexplorer:DeleteDevice",
        f"product/{pid}/device/dev2",
        204,
    )

    items, text = audit_items(api)
    by_request = {e["request_id"]: e for e in items}
    for resp, who, action, resource, status, result in calls:
        rid = resp.headers["x-request-id"]
        assert rid in by_request, (action, status)
        entry = by_request[rid]
        assert entry["principal_id"] == who
        assert entry["action"] == action
        assert entry["resource"] == resource
        assert entry["status"] == status
        assert entry["result"] == result
        assert isinstance(entry["time"], int) and entry["time"] > 1_600_000_000
        if resp.json is not None and "request_id" in resp.json:
            assert resp.json["request_id"] == rid
    denied = [e for e in items if e["status"] == 403]
    assert len(denied) == 2 and all(e["key_id"] == key["key_id"] for e in denied)

    # no secret of any kind reaches the audit
    secrets = [
        supplied,
        d1["secret"],
        d2["secret"],
        reg["product_secret"],
        rot["product_secret"],
        key["api_key"],
        key["api_key"].split(".", 1)[1],
        api.key,
        api.key.split(".", 1)[1],
    ]
    secrets += [k["api_key"] for k in app["keys"]] + [k["api_key"].split(".", 1)[1] for k in app["keys"]]
    for secret in secrets:
        assert secret not in text
        assert json.dumps(secret)[1:-1] not in text


def test_audit_includes_product_lifecycle_calls(api):
    resp = api.post("/v1/products", {**PRODUCT, "name": "Lifecycle"})
    pid = resp.json["product_id"]
    calls = [(resp, "iotexplorer:CreateStudioProduct", "product/*", 201)]
    calls.append(
        (
            api.patch(f"/v1/products/{pid}", {"description": "x"}),
            "iotexplorer:ModifyStudioProduct",
            f"product/{pid}",
            200,
        )
    )
    calls.append((api.post(f"/v1/products/{pid}/publish"), "iotexplorer:ReleaseStudioProduct", f"product/{pid}", 200))
    calls.append((api.post(f"/v1/products/{pid}/publish"), "iotexplorer:ReleaseStudioProduct", f"product/{pid}", 409))
    calls.append(
        (api.post(f"/v1/products/{pid}/unpublish"), "iotexplorer:UnreleaseStudioProduct", f"product/{pid}", 200)
    )
    calls.append((api.delete(f"/v1/products/{pid}"), "iotexplorer:DeleteStudioProduct", f"product/{pid}", 204))
    items, _ = audit_items(api)
    by_request = {e["request_id"]: e for e in items}
    for resp, action, resource, status in calls:
        assert resp.status_code == status, resp.body
        entry = by_request[resp.headers["x-request-id"]]
        assert (entry["action"], entry["resource"], entry["status"], entry["principal_id"]) == (
            action,
            resource,
            status,
            "root",
        )
    assert by_request[calls[3][0].headers["x-request-id"]]["result"] == "UnsupportedOperation.ProductReleased"


def test_audit_is_newest_first_and_filters(api):
    pid = make_product(api, "Filters", model=None)
    p = principal(api, policy({"effect": "allow", "action": ["iotexplorer:CreateDevice"], "resource": ["*"]}))
    client = api.as_key(new_key(api, p["principal_id"])["api_key"])
    first = api.post(f"/v1/products/{pid}/devices", {"device_name": "r1"})
    second = client.post(f"/v1/products/{pid}/devices", {"device_name": "p1"})
    assert first.status_code == 201 and second.status_code == 201, second.body

    items, _ = audit_items(api)
    times = [e["time_ms"] for e in items]
    assert times == sorted(times, reverse=True)

    mine, _ = audit_items(api, principal_id=p["principal_id"])
    assert [e["request_id"] for e in mine] == [second.headers["x-request-id"]]

    created, _ = audit_items(api, action="iotexplorer:CreateDevice")
    assert {e["request_id"] for e in created} == {first.headers["x-request-id"], second.headers["x-request-id"]}
    assert all(e["action"] == "iotexplorer:CreateDevice" for e in created)


def test_audit_action_filter_accepts_unqualified_names(api):
    """Actions are named after the operations: `CreateDevice` and `iotexplorer:CreateDevice` are the same."""
    pid = make_product(api, "Unqualified", model=None)
    made = api.post(f"/v1/products/{pid}/devices", {"device_name": "u1"})
    assert made.status_code == 201
    items, _ = audit_items(api, action="CreateDevice")
    assert [e["request_id"] for e in items] == [made.headers["x-request-id"]]


def test_audit_names_the_target_even_when_the_body_is_malformed(api):
    pid = make_product(api, "Malformed", model=None)
    resp = api.post(f"/v1/products/{pid}/devices", raw="{not json")
    expect_error(resp, 400, "InvalidParameterValue.InvalidJson", "body")
    items, _ = audit_items(api)
    entry = next(e for e in items if e["request_id"] == resp.headers["x-request-id"])
    assert (entry["action"], entry["resource"], entry["status"], entry["result"]) == (
        "iotexplorer:CreateDevice",
        f"product/{pid}",
        400,
        "InvalidParameterValue.InvalidJson",
    )


def test_reads_are_not_mutations(api, product):
    got = api.get(f"/v1/products/{product['product_id']}")
    assert got.status_code == 200
    items, _ = audit_items(api)
    assert got.headers["x-request-id"] not in {e["request_id"] for e in items}


@pytest.mark.parametrize(
    "query,code,field",
    [
        ("limit=0", "InvalidParameterValue.LimitInvalid", "limit"),
        ("limit=101", "InvalidParameterValue.LimitInvalid", "limit"),
        ("start=200&end=100", "InvalidParameterValue.TimeRangeInvalid", "start"),
        ("start=0&end=9000000", "InvalidParameterValue.TimeRangeInvalid", "start"),
        ("next=%21%21", "InvalidParameterValue.NextTokenInvalid", "next"),
    ],
)
def test_audit_query_validation(api, query, code, field):
    expect_error(api.get("/v1/audit?" + query), 400, code, field)


def test_audit_ids_are_well_formed(api, product):
    items, _ = audit_items(api)
    entry = next(e for e in items if e["action"] == "iotexplorer:CreateStudioProduct")
    assert re.fullmatch(r"[0-9a-f-]{36}", entry["request_id"])
    assert entry["principal_id"] == "root"
    assert entry["key_id"] == api.key.split(".", 1)[0].removeprefix("fbk_")
