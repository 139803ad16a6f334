"""The operator chat end to end on the real local stack (SPEC §12), over real HTTP.

Slack cannot reach this machine, so the tests stand in for it: every request is signed by the
tests' own signer exactly as Slack signs (tests/slack_signer.py, the secret the session stack was
started with by tests/e2e/stack.py), and the ``response_url`` is a loopback receiver
(tests/receiver.py) that keeps every message the product posts there.
"""

from __future__ import annotations

import csv
import io
import re
import time
import zipfile
from typing import Any

import pytest
import requests

from tests import slack_signer as slack
from tests.helpers import partner_policy, wait_until
from tests.receiver import Receiver

TEAM, CHANNEL = "T0E2ECHAT", "C0E2EOPS1"
ADMIN, PARTNER, DENIED = "U0E2EADMN", "U0E2EPART", "U0E2EDENY"
ACK_S = 3.0  # Slack's limit for the acknowledgement


class SlackStandIn:
    def __init__(self, base: str, hook: Receiver):
        self.base, self.hook = base, hook
        self.replies: list[Any] = []  # every immediate answer the product gave

    def command(self, text: str, user: str = ADMIN) -> Any:
        body = slack.command_body(text, user, self.hook.url, team=TEAM, channel=CHANNEL)
        started = time.perf_counter()
        resp = requests.post(self.base + "/chat/slack/commands", data=body, headers=slack.headers(body), timeout=30)
        elapsed = time.perf_counter() - started
        assert resp.status_code == 200, (text, resp.status_code, resp.text)
        assert elapsed < ACK_S, f"/fleet {text} took {elapsed:.2f} s"
        self.replies.append(resp.json())
        return resp.json()

    def click(self, value: str, user: str = ADMIN, retry: int | None = None) -> Any:
        body = slack.click_body(value, user, self.hook.url, team=TEAM, channel=CHANNEL)
        headers = slack.headers(body)
        if retry is not None:
            headers["X-Slack-Retry-Num"] = str(retry)
        started = time.perf_counter()
        resp = requests.post(self.base + "/chat/slack/interactions", data=body, headers=headers, timeout=30)
        assert resp.status_code == 200 and time.perf_counter() - started < ACK_S, resp.text
        self.replies.append(resp.json())
        return resp.json()

    def posted(self) -> list[str]:
        return [slack.all_text(h.body) for h in self.hook.hits]


@pytest.fixture(scope="module")
def hook() -> Any:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def world(api, hook) -> dict[str, Any]:
    w: dict[str, Any] = {"secrets": {slack.SECRET, api.session.headers["Authorization"].split()[1]}}
    pid = api.product(name="Chat e2e")
    reg = api.call("PUT", f"/v1/products/{pid}/dynamic-registration", 200, json={"register_type": 1}).json()
    w["secrets"].add(reg["product_secret"])
    api.call("POST", f"/v1/products/{pid}/publish", 200)
    dn, secret = api.device(pid, "lamp-e2e")
    w["secrets"].add(secret)
    w.update(pid=pid, dn=dn)
    for user, policy in ((ADMIN, None), (PARTNER, partner_policy("ZZZZZZZZZZ"))):
        principal = "root"
        if policy is not None:
            principal = api.call("POST", "/v1/principals", 201, json={"name": user, "policy": policy}).json()[
                "principal_id"
            ]
        api.call("POST", "/v1/chat/identities", 201,
                 json={"platform": "slack", "team_id": TEAM, "user_id": user, "principal_id": principal})  # fmt: skip
    denied = {
        "version": "2.0",
        "statement": [
            {"effect": "allow", "action": ["*"], "resource": ["*"]},
            {"effect": "deny", "action": ["iotexplorer:CreateBatchProduction"], "resource": ["*"]},
        ],
    }
    principal = api.call("POST", "/v1/principals", 201, json={"name": DENIED, "policy": denied}).json()
    api.call("POST", "/v1/chat/identities", 201,
             json={"platform": "slack", "team_id": TEAM, "user_id": DENIED, "principal_id": principal["principal_id"]})  # fmt: skip
    denied_key = api.call("POST", "/v1/keys", 201, json={"principal_id": principal["principal_id"]}).json()["api_key"]
    w["secrets"].add(denied_key)
    w["slack"] = SlackStandIn(api.base, hook)
    return w


def test_unsigned_stale_and_tampered_requests_are_refused(api, world) -> None:
    body = slack.command_body("whoami", ADMIN, world["slack"].hook.url, team=TEAM, channel=CHANNEL)
    url = api.base + "/chat/slack/commands"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    cases = {
        "unsigned": (body, form, "AuthFailure.SignatureFailure"),
        "stale": (body, slack.headers(body, ts=int(time.time()) - 600), "AuthFailure.SignatureExpire"),
        "tampered": (body.replace(b"whoami", b"stats"), slack.headers(body), "AuthFailure.SignatureFailure"),
    }
    for name, (data, headers, code) in cases.items():
        resp = requests.post(url, data=data, headers=headers, timeout=30)
        assert resp.status_code == 401, name
        assert resp.json()["error"]["code"] == code and resp.headers["x-request-id"] == resp.json()["request_id"]


