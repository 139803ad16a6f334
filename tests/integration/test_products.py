"""Products, lifecycle, dynamic registration, custom topics and thing models over HTTP (SPEC §1, §3, §4, §16).

Every rule is broken once and the answer is checked to the status, the stable error
code and the field at fault.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from tests.integration.helpers import PRODUCT, expect_error, make_device

CUSTOM = {
    "name": "Pipe",
    "category": "custom",
    "device_type": "device",
    "comm_method": "ethernet",
    "auth_type": "key",
    "data_protocol": "custom",
}


# ------------------------------------------------------------------ helpers


def make(api: Any, **overrides: Any) -> Any:
    body = {**PRODUCT, **overrides}
    return api.post("/v1/products", {k: v for k, v in body.items() if v is not None})


def created(api: Any, **overrides: Any) -> dict[str, Any]:
    resp = make(api, **overrides)
    assert resp.status_code == 201, resp.body
    return resp.json


def all_pages(api: Any, path: str, **query: Any) -> list[list[dict[str, Any]]]:
    pages, token = [], None
    for _ in range(50):
        q = dict(query)
        if token:
            q["next"] = token
        resp = api.get(f"{path}?{urlencode(q)}")
        assert resp.status_code == 200, resp.body
        pages.append(resp.json["items"])
        token = resp.json["next"]
        if token is None:
            return pages
    raise AssertionError("paging never ended")


# ------------------------------------------------------------------ create


def test_create_returns_full_product(api):
    resp = make(api, description="A small lamp", binding_strategy="exclusive")
    assert resp.status_code == 201
    p = resp.json
    assert re.fullmatch(r"[A-Z0-9]{10}", p["product_id"])
    assert p["name"] == "Lamp"
    assert p["category"] == "smart-life/lighting/lamp"
    assert p["device_type"] == "device"
    assert p["subdevice_protocol"] is None
    assert p["comm_method"] == "wifi"
    assert p["auth_type"] == "key"
    assert p["data_protocol"] == "thing_model"
    assert p["description"] == "A small lamp"
    assert p["binding_strategy"] == "exclusive"
    assert p["status"] == "developing"
    assert p["device_count"] == 0
    assert isinstance(p["created_at"], int) and p["created_at"] > 1_600_000_000
    assert resp.headers["x-request-id"]
    assert api.get(f"/v1/products/{p['product_id']}").json == p


def test_binding_strategy_defaults_to_preemptive(api):
    assert created(api)["binding_strategy"] == "preemptive"


def test_product_ids_are_ten_upper_alnum_and_unique(api):
    ids = {created(api, name=f"Lamp {i}")["product_id"] for i in range(8)}
    assert len(ids) == 8
    assert all(re.fullmatch(r"[A-Z0-9]{10}", pid) for pid in ids)


@pytest.mark.parametrize(
    "name", ["A", "x" * 40, "智能灯 (1)", "Lámpara-2", "Лампа_3", "lamp@home/2\\b", "灯（客厅）", "a b"]
)
def test_product_name_accepts_valid(api, name):
    resp = make(api, name=name)
    assert resp.status_code == 201, resp.body
    assert resp.json["name"] == name


@pytest.mark.parametrize(
    "name", ["x" * 41, " Lamp", "Lamp ", " ", "", "Lamp#1", "Lamp!", "a.b", "a*b", "a\tb", "a,b", "a\nb", "emoji😀"]
)
def test_product_name_refuses_invalid(api, name):
    expect_error(make(api, name=name), 400, "InvalidParameterValue.ProductNameInvalid", "name")


def test_product_name_not_a_string(api):
    expect_error(make(api, name=12), 400, "InvalidParameterValue.ProductNameInvalid", "name")


def test_duplicate_product_name_refused(api, product):
    expect_error(make(api), 409, "ResourceInUse.ProductNameExists", "name")
    listing = api.get("/v1/products").json
    assert [p["product_id"] for p in listing["items"]] == [product["product_id"]]


@pytest.mark.parametrize(
    "field,code",
    [
        ("device_type", "DeviceTypeInvalid"),
        ("comm_method", "CommMethodInvalid"),
        ("auth_type", "AuthTypeInvalid"),
        ("data_protocol", "DataProtocolInvalid"),
        ("binding_strategy", "BindingStrategyInvalid"),
    ],
)
def test_enum_fields_refuse_unknown_values(api, field, code):
    expect_error(make(api, **{field: "bogus"}), 400, f"InvalidParameterValue.{code}", field)
    expect_error(make(api, **{field: 3}), 400, f"InvalidParameterValue.{code}", field)


@pytest.mark.parametrize("value", ["device", "gateway"])
def test_enum_device_types_accepted(api, value):
    assert created(api, device_type=value)["device_type"] == value


@pytest.mark.parametrize("method", ["wifi", "cellular", "5g", "ble", "lorawan", "ethernet", "other"])
def test_every_comm_method_accepted(api, method):
    assert created(api, name=f"Lamp {method}", comm_method=method)["comm_method"] == method


def test_subdevice_protocol_invalid_value(api):
    expect_error(
        make(api, device_type="subdevice", subdevice_protocol="wifi"),
        400,
        "InvalidParameterValue.SubdeviceProtocolInvalid",
        "subdevice_protocol",
    )


@pytest.mark.parametrize("proto", ["zigbee", "ble", "433", "custom"])
def test_subdevice_with_protocol_accepted(api, proto):
    p = created(api, name=f"Sensor {proto}", device_type="subdevice", subdevice_protocol=proto)
    assert (p["device_type"], p["subdevice_protocol"]) == ("subdevice", proto)


def test_subdevice_without_protocol_refused(api):
    expect_error(make(api, device_type="subdevice"), 400, "MissingParameter", "subdevice_protocol")


@pytest.mark.parametrize("device_type", ["device", "gateway"])
def test_subdevice_protocol_on_non_subdevice_refused(api, device_type):
    expect_error(
        make(api, device_type=device_type, subdevice_protocol="zigbee"),
        400,
        "InvalidParameterValue.SubdeviceProtocolInvalid",
        "subdevice_protocol",
    )


def test_description_limits(api):
    assert created(api, description="d" * 80)["description"] == "d" * 80
    expect_error(
        make(api, name="Other", description="d" * 81), 400, "InvalidParameterValue.DescriptionInvalid", "description"
    )


@pytest.mark.parametrize("category", ["", "a/", "/a", "a//b", "a b", "x" * 33, "a/b/c/d/e/f/g"])
def test_category_invalid(api, category):
    expect_error(make(api, category=category), 400, "InvalidParameterValue.CategoryInvalid", "category")


def test_unknown_field_refused(api):
    expect_error(make(api, colour="red"), 400, "UnknownParameter", "colour")


@pytest.mark.parametrize("missing", ["name", "category", "device_type", "comm_method", "auth_type", "data_protocol"])
def test_missing_required_field(api, missing):
    body = {k: v for k, v in PRODUCT.items() if k != missing}
    expect_error(api.post("/v1/products", body), 400, "MissingParameter", missing)


def test_empty_body_names_first_missing_field(api):
    expect_error(api.post("/v1/products"), 400, "MissingParameter", "name")


@pytest.mark.parametrize("raw", ["[1, 2]", '"Lamp"', "42", "null"])
def test_body_not_an_object(api, raw):
    expect_error(api.post("/v1/products", raw=raw), 400, "InvalidParameterValue.InvalidBody", "body")


@pytest.mark.parametrize("raw", ["{", '{"name": }', "not json", b"\xff\xfe{}"])
def test_malformed_json(api, raw):
    expect_error(api.post("/v1/products", raw=raw), 400, "InvalidParameterValue.InvalidJson", "body")


def test_deeply_nested_json_is_a_400(api, product):
    deep = "[" * 100_000 + "]" * 100_000
    expect_error(api.post("/v1/products", raw=deep), 400, "InvalidParameterValue.InvalidJson", "body")
    nested_model = '{"properties":' + "[" * 50_000 + "]" * 50_000 + "}"
    expect_error(
        api.put(f"/v1/products/{product['product_id']}/thing-model", raw=nested_model),
        400,
        "InvalidParameterValue.InvalidJson",
        "body",
    )


def test_lone_surrogate_is_a_400(api, product):
    """JSON may spell "\\ud800", which is no Unicode text: refused as a bad body, never a 5xx."""
    raw = json.dumps({**PRODUCT, "name": "Other"})[:-1] + ', "description": "x\\ud800"}'
    expect_error(api.post("/v1/products", raw=raw), 400, "InvalidParameterValue.InvalidJson", "body")
    model = '{"properties":[{"id":"a","name":"A","desc":"x\\ud800","define":{"type":"bool"}}]}'
    expect_error(
        api.put(f"/v1/products/{product['product_id']}/thing-model", raw=model),
        400,
        "InvalidParameterValue.InvalidJson",
        "body",
    )
    assert [p["name"] for p in api.get("/v1/products").json["items"]] == ["Lamp"]


def test_non_json_content_type_refused(api):
    resp = api.post("/v1/products", raw=json.dumps(PRODUCT), headers={"Content-Type": "text/plain"})
    expect_error(resp, 415, "UnsupportedMediaType", "Content-Type")


def test_nothing_written_on_validation_failure(api):
    make(api, name="Broken", device_type="subdevice")
    assert api.get("/v1/products").json["items"] == []
    # the name was not reserved by the failed attempt
    assert created(api, name="Broken")["name"] == "Broken"


# ------------------------------------------------------------------ read / 404


@pytest.mark.parametrize("pid", ["ZZZZZZZZZZ", "abc", "abcdefghij", "A" * 11])
def test_unknown_product_is_404(api, pid):
    for resp in (
        api.get(f"/v1/products/{pid}"),
        api.patch(f"/v1/products/{pid}", {"description": "x"}),
        api.delete(f"/v1/products/{pid}"),
        api.post(f"/v1/products/{pid}/publish"),
        api.get(f"/v1/products/{pid}/thing-model"),
        api.put(f"/v1/products/{pid}/dynamic-registration", {"register_type": 1}),
        api.get(f"/v1/products/{pid}/topics"),
    ):
        expect_error(resp, 404, "ResourceNotFound.ProductNotExist", "product_id")


# ------------------------------------------------------------------ lifecycle


def test_publish_unpublish_cycle(api, product):
    pid = product["product_id"]
    resp = api.post(f"/v1/products/{pid}/publish")
    assert resp.status_code == 200, resp.body
    assert resp.json["status"] == "released"
    assert api.get(f"/v1/products/{pid}").json["status"] == "released"
    expect_error(api.post(f"/v1/products/{pid}/publish"), 409, "UnsupportedOperation.ProductReleased", "status")
    resp = api.post(f"/v1/products/{pid}/unpublish")
    assert resp.status_code == 200, resp.body
    assert resp.json["status"] == "developing"
    expect_error(api.post(f"/v1/products/{pid}/unpublish"), 409, "UnsupportedOperation.ProductNotReleased", "status")


def test_released_product_is_frozen(api, product):
    pid = product["product_id"]
    assert api.post(f"/v1/products/{pid}/publish").status_code == 200
    for body in ({"name": "New name"}, {"description": "x"}, {"comm_method": "cellular"}):
        expect_error(api.patch(f"/v1/products/{pid}", body), 409, "UnsupportedOperation.ProductReleased", "status")
    expect_error(
        api.put(f"/v1/products/{pid}/thing-model", {"properties": []}),
        409,
        "UnsupportedOperation.ProductReleased",
        "status",
    )
    expect_error(
        api.put(f"/v1/products/{pid}/dynamic-registration", {"register_type": 1}),
        409,
        "UnsupportedOperation.ProductReleased",
        "status",
    )
    after = api.get(f"/v1/products/{pid}").json
    assert after["name"] == "Lamp" and after["comm_method"] == "wifi" and after["dynamic_registration"] is False
    # back to developing: changes allowed again
    assert api.post(f"/v1/products/{pid}/unpublish").status_code == 200
    resp = api.patch(f"/v1/products/{pid}", {"name": "New name"})
    assert resp.status_code == 200, resp.body
    assert resp.json["name"] == "New name"


# ------------------------------------------------------------------ modify


def test_patch_name_and_description(api, product):
    pid = product["product_id"]
    resp = api.patch(f"/v1/products/{pid}", {"name": "Desk lamp", "description": "on the desk"})
    assert resp.status_code == 200, resp.body
    assert resp.json["name"] == "Desk lamp"
    assert resp.json["description"] == "on the desk"
    assert resp.json["updated_at"] >= product["updated_at"]
    assert api.get(f"/v1/products/{pid}").json["name"] == "Desk lamp"


def test_patch_validates_fields(api, product):
    pid = product["product_id"]
    expect_error(
        api.patch(f"/v1/products/{pid}", {"name": "bad#"}), 400, "InvalidParameterValue.ProductNameInvalid", "name"
    )
    expect_error(
        api.patch(f"/v1/products/{pid}", {"description": "d" * 81}),
        400,
        "InvalidParameterValue.DescriptionInvalid",
        "description",
    )
    expect_error(
        api.patch(f"/v1/products/{pid}", {"comm_method": "carrier-pigeon"}),
        400,
        "InvalidParameterValue.CommMethodInvalid",
        "comm_method",
    )
    expect_error(api.patch(f"/v1/products/{pid}", {"status": "released"}), 400, "UnknownParameter", "status")
    expect_error(
        api.patch(f"/v1/products/{pid}", {"device_type": "subdevice"}), 400, "MissingParameter", "subdevice_protocol"
    )
    expect_error(
        api.patch(f"/v1/products/{pid}", {"subdevice_protocol": "zigbee"}),
        400,
        "InvalidParameterValue.SubdeviceProtocolInvalid",
        "subdevice_protocol",
    )
    assert api.get(f"/v1/products/{pid}").json == product


def test_patch_structural_fields_without_devices(api, product):
    pid = product["product_id"]
    resp = api.patch(
        f"/v1/products/{pid}", {"device_type": "subdevice", "subdevice_protocol": "ble", "comm_method": "ble"}
    )
    assert resp.status_code == 200, resp.body
    assert (resp.json["device_type"], resp.json["subdevice_protocol"], resp.json["comm_method"]) == (
        "subdevice",
        "ble",
        "ble",
    )
    resp = api.patch(f"/v1/products/{pid}", {"device_type": "gateway"})
    assert resp.status_code == 200, resp.body
    assert (resp.json["device_type"], resp.json["subdevice_protocol"]) == ("gateway", None)


def test_patch_structural_refused_while_devices_exist(api, product):
    pid = product["product_id"]
    make_device(api, pid, "dev1")
    expect_error(
        api.patch(f"/v1/products/{pid}", {"comm_method": "cellular"}),
        409,
        "UnsupportedOperation.DevicesExistUnderProduct",
        "comm_method",
    )
    expect_error(
        api.patch(f"/v1/products/{pid}", {"auth_type": "certificate"}),
        409,
        "UnsupportedOperation.DevicesExistUnderProduct",
        "auth_type",
    )
    expect_error(
        api.patch(f"/v1/products/{pid}", {"name": "Renamed", "data_protocol": "custom"}),
        409,
        "UnsupportedOperation.DevicesExistUnderProduct",
        "data_protocol",
    )
    got = api.get(f"/v1/products/{pid}").json
    assert (got["name"], got["comm_method"], got["data_protocol"]) == ("Lamp", "wifi", "thing_model")
    resp = api.patch(f"/v1/products/{pid}", {"name": "Renamed", "description": "still fine"})
    assert resp.status_code == 200, resp.body
    assert (resp.json["name"], resp.json["description"]) == ("Renamed", "still fine")


def test_rename_to_existing_name_refused_and_rename_frees_old_name(api, product):
    pid = product["product_id"]
    other = created(api, name="Fan")
    expect_error(
        api.patch(f"/v1/products/{other['product_id']}", {"name": "Lamp"}),
        409,
        "ResourceInUse.ProductNameExists",
        "name",
    )
    assert api.get(f"/v1/products/{other['product_id']}").json["name"] == "Fan"
    assert api.patch(f"/v1/products/{pid}", {"name": "Lamp v2"}).status_code == 200
    # the old name is free, the new one is taken
    assert created(api, name="Lamp")["name"] == "Lamp"
    expect_error(make(api, name="Lamp v2"), 409, "ResourceInUse.ProductNameExists", "name")


def test_patch_to_same_name_is_fine(api, product):
    resp = api.patch(f"/v1/products/{product['product_id']}", {"name": "Lamp"})
    assert resp.status_code == 200, resp.body
    assert resp.json["name"] == "Lamp"


# ------------------------------------------------------------------ delete


def test_delete_refused_with_devices_then_allowed(api, product):
    pid = product["product_id"]
    make_device(api, pid, "d1")
    make_device(api, pid, "d2")
    assert api.get(f"/v1/products/{pid}").json["device_count"] == 2
    expect_error(api.delete(f"/v1/products/{pid}"), 409, "UnsupportedOperation.DevicesExistUnderProduct", "product_id")
    assert api.get(f"/v1/products/{pid}").status_code == 200
    assert api.delete(f"/v1/products/{pid}/devices/d1").status_code == 204
    expect_error(api.delete(f"/v1/products/{pid}"), 409, "UnsupportedOperation.DevicesExistUnderProduct", "product_id")
    assert api.delete(f"/v1/products/{pid}/devices/d2").status_code == 204
    resp = api.delete(f"/v1/products/{pid}")
    assert resp.status_code == 204, resp.body
    assert resp.headers["x-request-id"]
    expect_error(api.get(f"/v1/products/{pid}"), 404, "ResourceNotFound.ProductNotExist", "product_id")
    expect_error(api.delete(f"/v1/products/{pid}"), 404, "ResourceNotFound.ProductNotExist", "product_id")
    # the name can be used again
    again = created(api, name="Lamp")
    assert again["product_id"] != pid


# ------------------------------------------------------------------ listing


def test_list_products_pages_without_duplicates(api):
    made = [created(api, name=f"Lamp {i}")["product_id"] for i in range(5)]
    pages = all_pages(api, "/v1/products", limit=2)
    assert [len(p) for p in pages] == [2, 2, 1]
    seen = [p["product_id"] for page in pages for p in page]
    assert len(seen) == len(set(seen)) == 5
    assert set(seen) == set(made)


def test_list_products_single_page_has_total(api):
    for i in range(3):
        created(api, name=f"Lamp {i}")
    body = api.get("/v1/products").json
    assert set(body) == {"items", "total", "next"}
    assert body["total"] == 3 and body["next"] is None and len(body["items"]) == 3


def test_list_products_fuzzy_q(api):
    a = created(api, name="Kitchen Lamp")
    b = created(api, name="智能灯 (1)")
    created(api, name="Fan")
    got = api.get("/v1/products?" + urlencode({"q": "LAMP"})).json["items"]
    assert [p["product_id"] for p in got] == [a["product_id"]]
    got = api.get("/v1/products?" + urlencode({"q": "智能"})).json["items"]
    assert [p["product_id"] for p in got] == [b["product_id"]]
    got = api.get("/v1/products?" + urlencode({"q": a["product_id"][2:8].lower()})).json["items"]
    assert a["product_id"] in [p["product_id"] for p in got]
    assert api.get("/v1/products?q=nomatch").json["items"] == []


def test_list_products_status_filter(api):
    a = created(api, name="A")
    b = created(api, name="B")
    assert api.post(f"/v1/products/{a['product_id']}/publish").status_code == 200
    rel = api.get("/v1/products?status=released").json["items"]
    dev = api.get("/v1/products?status=developing").json["items"]
    assert [p["product_id"] for p in rel] == [a["product_id"]]
    assert [p["product_id"] for p in dev] == [b["product_id"]]
    expect_error(api.get("/v1/products?status=archived"), 400, "InvalidParameterValue.StatusInvalid", "status")


@pytest.mark.parametrize("limit", ["0", "101", "-1", "ten", "1.5"])
def test_list_products_bad_limit(api, limit):
    expect_error(api.get(f"/v1/products?limit={limit}"), 400, "InvalidParameterValue.LimitInvalid", "limit")


def test_list_products_limit_bounds_accepted(api, product):
    assert api.get("/v1/products?limit=1").status_code == 200
    assert api.get("/v1/products?limit=100").status_code == 200


@pytest.mark.parametrize(
    "token",
    [
        "garbage!!",
        "bm90IGpzb24",  # base64 of "not json"
        base64.urlsafe_b64encode(b"[1,2]").decode().rstrip("="),
        base64.urlsafe_b64encode(b'{"a":1}').decode().rstrip("="),  # an object, but not a token we issued
        base64.urlsafe_b64encode(b'{"product_id":{"S":"X"}}').decode().rstrip("="),
    ],
)
def test_list_products_bad_next_token(api, product, token):
    expect_error(api.get(f"/v1/products?next={quote(token)}"), 400, "InvalidParameterValue.NextTokenInvalid", "next")


def test_list_products_unknown_query_parameter(api):
    expect_error(api.get("/v1/products?colour=red"), 400, "UnknownParameter", "colour")


# ------------------------------------------------------------- dynamic registration


def test_dynamic_registration_enable_generates_secret(api, product):
    pid = product["product_id"]
    before = api.get(f"/v1/products/{pid}/dynamic-registration?include_secret=true")
    assert before.status_code == 200
    assert before.json["register_type"] == 0 and before.json["product_secret"] is None
    assert before.json["secret_set"] is False
    resp = api.put(f"/v1/products/{pid}/dynamic-registration", {"register_type": 2, "register_limit": 10})
    assert resp.status_code == 200, resp.body
    reg = resp.json
    assert reg["register_type"] == 2 and reg["register_limit"] == 10
    assert re.fullmatch(r"[A-Za-z0-9]{24}", reg["product_secret"])
    assert api.get(f"/v1/products/{pid}").json["dynamic_registration"] is True
    # changing the settings again keeps the secret, which is no longer shown (SPEC §2: write-only)
    resp = api.put(f"/v1/products/{pid}/dynamic-registration", {"register_type": 1})
    assert resp.status_code == 200, resp.body
    assert "product_secret" not in resp.json and resp.json["secret_set"] is True
    assert "product_secret" not in api.get(f"/v1/products/{pid}/dynamic-registration").json
    assert (
        api.get(f"/v1/products/{pid}/dynamic-registration?include_secret=true").json["product_secret"]
        == reg["product_secret"]
    )


def test_dynamic_registration_secrets_differ_between_products(api):
    secrets = set()
    for i in range(3):
        pid = created(api, name=f"P{i}")["product_id"]
        secrets.add(api.put(f"/v1/products/{pid}/dynamic-registration", {"register_type": 1}).json["product_secret"])
    assert len(secrets) == 3


@pytest.mark.parametrize(
    "body,code,field",
    [
        ({"register_type": 3}, "InvalidParameterValue.RegisterTypeInvalid", "register_type"),
        ({"register_type": -1}, "InvalidParameterValue.RegisterTypeInvalid", "register_type"),
        ({"register_type": "1"}, "InvalidParameterValue.RegisterTypeInvalid", "register_type"),
        ({"register_type": True}, "InvalidParameterValue.RegisterTypeInvalid", "register_type"),
        ({}, "MissingParameter", "register_type"),
        ({"register_type": 2, "register_limit": -5}, "InvalidParameterValue.RegisterLimitInvalid", "register_limit"),
        ({"register_type": 1, "secret": "x"}, "UnknownParameter", "secret"),
    ],
)
def test_dynamic_registration_validation(api, product, body, code, field):
    pid = product["product_id"]
    expect_error(api.put(f"/v1/products/{pid}/dynamic-registration", body), 400, code, field)
    assert api.get(f"/v1/products/{pid}/dynamic-registration").json["register_type"] == 0


def test_rotate_product_secret(api, product):
    pid = product["product_id"]
    first = api.put(f"/v1/products/{pid}/dynamic-registration", {"register_type": 1}).json["product_secret"]
    resp = api.post(f"/v1/products/{pid}/secret/rotate")
    assert resp.status_code == 200, resp.body
    second = resp.json["product_secret"]
    assert re.fullmatch(r"[A-Za-z0-9]{24}", second)
    assert second != first
    assert api.get(f"/v1/products/{pid}/dynamic-registration?include_secret=true").json["product_secret"] == second


# ------------------------------------------------------------------ custom topics


def test_custom_product_has_default_topics(api):
    p = created(api, **CUSTOM)
    resp = api.get(f"/v1/products/{p['product_id']}/topics")
    assert resp.status_code == 200
    topics = {t["name"]: t for t in resp.json["items"]}
    assert set(topics) == {"control", "data", "event"}
    for t in topics.values():
        assert t["permission"] in ("pub", "sub", "pubsub")
        assert t["topic"] == f"{p['product_id']}/${{deviceName}}/{t['name']}"


def test_thing_model_product_refuses_custom_topics(api, product):
    pid = product["product_id"]
    expect_error(
        api.post(f"/v1/products/{pid}/topics", {"name": "up", "permission": "pub"}),
        409,
        "UnsupportedOperation.NotCustomProtocol",
        "data_protocol",
    )
    assert api.get(f"/v1/products/{pid}/topics").json["items"] == []


def test_add_and_delete_custom_topic(api):
    pid = created(api, **CUSTOM)["product_id"]
    resp = api.post(f"/v1/products/{pid}/topics", {"name": "upload_1", "permission": "pub"})
    assert resp.status_code == 201, resp.body
    assert resp.json == {"name": "upload_1", "permission": "pub", "topic": f"{pid}/${{deviceName}}/upload_1"}
    names = [t["name"] for t in api.get(f"/v1/products/{pid}/topics").json["items"]]
    assert "upload_1" in names
    expect_error(
        api.post(f"/v1/products/{pid}/topics", {"name": "upload_1", "permission": "sub"}),
        409,
        "ResourceInUse.TopicExists",
        "name",
    )
    expect_error(
        api.post(f"/v1/products/{pid}/topics", {"name": "data", "permission": "sub"}),
        409,
        "ResourceInUse.TopicExists",
        "name",
    )
    assert api.delete(f"/v1/products/{pid}/topics/upload_1").status_code == 204
    names = [t["name"] for t in api.get(f"/v1/products/{pid}/topics").json["items"]]
    assert "upload_1" not in names
    expect_error(api.delete(f"/v1/products/{pid}/topics/upload_1"), 404, "ResourceNotFound.TopicNotExist", "name")
    expect_error(api.delete(f"/v1/products/{pid}/topics/never"), 404, "ResourceNotFound.TopicNotExist", "name")


@pytest.mark.parametrize("name", ["a" * 64, "+", "cmd/+/set", "+/x", "a_b/C9", "x/+"])
def test_topic_names_accepted(api, name):
    pid = created(api, **CUSTOM)["product_id"]
    resp = api.post(f"/v1/products/{pid}/topics", {"name": name, "permission": "sub"})
    assert resp.status_code == 201, resp.body
    assert resp.json["name"] == name


@pytest.mark.parametrize(
    "name", ["a" * 65, "", "a+", "+a", "a/b+", "a#", "#", "a-b", "a b", "a//b", "/a", "a/", "主题", "a.b"]
)
def test_topic_names_refused(api, name):
    pid = created(api, **CUSTOM)["product_id"]
    expect_error(
        api.post(f"/v1/products/{pid}/topics", {"name": name, "permission": "pub"}),
        400,
        "InvalidParameterValue.TopicNameInvalid",
        "name",
    )


@pytest.mark.parametrize("perm", ["rw", "PUB", "", None, 1])
def test_topic_permission_enum(api, perm):
    pid = created(api, **CUSTOM)["product_id"]
    expect_error(
        api.post(f"/v1/products/{pid}/topics", {"name": "up", "permission": perm}),
        400,
        "InvalidParameterValue.TopicPermissionInvalid",
        "permission",
    )


def test_topic_missing_fields(api):
    pid = created(api, **CUSTOM)["product_id"]
    expect_error(api.post(f"/v1/products/{pid}/topics", {"permission": "pub"}), 400, "MissingParameter", "name")
    expect_error(api.post(f"/v1/products/{pid}/topics", {"name": "up"}), 400, "MissingParameter", "permission")


def test_multi_level_topic_can_be_deleted(api):
    """A topic whose name holds '/' must be deletable (its name URL-encoded in the path)."""
    pid = created(api, **CUSTOM)["product_id"]
    assert api.post(f"/v1/products/{pid}/topics", {"name": "cmd/+/set", "permission": "sub"}).status_code == 201
    resp = api.delete(f"/v1/products/{pid}/topics/{quote('cmd/+/set', safe='')}")
    assert resp.status_code == 204, resp.body
    assert "cmd/+/set" not in [t["name"] for t in api.get(f"/v1/products/{pid}/topics").json["items"]]


# ------------------------------------------------------------------ thing model


FULL_MODEL: dict[str, Any] = {
    "version": "1.0",
    "profile": {"ProductId": "IGNOREDXXX", "CategoryId": "1"},
    "properties": [
        {
            "id": "power_switch",
            "name": "Power",
            "desc": "on/off",
            "required": True,
            "mode": "rw",
            "define": {"type": "bool", "mapping": {"0": "off", "1": "on"}},
        },
        {
            "id": "brightness",
            "name": "Brightness",
            "desc": "",
            "required": False,
            "mode": "rw",
            "define": {"type": "int", "min": "0", "max": "100", "start": "1", "step": "1", "unit": "%"},
        },
        {
            "id": "voltage",
            "name": "Voltage",
            "mode": "r",
            "define": {"type": "float", "min": "0.0", "max": "24.5", "step": "0.5", "unit": "V"},
        },
        {"id": "label", "name": "Label", "define": {"type": "string", "min": "0", "max": "2048"}},
        {
            "id": "color",
            "name": "Color",
            "define": {"type": "enum", "mapping": {"0": "Red", "1": "Green", "2": "Blue"}},
        },
        {"id": "mode_s", "name": "Mode", "define": {"type": "stringenum", "mapping": {"eco": "Eco", "turbo": "Turbo"}}},
        {"id": "_updated", "name": "Updated", "mode": "r", "define": {"type": "timestamp"}},
        {
            "id": "pos",
            "name": "Position",
            "define": {
                "type": "struct",
                "specs": [
                    {"id": "lat", "name": "Lat", "dataType": {"type": "float", "min": "-90", "max": "90"}},
                    {"id": "on", "name": "On", "dataType": {"type": "bool", "mapping": {"0": "no", "1": "yes"}}},
                    {"id": "tag", "name": "Tag", "dataType": {"type": "string", "min": "0", "max": "16"}},
                ],
            },
        },
        {
            "id": "aps",
            "name": "Access points",
            "define": {
                "type": "array",
                "maxItems": 16,
                "arrayInfo": {
                    "type": "struct",
                    "specs": [
                        {"id": "mac", "name": "MAC", "dataType": {"type": "string", "min": "0", "max": "17"}},
                        {"id": "rssi", "name": "RSSI", "dataType": {"type": "int", "min": "-120", "max": "0"}},
                    ],
                },
            },
        },
        {
            "id": "levels",
            "name": "Levels",
            "define": {"type": "array", "arrayInfo": {"type": "int", "min": "0", "max": "9"}},
        },
    ],
    "events": [
        {
            "id": "low_voltage",
            "name": "LowVoltage",
            "type": "alert",
            "required": False,
            "params": [
                {
                    "id": "voltage",
                    "name": "Voltage",
                    "define": {"type": "float", "min": "0.0", "max": "24.0", "step": "1", "unit": "V"},
                }
            ],
        },
        {"id": "hello", "name": "Hello", "type": "info", "params": []},
        {
            "id": "broken",
            "name": "Broken",
            "type": "fault",
            "params": [{"id": "code", "name": "Code", "define": {"type": "int", "min": 0, "max": 255}}],
        },
    ],
    "actions": [
        {
            "id": "unlock",
            "name": "Unlock",
            "required": False,
            "input": [{"id": "order_id", "name": "Order", "define": {"type": "string", "min": "0", "max": "2048"}}],
            "output": [{"id": "code", "name": "Code", "define": {"type": "int", "min": "0", "max": "100"}}],
        },
    ],
}


def _subset(small: Any, big: Any) -> bool:
    if isinstance(small, dict):
        return isinstance(big, dict) and all(k in big and _subset(v, big[k]) for k, v in small.items())
    if isinstance(small, list):
        return (
            isinstance(big, list)
            and len(small) == len(big)
            and all(_subset(a, b) for a, b in zip(small, big, strict=True))
        )
    return small == big


def test_empty_thing_model_by_default(api, product):
    resp = api.get(f"/v1/products/{product['product_id']}/thing-model")
    assert resp.status_code == 200
    m = resp.json
    assert (m["properties"], m["events"], m["actions"]) == ([], [], [])
    assert m["profile"]["ProductId"] == product["product_id"]


def test_full_thing_model_round_trips(api, product):
    pid = product["product_id"]
    resp = api.put(f"/v1/products/{pid}/thing-model", FULL_MODEL)
    assert resp.status_code == 200, resp.body
    stored = resp.json
    got = api.get(f"/v1/products/{pid}/thing-model")
    assert got.status_code == 200
    assert got.json == stored
    expected = json.loads(json.dumps(FULL_MODEL))
    expected["profile"]["ProductId"] = pid  # the model belongs to this product
    assert _subset(expected, got.json), got.json
    assert got.json["profile"]["ProductId"] == pid


def test_thing_model_import_replaces_whole_model(api, product):
    pid = product["product_id"]
    assert api.put(f"/v1/products/{pid}/thing-model", FULL_MODEL).status_code == 200
    small = {"properties": [{"id": "x", "name": "X", "define": {"type": "bool"}}]}
    assert api.put(f"/v1/products/{pid}/thing-model", small).status_code == 200
    got = api.get(f"/v1/products/{pid}/thing-model").json
    assert [p["id"] for p in got["properties"]] == ["x"]
    assert got["events"] == [] and got["actions"] == []


def _prop(define: dict[str, Any], ident: str = "p1") -> dict[str, Any]:
    return {"id": ident, "name": "P", "mode": "rw", "define": define}


@pytest.mark.parametrize(
    "model,field",
    [
        ({"properties": [_prop({"type": "int", "min": "10", "max": "5"})]}, "properties[0].define.max"),
        ({"properties": [_prop({"type": "float", "min": 1.5, "max": 1.0})]}, "properties[0].define.max"),
        ({"properties": [_prop({"type": "enum", "mapping": {"0": "x" * 13}})]}, "properties[0].define.mapping.0"),
        ({"properties": [_prop({"type": "bool"}, ident="1power")]}, "properties[0].id"),
        ({"properties": [_prop({"type": "bool"}, ident="a" * 33)]}, "properties[0].id"),
        ({"properties": [_prop({"type": "bool"}, ident="bad-id")]}, "properties[0].id"),
        (
            {
                "properties": [
                    _prop({"type": "bool"}, ident="dup"),
                    _prop({"type": "int", "min": 0, "max": 1}, ident="dup"),
                ]
            },
            "properties[1].id",
        ),
        (
            {
                "properties": [_prop({"type": "bool"}, ident="dup")],
                "events": [{"id": "dup", "name": "E", "type": "info", "params": []}],
            },
            "events[0].id",
        ),
        ({"properties": [_prop({"type": "decimal"})]}, "properties[0].define.type"),
        ({"properties": [_prop({"type": "int", "min": "0"})]}, "properties[0].define.max"),
        ({"properties": [_prop({"type": "string", "min": "0", "max": "2049"})]}, "properties[0].define.max"),
        ({"properties": [{"id": "p", "name": "n" * 21, "define": {"type": "bool"}}]}, "properties[0].name"),
        (
            {"properties": [{"id": "p", "name": "P", "desc": "d" * 81, "define": {"type": "bool"}}]},
            "properties[0].desc",
        ),
        ({"properties": [{"id": "p", "name": "P", "mode": "w", "define": {"type": "bool"}}]}, "properties[0].mode"),
        (
            {
                "properties": [
                    _prop(
                        {
                            "type": "struct",
                            "specs": [{"id": "inner", "name": "I", "dataType": {"type": "struct", "specs": []}}],
                        }
                    )
                ]
            },
            "properties[0].define.specs[0].dataType.type",
        ),
        (
            {"properties": [_prop({"type": "array", "arrayInfo": {"type": "bool"}})]},
            "properties[0].define.arrayInfo.type",
        ),
        ({"events": [{"id": "e", "name": "E", "type": "warning", "params": []}]}, "events[0].type"),
        (
            {
                "events": [
                    {
                        "id": "e",
                        "name": "E",
                        "type": "alert",
                        "params": [
                            {"id": "v", "name": "V", "define": {"type": "stringenum", "mapping": {"k": "l" * 13}}}
                        ],
                    }
                ]
            },
            "events[0].params[0].define.mapping.k",
        ),
        (
            {
                "actions": [
                    {
                        "id": "a",
                        "name": "A",
                        "input": [{"id": "x", "name": "X", "define": {"type": "int", "min": "5", "max": "1"}}],
                        "output": [],
                    }
                ]
            },
            "actions[0].input[0].define.max",
        ),
        ({"properties": "none"}, "properties"),
    ],
)
def test_invalid_thing_model_refused_with_path(api, product, model, field):
    pid = product["product_id"]
    expect_error(
        api.put(f"/v1/products/{pid}/thing-model", model), 400, "InvalidParameterValue.ModelDefineInvalid", field
    )
    assert api.get(f"/v1/products/{pid}/thing-model").json["properties"] == []


def test_thing_model_error_message_names_the_rule(api, product):
    err = expect_error(
        api.put(
            f"/v1/products/{product['product_id']}/thing-model",
            {"properties": [_prop({"type": "int", "min": "10", "max": "5"})]},
        ),
        400,
        "InvalidParameterValue.ModelDefineInvalid",
        "properties[0].define.max",
    )
    assert "properties[0].define.max" in err["message"] and "below min" in err["message"]


def test_custom_protocol_product_refuses_thing_model(api):
    pid = created(api, **CUSTOM)["product_id"]
    expect_error(
        api.put(f"/v1/products/{pid}/thing-model", FULL_MODEL),
        409,
        "UnsupportedOperation.CustomProtocolProduct",
        "data_protocol",
    )


def test_standard_features_catalogue(api):
    resp = api.get("/v1/standard-features")
    assert resp.status_code == 200
    items = resp.json["items"]
    ids = {f["id"] for f in items}
    assert {
        "GPS_Info",
        "GPS_ExtInfo",
        "Cell_Info",
        "Wifi_Info",
        "power_switch",
        "brightness",
        "color",
        "color_temp",
        "name",
    } <= ids
    for f in items:
        assert f["kind"] in ("property", "event", "action")


def test_model_built_from_standard_features_imports(api, product):
    pid = product["product_id"]
    items = api.get("/v1/standard-features").json["items"]
    model: dict[str, Any] = {"version": "1.0", "properties": [], "events": [], "actions": []}
    section = {"property": "properties", "event": "events", "action": "actions"}
    for f in items:
        element = {k: v for k, v in f.items() if k != "kind"}
        model[section[f["kind"]]].append(element)
    resp = api.put(f"/v1/products/{pid}/thing-model", model)
    assert resp.status_code == 200, resp.body
    got = api.get(f"/v1/products/{pid}/thing-model").json
    assert [p["id"] for p in got["properties"]] == [p["id"] for p in model["properties"]]
    gps = next(p for p in got["properties"] if p["id"] == "GPS_Info")
    assert gps["define"]["type"] == "struct"
    assert {m["id"] for m in gps["define"]["specs"]} >= {"latitude", "longitude"}
