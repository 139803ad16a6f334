"""MQTT key authentication and topic permissions, end to end (SPEC §6.1, §6.2, §6.6).

The real local stack (``python -m infra.local``) and paho-mqtt devices whose passwords are
computed here, as a Tencent-SDK device computes them.
"""

from __future__ import annotations

import time

import paho.mqtt.client as mqtt
import pytest

from tests.e2e.fleet import Api, Device
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture()
def connected():
    devices: list[Device] = []

    def keep(device: Device) -> Device:
        devices.append(device)
        return device

    yield keep
    for device in devices:
        try:
            device.close()
        except Exception:  # noqa: BLE001
            pass


@pytest.mark.parametrize("algorithm", ["hmacsha256", "hmacsha1"])
def test_a_tencent_style_password_connects(local_stack, api, pid, connected, algorithm):
    # Given a device and its secret
    dn, secret = api.device(pid)
    # When it connects with {hex hmac};{algorithm}
    device = connected(Device(local_stack, pid, dn, secret, algorithm=algorithm)).connect()
    # Then it is accepted and shows online
    assert device.connack[0].value == 0
    assert wait_until(lambda: api.describe(pid, dn)["status"] == "online")


def test_an_unmodified_sdk_device_mqtt31_long_client_id_dollar_topics(local_stack, api, pid, connected):
    # Given a device as Tencent's Python SDK builds it: MQTT 3.1, a 53-character client id,
    # its start time in milliseconds as the username's expiry, and only $ topics
    dn, secret = api.device(pid, "sdk_" + "x" * 39)
    assert len(pid + dn) == 53
    device = connected(
        Device(local_stack, pid, dn, secret, protocol=mqtt.MQTTv31, expiry=int(time.time() * 1000))
    ).connect()
    # When it subscribes to its downlinks; $ota/update with QoS 1
    _, codes = device.subscribe(device.topic("thing/down/property", dollar=True), 0)
    assert codes[0].value == 0
    elapsed, codes = device.subscribe(device.topic("ota/update", dollar=True), 1)
    # Then the SUBACK grants QoS 1 well within the SDK's 2 s
    assert codes[0].value == 1 and elapsed < 2.0
    # and a report on $thing/up/property is answered on $thing/down/property
    device.publish(
        device.topic("thing/up/property", dollar=True),
        {"method": "report", "clientToken": f"{pid}-0", "params": {"brightness": 7}},
    )
    reply = device.reply_to(f"{pid}-0", "report_reply")
    assert reply is not None, "no report_reply"
    assert reply[0] == device.topic("thing/down/property", dollar=True)
    assert reply[1]["code"] == 0


@pytest.mark.parametrize("case", ["wrong_password", "expired", "other_device_secret"])
def test_bad_credentials_are_refused(local_stack, api, pid, case):
    dn, secret = api.device(pid)
    if case == "wrong_password":
        device = Device(local_stack, pid, dn, secret, password="00" * 32 + ";hmacsha256")
    elif case == "expired":
        device = Device(local_stack, pid, dn, secret, expiry=int(time.time()) - 60)
    else:
        _, other_secret = api.device(pid)
        device = Device(local_stack, pid, dn, other_secret)
    device.connect(expect_ok=False)
    device.client.loop_stop()
    assert device.refused_with == "Bad user name or password"
    assert api.describe(pid, dn)["status"] == "inactive"


@pytest.mark.parametrize("case", ["disabled", "deleted", "unknown"])
def test_disabled_deleted_and_unknown_devices_are_refused(local_stack, api, pid, case):
    dn, secret = api.device(pid)
    if case == "disabled":
        api.call("PATCH", f"/v1/products/{pid}/devices/{dn}", 200, json={"enabled": False})
    elif case == "deleted":
        api.call("DELETE", f"/v1/products/{pid}/devices/{dn}", 204)
    else:
        dn = "never_created"
    device = Device(local_stack, pid, dn, secret).connect(expect_ok=False)
    device.client.loop_stop()
    assert device.refused_with == "Not authorized"


def test_publishing_to_another_devices_topic_is_refused_and_logged(local_stack, api, pid, connected):
    # Given two devices, one connected
    dn, secret = api.device(pid)
    victim, _ = api.device(pid)
    device = connected(Device(local_stack, pid, dn, secret)).connect()
    # When it publishes a report on the other device's topic
    device.publish(
        device.topic("thing/up/property", dn=victim),
        {"method": "report", "clientToken": "t1", "params": {"brightness": 99}},
    )
    # Then the publish is refused (no value lands on the other device), the connection stays,
    # and the publisher's diagnostic log says Dev_Pub_Unauthorized
    assert wait_until(lambda: any(e["code"] == "Dev_Pub_Unauthorized" for e in api.logs(pid, dn, "diagnostic")))
    entry = next(e for e in api.logs(pid, dn, "diagnostic") if e["code"] == "Dev_Pub_Unauthorized")
    assert victim in entry["topic"]
    assert any(e["code"] == "Dev_Pub_Unauthorized" for e in api.logs(pid, victim, "diagnostic"))
    assert "brightness" not in api.reported(pid, victim)
    assert not device.disconnected.is_set()


def test_subscribing_to_another_devices_topic_is_refused(local_stack, api, pid, connected):
    dn, secret = api.device(pid)
    other, _ = api.device(pid)
    device = connected(Device(local_stack, pid, dn, secret)).connect()
    _, codes = device.subscribe(device.topic("thing/down/property", dn=other), 1)
    assert codes[0].value == 0x80
    assert wait_until(lambda: any(e["code"] == "Subscribe_Topic_Unauthorized" for e in api.logs(pid, dn, "diagnostic")))
    assert not device.disconnected.is_set()


def test_a_connected_device_is_cut_off_when_disabled_or_deleted(stack_factory, tmp_path):
    # Given a stack that would re-authorise live connections only after an hour: the cut-off
    # must come from the disable/delete itself (publisher.disconnect), not the re-auth timer
    stack = stack_factory(home=tmp_path / "reauth", FLEETBOX_MQTT_REAUTH_S="3600")
    api = Api(stack.info)
    pid = api.product()
    (disabled, s1), (deleted, s2) = api.device(pid), api.device(pid)
    first = Device(stack.info, pid, disabled, s1).connect()
    second = Device(stack.info, pid, deleted, s2).connect()
    try:
        # When one device is disabled and the other deleted
        api.call("PATCH", f"/v1/products/{pid}/devices/{disabled}", 200, json={"enabled": False})
        api.call("DELETE", f"/v1/products/{pid}/devices/{deleted}", 204)
        # Then both are disconnected at once
        assert first.disconnected.wait(3), "the disabled device is still connected"
        assert second.disconnected.wait(3), "the deleted device is still connected"
        assert wait_until(lambda: api.describe(pid, disabled)["status"] == "offline")
    finally:
        first.client.loop_stop()
        second.client.loop_stop()
    assert stack.terminate() == 0
