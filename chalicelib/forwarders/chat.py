"""Sending chat messages (SPEC §12 alerts, §9.3 chat push): the delivery engine's ``chat`` target.

A chat job (``k: "chat"``, queued by ``delivery.deliver_chat``) carries a channel ref and a
neutral :class:`~chalicelib.protocol.chat.Message` (:func:`dump_message`).  Each attempt renders
it with the platform's adapter (``protocol/``) and sends it with the platform's sender below —
so a third platform is one adapter plus one entry in :data:`SENDERS`:

* ``slack:{team}:{channel}`` — ``slack_sdk.WebClient(token=<the bot token: FLEETBOX_SLACK_BOT_TOKEN
  or the Secrets Manager secret of FLEETBOX_SLACK_SECRET_ARN>,
  base_url=FLEETBOX_SLACK_API_URL).chat_postMessage(channel, blocks, text)``; Slack's ``ok:
  false`` errors that retrying cannot fix (unknown channel, bad token …) are permanent, a 429
  honours ``Retry-After``;
* ``feishu:{channel id}`` — a POST of the rendered message, with ``timestamp`` and ``sign``
  when the bot has a secret, to the registered webhook URL through the webhook engine's
  SSRF-guarded client; Feishu answers HTTP 200 with ``{"code": 0}`` on success and a non-zero
  ``code`` otherwise.

Retries: :data:`RETRY_S` (1, 3, 10 s) from the first attempt, then a dead letter with the reason.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from ..core.config import chat_secret, settings
from ..models.chat_alerts import ChatChannelRecord
from ..protocol import diagnostics
from ..protocol.chat import Button, Confirm, Image, Message
from ..protocol.feishu import FeishuAdapter, signed
from ..protocol.slack import SlackAdapter
from . import base, webhook
from .webhook import Outcome

#: attempt offsets from the first attempt, as webhooks (Slack's 429 + Retry-After is honoured)
RETRY_S: tuple[float, ...] = base.RETRY_S
CODE = diagnostics.FORWARD_THIRD_SYSTEM_ERR
#: Slack errors retrying cannot fix (https://api.slack.com/methods/chat.postMessage#errors)
SLACK_PERMANENT = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "no_permission",
        "missing_scope",
        "invalid_blocks",
        "invalid_arguments",
        "msg_too_long",
        "no_text",
        "restricted_action",
    }
)
#: Feishu custom-bot codes that will not heal (bad signature, IP not allowed, keyword missing)
FEISHU_PERMANENT = frozenset({19021, 19022, 19024, 9499})


# ===================================================================== messages on the queue


def dump_message(message: Message) -> dict[str, Any]:
    return asdict(message)


def load_message(doc: Mapping[str, Any]) -> Message:
    image = doc.get("image")
    buttons = []
    for b in doc.get("buttons") or []:
        b = dict(b)
        confirm = b.pop("confirm", None)
        buttons.append(Button(**b, confirm=Confirm(**confirm) if confirm else None))
    return Message(
        text=doc.get("text", ""),
        sections=list(doc.get("sections") or []),
        fields=[(str(k), str(v)) for k, v in doc.get("fields") or []],
        buttons=buttons,
        image=Image(**image) if image else None,
        in_channel=bool(doc.get("in_channel")),
        replace_original=bool(doc.get("replace_original")),
    )


def platform_of(channel: str) -> str:
    return channel.split(":", 1)[0]


# ===================================================================== Slack


#: rendering only: sending needs no signing secret (that verifies what Slack sends us)
_slack = SlackAdapter(None)


def _send_slack(channel: str, message: Message, webhook_id: str) -> Outcome:
    s = settings()
    token = chat_secret("bot_token")
    if not token:
        return Outcome(
            False, error="FLEETBOX_SLACK_BOT_TOKEN is not set: Slack alerts cannot be sent", code=CODE, permanent=True
        )
    _, _team, channel_id = channel.split(":", 2)
    payload = _slack.render(message)
    client = WebClient(
        token=token,
        base_url=s.slack_api_url,
        timeout=int(s.webhook_connect_timeout_s + s.webhook_read_timeout_s),
    )
    started = time.monotonic()
    try:
        reply = client.chat_postMessage(channel=channel_id, text=payload["text"], blocks=payload["blocks"])
    except SlackApiError as exc:
        resp = exc.response
        error = str(resp.get("error") or "error") if hasattr(resp, "get") else "error"
        status = getattr(resp, "status_code", None)
        retry_after = None
        if status == 429:
            try:
                retry_after = float((resp.headers or {}).get("Retry-After") or (resp.headers or {}).get("retry-after"))
            except (TypeError, ValueError):
                retry_after = None
        return Outcome(
            False,
            status,
            _ms(started),
            error=f"Slack: {error}"[:200],
            code=CODE,
            retry_after_s=retry_after,
            permanent=error in SLACK_PERMANENT,
        )
    except Exception as exc:  # noqa: BLE001 - network failures: retried, with our words only
        return Outcome(
            False,
            latency_ms=_ms(started),
            error=f"Slack unreachable: {type(exc).__name__}",
            code=diagnostics.FORWARD_THIRD_NOT_RESPONDING,
        )
    return Outcome(True, reply.status_code, _ms(started), snippet=f"ts={reply.get('ts')}")


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


# ===================================================================== Feishu / Lark

_feishu = FeishuAdapter()


def _send_feishu(channel: str, message: Message, webhook_id: str) -> Outcome:
    channel_id = channel.split(":", 1)[1]
    try:
        rec = ChatChannelRecord.get("channel", channel_id)
    except ChatChannelRecord.DoesNotExist:
        return Outcome(False, error=f"the chat channel {channel_id} no longer exists", code=CODE, permanent=True)
    body = signed(_feishu.render(message), rec.secret, int(time.time()))
    outcome = webhook.attempt({"url": rec.webhook_url}, body, webhook_id)
    if not outcome.ok:
        return outcome
    try:
        answer = json.loads(outcome.snippet or "{}")
    except ValueError:
        answer = {}
    code = answer.get("code", answer.get("StatusCode", 0)) if isinstance(answer, dict) else 0
    if code not in (0, None):
        msg = str(answer.get("msg") or answer.get("StatusMessage") or "")[:120]
        return Outcome(
            False,
            outcome.status,
            outcome.latency_ms,
            outcome.snippet,
            error=f"Feishu code {code}: {msg}",
            code=CODE,
            permanent=code in FEISHU_PERMANENT,
        )
    return outcome


# ===================================================================== the engine's entry

#: platform -> sender(channel ref, message, webhook id)
SENDERS: dict[str, Callable[[str, Message, str], Outcome]] = {"slack": _send_slack, "feishu": _send_feishu}


def send(channel: str, message_doc: Mapping[str, Any], webhook_id: str) -> Outcome:
    """One attempt to post a message to a channel; never raises for the platform's faults."""
    sender = SENDERS.get(platform_of(channel))
    if sender is None:
        return Outcome(False, error=f"no sender for the chat platform of {channel}", code=CODE, permanent=True)
    return sender(channel, load_message(message_doc), webhook_id)
