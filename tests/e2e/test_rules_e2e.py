"""The rule engine on the real local stack (SPEC §9): a paho-mqtt device publishes, the uplink
bridge and the rule engine queue a forward job, the worker loop's ``forward`` handler delivers it
to a receiver on loopback that checks the SHA1 signature with its own code and the Standard
Webhooks signature with the ``standardwebhooks`` package; retries at +1/+3/+10 s, the error action,
the dead letter and its replay with the same ``webhook-id``; and a 1,000-message burst with the
receiver failing half the time, where every message ends delivered or dead-lettered."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.e2e.fleet import Device
from tests.e2e.stack import free_port
from tests.helpers import wait_until
from tests.receiver import Receiver

pytestmark = pytest.mark.e2e

SPEC_SQL = (
    "SELECT room1.temperature AS temp, room1.humidity AS hum FROM '/+/data' "
    "WHERE topic(2) = 'device00' AND room1.temperature > 30"
)


@pytest.fixture(scope="module")
def custom_pid(api) -> str:
    body = {
        "name": f"House {uuid.uuid4().hex[:8]}",
        "category": "custom",
        "device_type": "device",
        "comm_method": "wifi",
        "auth_type": "key",
        "data_protocol": "custom",
    }
    return api.call("POST", "/v1/products", 201, json=body).json()["product_id"]


@pytest.fixture(scope="module")
def device00(local_stack, api, custom_pid):
    dn, secret = api.device(custom_pid, "device00")
    dev = Device(local_stack, custom_pid, dn, secret).connect()
    dev.subscribe(f"{custom_pid}/{dn}/control", qos=1)
    yield dev
    dev.close()


def test_a_device_message_is_forwarded_signed_and_republished(api, custom_pid, device00):
    receiver = Receiver(token="tok123").start()
    try:
        receiver.echo = False
        rule = {
            "name": f"spec{uuid.uuid4().hex[:6]}",
            "sql": SPEC_SQL,
            "enabled": True,
            "actions": [
                {"type": "http", "url": receiver.url, "token": "tok123"},
                {"type": "republish", "topic": custom_pid + "/${deviceName}/control", "qos": 1},
            ],
        }
        refused = api.call("POST", "/v1/rules", 400, json=rule).json()
        assert refused["error"]["code"] == "InvalidParameterValue.InvalidCallbackUrl"
        receiver.echo = True
        created = api.call("POST", "/v1/rules", 201, json=rule).json()
        receiver.secret = created["actions"][0]["secret"]

        before_ms = int(time.time() * 1000)
        device00.publish(f"{custom_pid}/device00/data", {"room1": {"temperature": 31.5, "humidity": 40}, "house": "h1"})
        device00.publish(f"{custom_pid}/device00/data", {"room1": {"temperature": 12, "humidity": 40}})
        assert wait_until(lambda: receiver.ok_hits(), timeout=20)
        hit = receiver.ok_hits()[0]
        assert hit.sha1_valid is True and hit.standard_valid is True
        assert hit.headers["webhook-id"].startswith("msg_")
        assert set(hit.body) == {"devicename", "productid", "payload", "seq", "timestamp", "timemills", "topic"}
        assert hit.body["payload"] == {"temp": 31.5, "hum": 40}
        assert hit.body["devicename"] == "device00" and hit.body["productid"] == custom_pid
        assert hit.body["topic"] == f"{custom_pid}/device00/data"
        assert hit.body["timemills"] >= before_ms - 1000 and hit.body["timestamp"] == hit.body["timemills"] // 1000
        republished = device00.wait_message(lambda t, p: t.endswith("/control"), timeout=10)
        assert republished is not None and republished[1] == {"temp": 31.5, "hum": 40}

        def stats():
            return api.call("GET", f"/v1/rules/{created['name']}", 200).json()["stats"]

        assert wait_until(
            lambda: stats() == {"hits": 1, "forwards_ok": 2, "failures": 0, "dead_letters": 0}, timeout=10
        )
        # a third message that matches, as a marker: the uplink hands one device's messages to the
        # rule engine in order, so once the marker's two forwards are done the second message was
        # evaluated long before (and its hit would be counted)
        marker = {"temp": 40, "hum": 1}
        device00.publish(f"{custom_pid}/device00/data", {"room1": {"temperature": 40, "humidity": 1}})
        assert wait_until(
            lambda: stats() == {"hits": 2, "forwards_ok": 4, "failures": 0, "dead_letters": 0}, timeout=20
        ), stats()
        assert len([h for h in receiver.hits if h.body["payload"] != marker]) == 1  # the second message did not match
        api.call("DELETE", f"/v1/rules/{created['name']}", 204)
    finally:
        receiver.stop()


def test_receiver_down_retries_then_error_action_then_dead_letter_then_replay(api, custom_pid, device00):
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    probe = Receiver(token="tok123", port=port).start()  # up for the Echostr check only
    name = f"down{uuid.uuid4().hex[:6]}"
    created = api.call(
        "POST",
        "/v1/rules",
        201,
        json={
            "name": name,
            "sql": "SELECT * FROM '/+/data' WHERE n = 7",
            "enabled": True,
            "actions": [{"type": "http", "url": url, "token": "tok123"}],
            "error_actions": [{"type": "http", "url": url.replace("/hook", "/errors"), "token": "tok123"}],
        },
    ).json()
    probe.stop()

    device00.publish(f"{custom_pid}/device00/data", {"n": 7})

    def stats():
        return api.call("GET", f"/v1/rules/{name}", 200).json()["stats"]

    assert wait_until(lambda: stats()["dead_letters"] == 1, timeout=40, interval=0.5), stats()
    log = api.call("GET", "/v1/deliveries", 200, params={"target": f"rule/{name}/0"}).json()["items"]
    attempts = sorted(log, key=lambda e: e["time"])
    assert [a["attempt"] for a in attempts] == [1, 2, 3, 4] and not any(a["ok"] for a in attempts)
    offsets = [round((a["time"] - attempts[0]["time"]) / 1000, 2) for a in attempts]
    print("attempt offsets (s):", offsets)
    for got, want in zip(offsets[1:], (1, 3, 10), strict=True):
        assert want - 0.05 <= got <= want + 1.5, offsets
    errors = api.call("GET", "/v1/deliveries", 200, params={"target": f"rule/{name}/error/0"}).json()["items"]
    assert len(errors) == 1 and errors[0]["time"] > attempts[-1]["time"]
    letters = api.call("GET", "/v1/dead-letters", 200, params={"rule": name}).json()["items"]
    (letter,) = letters
    assert (
        letter["status"] == "dead"
        and "the connection was refused" in letter["reason"]
        and "error actions" in letter["reason"]
    )
    assert stats() == {"hits": 1, "forwards_ok": 0, "failures": 4, "dead_letters": 1}
    diagnostics = api.logs(custom_pid, "device00", "diagnostic")
    assert "Forward_Third_Not_Responding" in {e["code"] for e in diagnostics}

    back = Receiver(token="tok123", secret=created["actions"][0]["secret"], port=port).start()
    try:
        assert api.call("POST", f"/v1/dead-letters/{letter['id']}/replay", 202).json()["status"] == "replaying"
        assert wait_until(lambda: back.ok_hits(), timeout=15)
        assert wait_until(
            lambda: (
                api.call("GET", "/v1/dead-letters", 200, params={"rule": name}).json()["items"][0]["status"]
                == "replayed"
            ),
            timeout=10,
        )
        # the forward worker counts a batch's deliveries when the whole batch is done (after its
        # follow-ups are queued): the count proves the replay's batch is over
        assert wait_until(lambda: stats()["forwards_ok"] == 1, timeout=10), stats()
        (hit,) = back.hits
        assert hit.headers["webhook-id"] == attempts[0]["webhook_id"] and hit.standard_valid and hit.sha1_valid
        assert hit.body["payload"] == {"n": 7}
        assert stats()["forwards_ok"] == 1
    finally:
        back.stop()
    api.call("DELETE", f"/v1/rules/{name}", 204)


def test_a_burst_of_1000_device_messages_with_half_failing_ends_delivered_or_dead_lettered(api, custom_pid, device00):
    """Count in = delivered + dead-lettered, end to end: 1,000 MQTT publishes → uplink stream →
    rule → forward queue → a receiver that fails half of all requests (then retries at
    +1/+3/+10 s, then the dead letter).  Nothing is lost and nothing is delivered twice."""
    receiver = Receiver(token="tok123", fail_rate=0.5).start()
    name = f"burst{uuid.uuid4().hex[:6]}"
    try:
        created = api.call(
            "POST",
            "/v1/rules",
            201,
            json={
                "name": name,
                "sql": "SELECT n FROM '/+/data' WHERE burst = 1",
                "enabled": True,
                "actions": [{"type": "http", "url": receiver.url, "token": "tok123"}],
            },
        ).json()
        receiver.secret = created["actions"][0]["secret"]
        for n in range(1000):
            device00.publish(f"{custom_pid}/device00/data", {"n": n, "burst": 1}, qos=1)
            time.sleep(0.02)  # 50/s: under the broker's per-connection publish limit (100/s)

        def stats():
            return api.call("GET", f"/v1/rules/{name}", 200).json()["stats"]

        assert wait_until(
            lambda: sum(stats()[k] for k in ("forwards_ok", "dead_letters")) >= 1000, timeout=240, interval=1.0
        ), stats()
        final = stats()
        ok = receiver.ok_hits()
        print(f"burst: {final}; receiver saw {len(receiver.hits)} requests")
        delivered = {h.headers["webhook-id"] for h in ok}
        letters, params = [], {"rule": name, "limit": 100}
        while True:
            page = api.call("GET", "/v1/dead-letters", 200, params=params).json()
            letters += page["items"]
            if not page.get("next"):
                break
            params["next"] = page["next"]
        assert final["hits"] == 1000
        assert len(ok) == len(delivered) == final["forwards_ok"]  # no message delivered twice
        assert len(letters) == final["dead_letters"]
        assert len(delivered) + len(letters) == 1000
        assert not delivered & {letter["webhook_id"] for letter in letters}
        # every message reached the receiver at least once, under one webhook-id for all its attempts
        seen = {h.headers["webhook-id"] for h in receiver.hits}
        assert seen == delivered | {letter["webhook_id"] for letter in letters} and len(seen) == 1000
        numbers = {h.body["payload"]["n"] for h in ok}
        assert len(numbers) == len(ok)
        assert all(h.sha1_valid and h.standard_valid for h in ok)
    finally:
        receiver.stop()
        api.call("DELETE", f"/v1/rules/{name}", 204)
