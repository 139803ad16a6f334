"""The operator chat over the Chalice test client and moto (SPEC §12).

Slack itself cannot run here: requests are signed by the tests' own signer (tests/slack_signer.py)
exactly as Slack signs them, and the response URL is a loopback receiver (tests/receiver.py).
Job steps (follow-ups, replies) run from an in-memory queue the tests drain.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.core import clock
from tests import slack_signer as slack
from tests.helpers import MEDIA_SAMPLES, partner_policy
from tests.integration.helpers import PRODUCT, Api, FakeQueue, ok
from tests.receiver import Receiver

ADMIN, PARTNER, DENIED, STRANGER = "U0ADMIN01", "U0PARTNER", "U0DENIED1", "U0STRANGE"


@pytest.fixture()
def chat_env(monkeypatch: pytest.MonkeyPatch, aws: None) -> Iterator[FakeQueue]:
    from chalicelib.core.config import reload_settings
    from chalicelib.services import files

    monkeypatch.setenv("FLEETBOX_SLACK_SIGNING_SECRET", slack.SECRET)
    monkeypatch.setenv("FLEETBOX_ALLOW_LOOPBACK", "true")
    monkeypatch.setenv("FLEETBOX_BUCKET", "fleetbox-test-files-123456789012")
    monkeypatch.setenv("FLEETBOX_MEDIA_ROOT", str(MEDIA_SAMPLES))
    reload_settings()
    files.forget()
    queue = FakeQueue(honour_delays=False).install(monkeypatch)
    yield queue
    monkeypatch.undo()
    reload_settings()
    files.forget()


@pytest.fixture()
def hook() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


class Slack:
    """Posts signed commands and clicks to the app like Slack would."""

    def __init__(self, api: Api, hook: Receiver):
        self.api, self.hook = api, hook

    def post(self, path: str, body: bytes, hdrs: dict[str, str] | None = None) -> Any:
        resp = self.api.client.http.post(path, headers=hdrs or slack.headers(body), body=body)
        resp.json = json.loads(resp.body) if resp.body else None
        return resp

    def command(self, text: str, user: str = ADMIN, **kw: Any) -> Any:
        started = time.perf_counter()
        resp = self.post("/chat/slack/commands", slack.command_body(text, user, self.hook.url, **kw))
        resp.elapsed = time.perf_counter() - started
        return resp

    def click(self, value: str, user: str = ADMIN, action_id: str = "fleet.confirm", retry: int | None = None) -> Any:
        body = slack.click_body(value, user, self.hook.url, action_id)
        hdrs = slack.headers(body)
        if retry is not None:
            hdrs["X-Slack-Retry-Num"] = str(retry)
            hdrs["X-Slack-Retry-Reason"] = "http_timeout"
        return self.post("/chat/slack/interactions", body, hdrs)


def _map(api: Api, user: str, policy: dict[str, Any] | None) -> str:
    """A principal with ``policy`` (root when None) and the chat user mapped to it."""
    principal = "root"
    if policy is not None:
        principal = ok(api.post("/v1/principals", {"name": user, "kind": "chat", "policy": policy}), 201)[
            "principal_id"
        ]
    body = {"platform": "slack", "team_id": slack.TEAM, "user_id": user, "principal_id": principal, "name": user}
    ok(api.post("/v1/chat/identities", body), 201)
    return principal


@pytest.fixture()
def fleet(api: Api, chat_env: FakeQueue, hook: Receiver) -> dict[str, Any]:
    w: dict[str, Any] = {"queue": chat_env}
    for tag in ("A", "B"):
        pid = ok(api.post("/v1/products", {**PRODUCT, "name": f"Chat {tag}"}), 201)["product_id"]
        ok(api.post(f"/v1/products/{pid}/publish"))  # mass production needs a released product
        dev = ok(api.post(f"/v1/products/{pid}/devices", {"device_name": f"dev{tag}"}), 201)
        w[tag] = {"pid": pid, "dn": f"dev{tag}", "secret": dev["secret"]}
    _map(api, ADMIN, None)
    _map(api, PARTNER, partner_policy(w["A"]["pid"]))
    deny_batches = {
        "version": "2.0",
        "statement": [
            {"effect": "allow", "action": ["*"], "resource": ["*"]},
            {"effect": "deny", "action": ["iotexplorer:CreateBatchProduction"], "resource": ["*"]},
        ],
    }
    _map(api, DENIED, deny_batches)
    w["slack"] = Slack(api, hook)
    return w


def _audit(api: Api, action: str) -> list[dict[str, Any]]:
    # to an hour ahead: some records are written while the test clock is shifted forward
    return ok(api.get(f"/v1/audit?action={action}&limit=100&end={clock.now_s() + 3600}"))["items"]


# ------------------------------------------------------------------ signatures


def test_unsigned_stale_and_tampered_requests_are_refused(api: Api, fleet: dict[str, Any]) -> None:
    s: Slack = fleet["slack"]
    body = slack.command_body("whoami", ADMIN, s.hook.url)
    unsigned = s.post("/chat/slack/commands", body, {"Content-Type": "application/x-www-form-urlencoded"})
    assert unsigned.status_code == 401 and unsigned.json["error"]["code"] == "AuthFailure.SignatureFailure"
    stale = s.post("/chat/slack/commands", body, slack.headers(body, ts=int(clock.now()) - 301))
    assert stale.status_code == 401 and stale.json["error"]["code"] == "AuthFailure.SignatureExpire"
    tampered = s.post("/chat/slack/commands", body.replace(b"whoami", b"stats"), slack.headers(body))
    assert tampered.status_code == 401 and tampered.json["error"]["code"] == "AuthFailure.SignatureFailure"
    wrong_key = s.post("/chat/slack/commands", body, slack.headers(body, secret="not-the-secret"))
    assert wrong_key.status_code == 401
    click = slack.click_body("x", ADMIN, s.hook.url)
    assert (
        s.post("/chat/slack/interactions", click, {"Content-Type": slack.headers(click)["Content-Type"]}).status_code
        == 401
    )
    good = s.command("whoami")
    assert good.status_code == 200 and good.json["response_type"] == "ephemeral"
    assert "principal" in slack.all_text(good.json) and "root" in slack.all_text(good.json)
    assert good.headers["x-request-id"]


def test_malformed_signed_forms_are_400_with_the_field(api: Api, fleet: dict[str, Any]) -> None:
    s: Slack = fleet["slack"]
    body = b"team_id=T0FLEET01&user_id=lower-case&channel_id=C0OPS0001&text=whoami"
    bad = s.post("/chat/slack/commands", body)
    assert bad.status_code == 400 and bad.json["error"]["field"] == "user_id"
    click = b"payload=%7Bnot+json"
    assert s.post("/chat/slack/interactions", click).json["error"]["code"] == "InvalidParameterValue.ChatPayloadInvalid"


# ------------------------------------------------------------------ identities and channels


def test_unknown_users_are_told_how_to_get_access_and_audited(api: Api, fleet: dict[str, Any]) -> None:
    resp = fleet["slack"].command("product list", user=STRANGER)
    assert resp.status_code == 200 and resp.json["response_type"] == "ephemeral"
    text = slack.all_text(resp.json)
    assert STRANGER in text and slack.TEAM in text and "/v1/chat/identities" in text
    refused = _audit(api, "ChatRefused")
    assert refused[0]["result"] == "UnknownIdentity" and refused[0]["key_id"] == f"slack:{slack.TEAM}:{STRANGER}"
    assert refused[0]["channel"] == f"slack:{slack.TEAM}:{slack.CHANNEL}"


def test_identity_routes_map_list_and_unmap(api: Api, fleet: dict[str, Any]) -> None:
    ident = f"slack:{slack.TEAM}:{PARTNER}"
    listed = {i["id"] for i in ok(api.get("/v1/chat/identities"))["items"]}
    assert ident in listed
    again = {"platform": "slack", "team_id": slack.TEAM, "user_id": PARTNER, "principal_id": "root"}
    assert api.post("/v1/chat/identities", again).json["error"]["code"] == "ResourceInUse.ChatIdentityExists"
    bad = api.post("/v1/chat/identities", {**again, "user_id": "u-1"})
    assert bad.status_code == 400 and bad.json["error"]["field"] == "user_id"
    nobody = api.post("/v1/chat/identities", {**again, "user_id": "U0NOBODY1", "principal_id": "nosuch"})
    assert nobody.status_code == 404 and nobody.json["error"]["field"] == "principal_id"
    assert api.delete(f"/v1/chat/identities/{ident}").status_code == 204
    assert "not set up" in slack.all_text(fleet["slack"].command("whoami", user=PARTNER).json)


def test_a_partner_cannot_map_a_chat_user_to_root(api: Api, fleet: dict[str, Any]) -> None:
    key = ok(api.post("/v1/keys", {"principal_id": _partner_id(api), "name": "p"}), 201)["api_key"]
    partner = api.as_key(key)
    body = {"platform": "slack", "team_id": slack.TEAM, "user_id": "U0SNEAKY1", "principal_id": "root"}
    assert partner.post("/v1/chat/identities", body).status_code == 403
    assert ok(partner.get("/v1/chat/identities"))["items"] == []


def _partner_id(api: Api) -> str:
    items = ok(api.get("/v1/chat/identities"))["items"]
    return next(i["principal_id"] for i in items if i["user_id"] == PARTNER)


def test_channels_off_the_allow_list_are_refused(api: Api, fleet: dict[str, Any]) -> None:
    s: Slack = fleet["slack"]
    ok(api.put("/v1/chat/allowed-channels", {"channels": [f"slack:{slack.TEAM}:C0OTHER01"]}))
    refused = s.command("product list")
    assert "not enabled in this channel" in slack.all_text(refused.json)
    assert _audit(api, "ChatRefused")[0]["result"] == "ChannelNotAllowed"
    ok(api.put("/v1/chat/allowed-channels", {"channels": [f"slack:{slack.TEAM}:{slack.CHANNEL}"]}))
    assert fleet["A"]["pid"] in slack.all_text(s.command("product list").json)
    bad = api.put("/v1/chat/allowed-channels", {"channels": ["#general"]})
    assert bad.status_code == 400 and bad.json["error"]["code"] == "InvalidParameterValue.ChatChannelInvalid"


# ------------------------------------------------------------------ permissions per command


def test_a_partner_on_product_a_cannot_show_or_disable_product_b_devices(api: Api, fleet: dict[str, Any]) -> None:
    s: Slack = fleet["slack"]
    a, b = fleet["A"], fleet["B"]
    mine = s.command(f"device show {a['pid']}/{a['dn']}", user=PARTNER)
    assert a["dn"] in slack.all_text(mine.json) and "UnauthorizedOperation" not in slack.all_text(mine.json)
    for text in (
        f"device show {b['pid']}/{b['dn']}",
        f"device disable {b['pid']}/{b['dn']}",
        f"device delete {b['pid']}/{b['dn']}",
        f"product show {b['pid']}",
        f"batch create {b['pid']} 3",
    ):
        resp = s.command(text, user=PARTNER)
        shown = slack.all_text(resp.json)
        assert resp.status_code == 200 and "UnauthorizedOperation" in shown, (text, shown)
        assert "fleet.confirm" not in shown  # no button for what the policy refuses
    assert {p["product_id"] for p in ok(api.get("/v1/products"))["items"]} >= {a["pid"], b["pid"]}
    listed = slack.all_text(s.command("product list", user=PARTNER).json)
    assert a["pid"] in listed and b["pid"] not in listed
    assert ok(api.get(f"/v1/products/{b['pid']}/devices/{b['dn']}"))["enabled"] is True
    denied = [r for r in _audit(api, "ChatCommand") if r["result"] == "UnauthorizedOperation"]
    assert len(denied) >= 4 and all(r["key_id"].endswith(PARTNER) for r in denied)


def test_device_show_never_prints_a_secret_even_for_root(api: Api, fleet: dict[str, Any]) -> None:
    a = fleet["A"]
    shown = slack.all_text(fleet["slack"].command(f"device show {a['pid']}/{a['dn']}").json)
    assert a["dn"] in shown and a["secret"] not in shown and "secret" not in shown.lower()


def test_usage_mistakes_are_explained(api: Api, fleet: dict[str, Any]) -> None:
    s: Slack = fleet["slack"]
    for text, expect in (
        ("device show nope", "<ProductId>/<DeviceName>"),
        ("batch create ABCDEFGHIJ many", "whole number"),
        ("frobnicate", "no command"),
        ("device", "takes a subcommand"),
        ('device control X/y a="unclosed', "does not parse"),
    ):
        resp = s.command(text)
        assert resp.status_code == 200 and expect in slack.all_text(resp.json), (text, resp.json)
    assert "usage: /fleet device show <device>" in slack.all_text(s.command("device show nope").json)
    helped = slack.all_text(s.command("help device").json)
    assert "/fleet device control" in helped and "e.g." in helped


def test_device_control_parses_values_as_json_where_they_parse(api: Api, fleet: dict[str, Any], recorder) -> None:
    from tests.integration.helpers import MODEL

    pid = ok(api.post("/v1/products", {**PRODUCT, "name": "Chat lamp"}), 201)["product_id"]
    ok(api.put(f"/v1/products/{pid}/thing-model", MODEL))
    ok(api.post(f"/v1/products/{pid}/devices", {"device_name": "lamp"}), 201)
    resp = fleet["slack"].command(f"device control {pid}/lamp power_switch=1")
    assert "Sent" in slack.all_text(resp.json), resp.json
    token = next(f["text"] for b in resp.json["blocks"] for f in b.get("fields", []) if "client_token" in f["text"])
    call = ok(api.get(f"/v1/products/{pid}/devices/lamp/calls/{token.split()[-1]}"))
    assert call["params"] == {"power_switch": 1}  # the JSON number, not the text "1"


# ------------------------------------------------------------------ confirmations


def test_batch_create_asks_then_runs_once_for_the_authorised_clicker(api: Api, fleet: dict[str, Any]) -> None:
    s: Slack = fleet["slack"]
    pid = fleet["A"]["pid"]
    asked = s.command(f"batch create {pid} 5")
    assert asked.elapsed < 3
    assert "creates 5 devices" in slack.confirm_text(asked.json)
    value = slack.button_value(asked.json)
    assert ok(api.get(f"/v1/products/{pid}/batches"))["items"] == []  # nothing ran yet

    # a user whose policy denies CreateBatchProduction is refused, and nothing is consumed
    refused = s.click(value, user=DENIED)
    assert refused.status_code == 200 and "may not confirm" in slack.all_text(refused.json)
    assert ok(api.get(f"/v1/products/{pid}/batches"))["items"] == []

    # the same click three times (two of them Slack's retries): one batch
    first = s.click(value)
    assert "started" in slack.all_text(first.json)
    assert s.click(value, retry=1).json == {} and s.click(value, retry=2).json == {}
    fleet["queue"].drain()
    batches = ok(api.get(f"/v1/products/{pid}/batches"))["items"]
    assert len(batches) == 1 and batches[0]["quantity"] == 5
    posted = [slack.all_text(h.body) for h in s.hook.hits]
    assert any("replace_original" in p and "started" in p for p in posted)
    assert "Download" in posted[-1] and batches[0]["id"] in posted[-1], posted
    assert len(s.hook.hits) <= 5

    # who ran what, the decision and the outcome
    clicked = _audit(api, "ChatConfirmationClicked")
    assert {r["result"] for r in clicked} == {"UnauthorizedOperation", "Success"}
    assert _audit(api, "ChatConfirmationRepeated")[0]["result"] == "AlreadyHandled"
    created = {r["status"]: r for r in _audit(api, "CreateBatchProduction")}
    assert set(created) == {202, 403}  # the route's own audit: the refused click and the one run
    assert created[202]["channel"] == f"slack:{slack.TEAM}:{slack.CHANNEL}"
    assert created[202]["principal_id"] == "root" and created[202]["key_id"].endswith(ADMIN)
    assert created[403]["key_id"].endswith(DENIED)


def test_an_expired_confirmation_runs_nothing(api: Api, fleet: dict[str, Any]) -> None:
    s: Slack = fleet["slack"]
    a = fleet["A"]
    asked = s.command(f"device disable {a['pid']}/{a['dn']}")
    assert "disables 1 device" in slack.confirm_text(asked.json)
    clock.shift(301)
    try:
        late = s.post(
            "/chat/slack/interactions",
            body := slack.click_body(slack.button_value(asked.json), ADMIN, s.hook.url),
            slack.headers(body, ts=int(clock.now())),
        )
    finally:
        clock.reset()
    assert "expired" in slack.all_text(late.json)
    assert ok(api.get(f"/v1/products/{a['pid']}/devices/{a['dn']}"))["enabled"] is True
    assert _audit(api, "ChatConfirmationExpired")[0]["result"] == "Expired"


def test_cancel_replaces_the_message_and_the_button_is_dead(api: Api, fleet: dict[str, Any]) -> None:
    s: Slack = fleet["slack"]
    a = fleet["A"]
    value = slack.button_value(s.command(f"device delete {a['pid']}/{a['dn']}").json)
    assert "Cancelled" in slack.all_text(s.click(value, action_id="fleet.cancel").json)
    assert s.click(value).json == {}
    assert api.get(f"/v1/products/{a['pid']}/devices/{a['dn']}").status_code == 200


def test_no_button_is_offered_for_what_the_route_would_refuse(api: Api, fleet: dict[str, Any]) -> None:
    """The confirmation is asked only for a request the route would take now: its models and the
    service's own checks run first (api.check), so a refusal comes at once, not after the click."""
    s: Slack = fleet["slack"]
    a = fleet["A"]
    draft = ok(api.post("/v1/products", {**PRODUCT, "name": "Chat draft"}), 201)["product_id"]  # not released
    declared = ok(
        api.post(
            "/v1/firmware",
            {
                "product_id": a["pid"],
                "name": "fw",
                "version": "9.0",
                "fw_type": "mcu",
                "file_name": "f.bin",
                "file_size": 10,
            },  # fmt: skip
        ),
        201,
    )  # its file never uploaded
    for text, code in (
        (f"batch create {draft} 3", "UnsupportedOperation.ProductNotReleased"),
        (f"device disable {a['pid']}/ghost", "ResourceNotFound.DeviceNotExist"),
        (f"device delete {a['pid']}/{a['dn']} {a['pid']}/ghost", "ResourceNotFound.DeviceNotExist"),
        (f"ota start {declared['id']} --devices {a['dn']}", "FailedOperation.FirmwareNotReady"),
    ):
        shown = slack.all_text(s.command(text).json)
        assert f"[{code}]" in shown and "fleet.confirm" not in shown, (text, shown)
    # nothing was asked, nothing changed, and the refusal is in the command's audit record
    assert _audit(api, "ChatConfirmationAsked") == []
    assert ok(api.get(f"/v1/products/{draft}/batches"))["items"] == []
    assert ok(api.get(f"/v1/products/{a['pid']}/devices/{a['dn']}"))["enabled"] is True
    assert ok(api.get(f"/v1/ota-tasks?product_id={a['pid']}"))["items"] == []
    results = {r["result"] for r in _audit(api, "ChatCommand")}
    assert {"UnsupportedOperation.ProductNotReleased", "FailedOperation.FirmwareNotReady"} <= results
    # a request the route takes is still asked
    assert "creates 2 devices" in slack.confirm_text(s.command(f"batch create {a['pid']} 2").json)


