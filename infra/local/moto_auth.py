"""Only the local stack may talk to its moto server: every request must carry a valid AWS
Signature V4 made with the stack's own secret key.

moto accepts any request — unsigned, signed with any key, a presigned link long expired — so
without this guard anyone on the machine could read the files bucket (batch CSVs hold every
device secret) or dump moto's state through ``/moto-api``.  The guard is a WSGI middleware in
front of moto's application (``infra/local/moto_fast.py``):

* header-signed requests (what boto3 sends) and query-signed links (``X-Amz-Signature``,
  presigned uploads) are recomputed with botocore's own canonicalisation and compared in
  constant time; a presigned link past ``X-Amz-Date + X-Amz-Expires`` is refused;
* ``/moto-api/…`` (the recorder the stack drives) needs the ``X-Fleetbox-Moto-Token`` header;
* anything else answers 403 with an S3-style XML error.

Header-signed requests are not checked against the clock: moto's recorder replays the
recorded requests, signatures and all, when a stack with a state directory starts.  For the
same reason expiry is not checked while a replay runs.
"""

from __future__ import annotations

import hmac
import threading
import time
from calendar import timegm
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, quote

TOKEN_HEADER = "X-Fleetbox-Moto-Token"
_ALGORITHM = "AWS4-HMAC-SHA256"


class _Replay:
    """Whether moto's recorder is replaying (its own requests then carry old timestamps)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0

    def __enter__(self) -> None:
        with self._lock:
            self._depth += 1

    def __exit__(self, *exc: Any) -> None:
        with self._lock:
            self._depth -= 1

    @property
    def active(self) -> bool:
        return self._depth > 0


def _parse_authorization(value: str) -> dict[str, str] | None:
    if not value.startswith(_ALGORITHM + " "):
        return None
    fields: dict[str, str] = {}
    for part in value[len(_ALGORITHM) + 1 :].split(","):
        key, _, val = part.strip().partition("=")
        fields[key] = val
    if not {"Credential", "SignedHeaders", "Signature"} <= set(fields):
        return None
    return fields


def _raw_target(environ: dict[str, Any]) -> tuple[str, str]:
    """(path, query) exactly as the client sent them (percent-encoding kept)."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        path, _, query = raw.partition("?")
        return path, query
    return quote(environ.get("PATH_INFO", "/")), environ.get("QUERY_STRING", "")


def _take_body(environ: dict[str, Any]) -> bytes:
    import io

    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    environ["wsgi.input"] = io.BytesIO(body)
    return body


def _headers(environ: dict[str, Any]) -> dict[str, str]:
    out = {k[5:].replace("_", "-").lower(): str(v) for k, v in environ.items() if k.startswith("HTTP_")}
    if environ.get("CONTENT_TYPE"):
        out["content-type"] = environ["CONTENT_TYPE"]
    if environ.get("CONTENT_LENGTH"):
        out["content-length"] = environ["CONTENT_LENGTH"]
    return out


def expected_signature(
    secret_key: str,
    method: str,
    host: str,
    path: str,
    query: str,
    headers: dict[str, str],
    credential: str,
    signed_headers: Iterable[str],
    amz_date: str,
    payload_hash: str | None,
    presigned: bool,
    body: bytes = b"",
) -> str:
    """The signature a client holding ``secret_key`` computed for this request, by botocore's
    own canonicalisation (S3 paths as sent; other services double-encoded, as botocore signs)."""
    from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth, SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.compat import HTTPHeaders
    from botocore.credentials import Credentials

    access_key, date, region, service, _ = (credential.split("/") + ["", "", "", "", ""])[:5]
    if presigned:
        cls = S3SigV4QueryAuth if service == "s3" else SigV4QueryAuth
        auth = cls(Credentials(access_key, secret_key), service, region, expires=0)
    else:
        cls = S3SigV4Auth if service == "s3" else SigV4Auth
        auth = cls(Credentials(access_key, secret_key), service, region)
    names = [h.strip().lower() for h in signed_headers if h.strip()]

    def headers_to_sign(_request: Any) -> Any:
        chosen = HTTPHeaders()
        for name in names:
            chosen[name] = headers.get(name, host if name == "host" else "")
        return chosen

    auth.headers_to_sign = headers_to_sign  # type: ignore[method-assign]
    url = f"http://{host}{path}" + (f"?{query}" if query else "")
    request = AWSRequest(method=method, url=url, headers={k: v for k, v in headers.items()}, data=body)
    request.context["timestamp"] = amz_date
    if payload_hash is not None:
        request.headers["X-Amz-Content-SHA256"] = payload_hash
    elif "X-Amz-Content-SHA256" in request.headers:
        del request.headers["X-Amz-Content-SHA256"]
    canonical = auth.canonical_request(request)
    to_sign = auth.string_to_sign(request, canonical)
    return str(auth.signature(to_sign, request))


