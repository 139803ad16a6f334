"""Dynamic registration wire formats and crypto (SPEC §6.3) — both protocols real SDKs speak.

* **v2** (``POST /device/register``): JSON body ``{"ProductId","DeviceName"}``; headers
  ``X-TC-Algorithm`` (hmacsha256, any case), ``X-TC-Timestamp`` (s), ``X-TC-Nonce``,
  ``X-TC-Signature``.  String to sign = 8 lines joined by ``\\n``: ``POST``, host without
  port, URI, empty query string, the algorithm string, timestamp, nonce, lowercase hex
  SHA-256 of the raw body.  Signature = base64(HMAC-SHA256(ProductSecret, string)).
* **legacy** (``POST /register/dev``): JSON body ``{"deviceName","nonce","productId",
  "timestamp","signature"}``; string ``deviceName={dn}&nonce={n}&productId={pid}&timestamp={ts}``;
  signature = base64 of the lowercase **hex text** of HMAC-SHA1(ProductSecret, string).
* **payload**: AES-128-CBC, key = first 16 ASCII characters of the ProductSecret, IV = sixteen
  ASCII ``'0'``, zero-byte padding, base64; ``len`` = plaintext length.

Pure functions (``cryptography`` imported lazily for AES); no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from ..core import errors

V2_PATH = "/device/register"
LEGACY_PATH = "/register/dev"
IV = b"0" * 16
_DIGITS = re.compile(r"-?[0-9]{1,19}")
_NONCE = re.compile(r"[A-Za-z0-9_\-]{1,64}")
MAX_BODY = 4096


class Refusal(Exception):
    """A registration refusal: v2 ``code`` (``AuthFailure.SignatureFailure``…), the legacy numeric
    code, and a message saying why.  Answered with HTTP 200 in the protocol's error envelope."""

    def __init__(self, code: str, message: str, legacy_code: int):
        super().__init__(message)
        self.code = code
        self.message = message
        self.legacy_code = legacy_code


def refuse(kind: str, message: str | None = None) -> Refusal:
    """A :class:`Refusal` of one of the kinds in :data:`chalicelib.core.errors.REGISTRATION`."""
    code, legacy, default = errors.REGISTRATION[kind]
    return Refusal(code.code, message or default, legacy)


# ------------------------------------------------------------------ signatures


def body_hash(raw_body: bytes) -> str:
    return hashlib.sha256(raw_body).hexdigest()


def string_to_sign_v2(host: str, uri: str, algorithm: str, timestamp: str, nonce: str, raw_body: bytes) -> str:
    return "\n".join(["POST", host, uri, "", algorithm, str(timestamp), str(nonce), body_hash(raw_body)])