# ------------------------------------------------------------------ the response URL budget


def test_the_response_url_budget_keeps_the_last_post_for_the_final_answer(api: Api, fleet: dict[str, Any]) -> None:
    from chalicelib.services import chat

    url = fleet["slack"].hook.url + "?budget"
    assert [chat.spend_reply(url, final=False) for _ in range(5)] == [True] * 4 + [False]
    assert chat.spend_reply(url, final=True) is True
    assert chat.spend_reply(url, final=True) is False
    assert chat.replies_used(url) == 5
    # a response URL is dead 30 minutes after its first use
    other = url + "2"
    assert chat.spend_reply(other, final=True)
    clock.shift(chat.REPLY_WINDOW_S + 1)
    try:
        assert chat.spend_reply(other, final=True) is False
    finally:
        clock.reset()


def test_response_urls_outside_slack_are_not_posted_to(api: Api, fleet: dict[str, Any], monkeypatch) -> None:
    from chalicelib.core.config import reload_settings
    from chalicelib.core.errors import FleetboxError
    from chalicelib.forwarders import chat_reply

    monkeypatch.setenv("FLEETBOX_ALLOW_LOOPBACK", "false")
    reload_settings()
    with pytest.raises(FleetboxError):
        chat_reply.check_response_url("http://127.0.0.1:9/hook")
    assert chat_reply.check_response_url("https://hooks.slack.com/commands/T1/1/abc")


