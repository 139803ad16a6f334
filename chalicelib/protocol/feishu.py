"""The Feishu/Lark adapter (SPEC §12): a custom bot only receives posts, so this adapter is
outbound only (``inbound = False``; nothing routes requests to it).

* :meth:`FeishuAdapter.render` — a neutral :class:`Message` as Feishu's message JSON: plain
  ``text`` when the message is only text, else an ``interactive`` card (header = the text,
  ``lark_md`` sections, a two-column field list, link buttons; an image becomes a link, since a
  custom bot cannot upload one; action buttons need an inbound bot and are left out).
* :func:`sign` — the custom bot's signature: ``base64(HMAC-SHA256(key = "{timestamp}\\n{secret}",
  msg = b""))`` with ``timestamp`` in seconds (Feishu accepts it within an hour); the body then
  carries ``"timestamp"`` (a string) and ``"sign"`` next to ``msg_type`` (:func:`signed`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from ..core import errors
from .chat import ChatAdapter, Click, Command, Message

#: Feishu limits a card's text; long alerts are cut, never refused
MAX_TEXT = 4000


def sign(timestamp: int | str, secret: str) -> str:
    """The custom bot signature of ``timestamp`` (seconds) with the bot's ``secret``."""
    key = f"{timestamp}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


def signed(payload: Mapping[str, Any], secret: str | None, now_s: int) -> dict[str, Any]:
    """``payload`` with ``timestamp`` and ``sign`` when the bot has a signing secret."""
    out = dict(payload)
    if secret:
        out["timestamp"] = str(now_s)
        out["sign"] = sign(now_s, secret)
    return out


def _cut(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _md(text: str) -> dict[str, Any]:
    return {"tag": "lark_md", "content": _cut(text)}


class FeishuAdapter(ChatAdapter):
    platform = "feishu"
    inbound = False

    def _refuse(self) -> errors.FleetboxError:
        return errors.CHAT_INBOUND_UNSUPPORTED(
            "a Feishu custom bot only receives messages: Feishu sends no commands to Fleetbox", "platform"
        )

    def verify(self, headers: Mapping[str, str], raw_body: bytes, now: float) -> None:
        raise self._refuse()

    def parse_command(self, headers: Mapping[str, str], raw_body: bytes) -> Command:
        raise self._refuse()

    def parse_click(self, headers: Mapping[str, str], raw_body: bytes) -> Click:
        raise self._refuse()

    def render(self, message: Message) -> dict[str, Any]:
        links = [b for b in message.buttons if b.url]
        if not (message.sections or message.fields or links or message.image):
            return {"msg_type": "text", "content": {"text": _cut(message.text)}}
        elements: list[dict[str, Any]] = [{"tag": "div", "text": _md(s)} for s in message.sections]
        if message.fields:
            elements.append(
                {
                    "tag": "div",
                    "fields": [{"is_short": True, "text": _md(f"**{k}**\n{v}")} for k, v in message.fields],
                }
            )
        if message.image:
            elements.append({"tag": "div", "text": _md(f"[{message.image.alt}]({message.image.url})")})
        if links:
            elements.append(
                {
                    "tag": "action",
                    "actions": [
                        {
                            "tag": "button",
                            "text": {"tag": "plain_text", "content": b.label},
                            "url": b.url,
                            "type": "danger" if b.style == "danger" else "primary" if b.style else "default",
                        }
                        for b in links
                    ],
                }
            )
        return {
            "msg_type": "interactive",
            "card": {
                "config": {"wide_screen_mode": True},
                "header": {"title": {"tag": "plain_text", "content": _cut(message.text, 200)}},
                "elements": elements,
            },
        }
