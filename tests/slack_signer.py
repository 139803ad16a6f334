"""Sign requests the way Slack does (the tests' own code, not slack_sdk's): ``X-Slack-Signature:
v0=`` hex HMAC-SHA256 of ``v0:{timestamp}:{raw body}`` with the app's signing secret."""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import time
from typing import Any
from urllib.parse import urlencode

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # a test signing secret (Slack's documentation format)
TEAM, CHANNEL = "T0FLEET01", "C0OPS0001"


def headers(body: bytes, secret: str = SECRET, ts: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if ts is None else ts)
    mac = hmac.new(secret.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": f"v0={mac}",
    }


def command_body(text: str, user: str, response_url: str, team: str = TEAM, channel: str = CHANNEL) -> bytes:
    return urlencode(
        {
            "token": "deprecated-verification-token",
            "team_id": team,
            "team_domain": "fleet",
            "channel_id": channel,
            "channel_name": "ops",
            "user_id": user,
            "user_name": user.lower(),
            "command": "/fleet",
            "text": text,
            "response_url": response_url,
            "trigger_id": "1.2.3",
        }
    ).encode()


def click_body(
    value: str, user: str, response_url: str, action_id: str = "fleet.confirm", team: str = TEAM, channel: str = CHANNEL
) -> bytes:
    payload: dict[str, Any] = {
        "type": "block_actions",
        "team": {"id": team, "domain": "fleet"},
        "user": {"id": user, "username": user.lower(), "team_id": team},
        "channel": {"id": channel, "name": "ops"},
        "response_url": response_url,
        "actions": [{"action_id": action_id, "block_id": "b1", "value": value, "type": "button"}],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def button_value(message: dict[str, Any], action_id: str = "fleet.confirm") -> str:
    """The value of the button ``action_id`` in a rendered Block Kit message."""
    for block in message.get("blocks", []):
        for element in block.get("elements", []) if block.get("type") == "actions" else []:
            if element.get("action_id") == action_id:
                return element["value"]
    raise AssertionError(f"no {action_id} button in {message}")


def confirm_text(message: dict[str, Any]) -> str:
    """The text of the confirm dialog on the message's confirm button."""
    for block in message.get("blocks", []):
        for element in block.get("elements", []) if block.get("type") == "actions" else []:
            if element.get("action_id") == "fleet.confirm":
                return element["confirm"]["text"]["text"]
    raise AssertionError("no confirm dialog")


def all_text(message: Any) -> str:
    """Everything a message shows (fallback text and blocks) as one string, as Slack displays it
    (mrkdwn escapes undone)."""
    return html.unescape(json.dumps(message, ensure_ascii=False))
