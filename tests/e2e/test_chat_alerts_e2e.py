"""Alerts in chat on the real local stack (SPEC §12): a paho tracker crossing a fence and a
simulated device failing its OTA upgrade reach a subscribed Slack channel and a subscribed Feishu
custom bot; a device flapping across a fence 100 times within the rate-limit window produces one
message and, with no further event, a suppressed-count summary.

Slack's Web API and Feishu cannot be reached from here: loopback stand-ins take their place
(``tests/chat_receivers.py``); the stack is pointed at the Slack one with
``FLEETBOX_SLACK_API_URL``, and the Feishu one verifies the signature with its own code.  At the
end every message received is searched for secrets (device secrets, the bot token, the Feishu
secret, the admin key): none is there.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.local.simulate import Api as SimApi
from infra.local.simulate import Simulator, load_devices
from tests.chat_receivers import FeishuStandIn, SlackStandIn
from tests.e2e.fleet import Api, Device
from tests.e2e.stack import start_stack
from tests.helpers import gps_property, point_at, wait_until

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e

BOT_TOKEN = "xoxb-e2e-bot-token"
SLACK = "slack:T0E2ETEAM:C0E2EALRT"
WINDOW_S = 30
GPS_MODEL = {"version": "1.0", "properties": [gps_property(accuracy=True)], "events": [], "actions": []}
CENTRE = (48.0, 11.0)


class World:
    def __init__(self, info: dict[str, Any], slack: SlackStandIn, feishu: FeishuStandIn) -> None:
        self.info, self.slack, self.feishu = info, slack, feishu
        self.api = Api(info)
        self.secrets: set[str] = {BOT_TOKEN, feishu.secret, info["admin_api_key"]}
        ch = self.api.call(
            "POST",
            "/v1/chat/bots",
            201,
            json={"platform": "feishu", "name": "ops", "webhook_url": feishu.url, "secret": feishu.secret},
        ).json()
        assert ch["secret_set"] is True and feishu.secret not in str(ch)
        self.feishu_ref = ch["ref"]

    def subscribe(self, channel: str, kind: str, pid: str) -> None:
        body = {"channel": channel, "kind": kind, "product_id": pid}
        self.api.call("POST", "/v1/chat/subscriptions", 201, json=body)

    def slack_texts(self, needle: str) -> list[str]:
        return [m["text"] for m in list(self.slack.messages) if needle in m["text"]]

    def feishu_texts(self, needle: str) -> list[str]:
        out = []
        for m in list(self.feishu.messages):
            text = m["content"]["text"] if m["msg_type"] == "text" else m["card"]["header"]["title"]["content"]
            if needle in text:
                out.append(text)
        return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    slack = SlackStandIn(token=BOT_TOKEN).start()
    feishu = FeishuStandIn(secret="e2eFeishuSecret42").start()
    proc = start_stack(
        tmp_path_factory.mktemp("chat-alerts-home"),
        FLEETBOX_SLACK_BOT_TOKEN=BOT_TOKEN,
        FLEETBOX_SLACK_API_URL=slack.base_url,
        FLEETBOX_CHAT_ALERT_WINDOW_S=str(WINDOW_S),
        FLEETBOX_OTA_MINUTE_S="1",
        FLEETBOX_SCHEDULE_SPEEDUP="30",
    )
    try:
        w = World(proc.info, slack, feishu)
        yield w
        # no chat message sent during these tests carries a secret
        texts = slack.texts() + feishu.texts()
        assert texts
        for text in texts:
            leaked = [s for s in w.secrets if s and s in text] + re.findall(r"whsec_[A-Za-z0-9+/=]{8,}", text)
            assert not leaked, (leaked, text[:300])
        assert feishu.bad_signatures == 0
    finally:
        code = proc.terminate()
        slack.stop()
        feishu.stop()
        assert code == 0, proc.log_text()[-4000:]


def _tracker(w: World, name: str) -> tuple[str, Device]:
    pid = w.api.product(model=GPS_MODEL, name="Tracker")
    dn, secret = w.api.device(pid, name)
    w.secrets.add(secret)
    sid = w.api.call("POST", "/v1/spaces", 201, json={"name": f"e2e {uuid.uuid4().hex[:6]}", "products": [pid]}).json()[
        "space_id"
    ]
    fence = {"name": "depot", "type": "circle", "circle": {"lat": CENTRE[0], "lon": CENTRE[1], "radius": 200}}
    bound = [{"product_id": pid, "device_name": dn}]
    w.api.call("POST", f"/v1/spaces/{sid}/fences", 201, json={**fence, "devices": bound})
    w.subscribe(SLACK, "alarms", pid)
    w.subscribe(w.feishu_ref, "alarms", pid)
    device = Device(w.info, pid, dn, secret).connect()
    device.subscribe(device.topic("thing/down/property"))
    return pid, device


def _fix(device: Device, pos: tuple[float, float], ts_ms: int, wait: bool = True) -> None:
    token = f"t{ts_ms}"
    value = {"latitude": round(pos[0], 6), "longitude": round(pos[1], 6), "accuracy": 3.0}
    body = {"method": "report", "clientToken": token, "timestamp": ts_ms, "params": {"GPS_Info": value}}
    device.publish(device.topic("thing/up/property"), body)
    if wait:
        reply = device.reply_to(token, "report_reply")
        assert reply is not None and reply[1]["code"] == 0, reply


def test_a_geofence_alarm_reaches_slack_and_feishu(world: World) -> None:
    pid, device = _tracker(world, "walker")
    try:
        ts = int(time.time() * 1000) - 60_000
        _fix(device, point_at(*CENTRE, 1000, 90), ts)
        _fix(device, CENTRE, ts + 1000)  # into the depot: one enter alarm
        want = f"{pid}/walker entered fence depot"
        assert wait_until(lambda: world.slack_texts(want) and world.feishu_texts(want), timeout=30), (
            world.slack.messages[-3:],
            world.feishu.messages[-3:],
        )
        (msg,) = [m for m in world.slack.messages if want in m["text"]]
        assert msg["channel"] == "C0E2EALRT" and msg["blocks"][0]["text"]["text"].endswith(want)
    finally:
        device.close()


def test_an_ota_failure_reaches_slack_and_feishu(world: World) -> None:
    import hashlib

    import requests

    api = world.api
    pid = api.product(name="OTA chat")
    world.subscribe(SLACK, "ota", pid)
    world.subscribe(world.feishu_ref, "ota", pid)
    devices = load_devices(SimApi(world.info["api_url"], world.info["admin_api_key"]), pid, 1, create=True, prefix="fw")
    world.secrets |= {d.secret for d in devices}
    sim = Simulator(
        devices,
        world.info["mqtt_host"],
        world.info["mqtt_port"],
        rate=0,
        ota=True,
        dollar=True,
        mqtt31=True,
        default_ota="fail",
    )
    assert sim.start(wait=True, timeout=60), sim.refusals[:3]
    try:
        data = b"\x7fELF-chat-alerts" + bytes(range(256)) * 8
        fw = api.call(
            "POST",
            "/v1/firmware",
            201,
            json={"product_id": pid, "name": "fw", "version": "2.0", "file_name": "fw.bin", "file_size": len(data)},
        ).json()
        assert requests.put(fw["upload_url"], data=data, timeout=30).status_code == 200
        assert api.call("POST", f"/v1/firmware/{fw['id']}/complete", 200).json()["md5"] == hashlib.md5(data).hexdigest()
        dn = devices[0].device_name
        api.call("POST", "/v1/ota-tasks", 202, json={"firmware_id": fw["id"], "method": "by_device", "devices_csv": dn})
        want = f"OTA upgrade failed on {pid}/{dn}"
        assert wait_until(lambda: world.slack_texts(want) and world.feishu_texts(want), timeout=60), (
            world.slack.messages[-3:]
        )
        # and the task's end (done: its one device failed) is told too
        assert wait_until(lambda: world.slack_texts(f"of {pid} finished"), timeout=30)
    finally:
        sim.stop()


def test_100_alarms_from_a_flapping_device_make_one_message_and_a_summary(world: World) -> None:
    pid, device = _tracker(world, "flappy")
    try:
        ts = int(time.time() * 1000) - 300_000
        outside = point_at(*CENTRE, 1000, 90)
        _fix(device, outside, ts)
        for i in range(100):  # in, out, in, … as fast as the device can publish
            _fix(device, CENTRE if i % 2 == 0 else outside, ts + (i + 1) * 1000, wait=i == 99)

        def alarms() -> int:
            page = world.api.call("GET", "/v1/alarms", 200, params={"product_id": pid, "start": 0, "limit": 100}).json()
            return len(page["items"])

        assert wait_until(lambda: alarms() == 100, timeout=60), alarms()
        tag = f"{pid}/flappy"
        summary = f"99 more alarms from {tag} suppressed in the last {WINDOW_S} s"
        # one message each, then — no further event — the summary once the window is over
        assert wait_until(lambda: world.slack_texts(summary) and world.feishu_texts(summary), timeout=WINDOW_S + 30), (
            world.slack_texts(tag)
        )
        assert len(world.slack_texts(tag)) == 2 and len(world.feishu_texts(tag)) == 2
        assert world.slack_texts(tag)[0].startswith(f"🚨 {tag} entered fence depot")
    finally:
        device.close()


#: one worker process: 5 threads × 5 alerts of one (channel, kind, device) through the limiter
_WORKER = """
import json, sys
from concurrent.futures import ThreadPoolExecutor
from chalicelib.services import chat_limit
def one(_):
    a = chat_limit.admit(sys.argv[1], "fence.alarm", sys.argv[2])
    return [a.send, a.gen, a.key]
