"""Posting a rendered chat message to a response URL (Slack's ``response_url``) with
``slack_sdk.webhook.WebhookClient``.

Only Slack's own hooks host is a valid response URL; the local stack and the tests (which set
``FLEETBOX_ALLOW_LOOPBACK``) may also name a loopback receiver, checked by the webhook SSRF
filter.  The budget (5 posts per URL in 30 minutes) is the caller's (``services/chat``): this
module only sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from slack_sdk.webhook import WebhookClient

from ..core import errors
from ..core.config import settings
from ..core.observability import logger
from . import webhook

#: where Slack's response URLs live
SLACK_HOOKS = ("hooks.slack.com",)
TIMEOUT_S = 10


@dataclass(frozen=True)
class Posted:
    ok: bool
    status: int
    #: a short, secret-free reason when not ok
    reason: str = ""


def check_response_url(url: Any) -> str:
    """``url`` if replies may go there, else a FleetboxError naming ``response_url``."""
    if not isinstance(url, str) or len(url) > 2048:
        raise errors.CHAT_PAYLOAD_INVALID("response_url must be a URL of at most 2048 characters", "response_url")
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname in SLACK_HOOKS:
        return url
    if settings().allow_loopback_targets:
        return webhook.check_url(url, "response_url")
    raise errors.CHAT_PAYLOAD_INVALID("response_url must be a https://hooks.slack.com/ URL", "response_url")


def post(url: str, payload: dict[str, Any]) -> Posted:
    """Send ``payload`` (a rendered message) to ``url``; never raises for a network failure."""
    check_response_url(url)
    try:
        reply = WebhookClient(url, timeout=TIMEOUT_S).send_dict(payload)
    except Exception as exc:  # noqa: BLE001 - a chat reply that cannot be sent is logged, not raised
        logger.warning("chat reply not sent", extra={"error": type(exc).__name__})
        return Posted(False, 0, type(exc).__name__)
    if reply.status_code >= 300:
        logger.warning("chat reply refused", extra={"status": reply.status_code})
        return Posted(False, reply.status_code, f"HTTP {reply.status_code}")
    return Posted(True, reply.status_code)