def test_every_command_answers_within_three_seconds(api, world) -> None:
    s: SlackStandIn = world["slack"]
    pid, dn = world["pid"], world["dn"]
    for text, expect in (
        ("help", "Fleetbox commands"),
        ("help device", "/fleet device control"),
        ("whoami", "root"),
        ("product list", pid),
        (f"product show {pid}", "Chat e2e"),
        (f"device show {pid}/{dn}", dn),
        (f"device find {pid} lamp", dn),
        (f"device enable {pid}/{dn}", "Enabled"),
        (f"device control {pid}/{dn} power_switch=1", "Sent"),
        ("ota tasks", "OTA task"),
        ("rule list", "rule(s)"),
        (f"fence alarms --product {pid} --since 1h", "fence alarm(s)"),
        (f"stats {pid}", "statistics"),
        (f"track {pid}/{dn} --since 2h", "Working on"),
        ("device show nonsense", "usage: /fleet device show"),
    ):
        reply = s.command(text)
        assert expect in slack.all_text(reply), (text, reply)
    # the queued command (track) answers through the response URL
    wait_until(lambda: any("position(s)" in p for p in s.posted()), timeout=20)


def test_a_partner_cannot_reach_another_products_device(api, world) -> None:
    reply = world["slack"].command(f"device show {world['pid']}/{world['dn']}", user=PARTNER)
    assert "UnauthorizedOperation" in slack.all_text(reply) and "firmware_version" not in slack.all_text(reply)


def test_batch_create_confirms_runs_once_and_reports_progress_then_the_link(api, world) -> None:
    s: SlackStandIn = world["slack"]
    pid = world["pid"]
    asked = s.command(f"batch create {pid} 20 qr")
    assert "creates 20 devices" in slack.confirm_text(asked)
    value = slack.button_value(asked)

    refused = s.click(value, user=DENIED)  # the clicker's own policy denies CreateBatchProduction
    assert "may not confirm" in slack.all_text(refused)
    assert api.call("GET", f"/v1/products/{pid}/batches", 200).json()["items"] == []

    before = len(s.hook.hits)
    replies = [s.click(value), s.click(value, retry=1), s.click(value, retry=2)]
    assert "started" in slack.all_text(replies[0]) and replies[1:] == [{}, {}]
    batches = api.call("GET", f"/v1/products/{pid}/batches", 200).json()["items"]
    assert len(batches) == 1
    batch_id = batches[0]["id"]

    wait_until(lambda: any("Download" in p for p in s.posted()[before:]), timeout=60)
    posted = s.posted()[before:]
    progress = next(i for i, p in enumerate(posted) if f"Batch {batch_id}: " in p and "%" in p)
    link = next(i for i, p in enumerate(posted) if "Download" in p)
    assert progress < link and '"replace_original": true' in posted[0]
    assert len(api.call("GET", f"/v1/products/{pid}/batches", 200).json()["items"]) == 1  # still one

    # the batch's device secrets are in its CSV (behind the link), never in a message
    url = re.search(r"Download \(link valid until [^)]*\): (\S+?)\"", posted[link]).group(1)
    archive = zipfile.ZipFile(io.BytesIO(requests.get(url, timeout=30).content))
    rows = csv.reader(io.StringIO(archive.read(next(n for n in archive.namelist() if n.endswith(".csv"))).decode()))
    world["secrets"].update(cell for row in rows for cell in row if re.fullmatch(r"[A-Za-z0-9+/]{22}==", cell))

    # the audit log shows who ran what, the decision and the outcome
    audit = api.call("GET", "/v1/audit?limit=100", 200).json()["items"]
    mine = [r for r in audit if (r.get("channel") or "") == f"slack:{TEAM}:{CHANNEL}"]
    seen = {(r["action"], r["result"], r["key_id"]) for r in mine}
    assert ("iotexplorer:ChatConfirmationAsked", "Pending", f"slack:{TEAM}:{ADMIN}") in seen
    assert ("iotexplorer:ChatConfirmationClicked", "UnauthorizedOperation", f"slack:{TEAM}:{DENIED}") in seen
    assert ("iotexplorer:ChatConfirmationClicked", "Success", f"slack:{TEAM}:{ADMIN}") in seen
    assert ("iotexplorer:ChatConfirmationRepeated", "AlreadyHandled", f"slack:{TEAM}:{ADMIN}") in seen
    assert ("iotexplorer:CreateBatchProduction", "Success", f"slack:{TEAM}:{ADMIN}") in seen
    asked_row = next(r for r in mine if r["action"] == "iotexplorer:ChatConfirmationAsked")
    assert asked_row["detail"] == f"batch create {pid} 20 qr -> creates 20 devices in product {pid} with QR codes"


def test_no_message_sent_to_chat_carries_a_secret(api, world) -> None:
    # runs last in this module: every reply and every response_url post of the tests above
    s: SlackStandIn = world["slack"]
    messages = [slack.all_text(r) for r in s.replies] + s.posted()
    assert len(messages) > 20 and len(world["secrets"]) >= 25  # 5 credentials and the batch's 20 PSKs
    for text in messages:
        leaked = [x for x in world["secrets"] if x and x in text]
        assert not leaked and not re.search(r"xox[abpr]-", text), (leaked, text[:300])
