"""A gateway and its subdevices over real MQTT (SPEC §6.5): bind (signed), online, a
subdevice's report through the gateway landing on the subdevice, topology, offline."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from tests.e2e.fleet import Api, Device
from tests.helpers import sign_gateway_bind, wait_until

pytestmark = pytest.mark.e2e


def bind_entry(sub_pid: str, sub_dn: str, sub_secret: str) -> dict[str, Any]:
    nonce, ts = random.randint(1, 2**31), int(time.time())
    signature = sign_gateway_bind(sub_pid, sub_dn, sub_secret, nonce, ts)
    return {
        "product_id": sub_pid,
        "device_name": sub_dn,
        "signature": signature,
        "random": nonce,
        "timestamp": ts,
        "signmethod": "hmacsha256",
    }


def operation(gateway: Device, body: dict[str, Any], token: str) -> dict[str, Any]:
    gateway.publish(gateway.topic("gateway/operation", dollar=True), {**body, "clientToken": token})
    got = gateway.reply_to(token)
    assert got is not None, f"no answer to {body['type']}"
    assert got[0] == gateway.topic("gateway/operation/result", dollar=True)
    return got[1]


def test_gateway_binds_brings_online_and_reports_for_a_subdevice(stack_factory, tmp_path):
    # A stack of its own: the authorizer caches the list of subdevice products its gateway
    # policies name, and this test creates one
    stack = stack_factory(home=tmp_path / "gateway")
    api = Api(stack.info)
    # Given a gateway product, a subdevice product, and one device of each (plus an unbound subdevice)
    gw_pid = api.product(device_type="gateway", name="Hub")
    sub_pid = api.product(device_type="subdevice", name="Sensor")
    gw_dn, gw_secret = api.device(gw_pid)
    sub_dn, sub_secret = api.device(sub_pid)
    stranger, _ = api.device(sub_pid)
    gateway = Device(stack.info, gw_pid, gw_dn, gw_secret).connect()
    try:
        gateway.subscribe(gateway.topic("gateway/operation/result", dollar=True), 1)
        # When it binds the subdevice (signed with the subdevice's secret) and brings it online
        bound = operation(
            gateway, {"type": "bind", "payload": {"devices": [bind_entry(sub_pid, sub_dn, sub_secret)]}}, "bind-1"
        )
        assert [d["result"] for d in bound["payload"]["devices"]] == [0]
        online = operation(
            gateway,
            {"type": "online", "payload": {"devices": [{"product_id": sub_pid, "device_name": sub_dn}]}},
            "online-1",
        )
        assert [d["result"] for d in online["payload"]["devices"]] == [0]
        assert wait_until(lambda: api.describe(sub_pid, sub_dn)["status"] == "online")
        # and reports on the subdevice's topic
        _, codes = gateway.subscribe(gateway.topic("thing/down/property", dollar=True, pid=sub_pid, dn=sub_dn), 0)
        assert codes[0].value == 0
        gateway.publish(
            gateway.topic("thing/up/property", dollar=True, pid=sub_pid, dn=sub_dn),
            {"method": "report", "clientToken": "sub-1", "params": {"brightness": 55}},
        )
        # Then the report lands on the subdevice and the reply comes back on its topic
        reply = gateway.reply_to("sub-1", "report_reply")
        assert reply is not None and reply[1]["code"] == 0
        assert reply[0] == gateway.topic("thing/down/property", dollar=True, pid=sub_pid, dn=sub_dn)
        assert api.reported(sub_pid, sub_dn)["brightness"]["value"] == 55
        # and the topology shows it
        subs = api.call("GET", f"/v1/products/{gw_pid}/devices/{gw_dn}/subdevices", 200).json()["items"]
        assert [(s["product_id"], s["device_name"], s["online"]) for s in subs] == [(sub_pid, sub_dn, True)]
        # A subdevice the gateway is not bound to gets nothing stored
        gateway.publish(
            gateway.topic("thing/up/property", pid=sub_pid, dn=stranger),
            {"method": "report", "clientToken": "sub-2", "params": {"brightness": 1}},
        )
        # the uplink refuses it in its handling stage and logs Dev_Pub_Unauthorized on the
        # stranger with the batch's rows, after the batch's device writes: once that entry is
        # there, anything the report could have stored would be there too
        assert wait_until(
            lambda: any(e["code"] == "Dev_Pub_Unauthorized" for e in api.logs(sub_pid, stranger, "diagnostic"))
        )
        assert api.reported(sub_pid, stranger) == {}
    finally:
        gateway.close()
    # When the gateway goes away, its subdevices go offline with it
    assert wait_until(lambda: api.describe(sub_pid, sub_dn)["status"] == "offline")
    assert stack.terminate() == 0
