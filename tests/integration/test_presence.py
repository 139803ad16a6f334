"""Online/offline (SPEC §5, §6.4): lifecycle events drive status, times, the presence log and
the online counter; stale disconnects and unknown clients change nothing."""

from __future__ import annotations

from chalicelib.core import clock
from chalicelib.protocol.events import presence_event
from chalicelib.services import analytics, lifecycle
from tests.integration.helpers import logs

DEV = "/v1/products/{}/devices/dev1"


def event(pid: str, connected: bool, session: str, **kw):
    return lifecycle.handle(
        presence_event(f"{pid}dev1", connected, timestamp_ms=clock.now_ms(), session_id=session, **kw)
    )


def device(api, pid):
    r = api.get(DEV.format(pid))
    assert r.status_code == 200, r.body
    return r.json


def online_gauge(api, pid):
    return api.get(f"/v1/stats/overview?product_id={pid}").json["online"]


def test_connect_then_clean_disconnect(api, lamp):
    # Given a device that has never connected
    assert device(api, lamp)["status"] == "inactive"
    # When it connects
    assert event(lamp, True, "s1", ip="203.0.113.7", keepalive=240)["applied"] is True
    d = device(api, lamp)
    assert d["status"] == "online" and d["activated_at"] is not None and d["last_online_at"] is not None
    first_activation = d["activated_at"]
    assert online_gauge(api, lamp) == 1
    # And disconnects cleanly
    assert event(lamp, False, "s1", client_initiated=True)["applied"] is True
    assert device(api, lamp)["status"] == "offline"
    assert online_gauge(api, lamp) == 0
    # Then the presence log tells both, newest first
    lines = [e["message"] for e in logs(api, lamp, "dev1", "presence")]
    assert lines == ["Device disconnect", "Device connect, keepalive 240, clientip 203.0.113.7"]
    # And a reconnect keeps the first activation time
    clock.shift(5)
    try:
        event(lamp, True, "s2", ip="203.0.113.7")
        assert device(api, lamp)["activated_at"] == first_activation
    finally:
        clock.reset()
    overview = api.get(f"/v1/stats/overview?product_id={lamp}").json
    assert overview["activated"] == 1 and overview["online"] == 1


def test_keepalive_timeout_is_logged_as_such(api, lamp):
    event(lamp, True, "s1", ip="10.1.1.1", keepalive=60)
    event(lamp, False, "s1", reason="MQTT_KEEP_ALIVE_TIMEOUT")
    assert device(api, lamp)["status"] == "offline"
    entry = logs(api, lamp, "dev1", "presence")[0]
    assert entry["message"] == "Device keepalive timeout" and entry["code"] == "MQTT_KEEP_ALIVE_TIMEOUT"


def test_a_stale_disconnect_of_an_older_session_is_ignored(api, lamp):
    event(lamp, True, "old", ip="10.1.1.1")
    event(lamp, True, "new", ip="10.1.1.2")  # reconnected before IoT Core reported the old one gone
    assert event(lamp, False, "old", reason="DUPLICATE_CLIENTID")["applied"] is False
    assert device(api, lamp)["status"] == "online"
    assert online_gauge(api, lamp) == 1  # the second connect of an online device is no new online device
    # a repeated disconnect changes nothing either
    assert event(lamp, False, "new")["applied"] is True
    assert event(lamp, False, "new")["applied"] is False
    assert online_gauge(api, lamp) == 0
    assert [e["message"] for e in logs(api, lamp, "dev1", "presence")].count("Device disconnect") == 1


def test_unknown_client_ids_are_ignored(api, lamp):
    assert lifecycle.handle(presence_event("short", True, timestamp_ms=clock.now_ms()))["applied"] is False
    assert lifecycle.handle(presence_event(f"{lamp}ghost", True, timestamp_ms=clock.now_ms()))["applied"] is False
    assert lifecycle.handle({"clientId": f"{lamp}dev1", "eventType": "subscribed"})["applied"] is False
    assert device(api, lamp)["status"] == "inactive"


def test_activations_and_active_devices_are_counted_per_day(api, lamp):
    event(lamp, True, "s1")
    event(lamp, False, "s1")
    event(lamp, True, "s2")
    today = analytics.day_of(None)
    overview = api.get(f"/v1/stats/overview?product_id={lamp}").json
    day = [d for d in overview["daily"] if d["date"].replace("-", "") == today][0]
    assert day["activations"] == 1 and day["active"] == 1 and day["online_peak"] == 1
