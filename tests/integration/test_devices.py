"""Devices and the device quota over HTTP (SPEC §1, §5, §7.4, §16).

The suite runs with FLEETBOX_DEVICE_QUOTA=50 (tests/conftest.py).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import urlencode

import pytest
from pynamodb.exceptions import CancellationReason, TransactWriteError
from pynamodb.transactions import TransactWrite

from tests.integration.helpers import Recorder, expect_error, make_device, make_product

QUOTA = 50


# ------------------------------------------------------------------ helpers


def dev_path(pid: str, name: str = "") -> str:
    return f"/v1/products/{pid}/devices" + (f"/{name}" if name else "")


def quota(api: Any) -> dict[str, Any]:
    resp = api.get("/v1/quota")
    assert resp.status_code == 200, resp.body
    return resp.json


def listing(api: Any, pid: str, **query: Any) -> dict[str, Any]:
    path = dev_path(pid) + (f"?{urlencode(query)}" if query else "")
    resp = api.get(path)
    assert resp.status_code == 200, resp.body
    return resp.json


def names_of(page: dict[str, Any]) -> list[str]:
    return sorted(d["device_name"] for d in page["items"])


def key_for(api: Any, policy: dict[str, Any]) -> str:
    p = api.post("/v1/principals", {"name": "partner", "policy": policy})
    assert p.status_code == 201, p.body
    k = api.post("/v1/keys", {"principal_id": p.json["principal_id"], "name": "partner key"})
    assert k.status_code == 201, k.body
    return k.json["api_key"]


def decodes_to_16_bytes(secret: str) -> bool:
    try:
        return len(secret) == 24 and len(base64.b64decode(secret, validate=True)) == 16
    except binascii.Error:
        return False


# ------------------------------------------------------------------ create


def test_create_device(api, product):
    pid = product["product_id"]
    resp = api.post(dev_path(pid), {"device_name": "lamp_01"})
    assert resp.status_code == 201, resp.body
    d = resp.json
    assert d["product_id"] == pid and d["device_name"] == "lamp_01"
    assert d["status"] == "inactive"
    assert d["enabled"] is True
    assert d["tags"] == {}
    assert d["activated_at"] is None and d["last_online_at"] is None
    assert decodes_to_16_bytes(d["secret"])
    assert resp.headers["x-request-id"]
    assert api.get(f"/v1/products/{pid}").json["device_count"] == 1


def test_generated_secrets_are_random(api, product):
    secrets = {make_device(api, product["product_id"], f"d{i}")["secret"] for i in range(5)}
    assert len(secrets) == 5
    assert all(decodes_to_16_bytes(s) for s in secrets)


@pytest.mark.parametrize("name", ["a", "A" * 48, "Ab_9:x-" + "z" * 41, "00:1A:2B:3C:4D:5E", "-", "_:_"])
def test_device_names_accepted(api, product, name):
    d = make_device(api, product["product_id"], name)
    assert d["device_name"] == name
    assert api.get(dev_path(product["product_id"], name)).json["device_name"] == name


@pytest.mark.parametrize(
    "name", ["devé", "é", "a" * 49, "", "a b", " a", "a ", "设备1", "a.b", "a/b", "a#b", "a@b", "a\nb", "a+b"]
)
def test_device_names_refused(api, product, name):
    pid = product["product_id"]
    expect_error(
        api.post(dev_path(pid), {"device_name": name}), 400, "InvalidParameterValue.DeviceNameInvalid", "device_name"
    )
    assert listing(api, pid)["items"] == []
    assert quota(api)["registered"] == 0


def test_device_name_wrong_type_and_missing(api, product):
    pid = product["product_id"]
    expect_error(
        api.post(dev_path(pid), {"device_name": 12}), 400, "InvalidParameterValue.DeviceNameInvalid", "device_name"
    )
    expect_error(
        api.post(dev_path(pid), {"device_name": None}), 400, "InvalidParameterValue.DeviceNameInvalid", "device_name"
    )
    expect_error(api.post(dev_path(pid), {}), 400, "MissingParameter", "device_name")
    expect_error(api.post(dev_path(pid), {"device_name": "ok", "tags": {}}), 400, "UnknownParameter", "tags")


def test_duplicate_device_name_refused(api, product):
    pid = product["product_id"]
    first = make_device(api, pid, "dup")
    expect_error(
        api.post(dev_path(pid), {"device_name": "dup"}), 409, "ResourceInUse.DeviceAlreadyExists", "device_name"
    )
    # nothing changed: same secret, one device, one licence used
    assert api.get(dev_path(pid, "dup") + "?include_secret=true").json["secret"] == first["secret"]
    assert listing(api, pid)["total"] == 1
    assert quota(api)["registered"] == 1
    assert api.get(f"/v1/products/{pid}").json["device_count"] == 1


def test_same_device_name_in_two_products(api, product):
    other = make_product(api, "Fan", model=None)
    make_device(api, product["product_id"], "shared")
    make_device(api, other, "shared")
    assert quota(api)["registered"] == 2


def test_supplied_secret_kept(api, product):
    pid = product["product_id"]
    secret = base64.b64encode(bytes(range(16))).decode()
    d = make_device(api, pid, "given", secret=secret)
    assert d["secret"] == secret
    assert api.get(dev_path(pid, "given") + "?include_secret=true").json["secret"] == secret


@pytest.mark.parametrize(
    "secret",
    [
        "short",
        "",
        "A" * 24,  # 24 chars of base64, but 18 bytes
        base64.b64encode(bytes(17)).decode(),  # 17 bytes
        base64.b64encode(bytes(15)).decode() + "AAAA",  # 28 chars
        "!!!!!!!!!!!!!!!!!!!!!!==",  # not base64
        base64.b64encode(bytes(16)).decode()[:-2] + "  ",  # padding replaced by spaces
        12345,
    ],
)
def test_supplied_secret_must_be_base64_of_16_bytes(api, product, secret):
    pid = product["product_id"]
    expect_error(
        api.post(dev_path(pid), {"device_name": "s1", "secret": secret}),
        400,
        "InvalidParameterValue.DeviceSecretInvalid",
        "secret",
    )
    expect_error(api.get(dev_path(pid, "s1")), 404, "ResourceNotFound.DeviceNotExist", "device_name")


def test_create_in_unknown_product(api):
    expect_error(
        api.post(dev_path("ZZZZZZZZZZ"), {"device_name": "d1"}), 404, "ResourceNotFound.ProductNotExist", "product_id"
    )
    assert quota(api)["registered"] == 0


# ------------------------------------------------------------------ read and secrets


def test_get_hides_secret_unless_asked(api, product):
    pid = product["product_id"]
    made = make_device(api, pid, "quiet")
    plain = api.get(dev_path(pid, "quiet"))
    assert plain.status_code == 200
    assert "secret" not in plain.json
    assert made["secret"] not in plain.body.decode()
    off = api.get(dev_path(pid, "quiet") + "?include_secret=false")
    assert off.status_code == 200 and "secret" not in off.json
    on = api.get(dev_path(pid, "quiet") + "?include_secret=true")
    assert on.status_code == 200
    assert on.json["secret"] == made["secret"]
    page = api.get(dev_path(pid))
    assert made["secret"] not in page.body.decode()
    assert all("secret" not in d for d in page.json["items"])


def test_include_secret_must_be_boolean(api, product):
    pid = product["product_id"]
    make_device(api, pid, "d1")
    expect_error(
        api.get(dev_path(pid, "d1") + "?include_secret=maybe"),
        400,
        "InvalidParameterValue.IncludeSecretInvalid",
        "include_secret",
    )


def test_include_secret_needs_describe_device_secret(api, product):
    pid = product["product_id"]
    made = make_device(api, pid, "guarded")
    reader = api.as_key(
        key_for(
            api,
            {
                "version": "2.0",
                "statement": [
                    {
                        "effect": "allow",
                        "action": ["iotexplorer:DescribeDevice", "iotexplorer:GetDeviceList"],
                        "resource": ["*"],
                    }
                ],
            },
        )
    )
    ok = reader.get(dev_path(pid, "guarded"))
    assert ok.status_code == 200, ok.body
    assert "secret" not in ok.json
    denied = reader.get(dev_path(pid, "guarded") + "?include_secret=true")
    expect_error(denied, 403, "UnauthorizedOperation", None)
    assert made["secret"] not in denied.body.decode()

    trusted = api.as_key(
        key_for(
            api,
            {
                "version": "2.0",
                "statement": [
                    {
                        "effect": "allow",
                        "action": ["iotexplorer:DescribeDevice", "iotexplorer:DescribeDeviceSecret"],
                        "resource": [f"product/{pid}/*"],
                    }
                ],
            },
        )
    )
    got = trusted.get(dev_path(pid, "guarded") + "?include_secret=true")
    assert got.status_code == 200, got.body
    assert got.json["secret"] == made["secret"]


def test_unknown_device_is_404(api, product):
    pid = product["product_id"]
    for name in ("ghost", "bad name", "x" * 49):
        expect_error(api.get(dev_path(pid, name)), 404, "ResourceNotFound.DeviceNotExist", "device_name")
    expect_error(
        api.patch(dev_path(pid, "ghost"), {"enabled": False}), 404, "ResourceNotFound.DeviceNotExist", "device_name"
    )
    expect_error(api.delete(dev_path(pid, "ghost")), 404, "ResourceNotFound.DeviceNotExist", "device_name")
    expect_error(api.get(dev_path("ZZZZZZZZZZ", "ghost")), 404, "ResourceNotFound.ProductNotExist", "product_id")
    expect_error(api.get(dev_path("ZZZZZZZZZZ")), 404, "ResourceNotFound.ProductNotExist", "product_id")


def test_device_of_another_product_is_not_visible(api, product):
    other = make_product(api, "Fan", model=None)
    make_device(api, other, "mine")
    expect_error(
        api.get(dev_path(product["product_id"], "mine")), 404, "ResourceNotFound.DeviceNotExist", "device_name"
    )


# ------------------------------------------------------------------ modify


def test_disable_and_enable(api, product):
    pid = product["product_id"]
    make_device(api, pid, "sw")
    resp = api.patch(dev_path(pid, "sw"), {"enabled": False})
    assert resp.status_code == 200, resp.body
    assert resp.json["enabled"] is False
    assert api.get(dev_path(pid, "sw")).json["enabled"] is False
    resp = api.patch(dev_path(pid, "sw"), {"enabled": True})
    assert resp.status_code == 200 and resp.json["enabled"] is True
    assert api.get(dev_path(pid, "sw")).json["enabled"] is True


def test_tags_replace(api, product):
    pid = product["product_id"]
    make_device(api, pid, "t1")
    resp = api.patch(dev_path(pid, "t1"), {"tags": {"color": "red", "floor": "2", "a.b-c_d": "x y"}})
    assert resp.status_code == 200, resp.body
    assert resp.json["tags"] == {"color": "red", "floor": "2", "a.b-c_d": "x y"}
    assert api.get(dev_path(pid, "t1")).json["tags"] == {"color": "red", "floor": "2", "a.b-c_d": "x y"}
    resp = api.patch(dev_path(pid, "t1"), {"tags": {"color": "blue"}})
    assert resp.json["tags"] == {"color": "blue"}
    resp = api.patch(dev_path(pid, "t1"), {"tags": {}})
    assert resp.json["tags"] == {}
    assert api.get(dev_path(pid, "t1")).json["tags"] == {}


def test_twenty_tags_accepted_twenty_one_refused(api, product):
    pid = product["product_id"]
    make_device(api, pid, "many")
    twenty = {f"k{i}": f"v{i}" for i in range(20)}
    resp = api.patch(dev_path(pid, "many"), {"tags": twenty})
    assert resp.status_code == 200, resp.body
    expect_error(
        api.patch(dev_path(pid, "many"), {"tags": {**twenty, "k20": "v"}}),
        400,
        "InvalidParameterValue.TagsInvalid",
        "tags",
    )
    assert api.get(dev_path(pid, "many")).json["tags"] == twenty


@pytest.mark.parametrize(
    "tags,code,field",
    [
        ({"bad key": "v"}, "TagKeyInvalid", "tags.bad key"),
        ({"k" * 33: "v"}, "TagKeyInvalid", "tags." + "k" * 33),
        ({"ключ": "v"}, "TagKeyInvalid", "tags.ключ"),
        ({"k#": "v"}, "TagKeyInvalid", "tags.k#"),
        ({"k": "v" * 65}, "TagValueInvalid", "tags.k"),
        ({"k": ""}, "TagValueInvalid", "tags.k"),
        ({"k": 5}, "TagValueInvalid", "tags.k"),
        ({"k": None}, "TagValueInvalid", "tags.k"),
        (["k", "v"], "TagsInvalid", "tags"),
        ("k=v", "TagsInvalid", "tags"),
    ],
)
def test_tag_rules(api, product, tags, code, field):
    pid = product["product_id"]
    make_device(api, pid, "tg")
    assert api.patch(dev_path(pid, "tg"), {"tags": {"keep": "me"}}).status_code == 200
    expect_error(api.patch(dev_path(pid, "tg"), {"tags": tags}), 400, f"InvalidParameterValue.{code}", field)
    assert api.get(dev_path(pid, "tg")).json["tags"] == {"keep": "me"}


def test_tag_value_with_lone_surrogate_is_a_400(api, product):
    pid = product["product_id"]
    make_device(api, pid, "sur")
    resp = api.patch(dev_path(pid, "sur"), raw='{"tags": {"k": "x\\ud800"}}')
    expect_error(resp, 400, "InvalidParameterValue.InvalidJson", "body")
    assert api.get(dev_path(pid, "sur")).json["tags"] == {}


def test_patch_validation(api, product):
    pid = product["product_id"]
    make_device(api, pid, "pv")
    expect_error(
        api.patch(dev_path(pid, "pv"), {"enabled": "no"}), 400, "InvalidParameterValue.EnabledInvalid", "enabled"
    )
    expect_error(api.patch(dev_path(pid, "pv"), {"enabled": 0}), 400, "InvalidParameterValue.EnabledInvalid", "enabled")
    expect_error(api.patch(dev_path(pid, "pv"), {"secret": "x"}), 400, "UnknownParameter", "secret")
    expect_error(api.patch(dev_path(pid, "pv"), {"device_name": "other"}), 400, "UnknownParameter", "device_name")
    assert api.get(dev_path(pid, "pv")).json["enabled"] is True


# ------------------------------------------------------------------ list


def test_list_pages_over_seven_devices(api, product):
    pid = product["product_id"]
    made = {make_device(api, pid, f"dev-{i}")["device_name"] for i in range(7)}
    pages, token = [], None
    for _ in range(10):
        q: dict[str, Any] = {"limit": 3}
        if token:
            q["next"] = token
        page = listing(api, pid, **q)
        pages.append([d["device_name"] for d in page["items"]])
        token = page["next"]
        if token is None:
            break
    assert [len(p) for p in pages] == [3, 3, 1]
    seen = [n for p in pages for n in p]
    assert len(seen) == len(set(seen)) == 7 and set(seen) == made


def test_list_envelope_and_total(api, product):
    pid = product["product_id"]
    for i in range(3):
        make_device(api, pid, f"d{i}")
    page = listing(api, pid)
    assert set(page) == {"items", "total", "next"}
    assert page["total"] == 3 and page["next"] is None
    assert names_of(page) == ["d0", "d1", "d2"]


def test_list_filters(api, product):
    pid = product["product_id"]
    for name in ("lamp-kitchen", "lamp-hall", "fan-hall", "heater"):
        make_device(api, pid, name)
    assert api.patch(dev_path(pid, "lamp-hall"), {"tags": {"floor": "1", "room": "hall"}}).status_code == 200
    assert api.patch(dev_path(pid, "fan-hall"), {"tags": {"floor": "2", "room": "hall"}}).status_code == 200
    assert api.patch(dev_path(pid, "heater"), {"enabled": False, "tags": {"color": "Red"}}).status_code == 200

    assert names_of(listing(api, pid, status="inactive")) == ["fan-hall", "heater", "lamp-hall", "lamp-kitchen"]
    assert listing(api, pid, status="online")["items"] == []
    assert names_of(listing(api, pid, tag="room=hall")) == ["fan-hall", "lamp-hall"]
    assert names_of(listing(api, pid, tag="floor=1")) == ["lamp-hall"]
    assert names_of(listing(api, pid, tag="floor:2")) == ["fan-hall"]
    assert listing(api, pid, tag="floor=3")["items"] == []
    assert names_of(listing(api, pid, q="lamp")) == ["lamp-hall", "lamp-kitchen"]
    assert names_of(listing(api, pid, q="LAMP")) == ["lamp-hall", "lamp-kitchen"]
    assert names_of(listing(api, pid, q="hall")) == ["fan-hall", "lamp-hall"]
    assert names_of(listing(api, pid, q="red")) == ["heater"]  # fuzzy search covers tags
    assert names_of(listing(api, pid, enabled="false")) == ["heater"]
    assert names_of(listing(api, pid, enabled="true")) == ["fan-hall", "lamp-hall", "lamp-kitchen"]
    assert names_of(listing(api, pid, q="hall", tag="floor=2")) == ["fan-hall"]
    assert names_of(listing(api, pid, status="inactive", enabled="false")) == ["heater"]


@pytest.mark.parametrize(
    "query,code,field",
    [
        ("status=sleeping", "InvalidParameterValue.StatusInvalid", "status"),
        ("enabled=maybe", "InvalidParameterValue.EnabledInvalid", "enabled"),
        ("limit=0", "InvalidParameterValue.LimitInvalid", "limit"),
        ("limit=101", "InvalidParameterValue.LimitInvalid", "limit"),
        ("q=" + "x" * 65, "InvalidParameterValue.QueryInvalid", "q"),
        ("colour=red", "UnknownParameter", "colour"),
        ("next=%21%21%21", "InvalidParameterValue.NextTokenInvalid", "next"),
    ],
)
def test_list_query_validation(api, product, query, code, field):
    expect_error(api.get(dev_path(product["product_id"]) + "?" + query), 400, code, field)


def test_list_only_this_products_devices(api, product):
    other = make_product(api, "Fan", model=None)
    make_device(api, product["product_id"], "a1")
    make_device(api, other, "b1")
    assert names_of(listing(api, product["product_id"])) == ["a1"]
    assert names_of(listing(api, other)) == ["b1"]


# ------------------------------------------------------------------ delete


def test_delete_device(api, product):
    pid = product["product_id"]
    make_device(api, pid, "gone")
    make_device(api, pid, "stays")
    assert quota(api)["registered"] == 2
    resp = api.delete(dev_path(pid, "gone"))
    assert resp.status_code == 204, resp.body
    assert resp.headers["x-request-id"]
    expect_error(api.get(dev_path(pid, "gone")), 404, "ResourceNotFound.DeviceNotExist", "device_name")
    expect_error(api.delete(dev_path(pid, "gone")), 404, "ResourceNotFound.DeviceNotExist", "device_name")
    q = quota(api)
    assert (q["registered"], q["remaining"]) == (1, QUOTA - 1)
    assert api.get(f"/v1/products/{pid}").json["device_count"] == 1
    assert names_of(listing(api, pid)) == ["stays"]
    # the name can be registered again, with a new secret
    again = make_device(api, pid, "gone")
    assert decodes_to_16_bytes(again["secret"])


# ------------------------------------------------------------------ quota


def test_quota_shape(api):
    resp = api.get("/v1/quota")
    assert resp.status_code == 200
    assert resp.json["device_quota"] == QUOTA
    assert resp.json["registered"] == 0
    assert resp.json["remaining"] == QUOTA


def test_quota_exhaustion_writes_nothing(api, product):
    pid_a = product["product_id"]
    pid_b = make_product(api, "Fan", model=None)
    for i in range(30):
        make_device(api, pid_a, f"a{i}")
    for i in range(20):
        make_device(api, pid_b, f"b{i}")
    q = quota(api)
    assert (q["device_quota"], q["registered"], q["remaining"]) == (QUOTA, QUOTA, 0)

    for pid in (pid_a, pid_b):
        err = expect_error(
            api.post(dev_path(pid), {"device_name": "one-too-many"}),
            409,
            "LimitExceeded.DeviceExceedLimit",
            "device_name",
        )
        assert err["message"]
        expect_error(api.get(dev_path(pid, "one-too-many")), 404, "ResourceNotFound.DeviceNotExist", "device_name")
    assert quota(api) == q
    assert listing(api, pid_b, limit=100)["total"] == 20
    assert len(listing(api, pid_b, limit=100)["items"]) == 20
    assert api.get(f"/v1/products/{pid_a}").json["device_count"] == 30
    assert api.get(f"/v1/products/{pid_b}").json["device_count"] == 20

    # freeing one licence lets exactly one more device in
    assert api.delete(dev_path(pid_a, "a0")).status_code == 204
    assert quota(api)["remaining"] == 1
    make_device(api, pid_b, "last")
    assert quota(api)["remaining"] == 0
    expect_error(
        api.post(dev_path(pid_b), {"device_name": "after-last"}), 409, "LimitExceeded.DeviceExceedLimit", "device_name"
    )


class _Conflict(TransactWriteError):
    """What DynamoDB answers when two transactions touch the quota counter at once."""

    def __init__(self) -> None:
        super().__init__("Transaction cancelled")

    @property
    def cancellation_reasons(self):  # type: ignore[override]
        return [CancellationReason(code="TransactionConflict"), None, None]


def _conflicts(monkeypatch, times: int) -> list[int]:
    calls = [0]
    real = TransactWrite._commit

    def commit(self):
        calls[0] += 1
        if calls[0] <= times:
            raise _Conflict()
        return real(self)

    monkeypatch.setattr(TransactWrite, "_commit", commit)
    return calls


def test_a_create_that_loses_a_race_is_retried_and_counted_once(api, product, monkeypatch):
    # Given two commits that collide with other writers of the quota counter
    calls = _conflicts(monkeypatch, times=2)
    # When a device is created
    resp = api.post(f"/v1/products/{product['product_id']}/devices", {"device_name": "racer"})
    # Then it lands on the third attempt and the quota counts it once
    assert resp.status_code == 201, resp.body
    assert calls[0] == 3
    assert api.get("/v1/quota").json["registered"] == 1


def test_a_create_that_keeps_losing_races_is_a_409_and_writes_nothing(api, product, monkeypatch):
    _conflicts(monkeypatch, times=100)
    resp = api.post(f"/v1/products/{product['product_id']}/devices", {"device_name": "racer"})
    expect_error(resp, 409, "FailedOperation.TransactionConflict", None)
    monkeypatch.undo()
    assert api.get("/v1/quota").json["registered"] == 0
    assert api.get(f"/v1/products/{product['product_id']}/devices/racer").status_code == 404


def test_disabling_or_deleting_a_device_cuts_its_session_through_the_publisher_port(api, product):
    from chalicelib.protocol import publisher

    rec = Recorder()
    publisher.use(rec)
    try:
        pid = product["product_id"]
        for name in ("keep", "off", "gone"):
            assert api.post(f"/v1/products/{pid}/devices", {"device_name": name}).status_code == 201
        assert api.patch(f"/v1/products/{pid}/devices/keep", {"tags": {"a": "b"}}).status_code == 200
        assert api.patch(f"/v1/products/{pid}/devices/off", {"enabled": False}).status_code == 200
        assert api.delete(f"/v1/products/{pid}/devices/gone").status_code == 204
        assert rec.cut == [f"{pid}off", f"{pid}gone"]
    finally:
        publisher.use(None)
