"""The cloud-API endpoint over moto (SPEC §14): signature verification on the request as received,
the envelope (always HTTP 200, ``Content-Type: application/json`` exactly), dispatch, and the
SecretId/SecretKey pairs (issued per principal, SecretKey shown once, sealed at rest, revocable).

Requests are built and signed by the real SDK's own signer (tests/cloudsdk.signed_request) and
posted through Chalice's test client; the e2e suite drives the same SDK over HTTP."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from chalicelib.models.access import CloudKeyRecord
from tests import cloudsdk
from tests.helpers import partner_policy
from tests.integration.helpers import PRODUCT, Api

HOST = "fleetbox.test"


def _pair(api: Api, policy: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "sdk"}
    if policy is not None:
        made = api.post("/v1/principals", {"name": "partner", "policy": policy})
        assert made.status_code == 201, made.body
        body["principal_id"] = made.json["principal_id"]
    resp = api.post("/v1/cloud-keys", body)
    assert resp.status_code == 201, resp.body
    return resp.json


def _post(api: Api, headers: dict[str, str], body: bytes) -> Any:
    resp = api.client.http.post("/", headers=headers, body=body)
    # the envelope holds whatever happened: HTTP 200 and exactly this content type
    assert resp.status_code == 200, resp.body
    assert resp.headers["Content-Type"] == "application/json"
    doc = json.loads(resp.body)
    assert set(doc) == {"Response"} and doc["Response"]["RequestId"]
    return doc["Response"]


def _call(
    api: Api, pair: dict[str, Any], action: str, params: dict[str, Any] | None = None, **kw: Any
) -> dict[str, Any]:
    cli = cloudsdk.client(HOST, pair["secret_id"], pair["secret_key"], kw.pop("sign_method", None))
    headers, body = cloudsdk.signed_request(cli, action, params, at=kw.pop("at", None))
    return _post(api, headers, body)


def _code(response: dict[str, Any]) -> str:
    assert "Error" in response, response
    return response["Error"]["Code"]


def test_a_signed_request_runs_its_action_and_answers_in_the_envelope(api: Api, product: dict[str, Any]) -> None:
    pair = _pair(api)
    got = _call(api, pair, "DescribeStudioProduct", {"ProductId": product["product_id"]})
    assert got["Product"]["ProductId"] == product["product_id"]
    assert got["Product"]["ProductName"] == product["name"]


@pytest.mark.parametrize("method", ["HmacSHA1", "HmacSHA256"])
def test_the_form_signature_the_sdk_can_still_send_is_verified(api: Api, product: dict[str, Any], method: str) -> None:
    pair = _pair(api)
    got = _call(api, pair, "GetStudioProductList", {"Offset": 0, "Limit": 10}, sign_method=method)
    assert [p["ProductId"] for p in got["Products"]] == [product["product_id"]] and got["Total"] == 1
    # the same form with one parameter changed after signing is refused
    cli = cloudsdk.client(HOST, pair["secret_id"], pair["secret_key"], method)
    headers, body = cloudsdk.signed_request(cli, "GetStudioProductList", {"Offset": 0, "Limit": 10})
    assert _code(_post(api, headers, body.replace(b"Limit=10", b"Limit=11"))) == "AuthFailure.SignatureFailure"
    # the form carries a Nonce: the same signed request sent again inside the window is a replay
    assert "Products" in _post(api, headers, body)
    assert _code(_post(api, headers, body)) == "AuthFailure.NonceReused"


@pytest.mark.parametrize("sign_method", [None, "HmacSHA1", "HmacSHA256"])
def test_get_requests_carry_the_parameters_in_the_query_string(
    api: Api, product: dict[str, Any], sign_method: str | None
) -> None:
    pair = _pair(api)
    cli = cloudsdk.client(HOST, pair["secret_id"], pair["secret_key"], sign_method, req_method="GET")
    params = {"ProductId": product["product_id"], "DeviceName": "nobody"}
    headers, query = cloudsdk.signed_request(cli, "DescribeDevice", params)

    def get(q: bytes) -> dict[str, Any]:
        resp = api.client.http.get("/?" + q.decode(), headers=headers)
        assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/json"
        return json.loads(resp.body)["Response"]

    # verified, typed from the query text and run: the route's own refusal comes back
    assert _code(get(query)) == "ResourceNotFound.DeviceNotExist"
    listed = cloudsdk.signed_request(cli, "GetStudioProductList", {"Offset": 0, "Limit": 5})
    headers = listed[0]
    assert [p["ProductId"] for p in get(listed[1])["Products"]] == [product["product_id"]]
    # a parameter changed after signing
    assert _code(get(listed[1].replace(b"Limit=5", b"Limit=6"))) == "AuthFailure.SignatureFailure"


def test_signature_edge_cases_answer_tencents_codes(api: Api, product: dict[str, Any]) -> None:
    pair = _pair(api)
    cli = cloudsdk.client(HOST, pair["secret_id"], pair["secret_key"])
    params = {"ProductId": product["product_id"]}
    headers, body = cloudsdk.signed_request(cli, "DescribeStudioProduct", params)
    assert "Product" in _post(api, headers, body)

    # the Host the client signed is not the Host received
    assert _code(_post(api, {**headers, "Host": "other.test"}, body)) == "AuthFailure.SignatureFailure"
    # the body changed after signing
    changed = body.replace(product["product_id"].encode(), b"ZZZZZZZZZZ")
    assert _code(_post(api, headers, changed)) == "AuthFailure.SignatureFailure"
    # the received Content-Type is what is verified (charset added after signing)
    ctype = {**headers, "Content-Type": "application/json; charset=utf-8"}
    assert _code(_post(api, ctype, body)) == "AuthFailure.SignatureFailure"
    # signed headers that do not cover host, or name a header the request lacks
    auth = headers["Authorization"]
    no_host = {
        **headers,
        "Authorization": auth.replace("SignedHeaders=content-type;host", "SignedHeaders=content-type"),
    }
    assert _code(_post(api, no_host, body)) == "AuthFailure.InvalidAuthorization"
    extra = {
        **headers,
        "Authorization": auth.replace("SignedHeaders=content-type;host", "SignedHeaders=content-type;host;x-tc-nonce"),
    }
    assert _code(_post(api, extra, body)) == "AuthFailure.InvalidAuthorization"
    # signed headers listed in another order than signed: a different canonical request
    swapped = {**headers, "Authorization": auth.replace("content-type;host", "host;content-type")}
    assert _code(_post(api, swapped, body)) == "AuthFailure.SignatureFailure"
    # another service in the credential scope
    wrong_service = {**headers, "Authorization": auth.replace("/iotexplorer/", "/cvm/")}
    assert _code(_post(api, wrong_service, body)) == "AuthFailure.InvalidAuthorization"
    # a credential date that is not the timestamp's UTC date
    date = time.strftime("%Y-%m-%d", time.gmtime(int(headers["X-TC-Timestamp"])))
    wrong_date = {**headers, "Authorization": auth.replace(f"/{date}/", "/2001-01-01/")}
    assert _code(_post(api, wrong_date, body)) == "AuthFailure.SignatureFailure"
    # a garbled header, and none at all
    assert _code(_post(api, {**headers, "Authorization": "TC3-HMAC-SHA256 nonsense"}, body)) == (
        "AuthFailure.InvalidAuthorization"
    )
    bare = {k: v for k, v in headers.items() if k != "Authorization"}
    assert _code(_post(api, bare, body)) == "AuthFailure.InvalidAuthorization"
    # an unsigned payload would let the body change: refused
    unsigned = {**headers, "X-TC-Content-SHA256": "UNSIGNED-PAYLOAD"}
    assert _code(_post(api, unsigned, body)) == "AuthFailure.InvalidAuthorization"


def test_clock_window_secret_id_and_key(api: Api, product: dict[str, Any]) -> None:
    pair = _pair(api)
    params = {"ProductId": product["product_id"]}
    # signed six minutes ago, or ahead: expired; four minutes ago: fine
    assert _code(_call(api, pair, "DescribeStudioProduct", params, at=time.time() - 360)) == (
        "AuthFailure.SignatureExpire"
    )
    assert _code(_call(api, pair, "DescribeStudioProduct", params, at=time.time() + 360)) == (
        "AuthFailure.SignatureExpire"
    )
    assert "Product" in _call(api, pair, "DescribeStudioProduct", params, at=time.time() - 240)
    # an unknown SecretId, and a known one with the wrong key
    stranger = {"secret_id": "AKID" + "x" * 32, "secret_key": pair["secret_key"]}
    assert _code(_call(api, stranger, "DescribeStudioProduct", params)) == "AuthFailure.SecretIdNotFound"
    wrong = {"secret_id": pair["secret_id"], "secret_key": "y" * 32}
    assert _code(_call(api, wrong, "DescribeStudioProduct", params)) == "AuthFailure.SignatureFailure"


def test_version_action_and_parameters_are_checked(api: Api, product: dict[str, Any]) -> None:
    pair = _pair(api)
    cli = cloudsdk.client(HOST, pair["secret_id"], pair["secret_key"])
    # an action this endpoint does not map (the SDK has it): InvalidAction, not a stub
    assert _code(_call(api, pair, "DescribeGatewayBindDevices", {"GatewayProductId": "X"})) == "InvalidAction"
    # another API version
    cli._apiVersion = "2018-01-01"
    headers, body = cloudsdk.signed_request(cli, "DescribeStudioProduct", {"ProductId": product["product_id"]})
    assert _code(_post(api, headers, body)) == "NoSuchVersion"
    # a missing, a malformed and an unknown parameter name the Tencent field
    missing = _call(api, pair, "DescribeStudioProduct", {})
    assert missing["Error"]["Code"] == "MissingParameter" and "ProductId" in missing["Error"]["Message"]
    bad = _call(api, pair, "DescribeStudioProduct", {"ProductId": "lower"})
    assert bad["Error"]["Code"] == "InvalidParameterValue.ProductIdInvalid"
    assert "ProductId" in bad["Error"]["Message"]
    unknown = _call(api, pair, "CreateStudioProduct", {"ProductName": "p", "Rate": "1"})
    assert unknown["Error"]["Code"] == "UnknownParameter" and "Rate" in unknown["Error"]["Message"]
    # a route's own refusal keeps its code, under the Tencent field's name
    gone = _call(api, pair, "DescribeDevice", {"ProductId": product["product_id"], "DeviceName": "nobody"})
    assert gone["Error"]["Code"] == "ResourceNotFound.DeviceNotExist" and "DeviceName" in gone["Error"]["Message"]


def test_a_malformed_body_is_answered_in_the_envelope(api: Api) -> None:
    pair = _pair(api)
    cli = cloudsdk.client(HOST, pair["secret_id"], pair["secret_key"])
    # a signed body that is not JSON: the signature holds, the body is refused with a code
    headers, _ = cloudsdk.signed_request(cli, "GetStudioProductList", {})
    from tencentcloud.common.sign import Sign

    from chalicelib.protocol import tc3

    raw = b"{not json"
    ts = headers["X-TC-Timestamp"]
    date = tc3.utc_date(int(ts))
    canonical = tc3.canonical_request(
        "POST", "", [("content-type", headers["Content-Type"]), ("host", HOST)], tc3.payload_hash(raw)
    )
    sig = Sign.sign_tc3(
        pair["secret_key"], date, "iotexplorer", tc3.string_to_sign(ts, f"{date}/iotexplorer/tc3_request", canonical)
    )
    auth = f"TC3-HMAC-SHA256 Credential={pair['secret_id']}/{date}/iotexplorer/tc3_request, SignedHeaders=content-type;host, Signature={sig}"
    assert _code(_post(api, {**headers, "Authorization": auth}, raw)) == "InvalidParameterValue.InvalidJson"
    # and a request with no signature and no body at all
    assert _code(_post(api, {"Host": HOST}, b"")) == "AuthFailure.InvalidAuthorization"


def test_policy_decides_each_action_as_the_route(api: Api, product: dict[str, Any]) -> None:
    pid = product["product_id"]
    other = api.post("/v1/products", {**PRODUCT, "name": "other product"}).json["product_id"]
    partner = _pair(api, partner_policy(pid))
    assert _call(api, partner, "DescribeStudioProduct", {"ProductId": pid})["Product"]["ProductId"] == pid
    denied = _call(api, partner, "DescribeStudioProduct", {"ProductId": other})
    assert _code(denied) == "UnauthorizedOperation.PermissionDenied"
    listed = _call(api, partner, "GetStudioProductList", {"Limit": 100})
    assert [p["ProductId"] for p in listed["Products"]] == [pid] and listed["Total"] == 1
    # the audit records the call with its channel and the SecretId as the credential
    _call(api, partner, "DeleteStudioProduct", {"ProductId": other})
    entries = api.get("/v1/audit?action=iotexplorer:DeleteStudioProduct").json["items"]
    assert any(
        e["channel"] == "cloudapi"
        and e["result"] == "UnauthorizedOperation"
        and e["key_id"] == partner["secret_id"]
        and e["source_ip"] == "127.0.0.1"  # chalice's local request context, as API Gateway's sourceIp
        for e in entries
    ), entries


def test_cloud_keys_are_shown_once_sealed_listed_and_revocable(api: Api) -> None:
    pair = _pair(api)
    assert pair["secret_id"].startswith("AKID") and len(pair["secret_id"]) == 36 and len(pair["secret_key"]) == 32
    # stored sealed: the record holds neither the key nor anything that contains it
    rec = CloudKeyRecord.get(pair["secret_id"])
    assert pair["secret_key"] not in rec.sealed_key and rec.sealed_key.startswith("fbs1.local.")
    # listed without the SecretKey
    listed = api.get("/v1/cloud-keys").json["items"]
    assert [k["secret_id"] for k in listed] == [pair["secret_id"]]
    assert "secret_key" not in json.dumps(listed) and pair["secret_key"] not in json.dumps(listed)
    # a sealed value copied to another record does not open there
    from chalicelib.core import errors
    from chalicelib.services import sealing

    with pytest.raises(errors.FleetboxError) as moved:
        sealing.unseal(rec.sealed_key, "AKID" + "z" * 32)
    assert moved.value.code == "InternalError"
    assert sealing.unseal(rec.sealed_key, pair["secret_id"]) == pair["secret_key"]
    # revoked: the SecretId is unknown on the next request
    assert api.delete(f"/v1/cloud-keys/{pair['secret_id']}").status_code == 204
    assert _code(_call(api, pair, "GetStudioProductList", {})) == "AuthFailure.SecretIdNotFound"
    assert api.delete(f"/v1/cloud-keys/{pair['secret_id']}").json["error"]["code"] == (
        "ResourceNotFound.CloudApiKeyNotExist"
    )


def test_cloud_keys_obey_the_policy_and_die_with_their_principal(api: Api) -> None:
    pid = api.post("/v1/products", PRODUCT).json["product_id"]
    partner = _pair(api, partner_policy(pid))
    # the partner's own API key may not issue pairs for others, nor list root's
    key = api.post("/v1/keys", {"principal_id": partner["principal_id"], "name": "k"}).json["api_key"]
    assert api.post("/v1/cloud-keys", {"principal_id": "root"}, key=key).status_code == 403
    assert api.get("/v1/cloud-keys?principal_id=root", key=key).status_code == 403
    assert api.delete(f"/v1/cloud-keys/{partner['secret_id']}", key=key).status_code == 403
    # an application's principal never holds a signing secret
    app = api.post("/v1/applications", {"name": "app", "products": [pid]}).json
    refused = api.post("/v1/cloud-keys", {"principal_id": app["principal_id"]})
    assert refused.status_code == 409 and refused.json["error"]["code"] == "UnsupportedOperation.ApplicationPrincipal"
    # deleting the principal revokes its pairs
    assert api.delete(f"/v1/principals/{partner['principal_id']}").status_code == 204
    assert _code(_call(api, partner, "GetStudioProductList", {})) == "AuthFailure.SecretIdNotFound"


def test_the_endpoint_is_documented_and_other_methods_on_root_are_refused(api: Api) -> None:
    doc = api.get("/openapi.json", key=None).json
    op = doc["paths"]["/"]["post"]
    assert "X-TC-Action" in op["summary"] and "DescribeDevice" in op["summary"]
    assert doc["paths"]["/v1/cloud-keys"]["post"]["x-fleetbox-action"] == "iotexplorer:CreateCloudApiKey"
    got = api.delete("/")
    assert got.status_code == 405 and got.headers["Allow"] == "GET, POST"
    # a GET without any signature is answered in the envelope too
    bare = api.client.http.get("/")
    assert bare.status_code == 200 and json.loads(bare.body)["Response"]["Error"]["Code"] == (
        "AuthFailure.InvalidAuthorization"
    )


def test_the_readme_lists_every_mapped_action_with_its_routes() -> None:
    from pathlib import Path

    from chalicelib.handlers.cloudapi import registry

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = text.split("### Use the Tencent Cloud SDK", 1)[1].split("\n## ", 1)[0]
    for name, spec in registry.ACTIONS.items():
        assert f"| `{name}` |" in section, f"README: {name} is mapped but not listed"
        for permission in spec.permissions:
            assert permission.split(":", 1)[1] in section, f"README: {name} runs {permission}"


def test_on_aws_the_secret_key_is_sealed_under_the_kms_key(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """The KMS half of the envelope (moto's KMS): a data key per pair, wrapped by the configured
    key with the SecretId as encryption context; the pair verifies signatures as before."""
    import boto3

    from chalicelib.core.config import reload_settings
    from chalicelib.services import sealing

    kms = boto3.client("kms", region_name="us-east-1")
    key_id = kms.create_key(Description="fleetbox-test-seal")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/fleetbox-test-seal", TargetKeyId=key_id)
    monkeypatch.setenv("FLEETBOX_SEAL_KMS_KEY_ID", "alias/fleetbox-test-seal")
    monkeypatch.delenv("FLEETBOX_SEAL_KEY")  # no local master key: KMS or nothing
    reload_settings()
    sealing.forget()
    try:
        pid = api.post("/v1/products", PRODUCT).json["product_id"]
        pair = _pair(api)
        rec = CloudKeyRecord.get(pair["secret_id"])
        assert rec.sealed_key.startswith("fbs1.kms.") and pair["secret_key"] not in rec.sealed_key
        assert _call(api, pair, "DescribeStudioProduct", {"ProductId": pid})["Product"]["ProductId"] == pid
        # the wrapped data key opens only with its record's context
        from chalicelib.core import errors

        with pytest.raises(errors.FleetboxError):
            sealing.unseal(rec.sealed_key, "AKID" + "q" * 32)
    finally:
        monkeypatch.delenv("FLEETBOX_SEAL_KMS_KEY_ID")
        reload_settings()
        sealing.forget()


def test_without_any_seal_key_no_pair_is_issued(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.core.config import reload_settings

    monkeypatch.delenv("FLEETBOX_SEAL_KEY")
    reload_settings()
    try:
        resp = api.post("/v1/cloud-keys", {"name": "nowhere to keep it"})
        assert resp.status_code == 500 and resp.json["error"]["code"] == "InternalError"
        assert api.get("/v1/cloud-keys").json["items"] == []  # nothing stored in the clear
    finally:
        reload_settings()
