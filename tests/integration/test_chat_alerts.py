"""Alerts in chat (SPEC §12, issue 15 part B): subscriptions, events → channels through the
delivery engine, the rate limiter, the Feishu channel, the data streams' chat push.

Slack's Web API and a Feishu custom bot cannot be reached from here: loopback stand-ins take their
place (``tests/chat_receivers.py``; the Feishu one verifies the signature with its own code).
Every test ends by reading every message the stand-ins received and finding no secret in any.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.core import clock
from tests.chat_receivers import FeishuStandIn, SlackStandIn
from tests.helpers import gps_property
from tests.integration.helpers import FakeQueue, drain_forwards, expect_error, make_device, ok, partner, report, run

SLACK_A = "slack:T0FLEET01:C0ALERTS1"
SLACK_B = "slack:T0FLEET01:C0OTHERS2"
BOT_TOKEN = "xoxb-test-token"
GPS_MODEL = {"version": "1.0", "properties": [gps_property()], "events": [], "actions": []}
PRODUCT = {
    "category": "custom",
    "device_type": "device",
    "comm_method": "wifi",
    "auth_type": "key",
    "data_protocol": "thing_model",
}


class Chat:
    """The world of one test: the stand-ins, the in-memory jobs queue, the secrets to look for."""

    def __init__(self, api: Any, slack: SlackStandIn, feishu: FeishuStandIn, queue: FakeQueue) -> None:
        self.api, self.slack, self.feishu, self.queue = api, slack, feishu, queue
        self.secrets: set[str] = {BOT_TOKEN, feishu.secret, api.key}

    def product(self, name: str) -> str:
        pid = ok(self.api.post("/v1/products", {**PRODUCT, "name": name}), 201)["product_id"]
        ok(self.api.put(f"/v1/products/{pid}/thing-model", GPS_MODEL))
        return pid

    def device(self, pid: str, dn: str) -> None:
        self.secrets.add(make_device(self.api, pid, dn)["secret"])

    def feishu_channel(self) -> str:
        ch = ok(
            self.api.post(
                "/v1/chat/bots",
                {"platform": "feishu", "name": "ops", "webhook_url": self.feishu.url, "secret": self.feishu.secret},
            ),
            201,
        )
        return ch["ref"]

    def subscribe(self, channel: str, kind: str, pid: str | None = None) -> dict[str, Any]:
        body = {"channel": channel, "kind": kind, **({"product_id": pid} if pid else {})}
        return ok(self.api.post("/v1/chat/subscriptions", body), 201)

    def settle(self, until: Any = lambda: True, timeout: float = 30.0) -> None:
        """Run the due job steps (event dispatch, summaries), then the forward queue."""
        self.queue.drain()
        drain_forwards(until, timeout)


@pytest.fixture()
def chat(api: Any, loopback: None) -> Iterator[Chat]:
    from chalicelib.core.config import reload_settings
    from chalicelib.forwarders import engine

    slack = SlackStandIn(token=BOT_TOKEN).start()
    feishu = FeishuStandIn().start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("FLEETBOX_SLACK_BOT_TOKEN", BOT_TOKEN)
            mp.setenv("FLEETBOX_SLACK_API_URL", slack.base_url)
            mp.setenv("FLEETBOX_CHAT_ALERT_WINDOW_S", "60")
            reload_settings()
            engine.forget()
            world = Chat(api, slack, feishu, FakeQueue(honour_delays=True).install(mp))
            yield world
        # no chat message sent during the test carries a secret
        for text in slack.texts() + feishu.texts():
            leaked = [s for s in world.secrets if s and s in text] + re.findall(r"whsec_[A-Za-z0-9+/=]{8,}", text)
            assert not leaked, (leaked, text[:300])
    finally:
        slack.stop()
        feishu.stop()
        reload_settings()
        engine.forget()


def _fence(api: Any, pid: str, dn: str) -> str:
    sid = ok(api.post("/v1/spaces", {"name": f"space {pid}", "products": [pid]}), 201)["space_id"]
    fence = {"name": "yard", "type": "circle", "circle": {"lat": 1.0, "lon": 1.0, "radius": 100}}
    bound = [{"product_id": pid, "device_name": dn}]
    return ok(api.post(f"/v1/spaces/{sid}/fences", {**fence, "devices": bound, "trigger": "both"}), 201)["fence_id"]


def _gps(pid: str, dn: str, lat: float, lon: float) -> None:
    run(report(pid, dn, {"GPS_Info": {"latitude": lat, "longitude": lon}}, ts_ms=clock.now_ms()))


def _emit_alarm(pid: str, dn: str, kind: str = "enter") -> None:
    from chalicelib.services import events

    events.emit(
        "fence.alarm",
        pid,
        device_name=dn,
        fence_id="fc_0000000001",
        fence_name="yard",
        space_id="sp_0000000001",
        type=kind,
        time=clock.now_ms(),
        lat=1.0,
        lon=1.0,
        accuracy=None,
    )


# ------------------------------------------------------------------ the subscriptions API


def test_subscriptions_validation_idempotence_listing_and_delete(api: Any, chat: Chat) -> None:
    pid = chat.product("Tracker")
    bad = [
        ({"channel": "slack:nope", "kind": "alarms"}, "InvalidParameterValue.ChatChannelInvalid", "channel"),
        ({"channel": "teams:T1:C1", "kind": "alarms"}, "InvalidParameterValue.ChatChannelInvalid", "channel"),
        ({"channel": SLACK_A, "kind": "weather"}, "InvalidParameterValue.ChatAlertKindInvalid", "kind"),
        (
            {"channel": SLACK_A, "kind": "alarms", "product_id": "x"},
            "InvalidParameterValue.ProductIdInvalid",
            "product_id",
        ),
        ({"kind": "alarms"}, "MissingParameter", "channel"),
    ]
    for body, code, field in bad:
        expect_error(api.post("/v1/chat/subscriptions", body), 400, code, field)
    expect_error(
        api.post("/v1/chat/subscriptions", {"channel": "feishu:fs-000000000000", "kind": "ota"}),
        404,
        "ResourceNotFound.ChatChannelNotExist",
        "channel",
    )
    expect_error(
        api.post("/v1/chat/subscriptions", {"channel": SLACK_A, "kind": "ota", "product_id": "ZZZZZZZZZZ"}),
        404,
        "ResourceNotFound.ProductNotExist",
        "product_id",
    )
    # subscribing the same (channel, kind, product) twice answers the same subscription
    first = chat.subscribe(SLACK_A, "alarms", pid)
    again = chat.subscribe(SLACK_A, "alarms", pid)
    assert first == again and first["resource"] == f"product/{pid}" and first["created_by"] == "root"
    other = chat.subscribe(SLACK_B, "ota")
    assert other["product_id"] is None and other["resource"] == "*"
    assert {s["id"] for s in ok(api.get("/v1/chat/subscriptions"))["items"]} == {first["id"], other["id"]}
    only_a = ok(api.get(f"/v1/chat/subscriptions?channel={SLACK_A}"))["items"]
    assert [s["id"] for s in only_a] == [first["id"]]
    assert api.delete(f"/v1/chat/subscriptions/{first['id']}").status_code == 204
    expect_error(
        api.delete(f"/v1/chat/subscriptions/{first['id']}"), 404, "ResourceNotFound.ChatSubscriptionNotExist", "id"
    )
    assert [s["id"] for s in ok(api.get("/v1/chat/subscriptions"))["items"]] == [other["id"]]


def test_a_partner_of_product_a_cannot_subscribe_to_or_see_product_b(api: Any, chat: Chat) -> None:
    a, b = chat.product("A"), chat.product("B")
    theirs = chat.subscribe(SLACK_B, "alarms", b)
    account = chat.subscribe(SLACK_B, "batch")
    p = partner(api, a)
    mine = ok(p.post("/v1/chat/subscriptions", {"channel": SLACK_A, "kind": "alarms", "product_id": a}), 201)
    assert p.post("/v1/chat/subscriptions", {"channel": SLACK_A, "kind": "alarms", "product_id": b}).status_code == 403
    assert p.post("/v1/chat/subscriptions", {"channel": SLACK_A, "kind": "alarms"}).status_code == 403
    assert [s["id"] for s in ok(p.get("/v1/chat/subscriptions"))["items"]] == [mine["id"]]
    for sub in (theirs, account):
        assert p.delete(f"/v1/chat/subscriptions/{sub['id']}").status_code == 403
    # a registered channel is the account's: the partner can neither see it nor post its alerts there
    ref = chat.feishu_channel()
    assert p.get("/v1/chat/bots").status_code == 403 or ok(p.get("/v1/chat/bots"))["items"] == []
    assert p.post("/v1/chat/subscriptions", {"channel": ref, "kind": "alarms", "product_id": a}).status_code == 403
    assert p.delete(f"/v1/chat/subscriptions/{mine['id']}").status_code == 204


def test_feishu_channels_secret_is_write_only_url_is_ssrf_checked(api: Any, chat: Chat) -> None:
    ref = chat.feishu_channel()
    cid = ref.split(":", 1)[1]
    shown = ok(api.get(f"/v1/chat/bots/{cid}"))
    assert shown["secret_set"] is True and "secret" not in shown and chat.feishu.secret not in str(shown)
    assert chat.feishu.secret not in str(ok(api.get("/v1/chat/bots")))
    for url in ("http://169.254.169.254/latest", "http://10.0.0.1/hook", "ftp://example.com/x"):
        resp = api.post("/v1/chat/bots", {"platform": "feishu", "name": "x", "webhook_url": url})
        assert resp.status_code == 400 and resp.json["error"]["field"] == "webhook_url", (url, resp.body)
    expect_error(
        api.post("/v1/chat/bots", {"platform": "slack", "name": "x", "webhook_url": chat.feishu.url}),
        400,
        "InvalidParameterValue.ChatPlatformInvalid",
        "platform",
    )
    sub = chat.subscribe(ref, "ota")
    expect_error(api.delete(f"/v1/chat/bots/{cid}"), 409, "ResourceInUse.ChatChannelInUse", "bot_id")
    assert api.delete(f"/v1/chat/subscriptions/{sub['id']}").status_code == 204
    assert api.delete(f"/v1/chat/bots/{cid}").status_code == 204
    expect_error(api.get(f"/v1/chat/bots/{cid}"), 404, "ResourceNotFound.ChatChannelNotExist", "bot_id")


# ------------------------------------------------------------------ events reach channels


def test_a_fence_alarm_reaches_slack_and_feishu_subscribers_of_its_product_only(api: Any, chat: Chat) -> None:
    pid, other = chat.product("Tracker"), chat.product("Other")
    chat.device(pid, "truck1")
    chat.device(other, "truck2")
    fence = _fence(api, pid, "truck1")
    feishu = chat.feishu_channel()
    chat.subscribe(SLACK_A, "alarms", pid)
    chat.subscribe(feishu, "alarms")  # every product
    chat.subscribe(SLACK_B, "alarms", other)
    chat.subscribe(SLACK_B, "ota", pid)  # another kind: not told about alarms
    # the device drives into the yard: a real alarm, from the uplink through the location service
    _gps(pid, "truck1", 1.0, 1.0)
    chat.settle(lambda: len(chat.slack.messages) == 1 and len(chat.feishu.messages) == 1)
    (slack,) = chat.slack.messages
    assert slack["channel"] == "C0ALERTS1"
    assert slack["text"].startswith(f"🚨 {pid}/truck1 entered fence yard")
    fields = [f["text"] for b in slack["blocks"] if b.get("fields") for f in b["fields"]]
    assert any(fence in f for f in fields) and any("enter" in f for f in fields), slack["blocks"]
    (card,) = chat.feishu.messages
    assert card["msg_type"] == "interactive" and chat.feishu.bad_signatures == 0
    assert f"{pid}/truck1 entered fence yard" in card["card"]["header"]["title"]["content"]
    # the delivery log of the subscription's target shows the attempt
    sub_a = ok(api.get(f"/v1/chat/subscriptions?channel={SLACK_A}"))["items"][0]
    log = ok(api.get(f"/v1/deliveries?target=chat/{sub_a['id']}"))["items"]
    assert [(e["ok"], e["attempt"]) for e in log] == [(True, 1)]
    # and out again within the minute: the alarm is recorded, its message held back by the limiter
    _gps(pid, "truck1", 1.05, 1.05)
    chat.settle()
    assert [a["type"] for a in ok(api.get(f"/v1/alarms?product_id={pid}&start=0"))["items"]] == ["enter", "exit"]
    assert (len(chat.slack.messages), len(chat.feishu.messages)) == (1, 1)


def test_100_alarms_from_one_flapping_device_make_one_message_and_one_summary(api: Any, chat: Chat) -> None:
    pid = chat.product("Tracker")
    chat.subscribe(SLACK_A, "alarms", pid)
    for i in range(100):
        _emit_alarm(pid, "flappy", "enter" if i % 2 == 0 else "exit")
    _emit_alarm(pid, "calm")  # another device has its own window
    chat.settle(lambda: len(chat.slack.messages) == 2)
    texts = [m["text"] for m in chat.slack.messages]
    assert sorted(t.split("\n")[0] for t in texts) == sorted(
        [f"🚨 {pid}/flappy entered fence yard", f"🚨 {pid}/calm entered fence yard"]
    )
    # no further event comes: the summary arrives on its own once the window is over
    chat.queue.advance(30)
    drain_forwards(lambda: True, timeout=3)
    assert len(chat.slack.messages) == 2  # not before the window ends
    chat.queue.advance(32)
    chat.settle(lambda: len(chat.slack.messages) == 3)
    assert chat.slack.messages[2]["text"] == f"99 more alarms from {pid}/flappy suppressed in the last minute"
    # the calm device suppressed nothing: no summary for it; a re-run summary job sends nothing twice
    chat.queue.advance(120)
    drain_forwards(lambda: True, timeout=3)
    assert len(chat.slack.messages) == 3
    # after the window the next alarm is sent again
    _emit_alarm(pid, "flappy")
    chat.settle(lambda: len(chat.slack.messages) == 4)


def test_the_limiter_sends_the_first_counts_the_rest_and_closes_once(aws: None) -> None:
    """The limiter's protocol on moto, one caller at a time.  (moto does not make a conditional
    write atomic against concurrent threads, DynamoDB does: the concurrent-workers check runs on
    DynamoDB Local, in tests/e2e/test_chat_alerts_e2e.py.)"""
    from chalicelib.services import chat_limit

    results = [chat_limit.admit(SLACK_A, "fence.alarm", "P/dev") for _ in range(80)]
    sent = [r for r in results if r.send]
    assert len(sent) == 1 and results[0].send and {r.gen for r in results} == {sent[0].gen}
    assert chat_limit.close(sent[0].key, sent[0].gen) == 79
    assert chat_limit.close(sent[0].key, sent[0].gen) == 0  # closed once: a re-delivered job sends nothing
    # a count arriving after the close (window still open) is never lost: it is sent instead
    late = chat_limit.admit(SLACK_A, "fence.alarm", "P/dev")
    assert late.send
    clock.shift(61)
    try:
        nxt = chat_limit.admit(SLACK_A, "fence.alarm", "P/dev")
        assert nxt.send and nxt.gen == sent[0].gen + 1
        assert not chat_limit.admit(SLACK_A, "fence.alarm", "P/dev").send
        assert chat_limit.close(nxt.key, nxt.gen) == 1
    finally:
        clock.shift(-61)


def test_ota_failure_and_batch_and_rule_dead_letters_reach_their_subscribers(api: Any, chat: Chat) -> None:
    from chalicelib.services import events

    pid = chat.product("Lamp")
    chat.subscribe(SLACK_A, "ota", pid)
    chat.subscribe(SLACK_A, "batch", pid)
    chat.subscribe(SLACK_A, "rules")
    chat.subscribe(SLACK_A, "video", pid)
    events.emit("ota.task.started", pid, task_id="ota1", firmware_id="fw1")  # not an alert
    events.emit(
        "ota.device.failed", pid, task_id="ota1", device_name="lamp1", reason="md5 mismatch", target_version="2.0"
    )
    events.emit(
        "batch.failed", pid, batch_id="bat1", batch_kind="devices", success_count=3, failure_count=1, reason="quota"
    )
    events.emit("rule.dead_letter", pid, rule="toS3", dead_letters=2)
    events.emit(
        "video.task.done",
        pid,
        task_id="vt1",
        device_name="cam1",
        service_type="VideoToText",
        status=3,
        classes=["person"],
    )
    chat.settle(lambda: len(chat.slack.messages) == 4)
    first = sorted(m["text"].split("\n")[0] for m in chat.slack.messages)
    assert first == sorted(
        [
            f"❌ OTA upgrade failed on {pid}/lamp1 (task ota1)",
            f"Batch bat1 of {pid} failed",
            "⚠️ rule toS3 dead-lettered 2 message(s)",
            f"Video summary task vt1 on {pid}/cam1 finished",
        ]
    )
    assert any("md5 mismatch" in m["text"] for m in chat.slack.messages)


# ------------------------------------------------------------------ delivery engine


def test_chat_delivery_retries_then_dead_letters_with_the_reason_and_replays(api: Any, chat: Chat) -> None:
    pid = chat.product("Tracker")
    sub = chat.subscribe(SLACK_A, "alarms", pid)
    # one failure: delivered on the second attempt, same webhook-id
    chat.slack.fail_next = 1
    _emit_alarm(pid, "d1")
    chat.settle(lambda: len(chat.slack.messages) == 1)
    log = sorted(ok(api.get(f"/v1/deliveries?target=chat/{sub['id']}"))["items"], key=lambda e: e["attempt"])
    assert [(e["attempt"], e["ok"]) for e in log] == [(1, False), (2, True)] and log[0]["status"] == 500
    # Slack down: 1 + 3 retries (1, 3, 10 s), then a dead letter with the reason, on the subscription's product
    chat.slack.fail_always = True
    _emit_alarm(pid, "d2")
    chat.settle(lambda: len(ok(api.get("/v1/dead-letters"))["items"]) == 1, timeout=40)
    (letter,) = ok(api.get("/v1/dead-letters"))["items"]
    assert letter["attempts"] == 4 and letter["resource"] == f"product/{pid}" and "(chat)" in letter["reason"]
    assert letter["target"] == f"chat/{sub['id']}" and letter["device_name"] == "d2"
    p = partner(api, pid)
    assert [x["id"] for x in ok(p.get("/v1/dead-letters"))["items"]] == [letter["id"]]
    # Slack back: the replay delivers the alarm once
    chat.slack.fail_always = False
    ok(api.post(f"/v1/dead-letters/{letter['id']}/replay"), 202)
    drain_forwards(lambda: ok(api.get("/v1/dead-letters"))["items"][0]["status"] == "replayed")
    assert len(chat.slack.messages) == 2 and "d2" in chat.slack.messages[1]["text"]


def test_errors_retrying_cannot_fix_dead_letter_at_once(api: Any, chat: Chat, monkeypatch: pytest.MonkeyPatch) -> None:
    pid = chat.product("Tracker")
    chat.subscribe(SLACK_A, "alarms", pid)
    chat.slack.error, chat.slack.fail_always = "channel_not_found", True
    _emit_alarm(pid, "d1")
    chat.settle(lambda: len(ok(api.get("/v1/dead-letters"))["items"]) == 1)
    (letter,) = ok(api.get("/v1/dead-letters"))["items"]
    assert letter["attempts"] == 1 and "channel_not_found" in letter["reason"]
    # a Feishu bot whose secret does not match: Feishu's code 19021 is permanent too
    chat.slack.fail_always = False
    chat.feishu.secret = "anotherSecretNotOurs"
    chat.secrets.add(chat.feishu.secret)
    ref = ok(
        api.post(
            "/v1/chat/bots",
            {"platform": "feishu", "name": "wrong", "webhook_url": chat.feishu.url, "secret": "ourSecretDiffers1"},
        ),
        201,
    )["ref"]
    chat.secrets.add("ourSecretDiffers1")
    chat.subscribe(ref, "alarms", pid)
    _emit_alarm(pid, "d3")
    chat.settle(lambda: len(ok(api.get("/v1/dead-letters"))["items"]) == 2)
    newest = ok(api.get("/v1/dead-letters"))["items"][0]
    assert newest["attempts"] == 1 and "Feishu code 19021" in newest["reason"] and chat.feishu.bad_signatures == 1


# ------------------------------------------------------------------ data streams: chat push


def test_stream_chat_push_validates_its_channel_and_posts_the_rendered_templates(api: Any, chat: Chat) -> None:
    pid = chat.product("Tracker")
    chat.device(pid, "truck1")
    base = {"name": "s", "product_id": pid}
    for out, code, field in (
        ({"type": "chat", "channel": "slack:x"}, "InvalidParameterValue.ChatChannelInvalid", "outputs[0].channel"),
        (
            {"type": "chat", "channel": "feishu:fs-000000000000", "title": "t"},
            "ResourceNotFound.ChatChannelNotExist",
            "outputs[0].channel",
        ),
        ({"type": "chat", "channel": SLACK_A}, "InvalidParameterValue.OutputInvalid", "outputs[0].content"),
    ):
        resp = api.post("/v1/streams", {**base, "outputs": [out]})
        assert resp.status_code in (400, 404), resp.body
        assert (resp.json["error"]["code"], resp.json["error"]["field"]) == (code, field), resp.body
    feishu = chat.feishu_channel()
    stream = ok(
        api.post(
            "/v1/streams",
            {
                **base,
                "enabled": True,
                "outputs": [
                    {"type": "chat", "channel": SLACK_A, "title": "${DeviceName} moved", "content": "lat ${GPS_Info}"},
                    {"type": "chat", "channel": feishu, "content": "$DeviceName of ${ProductId} reported"},
                ],
            },
        ),
        201,
    )
    assert stream["outputs"][0] == {
        "type": "chat",
        "channel": SLACK_A,
        "title": "${DeviceName} moved",
        "content": "lat ${GPS_Info}",
    }
    _gps(pid, "truck1", 2.0, 3.0)
    chat.settle(lambda: len(chat.slack.messages) == 1 and len(chat.feishu.messages) == 1)
    slack = chat.slack.messages[0]
    assert slack["text"].startswith("truck1 moved\nlat {") and '"latitude":2.0' in slack["text"].replace(" ", "")
    assert chat.feishu.messages[0] == {
        **chat.feishu.messages[0],
        "msg_type": "text",
        "content": {"text": f"truck1 of {pid} reported"},
    }
    log = ok(api.get(f"/v1/deliveries?target=stream/{stream['id']}/1"))["items"]
    assert [e["ok"] for e in log] == [True]
    # a bot a stream pushes to cannot be deleted from under it
    expect_error(
        api.delete(f"/v1/chat/bots/{feishu.split(':', 1)[1]}"), 409, "ResourceInUse.ChatChannelInUse", "bot_id"
    )


def test_a_partner_cannot_push_a_stream_into_a_bot_it_cannot_see(api: Any, chat: Chat) -> None:
    pid = chat.product("Tracker")
    ref = chat.feishu_channel()
    p = partner(api, pid)
    body = {"name": "s", "product_id": pid, "outputs": [{"type": "chat", "channel": ref, "content": "x"}]}
    assert p.post("/v1/streams", body).status_code == 403
    ok(p.post("/v1/streams", {**body, "outputs": [{"type": "chat", "channel": SLACK_A, "content": "x"}]}), 201)
