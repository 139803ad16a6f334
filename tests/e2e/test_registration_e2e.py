"""Dynamic registration end to end (SPEC §6.3): register over HTTP on the local stack, decrypt the
payload with an AES implementation independent of the product's (pycryptodome, not
`cryptography`), and connect over MQTT with the secret it holds."""

from __future__ import annotations

import base64
import json
import secrets
import time
from urllib.parse import urlparse

import pytest
import requests

from tests.e2e.fleet import Api, Device
from tests.helpers import decrypt, sign_register_legacy, sign_register_v2

pytestmark = pytest.mark.e2e


def register_v2(api_url: str, pid: str, dn: str, product_secret: str) -> dict:
    body = json.dumps({"ProductId": pid, "DeviceName": dn}).encode()
    ts, nonce = str(int(time.time())), str(secrets.randbelow(2**31))
    host = urlparse(api_url).hostname
    signature = sign_register_v2(product_secret, host, "/device/register", "hmacsha256", ts, nonce, body)
    # title-cased header names, as the Python SDK sends them
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "X-Tc-Algorithm": "hmacsha256",
        "X-Tc-Timestamp": ts,
        "X-Tc-Nonce": nonce,
        "X-Tc-Signature": signature,
    }
    resp = requests.post(f"{api_url}/device/register", data=body, headers=headers, timeout=10)
    assert resp.status_code == 200
    return resp.json()["Response"]


def register_legacy(api_url: str, pid: str, dn: str, product_secret: str) -> dict:
    ts, nonce = int(time.time()), secrets.randbelow(2**31)
    signature = sign_register_legacy(product_secret, dn, str(nonce), pid, str(ts))
    body = {"deviceName": dn, "nonce": nonce, "productId": pid, "timestamp": ts, "signature": signature}
    resp = requests.post(
        f"{api_url}/register/dev",
        data=json.dumps(body),
        timeout=10,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status_code == 200
    return resp.json()


@pytest.mark.parametrize("protocol", ["v2", "legacy"])
def test_a_registered_secret_decrypts_and_authenticates_over_mqtt(local_stack, protocol):
    api = Api(local_stack)
    pid = api.product()
    reg = api.call(
        "PUT", f"/v1/products/{pid}/dynamic-registration", 200, json={"register_type": 2, "register_limit": 10}
    ).json()
    dn = f"auto{secrets.token_hex(4)}"
    if protocol == "v2":
        answer = register_v2(local_stack["api_url"], pid, dn, reg["product_secret"])
        assert "Payload" in answer, answer
        payload, length = answer["Payload"], answer["Len"]
    else:
        answer = register_legacy(local_stack["api_url"], pid, dn, reg["product_secret"])
        assert answer["code"] == 0, answer
        payload, length = answer["payload"], answer["len"]
    plain = decrypt(reg["product_secret"], payload, length)
    assert plain["encryptionType"] == 2 and len(base64.b64decode(plain["psk"])) == 16
    # the device was created by registration, and the secret works over MQTT
    assert api.describe(pid, dn)["status"] == "inactive"
    device = Device(local_stack, pid, dn, plain["psk"]).connect()
    try:
        assert not device.connack[0].is_failure
    finally:
        device.close()
    # a forged signature is refused, with HTTP 200 and a reason
    forged = register_v2(local_stack["api_url"], pid, f"x{dn}", "A" * 24)
    assert "Error" in forged and forged["Error"]["Code"] and forged["Error"]["Message"]
