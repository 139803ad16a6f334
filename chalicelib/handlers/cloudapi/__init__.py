"""``POST /`` (and ``GET /``): the Tencent Cloud API v3 endpoint for ``iotexplorer`` 2019-04-23 (SPEC §14).

A client built on ``tencentcloud-sdk-python`` works by pointing its endpoint here.  Each request:

1. is authenticated by its signature, checked on the request *as received*
   (``protocol/tc3.py``): TC3-HMAC-SHA256 (the SDK's default) from the ``Authorization`` header,
   the received ``Content-Type`` and ``Host`` and the raw body; or the older HmacSHA1/HmacSHA256
   form signature (``ClientProfile(signMethod="HmacSHA256")``); ``HttpProfile(reqMethod="GET")``
   sends either as a GET with the parameters in the query string.  The SecretId names a pair issued
   by ``POST /v1/cloud-keys`` (services/cloudkeys.py), whose SecretKey is unsealed to verify;
   ``X-TC-Timestamp`` must be within ``cloudapi_window_s`` (5 minutes) of now;
2. names an action (``X-TC-Action``) of version ``2019-04-23``; the action table
   (``registry.ACTIONS``, filled by the modules in :data:`ACTION_MODULES`) runs the equivalent
   ``/v1`` route(s) in process as the pair's principal, so the policy engine, list decisions
   and the audit are the HTTP routes' own;
3. is answered with HTTP 200 and ``Content-Type: application/json`` exactly (the SDK treats any
   other status as a network error and any other type as success):
   ``{"Response":{…,"RequestId"}}`` or ``{"Response":{"Error":{"Code","Message"},"RequestId"}}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from chalice import Blueprint, Response

from ...core import clock, errors, ids
from ...core.config import settings
from ...core.observability import logger
from ...core.schema import Json, Model
from ...protocol import tc3
from ...services import access, cloudkeys
from .. import api
from . import batches, devices, location, ota, products, registry, rules, video

#: the modules whose ``@action`` functions fill the table (16B's modules join this tuple)
ACTION_MODULES = (products, devices, batches, ota, rules, location, video)

SERVICE = "iotexplorer"
VERSION = "2019-04-23"
PATH = "/"
#: a cloud-API request body is small JSON; anything bigger is refused before it is parsed
MAX_BODY = 1024 * 1024
_JSON = "application/json"
_FORM = "application/x-www-form-urlencoded"
#: parameters of the form (v1) signature that are not the action's own
_V1_COMMON = (
    "Action",
    "Version",
    "Timestamp",
    "Nonce",
    "SecretId",
    "Signature",
    "SignatureMethod",
    "Region",
    "RequestClient",
    "Language",
    "Token",
)

bp = Blueprint(__name__)


def _media_type(headers: dict[str, str]) -> str:
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _timestamp(text: str | None, name: str) -> int:
    if text is None or text == "":
        raise errors.missing(name)
    try:
        value = int(text)
    except ValueError:
        raise errors.INVALID_PARAMETER(f"{name} must be Unix seconds", name) from None
    if abs(clock.now_s() - value) > settings().cloudapi_window_s:
        raise errors.SIGNATURE_EXPIRE(
            f"{name} {value} is more than {settings().cloudapi_window_s} seconds away from the server time "
            f"{clock.now_s()}: sign with the current time",
            name,
        )
    return value


def _signing_key(secret_id: str) -> cloudkeys.SigningKey:
    key = cloudkeys.signing_key(secret_id)
    if key is None:
        raise errors.SECRET_ID_NOT_FOUND(f"the SecretId {secret_id[:64]} does not exist", "SecretId")
    return key


def _json_params(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise errors.INVALID_JSON("the request body is not valid UTF-8 JSON", "body") from None
    if not isinstance(value, dict):
        raise errors.INVALID_BODY("the request body must be a JSON object", "body")
    return value


def _form_pairs(raw: bytes) -> list[tuple[str, str]]:
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(raw))
    except (UnicodeDecodeError, ValueError):
        raise errors.INVALID_BODY(
            "the form body is not valid UTF-8 application/x-www-form-urlencoded", "body"
        ) from None
    names = [k for k, _ in pairs]
    if len(set(names)) != len(names):
        raise errors.INVALID_PARAMETER("a form parameter is given twice", "body")
    return pairs


@dataclass(frozen=True)
class _Verified:
    """A request whose signature held: what it asks, and whose key signed it."""

    action: str
    version: str
    params: dict[str, Any]
    key: cloudkeys.SigningKey
    #: the parameters came form-encoded (text values, typed by the action's model)
    form: bool


def _query_pairs(request: Any) -> list[tuple[str, str]]:
    """A GET request's parameters in the order received (API Gateway and chalice local hand them
    over parsed; the SDK writes each name once)."""
    params = request.query_params or {}
    pairs = [(str(k), str(v)) for k in params for v in params.getlist(k)]
    names = [k for k, _ in pairs]
    if len(set(names)) != len(names):
        raise errors.INVALID_PARAMETER("a query parameter is given twice", "query")
    return pairs


def _verify_tc3(request: Any, headers: dict[str, str], raw: bytes) -> _Verified:
    """The action, version and parameters of a TC3-signed request (a JSON body; or, as GET, the
    query string — the canonical query string is it re-encoded as the SDK encodes it), or the
    refusal."""
    try:
        auth = tc3.parse_authorization(headers["authorization"])
    except tc3.SignatureError as exc:
        raise errors.INVALID_AUTHORIZATION(str(exc), "Authorization") from None
    if auth.service != SERVICE:
        raise errors.INVALID_AUTHORIZATION(
            f"the credential scope names service {auth.service[:32]}; this endpoint is {SERVICE}", "Authorization"
        )
    if auth.terminator != tc3.TERMINATOR:
        raise errors.INVALID_AUTHORIZATION("the credential scope must end with tc3_request", "Authorization")
    missing = [h for h in tc3.REQUIRED_SIGNED if h not in auth.signed_headers]
    if missing:
        raise errors.INVALID_AUTHORIZATION(f"SignedHeaders must include {', '.join(missing)}", "Authorization")
    absent = [h for h in auth.signed_headers if h not in headers]
    if absent:
        raise errors.INVALID_AUTHORIZATION(f"signed header {absent[0]} is not in the request", "Authorization")
    if headers.get("x-tc-content-sha256", "").upper() == tc3.UNSIGNED_PAYLOAD:
        raise errors.INVALID_AUTHORIZATION(
            "UNSIGNED-PAYLOAD is not accepted: the signature must cover the body", "X-TC-Content-SHA256"
        )
    if "x-tc-token" in headers:
        raise errors.INVALID_AUTHORIZATION("temporary credentials (X-TC-Token) are not supported", "X-TC-Token")
    timestamp = _timestamp(headers.get("x-tc-timestamp"), "X-TC-Timestamp")
    if auth.date != tc3.utc_date(timestamp):
        raise errors.SIGNATURE_FAILURE(
            f"the Credential date {auth.date} is not the UTC date of X-TC-Timestamp ({tc3.utc_date(timestamp)})",
            "Authorization",
        )
    key = _signing_key(auth.secret_id)
    get = request.method == "GET"
    pairs = _query_pairs(request) if get else []
    canonical = tc3.canonical_request(
        request.method,
        urlencode(pairs) if get else "",
        [(h, headers[h]) for h in auth.signed_headers],
        tc3.payload_hash(b"" if get else raw),
    )
    expected = tc3.tc3_signature(
        key.secret_key, auth.date, auth.service, tc3.string_to_sign(str(timestamp), auth.scope, canonical)
    )
    if not tc3.same(expected, auth.signature):
        raise errors.SIGNATURE_FAILURE("the signature does not match the request", "Authorization")
    action = headers.get("x-tc-action")
    if not action:
        raise errors.missing("X-TC-Action")
    if get:
        return _Verified(action, headers.get("x-tc-version", ""), registry.unflatten(pairs), key, form=True)
    media = _media_type(headers)
    if media == _JSON:
        return _Verified(action, headers.get("x-tc-version", ""), _json_params(raw), key, form=False)
    if media == _FORM:
        return _Verified(action, headers.get("x-tc-version", ""), registry.unflatten(_form_pairs(raw)), key, form=True)
    raise errors.UNSUPPORTED_MEDIA_TYPE(f"Content-Type must be {_JSON}", "Content-Type")


def _verify_v1(request: Any, headers: dict[str, str], pairs: list[tuple[str, str]]) -> _Verified:
    """The action, version and parameters of a HmacSHA1/HmacSHA256-signed request (its form body,
    or its query string as GET), or the refusal."""
    form = dict(pairs)
    for name in ("SecretId", "Signature", "Action", "Timestamp", "Nonce"):
        if not form.get(name):
            raise errors.missing(name)
    method = form.get("SignatureMethod") or "HmacSHA1"
    if method not in tc3.V1_METHODS:
        raise errors.INVALID_AUTHORIZATION(
            f"SignatureMethod must be one of {', '.join(tc3.V1_METHODS)} or a TC3-HMAC-SHA256 Authorization",
            "SignatureMethod",
        )
    if "Token" in form:
        raise errors.INVALID_AUTHORIZATION("temporary credentials (Token) are not supported", "Token")
    _timestamp(form["Timestamp"], "Timestamp")
    key = _signing_key(form["SecretId"])
    to_sign = tc3.v1_string_to_sign(request.method, headers.get("host", ""), PATH, form)
    if not tc3.same(tc3.v1_signature(key.secret_key, method, to_sign), form["Signature"]):
        raise errors.SIGNATURE_FAILURE("the signature does not match the request", "Signature")
    cloudkeys.claim_nonce(key.secret_id, form["Nonce"], clock.now_s(), settings().cloudapi_window_s)
    params = registry.unflatten((k, v) for k, v in pairs if k not in _V1_COMMON)
    return _Verified(form["Action"], form.get("Version", ""), params, key, form=True)


def handle(request: Any, request_id: str) -> tuple[dict[str, Any], str | None]:
    """The ``Response`` members for one request (and its action, for the log)."""
    headers = {str(k).lower(): str(v) for k, v in (request.headers or {}).items()}
    raw = request.raw_body or b""
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    if len(raw) > MAX_BODY:
        raise errors.BODY_TOO_LARGE(f"the request body must be at most {MAX_BODY} bytes", "body")
    if headers.get("authorization", "").startswith(tc3.ALGORITHM):
        got = _verify_tc3(request, headers, raw)
    elif request.method == "GET" and request.query_params:
        got = _verify_v1(request, headers, _query_pairs(request))
    elif request.method == "POST" and _media_type(headers) == _FORM:
        got = _verify_v1(request, headers, _form_pairs(raw))
    else:
        raise errors.INVALID_AUTHORIZATION(
            "sign the request: a TC3-HMAC-SHA256 Authorization header, or Signature in the form body or query",
            "Authorization",
        )
    principal = access.principal_by_id(got.key.principal_id, via=got.key.secret_id)
    if principal is None:
        raise errors.SECRET_ID_NOT_FOUND("the SecretId's principal no longer exists", "SecretId")
    if got.version != VERSION:
        raise errors.NO_SUCH_VERSION(
            f"version {got.version[:32] or '(none)'} of {SERVICE} does not exist here; use {VERSION}", "Version"
        )
    if got.action not in registry.ACTIONS:
        raise errors.INVALID_ACTION(
            f"the action {got.action[:64]} is not supported by {SERVICE} {VERSION} here", "Action"
        )
    members = registry.run(
        got.action, got.params, principal, request_id, form=got.form, source_ip=api.source_ip_of(request)
    )
    return members, got.action


def error_body(err: errors.FleetboxError) -> dict[str, str]:
    message = err.message if not err.field or err.field in err.message else f"{err.field}: {err.message}"
    return {"Code": err.cloud_api_code, "Message": message}


def answer(members: dict[str, Any], request_id: str) -> Response:
    return Response(
        body=json.dumps({"Response": {**members, "RequestId": request_id}}, separators=(",", ":"), ensure_ascii=False),
        status_code=200,
        headers={"Content-Type": _JSON, "x-request-id": request_id},
    )


@bp.route(PATH, methods=["GET", "POST"], content_types=["*/*"])
def cloud_api() -> Response:
    request_id = ids.request_id()
    action: str | None = None
    try:
        members, action = handle(bp.current_request, request_id)
        code = None
    except errors.FleetboxError as err:
        code = err.code
        if err.status >= 500:
            logger.error("cloud-API request failed", extra={"code": err.code, "request_id": request_id})
        members = {"Error": error_body(err)}
    except Exception:  # noqa: BLE001 - never a 5xx: the SDK would only see a network error
        logger.exception("cloud-API endpoint failed", extra={"request_id": request_id})
        code = errors.INTERNAL_ERROR.code
        members = {"Error": error_body(errors.internal())}
    logger.info("cloud-API request", extra={"action": action, "code": code, "request_id": request_id})
    return answer(members, request_id)


_ANSWER = Model(
    "CloudApiResponse",
    {
        "Response": Json(
            object_only=True,
            required=True,
            description='{…the action result…,"RequestId"} or {"Error":{"Code","Message"},"RequestId"}',
        )
    },
)
_SUMMARY = (
    f"Tencent Cloud API v3 ({SERVICE} {VERSION}): headers X-TC-Action, X-TC-Version, X-TC-Timestamp and a "
    "TC3-HMAC-SHA256 Authorization signed with a SecretId/SecretKey from POST /v1/cloud-keys (or a HmacSHA1/"
    "HmacSHA256 form signature); always HTTP 200. Actions: " + ", ".join(sorted(registry.ACTIONS))
)
api.document(
    "POST",
    PATH,
    tag="cloud-api",
    summary=_SUMMARY,
    body=Model(
        "CloudApiRequest",
        {},
        allow_extra=True,
        description="the action's parameters under Tencent's names (tencentcloud-sdk-python's request models)",
    ),
    response=_ANSWER,
)
api.document(
    "GET",
    PATH,
    tag="cloud-api",
    summary=_SUMMARY.replace("headers", "as POST, the parameters in the query string; headers", 1),
    body=None,
    response=_ANSWER,
)