# ------------------------------------------------------------------ alert subscriptions (15B's routes)


def test_subscribe_and_unsubscribe_go_through_the_subscription_routes(api: Api, fleet: dict[str, Any]) -> None:
    s: Slack = fleet["slack"]
    a, b = fleet["A"], fleet["B"]
    here = f"slack:{slack.TEAM}:{slack.CHANNEL}"
    assert "now receives alarms" in slack.all_text(s.command("subscribe alarms").json)
    assert "now receives ota" in slack.all_text(s.command(f"subscribe ota --product {a['pid']}", user=PARTNER).json)
    refused = slack.all_text(s.command(f"subscribe ota --product {b['pid']}", user=PARTNER).json)
    assert "UnauthorizedOperation" in refused
    subs = ok(api.get(f"/v1/chat/subscriptions?channel={here}"))["items"]
    assert sorted((x["kind"], x["product_id"]) for x in subs) == [("alarms", None), ("ota", a["pid"])]
    assert "Unsubscribed" in slack.all_text(s.command("unsubscribe alarms").json)
    assert [x["kind"] for x in ok(api.get(f"/v1/chat/subscriptions?channel={here}"))["items"]] == ["ota"]
    assert "usage" in slack.all_text(s.command("subscribe weather").json)


# ------------------------------------------------------------------ more commands


