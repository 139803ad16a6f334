"""Gateways and subdevices (SPEC §6.5): bind with a signature, online, publish on the
subdevice's behalf, topology over the API, offline and unbind."""

from __future__ import annotations

import secrets

import pytest

from chalicelib.core import clock
from chalicelib.protocol import gateway_sig
from chalicelib.services import gateways
from tests.integration.helpers import MODEL, connect, logs, make_device, make_product, props, report, run, up


@pytest.fixture()
def topo(api, recorder):
    gw_pid = make_product(api, "Gateway", model=MODEL, device_type="gateway")
    sub_pid = make_product(api, "Sensor", model=MODEL, device_type="subdevice", subdevice_protocol="zigbee")
    make_device(api, gw_pid, "gw1")
    sub = make_device(api, sub_pid, "s1")
    sub2 = make_device(api, sub_pid, "s2")
    connect(gw_pid, "gw1")
    return {"gw": gw_pid, "sub": sub_pid, "secret": sub["secret"], "secret2": sub2["secret"]}


def op(gw_pid: str, body: dict, dollar: bool = False):
    run(up(gw_pid, "gw1", "gateway/operation", body, dollar=dollar))


def answer(recorder, gw_pid: str, dollar: bool = False):
    return recorder.last(("$" if dollar else "") + f"gateway/operation/result/{gw_pid}/gw1")


def bind_entry(sub_pid: str, dn: str, secret: str, method: str = "hmacsha256", **override) -> dict:
    rnd, ts = secrets.randbelow(10**9), clock.now_s()
    entry = {
        "product_id": sub_pid,
        "device_name": dn,
        "random": rnd,
        "timestamp": ts,
        "signmethod": method,
        "authtype": "psk",
        "signature": gateway_sig.sign(sub_pid, dn, secret, rnd, ts, method),
    }
    entry.update(override)
    return entry


def test_bind_online_report_on_behalf_topology_offline_unbind(api, topo, recorder):
    gw, sub, secret = topo["gw"], topo["sub"], topo["secret"]
    # Given a gateway that binds its subdevice with a valid signature (SHA-1 this time)
    op(gw, {"type": "bind", "payload": {"devices": [bind_entry(sub, "s1", secret, "hmacsha1")]}}, dollar=True)
    assert answer(recorder, gw, dollar=True) == {
        "type": "bind",
        "payload": {"devices": [{"product_id": sub, "device_name": "s1", "result": 0}]},
    }
    # a bound but offline subdevice is not yet the gateway's to speak for
    assert gateways.may_act_for(gw, "gw1", sub, "s1") is False
    # When the gateway brings it online
    op(gw, {"type": "online", "payload": {"devices": [{"product_id": sub, "device_name": "s1"}]}})
    assert answer(recorder, gw)["payload"]["devices"][0]["result"] == 0
    assert api.get(f"/v1/products/{sub}/devices/s1").json["status"] == "online"
    assert gateways.may_act_for(gw, "gw1", sub, "s1") is True
    # Then a report the gateway publishes on the subdevice's topic lands on the subdevice
    run(report(sub, "s1", {"brightness": 61}, client_id=f"{gw}gw1"))
    assert {p["id"]: p["value"] for p in props(api, sub, "s1")["properties"]} == {"brightness": 61}
    assert recorder.last(f"thing/down/property/{sub}/s1")["code"] == 0
    # And the topology is visible over the API and to the gateway
    topo_page = api.get(f"/v1/products/{gw}/devices/gw1/subdevices").json
    assert [(i["product_id"], i["device_name"], i["online"]) for i in topo_page["items"]] == [(sub, "s1", True)]
    op(gw, {"type": "describe_sub_devices"})
    assert answer(recorder, gw) == {
        "type": "describe_sub_devices",
        "payload": {"devices": [{"product_id": sub, "device_name": "s1"}]},
    }
    # offline, then unbind
    op(gw, {"type": "offline", "payload": {"devices": [{"product_id": sub, "device_name": "s1"}]}})
    assert answer(recorder, gw)["payload"]["devices"][0]["result"] == 0
    assert api.get(f"/v1/products/{sub}/devices/s1").json["status"] == "offline"
    assert gateways.may_act_for(gw, "gw1", sub, "s1") is False
    op(gw, {"type": "unbind", "payload": {"devices": [{"product_id": sub, "device_name": "s1"}]}})
    assert answer(recorder, gw)["payload"]["devices"][0]["result"] == 0
    assert api.get(f"/v1/products/{gw}/devices/gw1/subdevices").json["items"] == []
    lines = [e["message"] for e in logs(api, sub, "s1", "presence")]
    assert lines == [f"Device disconnect via gateway {gw}/gw1", f"Device connect via gateway {gw}/gw1"]