class SigV4Guard:
    """WSGI middleware: refuse every request not signed with ``secret_key`` (see the module doc)."""

    def __init__(self, app: Callable[..., Any], secret_key: str, token: str) -> None:
        self.app = app
        self.secret_key = secret_key
        self.token = token
        self.replay = _Replay()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/moto-api"):
            given = environ.get("HTTP_" + TOKEN_HEADER.upper().replace("-", "_"), "")
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return self._refuse(start_response, "the moto API is the local stack's own")
            if path.rstrip("/").endswith("/recorder/replay-recording"):
                with self.replay:
                    return list(self.app(environ, start_response))
            return self.app(environ, start_response)
        why = self.check(environ)
        if why is not None:
            return self._refuse(start_response, why)
        return self.app(environ, start_response)

    def check(self, environ: dict[str, Any]) -> str | None:
        """None when the request is signed with the stack's key; else why not."""
        method = environ.get("REQUEST_METHOD", "GET")
        raw_path, query = _raw_target(environ)
        headers = _headers(environ)
        host = headers.get("host", "")
        auth = _parse_authorization(headers.get("authorization", ""))
        pairs = parse_qsl(query, keep_blank_values=True)
        params = dict(pairs)
        try:
            if auth is not None:
                given = auth["Signature"]
                payload_hash = headers.get("x-amz-content-sha256")
                # S3 declares its payload hash; other services sign the body itself (small JSON or
                # form bodies): read it, and hand moto a fresh copy
                body = b"" if payload_hash is not None else _take_body(environ)
                expected = expected_signature(
                    self.secret_key,
                    method,
                    host,
                    raw_path,
                    query,
                    headers,
                    auth["Credential"],
                    auth["SignedHeaders"].split(";"),
                    headers.get("x-amz-date", ""),
                    payload_hash,
                    presigned=False,
                    body=body,
                )
            elif params.get("X-Amz-Algorithm") == _ALGORITHM and "X-Amz-Signature" in params:
                given = params["X-Amz-Signature"]
                stamp = params.get("X-Amz-Date", "")
                expires = int(params.get("X-Amz-Expires", "0"))
                issued = timegm(time.strptime(stamp, "%Y%m%dT%H%M%SZ"))
                if not self.replay.active and time.time() > issued + expires:
                    return "the presigned link has expired"
                unsigned = "&".join(p for p in query.split("&") if not p.startswith("X-Amz-Signature="))
                expected = expected_signature(
                    self.secret_key,
                    method,
                    host,
                    raw_path,
                    unsigned,
                    headers,
                    params.get("X-Amz-Credential", ""),
                    params.get("X-Amz-SignedHeaders", "host").split(";"),
                    stamp,
                    "UNSIGNED-PAYLOAD" if "s3" in params.get("X-Amz-Credential", "") else None,
                    presigned=True,
                )
            else:
                return "the request is not signed"
        except (ValueError, KeyError, IndexError, TypeError, OverflowError):
            return "the request's signature cannot be read"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return "the signature does not match"
        return None

    @staticmethod
    def _refuse(start_response: Callable[..., Any], why: str) -> list[bytes]:
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>{why}</Message></Error>'
        ).encode()
        start_response("403 Forbidden", [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
        return [body]
