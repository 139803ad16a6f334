"""Tencent Cloud API request signatures (SPEC §14) — the math only, no I/O.

* **TC3-HMAC-SHA256** (API v3, what ``tencentcloud-sdk-python`` sends by default)::

      Authorization: TC3-HMAC-SHA256 Credential=<SecretId>/<YYYY-MM-DD>/<service>/tc3_request,
                     SignedHeaders=content-type;host, Signature=<hex>

  canonical request = method, URI ``/``, query string (GET only), ``name:value`` of each signed
  header (both lowercased and trimmed, in the order the client listed them), the signed-header
  list, and the hex SHA-256 of the raw body; string to sign = ``TC3-HMAC-SHA256``, the
  ``X-TC-Timestamp``, the credential scope and the hex SHA-256 of the canonical request; the key
  is HMAC-SHA256 derived ``"TC3"+SecretKey`` → date → service → ``tc3_request``.
* **HmacSHA1 / HmacSHA256** (API v2-style, still selectable with ``ClientProfile(signMethod=…)``):
  the parameters travel form-encoded; string to sign = method + host + path + ``?`` + the
  parameters (``Signature`` excluded) sorted by name as ``k=v`` joined by ``&`` (raw values, ``_``
  in names read as ``.``, as the SDK writes them); signature = base64 HMAC.

:func:`parse_authorization` reads the header; :func:`tc3_signature` and :func:`v1_signature`
compute what the caller must have sent; the endpoint compares in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

ALGORITHM = "TC3-HMAC-SHA256"
TERMINATOR = "tc3_request"
V1_METHODS = {"HmacSHA1": hashlib.sha1, "HmacSHA256": hashlib.sha256}
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
#: headers a TC3 signature must cover (Tencent refuses a signature over less)
REQUIRED_SIGNED = ("content-type", "host")

_AUTH_RE = re.compile(
    r"TC3-HMAC-SHA256\s+Credential=(?P<cred>[^,\s]+)\s*,\s*SignedHeaders=(?P<signed>[^,\s]+)\s*,\s*"
    r"Signature=(?P<sig>[0-9a-fA-F]{64})\s*"
)
_HEADER_NAME = re.compile(r"[a-z0-9-]{1,64}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class SignatureError(ValueError):
    """The Authorization header is malformed; ``reason`` says what is wrong (no secret in it)."""


@dataclass(frozen=True)
class Tc3Authorization:
    secret_id: str
    date: str
    service: str
    terminator: str
    signed_headers: tuple[str, ...]
    signature: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.service}/{self.terminator}"


def parse_authorization(header: str) -> Tc3Authorization:
    """Split a TC3 ``Authorization`` header; :class:`SignatureError` says why one is not."""
    m = _AUTH_RE.fullmatch(header.strip())
    if m is None:
        raise SignatureError(
            "Authorization must be 'TC3-HMAC-SHA256 Credential=SecretId/date/service/tc3_request, "
            "SignedHeaders=content-type;host, Signature=<64 hex>'"
        )
    parts = m.group("cred").split("/")
    if len(parts) != 4 or not all(parts):
        raise SignatureError("Credential must be SecretId/YYYY-MM-DD/service/tc3_request")
    secret_id, date, service, terminator = parts
    if not _DATE.fullmatch(date):
        raise SignatureError("the Credential date must be YYYY-MM-DD")
    signed = tuple(m.group("signed").split(";"))
    if not all(_HEADER_NAME.fullmatch(h) for h in signed):
        raise SignatureError("SignedHeaders must be lowercase header names separated by ';'")
    if len(set(signed)) != len(signed):
        raise SignatureError("SignedHeaders names a header twice")
    return Tc3Authorization(secret_id, date, service, terminator, signed, m.group("sig").lower())


def utc_date(timestamp: int) -> str:
    """The UTC date of ``timestamp`` as the credential scope spells it."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")


def payload_hash(raw_body: bytes, unsigned: bool = False) -> str:
    return hashlib.sha256(UNSIGNED_PAYLOAD.encode() if unsigned else raw_body).hexdigest()


def canonical_request(
    method: str,
    query_string: str,
    headers: Sequence[tuple[str, str]],
    hashed_payload: str,
    uri: str = "/",
) -> str:
    """``headers``: (lowercase name, value as received) of each signed header, in signed order."""
    canonical_headers = "".join(f"{name}:{value.strip().lower()}\n" for name, value in headers)
    signed = ";".join(name for name, _ in headers)
    return "\n".join([method.upper(), uri, query_string, canonical_headers, signed, hashed_payload])


def string_to_sign(timestamp: str, scope: str, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return "\n".join([ALGORITHM, timestamp, scope, digest])


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def tc3_signature(secret_key: str, date: str, service: str, to_sign: str) -> str:
    """Hex HMAC-SHA256 of ``to_sign`` with the key derived for ``date`` and ``service``."""
    k_date = _hmac(("TC3" + secret_key).encode("utf-8"), date)
    k_service = _hmac(k_date, service)
    k_signing = _hmac(k_service, TERMINATOR)
    return hmac.new(k_signing, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def v1_string_to_sign(method: str, host: str, path: str, params: Mapping[str, str]) -> str:
    """What a HmacSHA1/HmacSHA256 caller signed: ``params`` as received, without ``Signature``."""
    named = {k.replace("_", "."): v for k, v in params.items() if k != "Signature"}
    query = "&".join(f"{k}={named[k]}" for k in sorted(named))
    return f"{method.upper()}{host}{path}?{query}"


def v1_signature(secret_key: str, method: str, to_sign: str) -> str:
    digestmod = V1_METHODS.get(method)
    if digestmod is None:
        raise SignatureError(f"SignatureMethod must be one of {', '.join(V1_METHODS)}")
    mac = hmac.new(secret_key.encode("utf-8"), to_sign.encode("utf-8"), digestmod).digest()
    return base64.b64encode(mac).decode()


def same(expected: str, given: str) -> bool:
    """Constant-time comparison of two signatures."""
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8", errors="replace"))
