"""The real ``tencentcloud-sdk-python-iotexplorer`` client for cloud-API tests (SPEC §14).

* :func:`client` — an ``IotexplorerClient`` pointed at a Fleetbox endpoint (e2e: the local stack);
  its own request signing, unmodified.
* :func:`sdk_call` — call an action by name with a dict of Tencent parameters through the SDK's
  request model and method (``client.DescribeDevice(models.DescribeDeviceRequest())``), returning
  the response model as a dict; refusals raise ``TencentCloudSDKException`` (``e.get_code()``).
* :func:`endpoint`, :func:`pair_for`, :func:`refused` — the e2e pieces: the stack's host:port, a
  pair issued through ``POST /v1/cloud-keys`` (root's, or a new principal's with a policy), and
  the Tencent code an action is refused with.
* :func:`signed_request` — the exact headers and body the SDK would send for an action, built by
  the SDK's own signer without sending (integration tests post them through Chalice's test
  client; ``at=`` signs at another time, ``sign_method=`` picks HmacSHA1/HmacSHA256).
"""

from __future__ import annotations

import json
from typing import Any
from unittest import mock

import pytest
from tencentcloud.common import credential
from tencentcloud.common.common_client import CommonClient
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.http.request import RequestInternal
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.iotexplorer.v20190423 import iotexplorer_client, models


def client(
    endpoint: str, secret_id: str, secret_key: str, sign_method: str | None = None, req_method: str = "POST"
) -> Any:
    """``endpoint``: host:port (no scheme); plain HTTP as locally.  ``sign_method``: the SDK's
    ``signMethod`` (TC3-HMAC-SHA256 by default); ``req_method``: POST, or GET (query string)."""
    http = HttpProfile(endpoint=endpoint, protocol="http", reqMethod=req_method)
    profile = ClientProfile(signMethod=sign_method, httpProfile=http)
    profile.disable_region_breaker = True
    return iotexplorer_client.IotexplorerClient(credential.Credential(secret_id, secret_key), "ap-guangzhou", profile)


def sdk_call(cli: Any, action: str, params: dict[str, Any] | None = None, at: float | None = None) -> dict[str, Any]:
    """Run ``action`` through the SDK's own model and method; the response as a dict.  An action
    the installed SDK has no method for goes through the SDK's ``CommonClient.call_json`` with the
    same credential and profile, as Tencent's samples call such actions."""
    if hasattr(models, f"{action}Request"):
        req = getattr(models, f"{action}Request")()
        req.from_json_string(json.dumps(params or {}))

        def send() -> dict[str, Any]:
            return dict(json.loads(getattr(cli, action)(req).to_json_string()))

    else:
        common = CommonClient("iotexplorer", "2019-04-23", cli.credential, cli.region, profile=cli.profile)

        def send() -> dict[str, Any]:
            return dict(common.call_json(action, params or {})["Response"])

    if at is None:
        return send()
    with mock.patch("tencentcloud.common.abstract_client.time.time", return_value=at):
        return send()


def endpoint(local_stack: dict[str, Any]) -> str:
    """host:port of a local stack's HTTP API (what ``HttpProfile(endpoint=…)`` takes)."""
    return str(local_stack["api_url"]).split("://", 1)[1].rstrip("/")


def pair_for(api: Any, policy: dict[str, Any] | None = None) -> dict[str, Any]:
    """A SecretId/SecretKey pair from ``POST /v1/cloud-keys`` (e2e ``Api``): root's, or a new
    principal's with ``policy``."""
    body: dict[str, Any] = {"name": "sdk"}
    if policy is not None:
        made = api.call("POST", "/v1/principals", 201, json={"name": "sdk partner", "policy": policy}).json()
        body["principal_id"] = made["principal_id"]
    return api.call("POST", "/v1/cloud-keys", 201, json=body).json()


def refused(cli: Any, action: str, params: dict[str, Any], **kw: Any) -> str:
    """The Tencent error code ``action`` is refused with (fails the test if it succeeds)."""
    with pytest.raises(TencentCloudSDKException) as err:
        sdk_call(cli, action, params, **kw)
    return str(err.value.get_code())


def signed_request(
    cli: Any, action: str, params: dict[str, Any] | None = None, at: float | None = None
) -> tuple[dict[str, str], bytes]:
    """(headers, body) the SDK sends for ``action``, signed by the SDK at ``at`` (now by default);
    for a GET client the "body" is the query string the SDK puts on the URL."""
    req = getattr(models, f"{action}Request")()
    req.from_json_string(json.dumps(params or {}))
    internal = RequestInternal(cli._get_endpoint(), cli.profile.httpProfile.reqMethod, cli._requestPath, header={})
    if at is None:
        cli._build_req_inter(action, req._serialize(), internal)
    else:
        with mock.patch("tencentcloud.common.abstract_client.time.time", return_value=at):
            cli._build_req_inter(action, req._serialize(), internal)
    body = internal.data if isinstance(internal.data, bytes) else str(internal.data).encode("utf-8")
    headers = {k: str(v) for k, v in internal.header.items()}
    headers.setdefault("Host", cli._get_endpoint())
    return headers, body