def test_a_forged_or_stale_signature_is_refused(api, topo, recorder):
    gw, sub = topo["gw"], topo["sub"]
    forged = bind_entry(sub, "s1", "AAAAAAAAAAAAAAAAAAAAAA==")
    stale = bind_entry(sub, "s2", topo["secret2"], timestamp=clock.now_s() - 3600)
    stale["signature"] = gateway_sig.sign(sub, "s2", topo["secret2"], stale["random"], stale["timestamp"])
    op(gw, {"type": "bind", "payload": {"devices": [forged, stale, {"product_id": sub}]}})
    results = [d["result"] for d in answer(recorder, gw)["payload"]["devices"]]
    assert results == [401, 401, 400]
    assert api.get(f"/v1/products/{gw}/devices/gw1/subdevices").json["items"] == []
    assert any("signature mismatch" in d["message"] for d in logs(api, sub, "s1", "diagnostic"))
    # an unbound subdevice cannot be brought online, and its topics stay closed to the gateway
    op(gw, {"type": "online", "payload": {"devices": [{"product_id": sub, "device_name": "s1"}]}})
    assert answer(recorder, gw)["payload"]["devices"][0]["result"] == 409
    run(report(sub, "s1", {"brightness": 5}, client_id=f"{gw}gw1"))
    assert props(api, sub, "s1")["properties"] == []
    assert "Dev_Pub_Unauthorized" in [d["code"] for d in logs(api, sub, "s1", "diagnostic")]


def test_only_subdevice_products_bind_and_only_gateways_operate(api, topo, recorder):
    gw, sub = topo["gw"], topo["sub"]
    plain = make_product(api, "Plain", model=MODEL)
    other = make_device(api, plain, "p1")
    op(
        gw,
        {
            "type": "bind",
            "payload": {
                "devices": [bind_entry(plain, "p1", other["secret"]), bind_entry(sub, "nobody", topo["secret"])]
            },
        },
    )
    assert [d["result"] for d in answer(recorder, gw)["payload"]["devices"]] == [403, 404]
    # a device of a non-gateway product gets 403 for every entry
    run(
        up(
            plain,
            "p1",
            "gateway/operation",
            {"type": "online", "payload": {"devices": [{"product_id": sub, "device_name": "s1"}]}},
        )
    )
    assert recorder.last(f"gateway/operation/result/{plain}/p1")["payload"]["devices"][0]["result"] == 403


def test_a_gateway_going_offline_takes_its_subdevices_with_it(api, topo, recorder):
    from chalicelib.protocol.events import presence_event
    from chalicelib.services import lifecycle

    gw, sub, secret = topo["gw"], topo["sub"], topo["secret"]
    op(
        gw,
        {
            "type": "bind",
            "payload": {"devices": [bind_entry(sub, "s1", secret), bind_entry(sub, "s2", topo["secret2"])]},
        },
    )
    assert [d["result"] for d in answer(recorder, gw)["payload"]["devices"]] == [0, 0]
    op(
        gw,
        {
            "type": "online",
            "payload": {
                "devices": [{"product_id": sub, "device_name": "s1"}, {"product_id": sub, "device_name": "s2"}]
            },
        },
    )
    assert [d["result"] for d in answer(recorder, gw)["payload"]["devices"]] == [0, 0]
    lifecycle.handle(
        presence_event(
            f"{gw}gw1", False, timestamp_ms=clock.now_ms(), session_id="s-1", reason="MQTT_KEEP_ALIVE_TIMEOUT"
        )
    )
    for dn in ("s1", "s2"):
        assert api.get(f"/v1/products/{sub}/devices/{dn}").json["status"] == "offline"
        assert gateways.may_act_for(gw, "gw1", sub, dn) is False
    assert [i["online"] for i in api.get(f"/v1/products/{gw}/devices/gw1/subdevices").json["items"]] == [False, False]
