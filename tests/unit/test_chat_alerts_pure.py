"""The pure parts of the chat alerts: the Feishu adapter (render, sign), the queue form of a message and the rate limiter's window words and keys."""

from __future__ import annotations

import base64
import json

import pytest

from chalicelib.core import errors
from chalicelib.forwarders.chat import dump_message, load_message
from chalicelib.protocol.chat import Button, Confirm, Image, Message
from chalicelib.protocol.feishu import FeishuAdapter, sign, signed
from chalicelib.services import chat_limit
from tests.chat_receivers import feishu_sign_ok

# ------------------------------------------------------------------ Feishu signing


def test_feishu_sign_is_what_a_feishu_receiver_verifies() -> None:
    got = sign(1599360473, "demoSecret")
    assert len(base64.b64decode(got)) == 32  # an HMAC-SHA256, base64
    assert feishu_sign_ok("demoSecret", "1599360473", got, now=1599360473)
    assert not feishu_sign_ok("otherSecret", "1599360473", got, now=1599360473)
    assert sign(1599360474, "demoSecret") != got and sign("1599360473", "demoSecret") == got


def test_signed_bodies_carry_timestamp_and_sign_only_with_a_secret() -> None:
    payload = {"msg_type": "text", "content": {"text": "hi"}}
    body = signed(payload, "s3cr3t", 1700000000)
    assert body["timestamp"] == "1700000000" and body["sign"] == sign(1700000000, "s3cr3t")
    assert {k: body[k] for k in payload} == payload
    assert signed(payload, None, 1700000000) == payload
    assert feishu_sign_ok("s3cr3t", body["timestamp"], body["sign"], now=1700000100)
    assert not feishu_sign_ok("s3cr3t", body["timestamp"], body["sign"], now=1700000000 + 3601)  # over an hour


# ------------------------------------------------------------------ Feishu rendering


def test_a_text_only_message_is_a_feishu_text_message() -> None:
    assert FeishuAdapter().render(Message(text="hello")) == {"msg_type": "text", "content": {"text": "hello"}}


def test_a_rich_message_is_an_interactive_card_with_everything_a_custom_bot_can_show() -> None:
    msg = Message(
        text="P/d1 entered fence yard",
        sections=["more *detail*"],
        fields=[("Device", "d1"), ("Type", "enter")],
        buttons=[
            Button("open", "Open map", "", url="https://example.com/map"),
            Button("ack", "Acknowledge", "x", confirm=Confirm("Sure?", "really")),
        ],
        image=Image("https://example.com/map.png", "map"),
    )
    card = FeishuAdapter().render(msg)
    assert card["msg_type"] == "interactive"
    assert card["card"]["header"]["title"] == {"tag": "plain_text", "content": "P/d1 entered fence yard"}
    elements = card["card"]["elements"]
    assert elements[0] == {"tag": "div", "text": {"tag": "lark_md", "content": "more *detail*"}}
    assert [f["text"]["content"] for f in elements[1]["fields"]] == ["**Device**\nd1", "**Type**\nenter"]
    assert "(https://example.com/map.png)" in elements[2]["text"]["content"]
    (action,) = [e for e in elements if e["tag"] == "action"]
    # an action button needs an inbound bot: only the link button is kept
    assert [(a["text"]["content"], a["url"]) for a in action["actions"]] == [("Open map", "https://example.com/map")]


def test_long_texts_are_cut_not_refused() -> None:
    card = FeishuAdapter().render(Message(text="x" * 10_000))
    assert len(card["content"]["text"]) == 4000 and card["content"]["text"].endswith("…")


def test_a_feishu_custom_bot_refuses_inbound_requests_clearly() -> None:
    adapter = FeishuAdapter()
    assert adapter.inbound is False and adapter.platform == "feishu"
    for call in (
        lambda: adapter.verify({}, b"", 0.0),
        lambda: adapter.parse_command({}, b""),
        lambda: adapter.parse_click({}, b""),
    ):
        with pytest.raises(errors.FleetboxError) as caught:
            call()
        assert caught.value.code == "UnsupportedOperation.ChatInboundUnsupported"


# ------------------------------------------------------------------ the queue form


def test_a_message_survives_the_queue() -> None:
    msg = Message(
        text="t",
        sections=["s"],
        fields=[("a", "b")],
        buttons=[Button("id", "L", "v", style="danger", confirm=Confirm("T", "x"))],
        image=Image("https://e/x.png", "x"),
        in_channel=True,
    )
    assert load_message(json.loads(json.dumps(dump_message(msg)))) == msg


# ------------------------------------------------------------------ the rate limiter's words and keys


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(60, "the last minute"), (120, "the last 2 min"), (5, "the last 5 s"), (90, "the last 90 s")],
)
def test_window_words(seconds: int, words: str) -> None:
    assert chat_limit.window_text(seconds) == words


def test_limiter_keys_separate_channel_kind_and_device() -> None:
    base = chat_limit.key_of("slack:T1:C1", "fence.alarm", "P/d1")
    assert base == chat_limit.key_of("slack:T1:C1", "fence.alarm", "P/d1") and len(base) == 32
    others = {
        chat_limit.key_of("slack:T1:C2", "fence.alarm", "P/d1"),
        chat_limit.key_of("slack:T1:C1", "ota.device.failed", "P/d1"),
        chat_limit.key_of("slack:T1:C1", "fence.alarm", "P/d2"),
    }
    assert base not in others and len(others) == 3
