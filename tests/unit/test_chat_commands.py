"""The chat's pure parts: the /fleet grammar, Slack rendering and Slack signature checks (SPEC §12)."""

from __future__ import annotations

import json

import pytest

from chalicelib.core.errors import FleetboxError
from chalicelib.handlers import chat_commands as cc
from chalicelib.protocol.chat import Button, Confirm, Image, Message
from chalicelib.protocol.slack import SlackAdapter
from tests import slack_signer

NOW = 1_800_000_000


# ------------------------------------------------------------------ grammar


def test_the_longest_command_wins_and_arguments_are_typed() -> None:
    p = cc.parse('device control ABCDEFGHIJ/lamp_1 power=1 on=true level=2.5 name="warm white" raw={bad --public')
    assert p.spec.words == ("device", "control") and p.public
    assert p.args["device"] == ("ABCDEFGHIJ", "lamp_1")
    assert p.args["values"] == [("power", 1), ("on", True), ("level", 2.5), ("name", "warm white"), ("raw", "{bad")]


def test_flags_take_their_value_with_or_without_equals() -> None:
    p = cc.parse("fence alarms sp_1 --since 2h --product=ABCDEFGHIJ")
    assert p.args == {"space_id": "sp_1"} and p.flags == {"since": 7200, "product": "ABCDEFGHIJ"}
    assert cc.parse("ota start fw1 --devices a,b").flags == {"devices": ["a", "b"]}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("device show ABCDEFGHIJ", "must be <ProductId>/<DeviceName>"),
        ("device show abc/d1", "must be <ProductId>/<DeviceName>"),
        ("batch create ABCDEFGHIJ -3", "whole number"),
        ("batch create ABCDEFGHIJ 3 zip", "must be one of qr"),
        ("batch create ABCDEFGHIJ", "quantity is missing"),
        ("product show ABCDEFGHIJ extra", "unexpected 'extra'"),
        ("fence alarms --since yesterday", "duration like 30m"),
        ("fence alarms --until 2h", "--until is not a flag"),
        ("fence alarms --since", "--since needs a value"),
        ("device control ABCDEFGHIJ/d1 novalue", "key=value"),
        ("device", "takes a subcommand"),
        ("launch rockets", "no command 'launch'"),
        ("device show 'ABCDEFGHIJ/d1", "does not parse"),
    ],
)
def test_mistakes_name_the_rule(text: str, reason: str) -> None:
    with pytest.raises(cc.UsageError) as err:
        cc.parse(text)
    assert reason in err.value.reason


def test_a_usage_error_carries_the_usage_line() -> None:
    with pytest.raises(cc.UsageError) as err:
        cc.parse("batch create ABCDEFGHIJ many")
    assert err.value.spec is not None and err.value.spec.usage == "/fleet batch create <product_id> <quantity> [qr]"


def test_an_empty_line_is_help_and_every_command_has_a_unique_name() -> None:
    assert cc.parse("").spec.words == ("help",)
    names = [s.words for s in cc.COMMANDS]
    assert len(names) == len(set(names))
    for words in (
        ("product", "list"), ("device", "find"), ("batch", "status"), ("ota", "retry"), ("rule", "test"),
        ("track",), ("video", "summarize"), ("stats",), ("whoami",), ("subscribe",), ("unsubscribe",),
    ):  # fmt: skip
        assert words in names


# ------------------------------------------------------------------ rendering