with ThreadPoolExecutor(5) as pool:
    print(json.dumps(list(pool.map(one, range(25)))))
"""


def _in_stack_env(info: dict[str, Any], code: str, *args: str) -> subprocess.Popen:
    """``code`` in a fresh interpreter whose DynamoDB is the stack's DynamoDB Local (the product's
    limiter talks to the same tables the stack's workers use)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLEETBOX_"))} | {
        "AWS_ENDPOINT_URL": info["dynamodb_endpoint"],
        "AWS_ACCESS_KEY_ID": info["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": info["aws_secret_access_key"],
        "AWS_DEFAULT_REGION": "us-east-1",
        "FLEETBOX_STAGE": "local",
        "PYTHONPATH": str(REPO),
    }
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_the_limiter_counts_atomically_under_concurrent_workers(world: World) -> None:
    """Four worker processes of five threads each admit 100 alerts of one key at once on DynamoDB
    Local: exactly one is sent, 99 are counted, and closing the window reads 99 exactly once."""
    subject = f"P/race{uuid.uuid4().hex[:6]}"
    procs = [_in_stack_env(world.info, _WORKER, SLACK, subject) for _ in range(4)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        results += json.loads(out.strip().splitlines()[-1])
    sent = [r for r in results if r[0]]
    assert len(results) == 100 and len(sent) == 1, sent
    _, gen, key = sent[0]
    assert {r[1] for r in results} == {gen}
    close = (
        "import sys; from chalicelib.services import chat_limit; print(chat_limit.close(sys.argv[1], int(sys.argv[2])))"
    )
    counts = []
    for _ in range(2):
        proc = _in_stack_env(world.info, close, key, str(gen))
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-2000:]
        counts.append(int(out.strip().splitlines()[-1]))
    assert counts == [99, 0]