def test_rules_from_chat_enable_list_and_confirm_disable(api: Api, fleet: dict[str, Any]) -> None:
    s: Slack = fleet["slack"]
    pid = fleet["A"]["pid"]
    body = {"name": "hot", "sql": f"SELECT * FROM '{pid}/+/data' WHERE temp > 30", "enabled": False,
            "actions": [{"type": "republish", "topic": "alerts/hot"}]}  # fmt: skip
    ok(api.post("/v1/rules", body), 201)
    assert "Rule hot enabled" in slack.all_text(s.command("rule enable hot").json)
    assert "hot  enabled" in slack.all_text(s.command("rule list").json)
    asked = s.command("rule disable hot")
    assert "stops rule hot" in slack.confirm_text(asked.json)
    s.click(slack.button_value(asked.json))
    assert ok(api.get("/v1/rules/hot"))["enabled"] is False
    tested = slack.all_text(s.command(f"rule test hot {pid}/devA/data '{{\"temp\": 40}}'").json)
    assert "Rule hot: matched" in tested, tested


def test_batch_status_gives_the_link_only_to_a_secret_reader(api: Api, fleet: dict[str, Any]) -> None:
    s: Slack = fleet["slack"]
    pid = fleet["A"]["pid"]
    made = ok(api.post("/v1/batches", {"product_id": pid, "burn_method": "per_device_secret", "generation": "auto",
                                       "quantity": 2, "qr_code": False}), 202)  # fmt: skip
    fleet["queue"].drain()
    admin = s.command(f"batch status {made['id']} --public").json
    assert "Download" in slack.all_text(admin) and admin["response_type"] == "ephemeral"  # a link: never public
    no_secrets = {
        "version": "2.0",
        "statement": [
            {"effect": "allow", "action": ["*"], "resource": ["*"]},
            {"effect": "deny", "action": ["iotexplorer:DescribeDeviceSecret"], "resource": ["*"]},
        ],
    }
    _map(api, "U0NOSECRT", no_secrets)
    reader = slack.all_text(s.command(f"batch status {made['id']}", user="U0NOSECRT").json)
    assert "hold device secrets" in reader and "http" not in reader


