"""The pure signature math of the cloud-API endpoint (protocol/tc3.py) against the signatures the
real ``tencentcloud-sdk-python`` signer produces for the same requests."""

from __future__ import annotations

import hashlib
from urllib.parse import parse_qsl, urlencode

import pytest
from tencentcloud.common.sign import Sign

from chalicelib.protocol import tc3
from tests import cloudsdk

SECRET_ID = "AKID" + "A1b2" * 8
SECRET_KEY = "k3y" * 10 + "Zz"
HOST = "127.0.0.1:8000"
AT = 1_796_000_000


def _tc3_of(headers: dict[str, str], body: bytes, secret_key: str = SECRET_KEY) -> str:
    auth = tc3.parse_authorization(headers["Authorization"])
    lower = {k.lower(): v for k, v in headers.items()}
    canonical = tc3.canonical_request("POST", "", [(h, lower[h]) for h in auth.signed_headers], tc3.payload_hash(body))
    return tc3.tc3_signature(
        secret_key, auth.date, auth.service, tc3.string_to_sign(lower["x-tc-timestamp"], auth.scope, canonical)
    )


@pytest.mark.parametrize(
    "params",
    [
        {"ProductId": "ABCDEFGHIJ", "DeviceName": "dev:1_a-b"},
        {"ProductId": "ABCDEFGHIJ", "DeviceName": "d", "Data": '{"color":"红","on":true}'},
        {},
    ],
)
def test_tc3_signature_is_the_sdks(params: dict) -> None:
    cli = cloudsdk.client(HOST, SECRET_ID, SECRET_KEY)
    action = "DescribeDevice" if "Data" not in params else "ControlDeviceData"
    headers, body = cloudsdk.signed_request(cli, action, params, at=AT)
    auth = tc3.parse_authorization(headers["Authorization"])
    assert (auth.secret_id, auth.service, auth.terminator) == (SECRET_ID, "iotexplorer", "tc3_request")
    assert auth.signed_headers == ("content-type", "host") and auth.date == tc3.utc_date(AT)
    assert _tc3_of(headers, body) == auth.signature
    # any other key, body or date gives another signature
    assert _tc3_of(headers, body, SECRET_KEY + "x") != auth.signature
    assert _tc3_of(headers, body + b" ") != auth.signature


def test_a_get_request_signs_its_query_string() -> None:
    cli = cloudsdk.client(HOST, SECRET_ID, SECRET_KEY, req_method="GET")
    headers, query = cloudsdk.signed_request(cli, "GetDeviceList", {"ProductId": "ABCDEFGHIJ", "Limit": 10}, at=AT)
    auth = tc3.parse_authorization(headers["Authorization"])
    lower = {k.lower(): v for k, v in headers.items()}
    assert lower["content-type"] == "application/x-www-form-urlencoded"
    # what the server re-encodes from the parsed query equals what the SDK signed
    reencoded = urlencode(parse_qsl(query.decode(), keep_blank_values=True))
    canonical = tc3.canonical_request(
        "GET", reencoded, [(h, lower[h]) for h in auth.signed_headers], tc3.payload_hash(b"")
    )
    signature = tc3.tc3_signature(
        SECRET_KEY, auth.date, auth.service, tc3.string_to_sign(lower["x-tc-timestamp"], auth.scope, canonical)
    )
    assert signature == auth.signature


def test_key_derivation_matches_the_sdk_signer() -> None:
    to_sign = "TC3-HMAC-SHA256\n1796000000\n2026-12-01/iotexplorer/tc3_request\n" + hashlib.sha256(b"x").hexdigest()
    assert tc3.tc3_signature(SECRET_KEY, "2026-12-01", "iotexplorer", to_sign) == Sign.sign_tc3(
        SECRET_KEY, "2026-12-01", "iotexplorer", to_sign
    )


def test_canonical_headers_are_trimmed_and_lowercased_in_signed_order() -> None:
    got = tc3.canonical_request("post", "", [("host", " Example.COM "), ("content-type", "application/json")], "h")
    assert got == "POST\n/\n\nhost:example.com\ncontent-type:application/json\n\nhost;content-type\nh"


@pytest.mark.parametrize("method", ["HmacSHA1", "HmacSHA256"])
def test_v1_form_signature_is_the_sdks(method: str) -> None:
    cli = cloudsdk.client(HOST, SECRET_ID, SECRET_KEY, sign_method=method)
    _, body = cloudsdk.signed_request(
        cli, "GetDeviceList", {"ProductId": "ABCDEFGHIJ", "Offset": 0, "Limit": 10, "DeviceName": "a b&c"}, at=AT
    )
    form = dict(parse_qsl(body.decode()))
    to_sign = tc3.v1_string_to_sign("POST", HOST, "/", form)
    assert to_sign.startswith(f"POST{HOST}/?Action=GetDeviceList&") and "DeviceName=a b&c" in to_sign
    assert tc3.v1_signature(SECRET_KEY, method, to_sign) == form["Signature"]
    assert Sign.sign(SECRET_KEY, to_sign, method) == form["Signature"]
    assert tc3.v1_signature(SECRET_KEY, method, to_sign.replace("Limit=10", "Limit=11")) != form["Signature"]


@pytest.mark.parametrize(
    "header",
    [
        "",
        "TC3-HMAC-SHA256 Credential=AKID/2026-12-01/iotexplorer/tc3_request, Signature=" + "a" * 64,
        "TC3-HMAC-SHA256 Credential=AKID/2026-12-01/iotexplorer, SignedHeaders=host, Signature=" + "a" * 64,
        "TC3-HMAC-SHA256 Credential=AKID/yesterday/iotexplorer/tc3_request, SignedHeaders=host, Signature=" + "a" * 64,
        "TC3-HMAC-SHA256 Credential=AKID/2026-12-01/iotexplorer/tc3_request, SignedHeaders=Host, Signature=" + "a" * 64,
        "TC3-HMAC-SHA256 Credential=AKID/2026-12-01/iotexplorer/tc3_request, SignedHeaders=host;host, Signature="
        + "a" * 64,
        "TC3-HMAC-SHA256 Credential=AKID/2026-12-01/iotexplorer/tc3_request, SignedHeaders=host, Signature=zz",
    ],
)
def test_malformed_authorization_headers_are_refused_with_a_reason(header: str) -> None:
    with pytest.raises(tc3.SignatureError) as err:
        tc3.parse_authorization(header)
    assert str(err.value)


def test_signatures_compare_in_constant_time_helper() -> None:
    assert tc3.same("abc", "abc") and not tc3.same("abc", "abd") and not tc3.same("abc", "ab\udc80")
