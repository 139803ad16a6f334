"""Dynamic registration through both endpoints (SPEC §6.3, §6.6), over moto with the Chalice test client.

Payloads are decrypted with pycryptodome — an AES implementation independent of the
product's — and the decrypted secret must then authenticate an MQTT connect.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from typing import Any

import pytest

from chalicelib.core import clock
from chalicelib.core.config import settings
from chalicelib.models.devices import DeviceRecord
from chalicelib.protocol import diagnostics as codes
from tests.helpers import decrypt
from tests.integration.helpers import (
    PRODUCT,
    REGISTER_HOST,
    diagnostics,
    legacy_request,
    make_device,
    mqtt_connects,
    registration_answer,
    v2_request,
)

# ------------------------------------------------------------------ helpers


def v2_error(resp: Any) -> dict[str, str]:
    body = resp.json["Response"]
    assert set(body) == {"Error", "RequestId"}, body
    assert body["RequestId"] == resp.headers["x-request-id"]
    assert body["Error"]["Message"]
    return body["Error"]


def dynreg_product(api: Any, register_type: int, limit: int | None = None, **fields: Any) -> tuple[str, str]:
    resp = api.post("/v1/products", {**PRODUCT, "name": f"P{secrets.token_hex(4)}", **fields})
    assert resp.status_code == 201, resp.body
    pid = resp.json["product_id"]
    body: dict[str, Any] = {"register_type": register_type}
    if limit is not None:
        body["register_limit"] = limit
    reg = api.put(f"/v1/products/{pid}/dynamic-registration", body)
    assert reg.status_code == 200, reg.body
    return pid, reg.json["product_secret"]


def mark_connected(pid: str, dn: str) -> None:
    rec = DeviceRecord.get(pid, dn)
    rec.update(actions=[DeviceRecord.status.set("online"), DeviceRecord.activated_at.set(clock.now_s())])


# ------------------------------------------------------------------ v2


def test_v2_gives_a_precreated_device_its_own_secret_and_never_replaces_it(api):
    # Given a type-1 product with a pre-created device (its secret burned in at the factory)
    pid, psecret = dynreg_product(api, 1)
    burned = make_device(api, pid, "dev1")["secret"]
    # When the device registers as Tencent's SDK does
    resp = v2_request(api, pid, "dev1", psecret)
    # Then the payload decrypts (independent AES) to the device's own secret, not a new one
    body = resp.json["Response"]
    assert set(body) == {"Len", "Payload", "RequestId"} and body["RequestId"] == resp.headers["x-request-id"]
    doc = decrypt(psecret, body["Payload"], body["Len"])
    assert doc["encryptionType"] == 2 and doc["psk"] == burned
    assert body["Len"] == len(json.dumps(doc, separators=(",", ":")))
    # and registering again (anyone holding the product secret could) changes nothing: the shipped
    # device still logs in with the secret it was burned with
    again = decrypt(
        psecret, *(lambda r: (r["Payload"], r["Len"]))(v2_request(api, pid, "dev1", psecret).json["Response"])
    )
    assert again["psk"] == burned
    assert mqtt_connects(pid, "dev1", burned)


def test_v2_accepts_lower_case_headers_any_algorithm_case_and_a_host_without_port(api):
    pid, psecret = dynreg_product(api, 1)
    make_device(api, pid, "dev1")
    resp = v2_request(api, pid, "dev1", psecret, title_case=False, algorithm="HmacSha256", host=REGISTER_HOST)
    assert "Payload" in resp.json["Response"], resp.json


def test_v2_hashes_the_raw_body(api):
    pid, psecret = dynreg_product(api, 1)
    make_device(api, pid, "dev1")
    raw = f'{{ "ProductId" : "{pid}",\n "DeviceName" : "dev1" }}'.encode()
    assert "Payload" in v2_request(api, pid, "dev1", psecret, body=raw).json["Response"]


def test_type_2_creates_unknown_devices_until_the_limit(api):
    # Given a type-2 product limited to 2 auto-created devices
    pid, psecret = dynreg_product(api, 2, limit=2)
    # When two unknown names register, they are created (origin dynamic) and connect
    for dn in ("auto1", "auto2"):
        body = v2_request(api, pid, dn, psecret).json["Response"]
        secret = decrypt(psecret, body["Payload"], body["Len"])["psk"]
        assert mqtt_connects(pid, dn, secret)
        assert DeviceRecord.get(pid, dn).origin == "dynamic"
    reg = api.get(f"/v1/products/{pid}/dynamic-registration").json
    assert reg["registered_count"] == 2
    # Then the third is refused with the reason, and nothing is created
    err = v2_error(v2_request(api, pid, "auto3", psecret))
    assert err["Code"] == "LimitExceeded.DynamicRegisterLimit" and "2" in err["Message"]
    assert api.get(f"/v1/products/{pid}/devices/auto3").status_code == 404
    # but a created device that never connected may still re-register (not a new creation)
    assert "Payload" in v2_request(api, pid, "auto1", psecret).json["Response"]
    assert api.get(f"/v1/products/{pid}/dynamic-registration").json["registered_count"] == 2
    assert api.get("/v1/quota").json["registered"] == 2


def test_type_2_respects_the_account_quota(api, monkeypatch):
    from chalicelib.services import devices

    pid, psecret = dynreg_product(api, 2, limit=10)
    used = api.get("/v1/quota").json["registered"]
    monkeypatch.setattr(devices, "settings", lambda: dataclasses.replace(settings(), device_quota=used))
    err = v2_error(v2_request(api, pid, "auto1", psecret))
    assert err["Code"] == "LimitExceeded.DeviceExceedLimit"
    assert api.get(f"/v1/products/{pid}/dynamic-registration").json["registered_count"] == 0


def test_type_1_refuses_unknown_devices(api):
    pid, psecret = dynreg_product(api, 1)
    err = v2_error(v2_request(api, pid, "ghost", psecret))
    assert err["Code"] == "ResourceNotFound.DeviceNotExist"
    assert err["Message"].startswith("Pre create mode: device not exists")
    assert api.get(f"/v1/products/{pid}/devices/ghost").status_code == 404


def test_type_0_refuses(api):
    # Given a product whose dynamic registration was turned off after use
    pid, psecret = dynreg_product(api, 1)
    make_device(api, pid, "dev1")
    assert api.put(f"/v1/products/{pid}/dynamic-registration", {"register_type": 0}).status_code == 200
    err = v2_error(v2_request(api, pid, "dev1", psecret))
    assert err["Code"] == "UnsupportedOperation.DynamicRegisterDisabled"
    assert err["Message"].startswith("Not support dynamic device register")
    # and it is in the known device's diagnostic log
    assert diagnostics(pid, "dev1")[0]["code"] == codes.DEV_REGISTER_FAILED


def test_a_product_that_never_enabled_it_refuses(api, product):
    pid = product["product_id"]
    err = v2_error(v2_request(api, pid, "dev1", "x" * 24))
    assert err["Code"] == "UnsupportedOperation.DynamicRegisterDisabled"


def test_an_unknown_product_is_refused(api):
    assert v2_error(v2_request(api, "ZZZZZZZZZZ", "dev1", "x" * 24))["Code"] == "ResourceNotFound.ProductNotExist"


def test_a_bad_signature_is_refused_and_diagnosed(api):
    pid, psecret = dynreg_product(api, 1)
    make_device(api, pid, "dev1")
    err = v2_error(v2_request(api, pid, "dev1", psecret, sign_with="W" * 24))
    assert err == {"Code": "AuthFailure.SignatureFailure", "Message": "Check signature failed"}
    diag = diagnostics(pid, "dev1")
    assert diag[0]["code"] == codes.DEV_REGISTER_FAILED and "SignatureFailure" in diag[0]["message"]
    # a signature over another URI or host fails too
    assert v2_error(v2_request(api, pid, "dev1", psecret, uri="/other"))["Code"] == "AuthFailure.SignatureFailure"


@pytest.mark.parametrize("skew", [-301, 301, -(10**6)])
def test_a_stale_timestamp_is_refused(api, skew):
    pid, psecret = dynreg_product(api, 1)
    make_device(api, pid, "dev1")
    err = v2_error(v2_request(api, pid, "dev1", psecret, ts=clock.now_s() + skew))
    assert err["Code"] == "AuthFailure.SignatureExpire" and "5 minutes" in err["Message"]


def test_a_timestamp_within_five_minutes_passes(api):
    pid, psecret = dynreg_product(api, 1)
    make_device(api, pid, "dev1")
    assert "Payload" in v2_request(api, pid, "dev1", psecret, ts=clock.now_s() - 290).json["Response"]


def test_a_replayed_nonce_is_refused(api):
    pid, psecret = dynreg_product(api, 1)
    make_device(api, pid, "dev1")
    ts = clock.now_s()
    assert "Payload" in v2_request(api, pid, "dev1", psecret, ts=ts, nonce="424242").json["Response"]
    # the very same signed request again
    err = v2_error(v2_request(api, pid, "dev1", psecret, ts=ts, nonce="424242"))
    assert err["Code"] == "AuthFailure.NonceReused" and "424242" in err["Message"]
    # the same nonce from another device is not a replay
    make_device(api, pid, "dev2")
    assert "Payload" in v2_request(api, pid, "dev2", psecret, ts=ts, nonce="424242").json["Response"]


def test_a_nonce_may_be_used_again_after_the_window(api):
    pid, psecret = dynreg_product(api, 1)
    make_device(api, pid, "dev1")
    assert "Payload" in v2_request(api, pid, "dev1", psecret, nonce="77").json["Response"]
    clock.shift(11 * 60)
    try:
        assert "Payload" in v2_request(api, pid, "dev1", psecret, nonce="77").json["Response"]
    finally:
        clock.reset()


def test_a_device_that_has_connected_is_refused_until_deleted(api):
    pid, psecret = dynreg_product(api, 2, limit=5)
    make_device(api, pid, "dev1")
    mark_connected(pid, "dev1")
    err = v2_error(v2_request(api, pid, "dev1", psecret))
    assert err["Code"] == "UnsupportedOperation.DeviceAlreadyActivated" and "delete" in err["Message"]
    assert diagnostics(pid, "dev1")[0]["code"] == codes.DEV_REGISTER_FAILED
    # once deleted, type 2 creates it afresh
    assert api.delete(f"/v1/products/{pid}/devices/dev1").status_code == 204
    assert "Payload" in v2_request(api, pid, "dev1", psecret).json["Response"]


def test_a_disabled_device_is_refused(api):
    pid, psecret = dynreg_product(api, 1)
    make_device(api, pid, "dev1")
    assert api.patch(f"/v1/products/{pid}/devices/dev1", {"enabled": False}).status_code == 200
    assert v2_error(v2_request(api, pid, "dev1", psecret))["Code"] == "UnsupportedOperation.DeviceDisabled"


def test_certificate_products_get_a_certificate_and_key(api):
    pid, psecret = dynreg_product(api, 2, limit=3, auth_type="certificate")
    body = v2_request(api, pid, "cam1", psecret).json["Response"]
    doc = decrypt(psecret, body["Payload"], body["Len"])
    assert doc["encryptionType"] == 1
    assert doc["clientCert"].startswith("-----BEGIN CERTIFICATE-----")
    assert "PRIVATE KEY-----" in doc["clientKey"]
    assert api.get(f"/v1/products/{pid}/devices/cam1").json["certificate"] == doc["clientCert"]


def test_an_invalid_device_name_for_creation_is_refused(api):
    pid, psecret = dynreg_product(api, 2, limit=3)
    err = v2_error(v2_request(api, pid, "bad name!", psecret))
    assert err["Code"] == "InvalidParameterValue.DeviceNameInvalid"


@pytest.mark.parametrize(
    "body,headers",
    [
        (b"", {}),
        (b"not json", {"X-Tc-Nonce": "1"}),
        (b'{"ProductId": 5}', {}),
        (b"\xff\xfe", {"Content-Type": "application/octet-stream"}),
        (
            b'{"ProductId":"ABCDEFGHIJ","DeviceName":"d"}',
            {"X-Tc-Algorithm": "hmacsha256", "X-Tc-Timestamp": "x", "X-Tc-Nonce": "1", "X-Tc-Signature": "s"},
        ),
        (b"[" * 5000, {}),
    ],
)
def test_malformed_v2_requests_get_a_200_error_envelope(api, body, headers):
    resp = registration_answer(api.client.http.post("/device/register", headers=headers, body=body))
    assert v2_error(resp)["Code"] in ("InvalidParameterValue", "MissingParameter")


# ------------------------------------------------------------------ legacy


def test_legacy_registers_with_a_json_body_labelled_form_encoded(api):
    pid, psecret = dynreg_product(api, 2, limit=5)
    resp = legacy_request(api, pid, "old1", psecret)
    body = resp.json
    assert set(body) == {"code", "message", "len", "payload", "requestId"}
    assert body["code"] == 0 and body["message"] == "success"
    doc = decrypt(psecret, body["payload"], body["len"])
    assert mqtt_connects(pid, "old1", doc["psk"])


def test_legacy_bad_signature_is_1010(api):
    pid, psecret = dynreg_product(api, 1)
    make_device(api, pid, "dev1")
    body = legacy_request(api, pid, "dev1", psecret, sign_with="W" * 24).json
    assert body["code"] == 1010 and body["message"] == "Check signature failed"
    assert body["requestId"]


def test_legacy_refusals_carry_their_reasons(api):
    pid, psecret = dynreg_product(api, 1)
    make_device(api, pid, "dev1")
    body = legacy_request(api, pid, "ghost", psecret).json
    assert body["code"] != 0 and body["message"].startswith("Pre create mode: device not exists")
    assert legacy_request(api, pid, "dev1", psecret, ts=clock.now_s() - 3600).json["code"] == 1011
    ts = clock.now_s()
    assert legacy_request(api, pid, "dev1", psecret, nonce=5, ts=ts).json["code"] == 0
    assert legacy_request(api, pid, "dev1", psecret, nonce=5, ts=ts).json["code"] == 1012


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"junk",
        b"{}",
        b'{"deviceName":"d"}',
        b'{"deviceName":["x"],"nonce":1,"productId":"ABCDEFGHIJ","timestamp":1,"signature":"s"}',
    ],
)
def test_malformed_legacy_requests_get_a_200_error(api, body):
    resp = registration_answer(
        api.client.http.post("/register/dev", headers={"Content-Type": "application/json"}, body=body)
    )
    assert resp.json["code"] == 1001 and resp.json["message"] and resp.json["requestId"]


def test_an_internal_failure_is_still_a_200_envelope(api, monkeypatch):
    from chalicelib.services import registration

    pid, psecret = dynreg_product(api, 1)
    make_device(api, pid, "dev1")

    def boom(*a: Any, **k: Any) -> Any:
        raise RuntimeError("dynamodb is down")

    monkeypatch.setattr(registration, "_claim_nonce", boom)
    assert v2_error(v2_request(api, pid, "dev1", psecret))["Code"] == "InternalError"
    assert legacy_request(api, pid, "dev1", psecret).json["code"] == 1000