def test_public_answers_and_queued_commands(api: Api, fleet: dict[str, Any]) -> None:
    s: Slack = fleet["slack"]
    a = fleet["A"]
    assert s.command("product list --public").json["response_type"] == "in_channel"
    queued = s.command(f"track {a['pid']}/{a['dn']} --since 2h")
    assert "Working on" in slack.all_text(queued.json)
    fleet["queue"].drain()
    assert any("0 position(s)" in slack.all_text(h.body) for h in s.hook.hits), [h.body for h in s.hook.hits]
    assert "OTA task(s)" in slack.all_text(s.command("ota tasks").json)
    assert "statistics" in slack.all_text(s.command(f"stats {a['pid']}").json)


def test_ota_start_asks_with_the_devices_it_upgrades_and_runs_for_the_clicker(api: Api, fleet: dict[str, Any]) -> None:
    from tests.integration.test_ota import upload_firmware

    s: Slack = fleet["slack"]
    a = fleet["A"]
    fw = upload_firmware(api, a["pid"])
    asked = s.command(f"ota start {fw['id']} --devices {a['dn']}")
    assert f"upgrades 1 device of {a['pid']} to lamp-fw 2.0" in slack.confirm_text(asked.json)
    assert "exactly one of" in slack.all_text(s.command(f"ota start {fw['id']}").json)
    other = upload_firmware(api, fleet["B"]["pid"])  # a partner on product A may not upgrade product B
    refused = slack.all_text(s.command(f"ota start {other['id']} --from 1.0", user=PARTNER).json)
    assert "UnauthorizedOperation" in refused and "fleet.confirm" not in refused
    s.click(slack.button_value(asked.json))
    tasks = ok(api.get(f"/v1/ota-tasks?product_id={a['pid']}"))["items"]
    assert len(tasks) == 1
    assert tasks[0]["id"] in slack.all_text(s.command("ota tasks").json)
    assert "OTA task" in slack.all_text(s.command(f"ota status {tasks[0]['id']}").json)


