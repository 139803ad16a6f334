"""Gateway bind signatures (SPEC §6.5).

A gateway binding a subdevice proves it knows the subdevice's secret:
``signature = base64(HMAC-SHA256 or HMAC-SHA1(key = the subdevice secret *string* as ASCII,
"{subPid}{subDn};{random};{timestamp}"))`` — unlike the MQTT password, the key is the
secret's base64 text, not its decoded bytes.  ``signmethod`` names the hash
(``hmacsha256`` | ``hmacsha1``, any case; absent means ``hmacsha256``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

METHODS = {"hmacsha256": hashlib.sha256, "hmacsha1": hashlib.sha1}


def text_to_sign(product_id: str, device_name: str, random: int | str, timestamp: int | str) -> str:
    return f"{product_id}{device_name};{random};{timestamp}"


def sign(
    product_id: str, device_name: str, secret: str, random: int | str, timestamp: int | str, method: str = "hmacsha256"
) -> str:
    """The signature a gateway sends for subdevice ``{product_id}/{device_name}``."""
    digest = METHODS.get((method or "hmacsha256").lower())
    if digest is None:
        raise ValueError("signmethod must be hmacsha256 or hmacsha1")
    mac = hmac.new(
        secret.encode("ascii"), text_to_sign(product_id, device_name, random, timestamp).encode("utf-8"), digest
    ).digest()
    return base64.b64encode(mac).decode()


def verify(
    product_id: str,
    device_name: str,
    secret: str | None,
    random: int | str,
    timestamp: int | str,
    signature: str,
    method: str | None = "hmacsha256",
) -> bool:
    """Constant-time check of a bind signature; False for an unknown method, a missing secret or junk."""
    if not secret or not isinstance(signature, str):
        return False
    try:
        expected = sign(product_id, device_name, secret, random, timestamp, method or "hmacsha256")
    except (ValueError, UnicodeEncodeError):
        return False
    return hmac.compare_digest(expected.encode(), signature.strip().encode("utf-8", errors="replace"))
