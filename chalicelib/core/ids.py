"""Identifier generation (SPEC §1)."""

from __future__ import annotations

import base64
import secrets
import uuid

_UPPER_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_LOWER_DIGITS = "abcdefghijklmnopqrstuvwxyz0123456789"
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def product_id() -> str:
    """10 characters [A-Z0-9]."""
    return "".join(secrets.choice(_UPPER_DIGITS) for _ in range(10))


#: first characters a spreadsheet reads as a formula (OWASP CSV injection)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def device_secret() -> str:
    """16 random bytes, base64 (24 characters).  Never one that starts with ``+`` (1 in 64 would):
    secrets travel in CSV files, where such a cell must either be escaped — and no longer decode
    — or be read as a formula; so none is ever made (SPEC §7.1)."""
    while True:
        secret = base64.b64encode(secrets.token_bytes(16)).decode()
        if not secret.startswith(FORMULA_START):
            return secret


def product_secret() -> str:
    """24 characters [A-Za-z0-9]."""
    return "".join(secrets.choice(_ALNUM) for _ in range(24))


def short_id(prefix: str, length: int = 12) -> str:
    return prefix + "".join(secrets.choice(_LOWER_DIGITS) for _ in range(length))


def request_id() -> str:
    return str(uuid.uuid4())
