"""The MQTT custom authorizer (SPEC §6.2) over moto: who may connect, and what the policy allows."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from chalicelib.core import clock
from chalicelib.protocol import diagnostics as codes
from chalicelib.protocol import mqtt_auth
from chalicelib.protocol.events import authorizer_event
from chalicelib.services import connectivity
from tests.integration.helpers import PRODUCT, diagnostics, make_device


def connect_event(
    pid: str,
    dn: str,
    secret: str,
    *,
    algorithm: str = "hmacsha256",
    expiry: int | None = None,
    client_id: str | None = None,
    password: str | None = None,
    username: str | None = None,
    ip: str = "203.0.113.7",
) -> dict[str, Any]:
    cid, user, pw = mqtt_auth.credentials(pid, dn, secret, algorithm=algorithm, expiry=expiry)
    return authorizer_event(
        client_id if client_id is not None else cid,
        username or user,
        (password if password is not None else pw).encode(),
        source_ip=ip,
    )


def policy(answer: dict[str, Any]) -> list[str]:
    return answer["policyDocuments"]


@pytest.fixture()
def device(api, product) -> tuple[str, str, str]:
    pid = product["product_id"]
    return pid, "lamp_1", make_device(api, pid, "lamp_1")["secret"]


# ------------------------------------------------------------------ who may connect


@pytest.mark.parametrize("algorithm", ["hmacsha256", "hmacsha1"])
def test_an_enabled_device_connects_with_either_password_form(device, algorithm):
    pid, dn, secret = device
    # When the device connects with a Tencent-style password
    answer = connectivity.authorize(connect_event(pid, dn, secret, algorithm=algorithm))
    # Then it is authenticated with IoT Core's response shape
    assert answer["isAuthenticated"] is True, answer
    assert answer["principalId"].isalnum() and len(answer["principalId"]) <= 128
    assert 300 <= answer["disconnectAfterInSeconds"] <= 86400
    assert 300 <= answer["refreshAfterInSeconds"] <= 86400
    assert "reason" not in answer
    docs = policy(answer)
    assert 1 <= len(docs) <= 10 and all(len(d) <= 2048 for d in docs)
    for doc in docs:
        parsed = json.loads(doc)
        assert parsed["Version"] == "2012-10-17"
        for st in parsed["Statement"]:
            for arn in st["Resource"]:
                assert arn.startswith("arn:aws:iot:us-east-1:123456789012:"), arn


def test_the_sdks_millisecond_start_time_passes_on_every_reconnect(device):
    pid, dn, secret = device
    start_ms = (clock.now_s() - 7 * 86400) * 1000
    for _ in range(2):
        assert connectivity.authorize(connect_event(pid, dn, secret, expiry=start_ms))["isAuthenticated"]


@pytest.mark.parametrize(
    "change,reason",
    [
        ("password", "signature_mismatch"),
        ("expired", "expired"),
        ("client_id", "client_id_mismatch"),
        ("algorithm", "algorithm_unsupported"),
        ("username", "connid_invalid"),
    ],
)
def test_a_known_device_with_bad_credentials_is_refused_and_diagnosed(device, change, reason):
    pid, dn, secret = device
    kwargs: dict[str, Any] = {}
    if change == "password":
        kwargs["password"] = "0" * 64 + ";hmacsha256"
    elif change == "expired":
        kwargs["expiry"] = clock.now_s() - 1
    elif change == "client_id":
        kwargs["client_id"] = pid + "someone_else"
    elif change == "algorithm":
        kwargs["password"] = "00;hmacmd5"
    else:
        kwargs["username"] = f"{pid}{dn};12010126;bad;{clock.now_s() + 60}"
    answer = connectivity.authorize(connect_event(pid, dn, secret, **kwargs))
    assert answer["isAuthenticated"] is False and answer["policyDocuments"] == []
    assert answer["reason"] == reason
    # and the device's diagnostic log says why, without the password
    diag = diagnostics(pid, dn)
    assert [d["code"] for d in diag] == [codes.DEV_CONN_AUTH_FAILED]
    assert reason in diag[0]["message"] and "203.0.113.7" in diag[0]["message"]
    assert "0" * 64 not in diag[0]["message"] and secret not in diag[0]["message"]


def test_a_disabled_device_is_refused_and_diagnosed(api, device):
    pid, dn, secret = device
    assert api.patch(f"/v1/products/{pid}/devices/{dn}", {"enabled": False}).status_code == 200
    answer = connectivity.authorize(connect_event(pid, dn, secret))
    assert answer["isAuthenticated"] is False and answer["reason"] == "device_disabled"
    assert diagnostics(pid, dn)[0]["code"] == codes.DEV_CONN_AUTH_FAILED
    # re-enabled, it connects again
    assert api.patch(f"/v1/products/{pid}/devices/{dn}", {"enabled": True}).status_code == 200
    assert connectivity.authorize(connect_event(pid, dn, secret))["isAuthenticated"] is True


def test_a_deleted_device_is_refused_at_once(api, device):
    pid, dn, secret = device
    event = connect_event(pid, dn, secret)
    assert connectivity.authorize(event)["isAuthenticated"] is True
    assert api.delete(f"/v1/products/{pid}/devices/{dn}").status_code == 204
    answer = connectivity.authorize(event)
    assert answer["isAuthenticated"] is False and answer["reason"] == "device_not_found"


def test_unknown_products_and_devices_are_refused(device):
    pid, dn, secret = device
    assert connectivity.authorize(connect_event("ZZZZZZZZZZ", dn, secret))["reason"] == "product_not_found"
    assert connectivity.authorize(connect_event(pid, "ghost", secret))["reason"] == "device_not_found"
    assert diagnostics(pid, "ghost") == []


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"protocolData": {}},
        {"protocolData": {"mqtt": {"clientId": "x"}}},
        {"protocolData": {"mqtt": {"username": "u", "password": "not base64!!", "clientId": "x"}}},
        {"protocolData": {"mqtt": {"username": ";;;", "password": None}}},
        {"protocolData": {"mqtt": "junk"}, "connectionMetadata": "junk"},
    ],
)
def test_malformed_requests_are_refused_never_raised(aws, event):
    answer = connectivity.authorize(event)
    assert answer["isAuthenticated"] is False and answer["reason"]


def test_a_password_that_is_not_base64_text_is_refused(device):
    pid, dn, secret = device
    event = connect_event(pid, dn, secret)
    event["protocolData"]["mqtt"]["password"] = base64.b64encode(b"\xff\xfe").decode()
    assert connectivity.authorize(event)["reason"] == "password_malformed"


def test_a_malformed_username_of_a_known_client_id_is_diagnosed(device):
    pid, dn, secret = device
    event = authorizer_event(pid + dn, "garbage", b"x")
    assert connectivity.authorize(event)["reason"] == "username_malformed"
    assert diagnostics(pid, dn)[0]["code"] == codes.DEV_CONN_AUTH_FAILED


def test_certificate_products_do_not_authenticate_by_key(api):
    resp = api.post("/v1/products", {**PRODUCT, "name": "Cam", "auth_type": "certificate"})
    pid = resp.json["product_id"]
    assert api.post(f"/v1/products/{pid}/devices", {"device_name": "cam1"}).status_code == 201
    fake = base64.b64encode(b"k" * 16).decode()
    assert connectivity.authorize(connect_event(pid, "cam1", fake))["reason"] == "certificate_product"


def test_an_internal_failure_is_a_refusal_not_an_exception(device, monkeypatch):
    pid, dn, secret = device

    def boom(*a: Any, **k: Any) -> Any:
        raise RuntimeError("dynamodb is down")

    monkeypatch.setattr(connectivity, "allowed_response", boom)
    answer = connectivity.authorize(connect_event(pid, dn, secret))
    assert answer["isAuthenticated"] is False and answer["reason"] == "system_error"
    assert diagnostics(pid, dn)[0]["code"] == codes.DEV_CONN_SYSTEM_ERR


# ------------------------------------------------------------------ what the policy allows


def test_the_policy_allows_the_devices_own_topics_in_both_forms(api, device):
    pid, dn, secret = device
    docs = policy(connectivity.authorize(connect_event(pid, dn, secret)))
    allows = connectivity.policy_allows
    assert allows(docs, "iot:Connect", pid + dn)
    assert not allows(docs, "iot:Connect", pid + "other")
    for form in ("", "$"):
        assert allows(docs, "iot:Publish", f"{form}thing/up/property/{pid}/{dn}")
        assert allows(docs, "iot:Publish", f"{form}thing/up/event/{pid}/{dn}")
        assert allows(docs, "iot:Publish", f"{form}ota/report/{pid}/{dn}")
        assert allows(docs, "iot:Publish", f"{form}sys/operation/{pid}/{dn}")
        assert allows(docs, "iot:Subscribe", f"{form}thing/down/property/{pid}/{dn}")
        assert allows(docs, "iot:Subscribe", f"{form}ota/update/{pid}/{dn}")
        assert allows(docs, "iot:Receive", f"{form}thing/down/action/{pid}/{dn}")
        # not the downlinks as a publisher, nor the uplinks as a subscriber
        assert not allows(docs, "iot:Publish", f"{form}thing/down/property/{pid}/{dn}")
        assert not allows(docs, "iot:Subscribe", f"{form}thing/up/property/{pid}/{dn}")
    # short verbs are accepted
    assert allows(docs, "publish", f"thing/up/property/{pid}/{dn}")


def test_the_policy_refuses_another_devices_topics(api, device):
    pid, dn, secret = device
    make_device(api, pid, "lamp_2")
    docs = policy(connectivity.authorize(connect_event(pid, dn, secret)))
    allows = connectivity.policy_allows
    for form in ("", "$"):
        assert not allows(docs, "iot:Publish", f"{form}thing/up/property/{pid}/lamp_2")
        assert not allows(docs, "iot:Subscribe", f"{form}thing/down/property/{pid}/lamp_2")
        assert not allows(docs, "iot:Receive", f"{form}thing/down/property/{pid}/lamp_2")
    # no wildcard subscriptions, not even over its own topics
    assert not allows(docs, "iot:Subscribe", f"thing/down/property/{pid}/+")
    assert not allows(docs, "iot:Subscribe", "thing/down/#")
    assert not allows(docs, "iot:Subscribe", "#")
    # no prefix confusion: a device named lamp_1 is not lamp_10
    assert not allows(docs, "iot:Publish", f"thing/up/property/{pid}/{dn}0")
    assert not allows(docs, "iot:Publish", f"$aws/things/{pid}{dn}/shadow/update")


def test_custom_products_get_their_custom_topics_per_permission(api):
    resp = api.post("/v1/products", {**PRODUCT, "name": "Meter", "data_protocol": "custom"})
    pid = resp.json["product_id"]
    assert api.post(f"/v1/products/{pid}/topics", {"name": "zone/+", "permission": "pub"}).status_code in (200, 201)
    secret = make_device(api, pid, "m1")["secret"]
    docs = policy(connectivity.authorize(connect_event(pid, "m1", secret)))
    allows = connectivity.policy_allows
    # the defaults: control (sub), data (pubsub), event (pub)
    assert allows(docs, "iot:Subscribe", f"{pid}/m1/control") and not allows(docs, "iot:Publish", f"{pid}/m1/control")
    assert allows(docs, "iot:Publish", f"{pid}/m1/data") and allows(docs, "iot:Subscribe", f"{pid}/m1/data")
    assert allows(docs, "iot:Receive", f"{pid}/m1/data")
    assert allows(docs, "iot:Publish", f"{pid}/m1/event") and not allows(docs, "iot:Subscribe", f"{pid}/m1/event")
    assert allows(docs, "iot:Publish", f"{pid}/m1/zone/kitchen")
    assert not allows(docs, "iot:Publish", f"{pid}/m2/data")
    assert not allows(docs, "iot:Publish", f"{pid}/m1/undeclared")


def test_thing_model_products_get_no_custom_topics(device):
    pid, dn, secret = device
    docs = policy(connectivity.authorize(connect_event(pid, dn, secret)))
    assert not connectivity.policy_allows(docs, "iot:Publish", f"{pid}/{dn}/data")


def test_a_gateway_may_use_its_subdevice_products_topics(api):
    gw = api.post("/v1/products", {**PRODUCT, "name": "Hub", "device_type": "gateway"}).json["product_id"]
    sub = api.post(
        "/v1/products", {**PRODUCT, "name": "Bulb", "device_type": "subdevice", "subdevice_protocol": "zigbee"}
    ).json["product_id"]
    other = api.post("/v1/products", {**PRODUCT, "name": "Plug"}).json["product_id"]
    connectivity._subdevice_cache = None
    secret = make_device(api, gw, "hub1")["secret"]
    docs = policy(connectivity.authorize(connect_event(gw, "hub1", secret)))
    allows = connectivity.policy_allows
    assert allows(docs, "iot:Publish", f"$thing/up/property/{sub}/bulb9")
    assert allows(docs, "iot:Subscribe", f"$thing/down/property/{sub}/bulb9")
    assert not allows(docs, "iot:Publish", f"thing/up/property/{other}/plug1")
    assert all(len(d) <= 2048 for d in docs)


def test_device_names_outside_alphanumerics_get_a_valid_principal(api, product):
    pid = product["product_id"]
    secret = make_device(api, pid, "a:b-c")["secret"]
    answer = connectivity.authorize(connect_event(pid, "a:b-c", secret))
    assert answer["isAuthenticated"] and answer["principalId"].isalnum()


def test_the_lambda_handler_answers_the_same(api, device):
    pid, dn, secret = device
    answer = api.client.lambda_.invoke("mqtt_authorizer", connect_event(pid, dn, secret)).payload
    assert answer["isAuthenticated"] is True


# ------------------------------------------------------------------ the evaluator itself


def _doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def test_policy_evaluation_deny_wins_and_wildcards():
    arn = "arn:aws:iot:us-east-1:123456789012"
    docs = [
        _doc(
            {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"], "Resource": [f"{arn}:topic/a/*"]},
            {"Effect": "Allow", "Action": "iot:*", "Resource": f"{arn}:topicfilter/b/+"},
            {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": f"{arn}:topicfilter/c/?"},
        ),
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Deny", "Action": "iot:Publish", "Resource": f"{arn}:topic/a/secret"}],
        },
    ]
    allows = connectivity.policy_allows
    assert allows(docs, "iot:Publish", "a/x/y")  # * spans levels, as in IoT policies
    assert not allows(docs, "iot:Publish", "a/secret")  # explicit deny wins
    assert allows(docs, "iot:Receive", "a/secret")
    assert allows(docs, "iot:Subscribe", "b/+")  # MQTT wildcards are literal in resources
    assert not allows(docs, "iot:Subscribe", "b/x")
    assert allows(docs, "iot:Subscribe", "c/1") and not allows(docs, "iot:Subscribe", "c/12")
    assert not allows(docs, "iot:Publish", "b/+")  # topicfilter resources never match topics
    assert not allows(docs, "iot:Connect", "a")
    assert not allows(docs, "iot:Frobnicate", "a/x")
    assert not allows([], "iot:Publish", "a/x")
    assert allows([_doc({"Effect": "Allow", "Action": "*", "Resource": "*"})], "iot:Publish", "anything")


def test_authorize_is_fast_enough_for_connect_storms(api, device):
    pid, dn, secret = device
    event = connect_event(pid, dn, secret)
    started = time.perf_counter()
    for _ in range(20):
        assert connectivity.authorize(event)["isAuthenticated"]
    assert (time.perf_counter() - started) / 20 < 0.25


def test_a_gateway_with_very_many_subdevice_products_still_connects(api, monkeypatch):
    gw = api.post("/v1/products", {**PRODUCT, "name": "Hub", "device_type": "gateway"}).json["product_id"]
    secret = make_device(api, gw, "hub1")["secret"]
    many = tuple(f"SUB{i:07d}" for i in range(40))
    monkeypatch.setattr(connectivity, "_subdevice_products", lambda: many)
    answer = connectivity.authorize(connect_event(gw, "hub1", secret))
    # IoT Core takes at most 10 documents of 2048 characters: the policy keeps what fits
    assert answer["isAuthenticated"] and len(answer["policyDocuments"]) <= 10
    assert all(len(d) <= 2048 for d in answer["policyDocuments"])
    pol = connectivity.Policy(answer["policyDocuments"])
    assert pol.allows("iot:Publish", f"thing/up/property/{gw}/hub1")
    assert pol.allows("iot:Publish", f"thing/up/event/{many[0]}/s1")
    assert not pol.allows("iot:Publish", f"thing/up/event/{many[-1]}/s1")