def sign_v2(product_secret: str, string_to_sign: str) -> str:
    mac = hmac.new(product_secret.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


def string_to_sign_legacy(device_name: str, nonce: str, product_id: str, timestamp: str) -> str:
    return f"deviceName={device_name}&nonce={nonce}&productId={product_id}&timestamp={timestamp}"


def sign_legacy(product_secret: str, string_to_sign: str) -> str:
    hexmac = hmac.new(product_secret.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha1).hexdigest()
    return base64.b64encode(hexmac.encode("ascii")).decode()


def _same(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8", errors="replace"))


# ------------------------------------------------------------------ payload


def _aes_key(product_secret: str) -> bytes:
    key = product_secret[:16].encode("ascii")
    if len(key) != 16:
        raise ValueError("the product secret must have at least 16 ASCII characters")
    return key


def encrypt_payload(product_secret: str, plaintext: bytes | str) -> str:
    """AES-128-CBC(key = secret[:16], IV = '0'*16), zero-byte padding, base64."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    data = plaintext.encode("utf-8") if isinstance(plaintext, str) else bytes(plaintext)
    if len(data) % 16:
        data += b"\0" * (16 - len(data) % 16)
    enc = Cipher(algorithms.AES(_aes_key(product_secret)), modes.CBC(IV)).encryptor()
    return base64.b64encode(enc.update(data) + enc.finalize()).decode()


def decrypt_payload(product_secret: str, payload_b64: str, length: int | None = None) -> bytes:
    """The inverse (device side: simulator, tests); trailing zero bytes dropped (or cut to ``length``)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    dec = Cipher(algorithms.AES(_aes_key(product_secret)), modes.CBC(IV)).decryptor()
    data = dec.update(base64.b64decode(payload_b64)) + dec.finalize()
    return data[:length] if length is not None else data.rstrip(b"\0")


def psk_plaintext(device_secret: str) -> str:
    """``{"encryptionType":2,"psk":"<device secret>"}`` exactly as the SDKs parse it."""
    return json.dumps({"encryptionType": 2, "psk": device_secret}, separators=(",", ":"))


def cert_plaintext(cert_pem: str, key_pem: str) -> str:
    return json.dumps({"encryptionType": 1, "clientCert": cert_pem, "clientKey": key_pem}, separators=(",", ":"))


# ------------------------------------------------------------------ envelopes


def v2_success(payload: str, length: int, request_id: str) -> dict[str, Any]:
    return {"Response": {"Len": length, "Payload": payload, "RequestId": request_id}}


def v2_error(refusal: Refusal, request_id: str) -> dict[str, Any]:
    return {"Response": {"Error": {"Code": refusal.code, "Message": refusal.message}, "RequestId": request_id}}


def legacy_success(payload: str, length: int, request_id: str) -> dict[str, Any]:
    return {"code": 0, "message": "success", "len": length, "payload": payload, "requestId": request_id}


def legacy_error(refusal: Refusal, request_id: str) -> dict[str, Any]:
    return {"code": refusal.legacy_code, "message": refusal.message, "requestId": request_id}


# ------------------------------------------------------------------ requests


@dataclass(frozen=True)
class SignedRequest:
    """A parsed registration request, either protocol; ``signature_ok`` needs the ProductSecret."""

    protocol: str  # "v2" | "legacy"
    product_id: str
    device_name: str
    timestamp: int
    nonce: str
    signature: str
    #: v2: the candidate strings to sign (one per accepted URI); legacy: the one string
    strings_to_sign: tuple[str, ...]

    def signature_ok(self, product_secret: str) -> bool:
        signer = sign_v2 if self.protocol == "v2" else sign_legacy
        ok = False
        for text in self.strings_to_sign:  # every candidate is computed: no early exit
            ok |= _same(signer(product_secret, text), self.signature)
        return ok


def _text_field(doc: Mapping[str, Any], name: str) -> str:
    value = doc.get(name)
    if value is None or value == "":
        raise refuse("missing", f"{name} is required")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise refuse("invalid", f"{name} must be a string")
    return str(value)


def _int_text(value: str, name: str) -> int:
    if not _DIGITS.fullmatch(value.strip()):
        raise refuse(
            "invalid",
            f"{name} must be an integer (Unix seconds)"
            if name.lower().endswith("timestamp")
            else f"{name} must be an integer",
        )
    return int(value.strip())


def _nonce(value: str, name: str) -> str:
    if not _NONCE.fullmatch(value):
        raise refuse("invalid", f"{name} must be 1-64 letters, digits, _ or -")
    return value


def host_without_port(host: str | None) -> str:
    host = (host or "").strip()
    if host.startswith("["):  # [v6]:port
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _json_object(raw_body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw_body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def parse_v2(headers: Mapping[str, str], raw_body: bytes, host: str | None, uris: Iterable[str]) -> SignedRequest:
    """Parse a v2 request.  ``headers`` must be case-insensitive (Chalice's are); ``raw_body`` is
    hashed exactly as received; ``uris``: the paths a device may have signed."""
    if len(raw_body) > MAX_BODY:
        raise refuse("invalid", "the request body is too large")
    doc = _json_object(raw_body)
    if doc is None:
        raise refuse("invalid", 'the request body must be a JSON object {"ProductId","DeviceName"}')
    pid, dn = _text_field(doc, "ProductId"), _text_field(doc, "DeviceName")

    def header(name: str) -> str:
        value = headers.get(name)
        if value is None or not str(value).strip():
            raise refuse("missing", f"header {name} is required")
        return str(value).strip()

    algorithm = header("X-TC-Algorithm")
    if algorithm.lower() != "hmacsha256":
        raise refuse("invalid", "X-TC-Algorithm must be hmacsha256")
    ts_text, nonce, signature = header("X-TC-Timestamp"), header("X-TC-Nonce"), header("X-TC-Signature")
    timestamp = _int_text(ts_text, "X-TC-Timestamp")
    _nonce(nonce, "X-TC-Nonce")
    bare_host = host_without_port(host)
    candidates = tuple(
        dict.fromkeys(
            string_to_sign_v2(bare_host, uri, algorithm, ts_text, nonce, raw_body) for uri in (*uris, V2_PATH) if uri
        )
    )
    return SignedRequest("v2", pid, dn, timestamp, nonce, signature, candidates)


def parse_legacy(raw_body: bytes) -> SignedRequest:
    """Parse a legacy request: a JSON body (whatever its Content-Type says); a genuinely
    form-encoded body is accepted too."""
    if len(raw_body) > MAX_BODY:
        raise refuse("invalid", "the request body is too large")
    doc = _json_object(raw_body)
    if doc is None:
        try:
            pairs = parse_qsl(raw_body.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
        except (UnicodeDecodeError, ValueError):
            pairs = []
        doc = dict(pairs) if pairs else None
    if doc is None:
        raise refuse("invalid", "the request body must be JSON {deviceName, nonce, productId, timestamp, signature}")
    dn, pid = _text_field(doc, "deviceName"), _text_field(doc, "productId")
    nonce, ts_text = _text_field(doc, "nonce"), _text_field(doc, "timestamp")
    signature = _text_field(doc, "signature")
    timestamp = _int_text(ts_text, "timestamp")
    _nonce(nonce, "nonce")
    return SignedRequest(
        "legacy", pid, dn, timestamp, nonce, signature, (string_to_sign_legacy(dn, nonce, pid, ts_text),)
    )
