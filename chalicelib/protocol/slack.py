"""Slack behind the chat seam (:class:`chalicelib.protocol.chat.ChatAdapter`).

Inbound requests are form posts (``application/x-www-form-urlencoded``) signed with the app's
signing secret: ``X-Slack-Signature: v0=`` hex HMAC-SHA256 of ``v0:{X-Slack-Request-Timestamp}:{raw
body}``, refused outside a 5-minute window; the check is ``slack_sdk``'s own
:class:`~slack_sdk.signature.SignatureVerifier` (constant-time compare).  Slash commands carry
``team_id``, ``channel_id``, ``user_id``, ``text``, ``response_url``; button clicks carry one
``payload`` field of JSON (``block_actions``).  Replies are Block Kit built with
``slack_sdk.models.blocks`` with the plain-text ``text`` fallback Slack shows in notifications.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ConfirmObject,
    ImageBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)
from slack_sdk.signature import Clock, SignatureVerifier

from ..core import errors
from .chat import ChatAdapter, Click, Command, Message, Where, Who

#: Slack's replay window (its verifier's, and SPEC §12's)
WINDOW_S = 300
#: a Slack id (team, channel, user): upper-case letters and digits
SLACK_ID = re.compile(r"[A-Z0-9]{2,32}")
#: Block Kit limits: section text, fields per section, field text, fallback text
_SECTION_MAX, _FIELDS_MAX, _FIELD_MAX, _TEXT_MAX = 3000, 10, 2000, 3000


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return str(value)
    return None


def _form(raw_body: bytes) -> dict[str, str]:
    try:
        text = raw_body.decode("utf-8")
        fields = parse_qs(text, keep_blank_values=True, strict_parsing=False, max_num_fields=64)
    except (UnicodeDecodeError, ValueError):
        raise errors.CHAT_PAYLOAD_INVALID("the body must be a UTF-8 form (application/x-www-form-urlencoded)", "body")
    return {k: v[0] for k, v in fields.items() if v}


def _slack_id(form: Mapping[str, Any], name: str, code: errors.ErrorCode) -> str:
    value = form.get(name)
    if not isinstance(value, str) or not SLACK_ID.fullmatch(value):
        raise code(f"{name} must be a Slack id (2-32 upper-case letters and digits)", name)
    return value


def escape(text: str) -> str:
    """Slack mrkdwn control characters (``&``, ``<``, ``>``) escaped, so stored names cannot ping or link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class SlackAdapter(ChatAdapter):
    platform = "slack"

    def __init__(self, signing_secret: str | None):
        self._secret = signing_secret

    def verify(self, headers: Mapping[str, str], raw_body: bytes, now: float) -> None:
        if not self._secret:
            raise errors.SIGNATURE_FAILURE(
                "this deployment has no Slack signing secret configured", "X-Slack-Signature"
            )
        stamp = _header(headers, "x-slack-request-timestamp")
        signature = _header(headers, "x-slack-signature")
        if not stamp or not signature:
            raise errors.SIGNATURE_FAILURE(
                "X-Slack-Request-Timestamp and X-Slack-Signature are required", "X-Slack-Signature"
            )
        if not stamp.isdigit() or len(stamp) > 12:
            raise errors.SIGNATURE_FAILURE(
                "X-Slack-Request-Timestamp must be Unix seconds", "X-Slack-Request-Timestamp"
            )
        if abs(now - int(stamp)) > WINDOW_S:
            raise errors.SIGNATURE_EXPIRE(
                f"the request was signed more than {WINDOW_S} s from now (replay window)", "X-Slack-Request-Timestamp"
            )

        class _At(Clock):
            def now(self) -> float:
                return now

        if not SignatureVerifier(self._secret, clock=_At()).is_valid(raw_body, stamp, signature):
            raise errors.SIGNATURE_FAILURE("X-Slack-Signature does not match the request", "X-Slack-Signature")

    def is_ssl_check(self, raw_body: bytes) -> bool:
        """Slack's periodic certificate check of a command URL (``ssl_check=1``): answer 200, run nothing."""
        try:
            return _form(raw_body).get("ssl_check") == "1"
        except errors.FleetboxError:
            return False

    def parse_command(self, headers: Mapping[str, str], raw_body: bytes) -> Command:
        form = _form(raw_body)
        team = _slack_id(form, "team_id", errors.CHAT_TEAM_ID_INVALID)
        user = _slack_id(form, "user_id", errors.CHAT_USER_ID_INVALID)
        channel = _slack_id(form, "channel_id", errors.CHAT_CHANNEL_INVALID)
        text = form.get("text", "")
        if len(text) > 4000:
            raise errors.CHAT_PAYLOAD_INVALID("text must be at most 4000 characters", "text")
        return Command(
            who=Who("slack", team, user, form.get("user_name", "")[:80]),
            where=Where("slack", team, channel),
            command=form.get("command", "/fleet")[:32],
            text=text,
            response_url=form.get("response_url") or None,
            trigger_id=form.get("trigger_id") or None,
        )

    def parse_click(self, headers: Mapping[str, str], raw_body: bytes) -> Click:
        form = _form(raw_body)
        try:
            payload = json.loads(form.get("payload") or "")
        except ValueError:
            raise errors.CHAT_PAYLOAD_INVALID("payload must be the interaction's JSON", "payload")
        if not isinstance(payload, dict):
            raise errors.CHAT_PAYLOAD_INVALID("payload must be a JSON object", "payload")
        team_part = payload.get("team") or {}
        user_part = payload.get("user") or {}
        channel_part = payload.get("channel") or {}
        actions = payload.get("actions")
        if not (isinstance(team_part, dict) and isinstance(user_part, dict) and isinstance(channel_part, dict)):
            raise errors.CHAT_PAYLOAD_INVALID("team, user and channel must be objects", "payload")
        if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
            raise errors.CHAT_PAYLOAD_INVALID("actions must hold the clicked button", "payload.actions")
        team = _slack_id(team_part, "id", errors.CHAT_TEAM_ID_INVALID)
        user = _slack_id(user_part, "id", errors.CHAT_USER_ID_INVALID)
        channel = _slack_id(channel_part, "id", errors.CHAT_CHANNEL_INVALID)
        action = actions[0]
        action_id, value = action.get("action_id"), action.get("value", "")
        if not isinstance(action_id, str) or not isinstance(value, str) or len(value) > 200:
            raise errors.CHAT_PAYLOAD_INVALID("the clicked button has no action_id/value", "payload.actions")
        retry = _header(headers, "x-slack-retry-num")
        return Click(
            who=Who("slack", team, user, str(user_part.get("username") or user_part.get("name") or "")[:80]),
            where=Where("slack", team, channel),
            action_id=action_id[:64],
            value=value,
            response_url=payload.get("response_url") if isinstance(payload.get("response_url"), str) else None,
            delivery_id=retry,
        )

    def render(self, message: Message) -> dict[str, Any]:
        blocks: list[Any] = [SectionBlock(text=MarkdownTextObject(text=_cut(escape(message.text), _SECTION_MAX)))]
        for section in message.sections:
            blocks.append(SectionBlock(text=MarkdownTextObject(text=_cut(escape(section), _SECTION_MAX))))
        pairs = message.fields
        for start in range(0, len(pairs), _FIELDS_MAX):
            chunk = pairs[start : start + _FIELDS_MAX]
            blocks.append(
                SectionBlock(
                    fields=[MarkdownTextObject(text=_cut(f"*{escape(k)}*\n{escape(v)}", _FIELD_MAX)) for k, v in chunk]
                )
            )
        if message.image is not None:
            blocks.append(ImageBlock(image_url=message.image.url, alt_text=_cut(message.image.alt, 2000)))
        if message.buttons:
            elements = []
            for b in message.buttons:
                confirm = None
                if b.confirm is not None:
                    confirm = ConfirmObject(
                        title=PlainTextObject(text=_cut(b.confirm.title, 100)),
                        text=MarkdownTextObject(text=_cut(escape(b.confirm.text), 300)),
                        confirm=PlainTextObject(text=_cut(b.confirm.ok, 30)),
                        deny=PlainTextObject(text=_cut(b.confirm.deny, 30)),
                    )
                elements.append(
                    ButtonElement(
                        text=PlainTextObject(text=_cut(b.label, 75)),
                        action_id=b.action_id,
                        value=b.value or None,
                        style=b.style,
                        confirm=confirm,
                        url=b.url,
                    )
                )
            blocks.append(ActionsBlock(elements=elements))
        body: dict[str, Any] = {
            "text": _cut(escape(_fallback(message)), _TEXT_MAX),
            "blocks": [b.to_dict() for b in blocks[:50]],
            "response_type": "in_channel" if message.in_channel else "ephemeral",
        }
        if message.replace_original:
            body["replace_original"] = True
        return body


def _fallback(message: Message) -> str:
    """The plain-text version of the whole message (notifications, screen readers, old clients)."""
    lines = [message.text, *message.sections, *(f"{k}: {v}" for k, v in message.fields)]
    if message.image is not None:
        lines.append(f"{message.image.alt}: {message.image.url}")
    return "\n".join(lines)