def test_render_has_a_fallback_blocks_and_an_ephemeral_default() -> None:
    msg = Message(
        "Disable devices? <@U1> & co",
        sections=["one"],
        fields=[("status", "online")] * 12,
        buttons=[
            Button("fleet.confirm", "Confirm", "p1", style="danger", confirm=Confirm("Sure?", "disables 12 devices"))
        ],
        image=Image("https://files.example/map.png", "trajectory"),
    )
    out = SlackAdapter(None).render(msg)
    assert out["response_type"] == "ephemeral" and "replace_original" not in out
    assert "&lt;@U1&gt; &amp; co" in out["text"]  # stored names cannot ping or link
    types = [b["type"] for b in out["blocks"]]
    assert types == ["section", "section", "section", "section", "image", "actions"]  # 12 fields: 10 + 2
    button = out["blocks"][-1]["elements"][0]
    assert button["confirm"]["text"]["text"] == "disables 12 devices" and button["style"] == "danger"
    assert "trajectory: https://files.example/map.png" in out["text"]
    public = SlackAdapter(None).render(Message("x", in_channel=True, replace_original=True))
    assert public["response_type"] == "in_channel" and public["replace_original"] is True


def test_render_cuts_long_text_to_slacks_limits() -> None:
    out = SlackAdapter(None).render(Message("x" * 5000, sections=["y" * 4000]))
    assert all(len(b["text"]["text"]) <= 3000 for b in out["blocks"]) and len(out["text"]) <= 3000


# ------------------------------------------------------------------ signatures


def _verify(body: bytes, headers: dict[str, str], now: float = NOW, secret: str = slack_signer.SECRET) -> None:
    SlackAdapter(secret).verify(headers, body, now)


def test_a_slack_signed_request_verifies_case_insensitively() -> None:
    body = b"team_id=T1&text=help"
    headers = {k.lower(): v for k, v in slack_signer.headers(body, ts=NOW).items()}
    _verify(body, headers)


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("stale", "AuthFailure.SignatureExpire"),
        ("future", "AuthFailure.SignatureExpire"),
        ("tampered", "AuthFailure.SignatureFailure"),
        ("unsigned", "AuthFailure.SignatureFailure"),
        ("no-timestamp", "AuthFailure.SignatureFailure"),
        ("bad-timestamp", "AuthFailure.SignatureFailure"),
        ("other-secret", "AuthFailure.SignatureFailure"),
        ("v1", "AuthFailure.SignatureFailure"),
        ("no-secret-configured", "AuthFailure.SignatureFailure"),
    ],
)
def test_signature_edge_cases(case: str, code: str) -> None:
    body = b"team_id=T1&text=help"
    headers = slack_signer.headers(body, ts=NOW)
    now, secret = float(NOW), slack_signer.SECRET
    if case == "stale":
        now = NOW + 301
    elif case == "future":
        now = NOW - 301
    elif case == "tampered":
        body = body + b"&x=1"
    elif case == "unsigned":
        del headers["X-Slack-Signature"]
    elif case == "no-timestamp":
        del headers["X-Slack-Request-Timestamp"]
    elif case == "bad-timestamp":
        headers["X-Slack-Request-Timestamp"] = "1.8e9"
    elif case == "other-secret":
        headers = slack_signer.headers(body, secret="another-secret", ts=NOW)
    elif case == "v1":
        headers["X-Slack-Signature"] = headers["X-Slack-Signature"].replace("v0=", "v1=")
    elif case == "no-secret-configured":
        secret = ""
    with pytest.raises(FleetboxError) as err:
        _verify(body, headers, now, secret)
    assert err.value.code == code and err.value.status == 401


def test_the_window_edge_is_inclusive() -> None:
    body = b"x=1"
    _verify(body, slack_signer.headers(body, ts=NOW), now=NOW + 300)


def test_click_parsing_reads_the_retry_header_and_refuses_junk() -> None:
    body = slack_signer.click_body("pending1", "U0ADMIN01", "https://hooks.slack.com/actions/T/1/x")
    click = SlackAdapter(None).parse_click({"X-Slack-Retry-Num": "2"}, body)
    assert (click.value, click.delivery_id, click.where.ref) == ("pending1", "2", "slack:T0FLEET01:C0OPS0001")
    junk = json.dumps({"team": {"id": "T1X"}, "user": {"id": "U1X"}, "channel": {"id": "C1X"}, "actions": []})
    with pytest.raises(FleetboxError) as err:
        SlackAdapter(None).parse_click({}, b"payload=" + junk.encode())
    assert err.value.field == "payload.actions"
