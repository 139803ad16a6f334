"""MQTT key authentication (SPEC §6.2, §6.6): Tencent-style username and password.

* ClientId = ``{pid}{dn}``.
* Username = ``{pid}{dn};{sdkappid};{connid};{expiry}`` — any sdkappid, connid of 5
  alphanumerics, expiry a 64-bit integer compared *as given* with the current Unix time
  in **seconds**: it must be greater.  Tencent's Python SDK sends its process start time
  in milliseconds there and re-sends it on every reconnect, so a millisecond value always
  passes and the field is never a freshness or replay check.
* Password = lowercase hex HMAC(key = base64-**decoded** device secret, msg = username),
  then ``;hmacsha256`` or ``;hmacsha1``.

Pure functions, no I/O.  Every refusal is a :class:`Refused` with a stable ``reason``
(for logs, diagnostics and the local broker) and a human ``message``; neither ever
contains the password or the secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from . import topics

ALGORITHMS = {"hmacsha256": hashlib.sha256, "hmacsha1": hashlib.sha1}
CONNID_RE = re.compile(r"[A-Za-z0-9]{5}")
_EXPIRY_RE = re.compile(r"[0-9]{1,19}")
_INT64_MAX = 2**63 - 1
#: the sdkappid Tencent's SDKs send (any value is accepted)
DEFAULT_SDKAPPID = "12010126"

# refusal reasons (stable: the local broker and the diagnostics show them)
USERNAME_MALFORMED = "username_malformed"
CLIENT_ID_MISMATCH = "client_id_mismatch"
CONNID_INVALID = "connid_invalid"
EXPIRY_INVALID = "expiry_invalid"
EXPIRED = "expired"
PASSWORD_MALFORMED = "password_malformed"
ALGORITHM_UNSUPPORTED = "algorithm_unsupported"
SIGNATURE_MISMATCH = "signature_mismatch"
SECRET_UNUSABLE = "secret_unusable"


class Refused(Exception):
    """An authentication refusal: ``reason`` is a stable code, ``message`` is for people."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Username:
    product_id: str
    device_name: str
    sdkappid: str
    connid: str
    expiry: int
    raw: str

    @property
    def client_id(self) -> str:
        return self.product_id + self.device_name


def parse_username(username: str) -> Username:
    """Split and check a username; raise :class:`Refused` saying which part is wrong."""
    if not isinstance(username, str) or not username:
        raise Refused(USERNAME_MALFORMED, "username is empty")
    parts = username.split(";")
    if len(parts) != 4:
        raise Refused(USERNAME_MALFORMED, "username must be {ProductId}{DeviceName};{sdkappid};{connid};{expiry}")
    client, sdkappid, connid, expiry_text = parts
    try:
        pid, dn = topics.split_client_id(client)
    except ValueError:
        raise Refused(USERNAME_MALFORMED, "the username's first field is not {ProductId}{DeviceName}") from None
    if not CONNID_RE.fullmatch(connid):
        raise Refused(CONNID_INVALID, "connid must be 5 letters or digits")
    if not _EXPIRY_RE.fullmatch(expiry_text) or int(expiry_text) > _INT64_MAX:
        raise Refused(EXPIRY_INVALID, "expiry must be a non-negative 64-bit integer")
    return Username(pid, dn, sdkappid, connid, int(expiry_text), username)


def check_expiry(user: Username, now_s: int) -> None:
    """The expiry must be greater than now in seconds (a millisecond value always is)."""
    if user.expiry <= now_s:
        raise Refused(EXPIRED, f"the username expired at {user.expiry} (now {now_s})")


def _key(secret_b64: str) -> bytes:
    try:
        key = base64.b64decode(secret_b64 or "", validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not key:
        raise Refused(SECRET_UNUSABLE, "the device has no usable key secret")
    return key


def signature(username: str, secret_b64: str, algorithm: str = "hmacsha256") -> str:
    """Lowercase hex HMAC of ``username`` keyed with the base64-decoded secret."""
    digest = ALGORITHMS.get(algorithm)
    if digest is None:
        raise Refused(ALGORITHM_UNSUPPORTED, "the password's algorithm must be hmacsha256 or hmacsha1")
    return hmac.new(_key(secret_b64), username.encode("utf-8"), digest).hexdigest()


def password(username: str, secret_b64: str, algorithm: str = "hmacsha256") -> str:
    """The password a device sends: ``{hex};{algorithm}``."""
    return f"{signature(username, secret_b64, algorithm)};{algorithm}"


def verify_password(username: str, given: str, secret_b64: str) -> str:
    """Check ``given`` against the username and secret; return the algorithm used.

    Constant-time comparison; the hex may come in either letter case.
    """
    if not isinstance(given, str) or given.count(";") != 1:
        raise Refused(PASSWORD_MALFORMED, "password must be {hex hmac};hmacsha256 or ;hmacsha1")
    mac, algorithm = given.split(";")
    algorithm = algorithm.strip().lower()
    if algorithm not in ALGORITHMS:
        raise Refused(ALGORITHM_UNSUPPORTED, "the password's algorithm must be hmacsha256 or hmacsha1")
    expected = signature(username, secret_b64, algorithm)
    if not hmac.compare_digest(expected.encode(), mac.strip().lower().encode("utf-8", errors="replace")):
        raise Refused(SIGNATURE_MISMATCH, "the password does not match the device secret")
    return algorithm


def authenticate(client_id: str | None, username: str, given_password: str, secret_b64: str, now_s: int) -> Username:
    """The whole check once the device's secret is known: username shape, client id, expiry, password."""
    user = parse_username(username)
    check_client_id(user, client_id)
    check_expiry(user, now_s)
    verify_password(username, given_password, secret_b64)
    return user


def check_client_id(user: Username, client_id: str | None) -> None:
    if client_id != user.client_id:
        raise Refused(CLIENT_ID_MISMATCH, "the client id must be the username's {ProductId}{DeviceName}")


def credentials(
    product_id: str,
    device_name: str,
    secret_b64: str,
    *,
    algorithm: str = "hmacsha256",
    expiry: int | None = None,
    connid: str | None = None,
    sdkappid: str = DEFAULT_SDKAPPID,
    now_s: int | None = None,
) -> tuple[str, str, str]:
    """``(client_id, username, password)`` as a Tencent SDK device builds them (simulator, tests).

    Default expiry: now + 1 hour in seconds (pass a millisecond value to mimic the Python SDK).
    """
    connid = connid or "".join(
        secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") for _ in range(5)
    )
    if expiry is None:
        expiry = int(now_s if now_s is not None else time.time()) + 3600
    username = f"{product_id}{device_name};{sdkappid};{connid};{expiry}"
    return product_id + device_name, username, password(username, secret_b64, algorithm)
