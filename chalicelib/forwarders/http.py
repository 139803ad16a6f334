"""HTTP forward (SPEC §9.1/§9.2): the rule output in the HTTP envelope, signed, via the webhook engine.

Settings: ``url`` (SSRF-checked), optional ``token`` (SHA1 signature headers, also used by the
Echostr verification on enable), ``secret`` (Standard Webhooks; generated when absent).
"""

from __future__ import annotations

from typing import Any

from ..core import errors
from ..protocol import diagnostics
from . import webhook
from .base import RETRY_S, Delivery, text_field

CODE = diagnostics.FORWARD_THIRD_SYSTEM_ERR
__all__ = ["CODE", "RETRY_S", "validate", "send", "verify"]


def validate(action: dict[str, Any], path: str) -> dict[str, Any]:
    url = webhook.check_url(action.get("url"), f"{path}.url")
    token = text_field(
        action,
        "token",
        path,
        required=False,
        max_len=64,
        pattern=r"[A-Za-z0-9_\-]{1,64}",
        rule="must be 1-64 letters, digits, _ or -",
    )
    secret = action.get("secret") or webhook.new_secret()
    if not isinstance(secret, str) or not secret.startswith("whsec_"):
        raise errors.ACTION_INVALID(f"{path}.secret must be whsec_ followed by base64", f"{path}.secret")
    try:
        webhook.standard_signature(secret, "x", 0, b"")
    except (ValueError, TypeError):
        raise errors.ACTION_INVALID(f"{path}.secret must be whsec_ followed by base64", f"{path}.secret") from None
    out = {"type": "http", "url": url, "secret": secret}
    if token:
        out["token"] = token
    return out


def verify(action: dict[str, Any], path: str) -> None:
    """The Echostr check run when the rule is enabled."""
    webhook.verify_callback(action["url"], action.get("token"), f"{path}.url")


def send(d: Delivery) -> webhook.Outcome:
    return webhook.attempt(d.action, d.http_envelope(), d.webhook_id)
