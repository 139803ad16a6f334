"""Dynamic-registration crypto and wire formats (SPEC §6.3), checked against an independent AES
(pycryptodome) and hand-written HMACs, never against the module under test alone."""

from __future__ import annotations

import base64
import hashlib
import json
from urllib.parse import urlencode

import pytest

from chalicelib.protocol import registration as proto
from chalicelib.protocol.registration import Refusal
from tests.helpers import aes_decrypt, sign_register_legacy, sign_register_v2

SPEC_SECRET = "hzvf5LF9S0isvBhDSauWMaIk"
SPEC_PLAINTEXT = '{"encryptionType":2,"psk":"lDZ6Uqt+I9E0wW7rvDUs7Q=="}'
SPEC_PAYLOAD = "s6FB3a1BA/YYbcmSE12XpeDVmQNDcf1QgVD141RRbmmAnFwQfp1ECAu5O016mCOvYlJJ6V59yM4OqQSiWphfTg=="


def test_the_spec_vector_is_reproduced_byte_for_byte():
    # Given the SPEC's device secret plaintext
    plaintext = proto.psk_plaintext("lDZ6Uqt+I9E0wW7rvDUs7Q==")
    assert plaintext == SPEC_PLAINTEXT and len(plaintext.encode()) == 53
    # When it is encrypted with the SPEC's product secret
    payload = proto.encrypt_payload(SPEC_SECRET, plaintext)
    # Then the payload is the SPEC's, byte for byte
    assert payload == SPEC_PAYLOAD
    # and an independent AES decrypts it to the plaintext plus zero padding
    assert aes_decrypt(SPEC_SECRET, payload) == SPEC_PLAINTEXT.encode() + b"\0" * 11
    assert proto.decrypt_payload(SPEC_SECRET, payload) == SPEC_PLAINTEXT.encode()
    assert proto.decrypt_payload(SPEC_SECRET, payload, 53) == SPEC_PLAINTEXT.encode()


@pytest.mark.parametrize("size", [1, 15, 16, 17, 32, 200])
def test_zero_byte_padding_to_the_block(size):
    data = b"x" * size
    raw = aes_decrypt(SPEC_SECRET, proto.encrypt_payload(SPEC_SECRET, data))
    assert len(raw) % 16 == 0 and len(raw) - size < 16
    assert raw[:size] == data and set(raw[size:]) <= {0}


def test_certificate_plaintext_shape():
    doc = json.loads(proto.cert_plaintext("-----BEGIN CERTIFICATE-----\nX\n", "-----BEGIN PRIVATE KEY-----\nY\n"))
    assert doc == {
        "encryptionType": 1,
        "clientCert": "-----BEGIN CERTIFICATE-----\nX\n",
        "clientKey": "-----BEGIN PRIVATE KEY-----\nY\n",
    }


class CI(dict):
    """A case-insensitive header mapping, as Chalice gives."""

    def __init__(self, items: dict[str, str]):
        super().__init__({k.lower(): v for k, v in items.items()})

    def get(self, key, default=None):  # type: ignore[override]
        return super().get(key.lower(), default)


def test_v2_string_to_sign_has_eight_lines():
    text = proto.string_to_sign_v2("example.com", "/device/register", "hmacsha256", "1700000000", "42", b"{}")
    assert text.split("\n") == [
        "POST",
        "example.com",
        "/device/register",
        "",
        "hmacsha256",
        "1700000000",
        "42",
        hashlib.sha256(b"{}").hexdigest(),
    ]


@pytest.mark.parametrize("uri", ["/device/register", "/api/device/register"])
def test_v2_request_verifies_with_the_raw_body_host_without_port_and_either_uri(uri):
    # Given a body with spacing an SDK might send (hashed RAW, never re-serialised)
    body = b'{"ProductId": "ABCDEFGHIJ",  "DeviceName": "dev1"}'
    sig = sign_register_v2(SPEC_SECRET, "iot.example.com", uri, "HmacSha256", "1700000000", "123", body)
    headers = CI(
        {"X-Tc-Algorithm": "HmacSha256", "X-Tc-Timestamp": "1700000000", "X-Tc-Nonce": "123", "X-Tc-Signature": sig}
    )
    # When it is parsed with the received path
    req = proto.parse_v2(headers, body, "iot.example.com:8443", ["/api/device/register"])
    # Then it names the device and verifies with the product secret only
    assert (req.product_id, req.device_name, req.timestamp, req.nonce) == ("ABCDEFGHIJ", "dev1", 1700000000, "123")
    assert req.signature_ok(SPEC_SECRET)
    assert not req.signature_ok("x" * 24)