def test_video_summarize_answers_when_the_task_finishes(api: Api, fleet: dict[str, Any]) -> None:
    s: Slack = fleet["slack"]
    a = fleet["A"]
    ok(api.patch(f"/v1/products/{a['pid']}", {"ai_video_enabled": True}))
    clip = (MEDIA_SAMPLES / "people-walking.mp4").as_uri()
    started = s.command(f"video summarize {a['pid']}/{a['dn']} {clip}")
    task = re.search(r"as task (\S+);", slack.all_text(started.json)).group(1)
    fleet["queue"].drain()
    assert ok(api.get(f"/v1/video-tasks/{task}"))["Status"] == 3
    final = slack.all_text(s.hook.hits[-1].body)
    assert f"Video task {task} done" in final and "person" in final.lower(), final


def test_a_click_from_another_channel_claims_nothing_and_ssl_checks_run_nothing(
    api: Api, fleet: dict[str, Any]
) -> None:
    s: Slack = fleet["slack"]
    a = fleet["A"]
    value = slack.button_value(s.command(f"device disable {a['pid']}/{a['dn']}").json)
    body = slack.click_body(value, ADMIN, s.hook.url, channel="C0ELSEWHR")
    assert "expired" in slack.all_text(s.post("/chat/slack/interactions", body).json)
    assert ok(api.get(f"/v1/products/{a['pid']}/devices/{a['dn']}"))["enabled"] is True
    s.click(value)  # from the channel it was asked in: it runs
    assert ok(api.get(f"/v1/products/{a['pid']}/devices/{a['dn']}"))["enabled"] is False
    check = b"ssl_check=1&token=x"
    resp = s.post("/chat/slack/commands", check)
    assert resp.status_code == 200 and resp.json == {}
