"""The thing-model protocol over real MQTT through the local broker and its uplink bridge
(SPEC §6.4): reports and their replies in both topic forms, validation, control and actions
through the API, events, the time service — and the device simulator against the stack."""

from __future__ import annotations

import time

import pytest

from infra.local.simulate import DeviceCredentials, Simulator
from tests.e2e.fleet import LAMP_MODEL, Device
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture()
def device(local_stack, api, pid):
    dn, secret = api.device(pid)
    dev = Device(local_stack, pid, dn, secret).connect()
    for family in ("thing/down/property", "thing/down/event", "thing/down/action", "sys/operation/result"):
        dev.subscribe(dev.topic(family, dollar=True))
    yield dev
    dev.close()


@pytest.mark.parametrize("dollar", [True, False])
def test_a_valid_report_is_stored_and_answered_on_the_form_used(device, api, pid, dollar):
    device.publish(
        device.topic("thing/up/property", dollar=dollar),
        {"method": "report", "clientToken": f"{pid}-1", "params": {"brightness": 42, "power_switch": 1}},
    )
    reply = device.reply_to(f"{pid}-1", "report_reply")
    assert reply is not None
    # the device subscribed with $; the reply arrives there whatever form the report used
    assert reply[0] == device.topic("thing/down/property", dollar=True)
    assert reply[1]["code"] == 0
    reported = api.reported(pid, device.dn)
    assert reported["brightness"]["value"] == 42 and reported["power_switch"]["value"] == 1
    history = api.call("GET", f"/v1/products/{pid}/devices/{device.dn}/properties/brightness/history", 200).json()
    assert [item["value"] for item in history["items"]] == [42]
    content = api.logs(pid, device.dn, "content")
    assert {"up", "down"} <= {e["direction"] for e in content}


def test_an_out_of_range_value_is_refused_by_name_and_diagnosed(device, api, pid):
    device.publish(
        device.topic("thing/up/property", dollar=True),
        {"method": "report", "clientToken": f"{pid}-2", "params": {"brightness": 120, "color": 1}},
    )
    reply = device.reply_to(f"{pid}-2", "report_reply")
    assert reply is not None and reply[1]["code"] != 0
    assert "brightness" in reply[1]["status"]
    reported = api.reported(pid, device.dn)
    assert "brightness" not in reported and reported["color"]["value"] == 1
    assert wait_until(lambda: any("brightness" in (e["message"] or "") for e in api.logs(pid, device.dn, "diagnostic")))


def test_control_reaches_the_device_and_its_reply_is_matched(device, api, pid):
    call = api.call(
        "POST", f"/v1/products/{pid}/devices/{device.dn}/control", 200, json={"params": {"brightness": 30}}
    ).json()
    token = call["client_token"]
    control = device.reply_to(token, "control")
    assert control is not None and control[1]["params"] == {"brightness": 30}
    # the SDK's control_reply has no method and may carry a NUL status
    device.publish(
        device.topic("thing/up/property", dollar=True), {"clientToken": token, "code": 0, "status": "\u0000"}
    )
    assert wait_until(
        lambda: (
            api.call("GET", f"/v1/products/{pid}/devices/{device.dn}/calls/{token}", 200).json()["status"] == "replied"
        )
    )


def test_a_sync_action_round_trip_and_a_timeout(device, api, pid):
    responder = device.answer_next_action({"done": 1})
    result = api.call(
        "POST",
        f"/v1/products/{pid}/devices/{device.dn}/actions/blink",
        200,
        json={"mode": "sync", "params": {"times": 2}, "timeout": 8},
    ).json()
    responder.join()
    assert result["status"] == "replied" and result["response"] == {"done": 1}
    # a device that does not answer makes the sync call time out with a clear error
    started = time.monotonic()
    resp = api.call(
        "POST",
        f"/v1/products/{pid}/devices/{device.dn}/actions/blink",
        504,
        json={"mode": "sync", "params": {"times": 1}, "timeout": 1},
    )
    assert time.monotonic() - started < 10
    assert "Timeout" in resp.text


def test_events_and_the_time_service(device, api, pid):
    device.publish(
        device.topic("thing/up/event", dollar=True),
        {
            "method": "event_post",
            "clientToken": "e-1",
            "eventId": "low_battery",
            "type": "alert",
            "timestamp": 0,
            "params": {"level": 5},
        },
    )
    reply = device.reply_to("e-1", "event_reply")
    assert reply is not None and reply[1]["code"] == 0
    device.publish(device.topic("sys/operation", dollar=True), {"type": "get", "resource": ["time"]})
    got = device.wait_message(lambda t, b: t.endswith(f"sys/operation/result/{pid}/{device.dn}"))
    assert got is not None and abs(got[1]["time"] - time.time()) < 60


def test_the_simulator_drives_a_fleet_through_the_stack(local_stack, api, pid):
    # Given 20 devices
    creds = [DeviceCredentials(pid, *api.device(pid)) for _ in range(20)]
    sim = Simulator(
        creds, local_stack["mqtt_host"], local_stack["mqtt_port"], model=LAMP_MODEL, rate=2, dollar=True, mqtt31=True
    )
    try:
        # When they connect and report for a while (until 40 reports are out: a second at 2/s each)
        assert sim.start(timeout=30), sim.refusals
        assert wait_until(lambda: sim.stats()["reports_sent"] >= 40, timeout=30), sim.stats()
        # and one of them, once the platform shows it online, gets a control and a sync action
        target = creds[0].device_name
        assert wait_until(
            lambda: api.call("GET", f"/v1/products/{pid}/devices/{target}", 200).json()["status"] == "online",
            timeout=30,
        )
        api.call("POST", f"/v1/products/{pid}/devices/{target}/control", 200, json={"params": {"color": 2}})
        action = api.call(
            "POST",
            f"/v1/products/{pid}/devices/{target}/actions/blink",
            200,
            json={"mode": "sync", "params": {"times": 1}, "timeout": 8},
        ).json()
        assert action["status"] == "replied"
        assert wait_until(lambda: sim.stats()["controls_answered"] >= 1, timeout=30)
        # and then stop reporting, staying connected until the replies to what is out have come
        sim.quiesce()
        wait_until(lambda: sim.stats()["report_replies"] >= sim.stats()["reports_sent"], timeout=30)
    finally:
        sim.stop()
    # Then every report was answered without error, and the devices' values are stored
    stats = sim.stats()
    assert stats["reports_sent"] >= 40 and stats["report_errors"] == 0 and stats["bad_messages"] == 0
    assert stats["report_replies"] == stats["reports_sent"], stats
    assert stats["time_replies"] == 20
    assert api.reported(pid, target)