def test_v2_refusals_name_the_missing_or_bad_part():
    body = b'{"ProductId":"ABCDEFGHIJ","DeviceName":"dev1"}'
    good = {"X-TC-Algorithm": "hmacsha256", "X-TC-Timestamp": "1", "X-TC-Nonce": "1", "X-TC-Signature": "x"}
    cases = [
        (b"not json", good, "InvalidParameterValue"),
        (b"[1]", good, "InvalidParameterValue"),
        (b'{"ProductId":"ABCDEFGHIJ"}', good, "MissingParameter"),
        (body, {k: v for k, v in good.items() if k != "X-TC-Nonce"}, "MissingParameter"),
        (body, {**good, "X-TC-Algorithm": "hmacsha1"}, "InvalidParameterValue"),
        (body, {**good, "X-TC-Timestamp": "soon"}, "InvalidParameterValue"),
        (body, {**good, "X-TC-Nonce": "a b"}, "InvalidParameterValue"),
    ]
    for raw, headers, code in cases:
        with pytest.raises(Refusal) as exc:
            proto.parse_v2(CI(headers), raw, "h", [])
        assert exc.value.code == code and exc.value.message, (raw, headers)


def test_legacy_signature_is_base64_of_the_hex_text():
    sig = sign_register_legacy(SPEC_SECRET, "dev1", "77", "ABCDEFGHIJ", "1700000000")
    assert len(base64.b64decode(sig)) == 40  # 20-byte SHA-1 as 40 hex characters
    body = json.dumps(
        {"deviceName": "dev1", "nonce": 77, "productId": "ABCDEFGHIJ", "timestamp": 1700000000, "signature": sig}
    ).encode()
    req = proto.parse_legacy(body)
    assert req.signature_ok(SPEC_SECRET) and not req.signature_ok("y" * 24)
    assert proto.sign_legacy(SPEC_SECRET, "deviceName=dev1&nonce=77&productId=ABCDEFGHIJ&timestamp=1700000000") == sig


def test_legacy_accepts_a_form_encoded_body_too():
    sig = sign_register_legacy(SPEC_SECRET, "dev1", "5", "ABCDEFGHIJ", "1700000000")
    body = urlencode(
        {"deviceName": "dev1", "nonce": "5", "productId": "ABCDEFGHIJ", "timestamp": "1700000000", "signature": sig}
    )
    req = proto.parse_legacy(body.encode())
    assert req.device_name == "dev1" and req.signature_ok(SPEC_SECRET)


def test_envelopes_match_the_spec():
    r = proto.refuse("signature")
    assert proto.v2_success("P", 53, "rid") == {"Response": {"Len": 53, "Payload": "P", "RequestId": "rid"}}
    assert proto.v2_error(r, "rid") == {
        "Response": {
            "Error": {"Code": "AuthFailure.SignatureFailure", "Message": "Check signature failed"},
            "RequestId": "rid",
        }
    }
    assert proto.legacy_success("P", 53, "rid") == {
        "code": 0,
        "message": "success",
        "len": 53,
        "payload": "P",
        "requestId": "rid",
    }
    assert proto.legacy_error(r, "rid") == {"code": 1010, "message": "Check signature failed", "requestId": "rid"}


@pytest.mark.parametrize(
    "host,bare",
    [
        ("a.example.com:443", "a.example.com"),
        ("a.example.com", "a.example.com"),
        ("127.0.0.1:8000", "127.0.0.1"),
        ("[::1]:8000", "[::1]"),
        (None, ""),
    ],
)
def test_host_without_port(host, bare):
    assert proto.host_without_port(host) == bare
