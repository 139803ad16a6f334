"""Online/offline status and the presence log follow real MQTT sessions (SPEC §5, §6.4)."""

from __future__ import annotations

import pytest

from tests.e2e.fleet import Api, Device
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e


def presence_lines(api: Api, pid: str, dn: str) -> list[str]:
    """The presence log, oldest first."""
    return [e["message"] for e in reversed(api.logs(pid, dn, "presence"))]


def test_connect_and_clean_disconnect(local_stack, api, pid):
    # Given a device that has never connected
    dn, secret = api.device(pid)
    assert api.describe(pid, dn)["status"] == "inactive"
    # When it connects
    device = Device(local_stack, pid, dn, secret, keepalive=30).connect()
    # Then it is online, activated, and the log says how it connected
    assert wait_until(lambda: api.describe(pid, dn)["status"] == "online")
    doc = api.describe(pid, dn)
    assert doc["activated_at"] and doc["last_online_at"]
    assert wait_until(lambda: presence_lines(api, pid, dn) == ["Device connect, keepalive 30, clientip 127.0.0.1"])
    # When it disconnects cleanly
    device.close()
    # Then it is offline and the log says so
    assert wait_until(lambda: api.describe(pid, dn)["status"] == "offline")
    assert wait_until(lambda: presence_lines(api, pid, dn)[-1:] == ["Device disconnect"])


def test_keep_alive_timeout(local_stack, api, pid):
    # Given a connected device with a 2 s keep-alive
    dn, secret = api.device(pid)
    device = Device(local_stack, pid, dn, secret, keepalive=2).connect()
    assert wait_until(lambda: api.describe(pid, dn)["status"] == "online")
    # When its network loop stops (no PINGREQ any more; the socket stays open)
    device.client.loop_stop()
    # Then after 1.5 × keep-alive the broker drops it and reports a keep-alive timeout
    assert wait_until(lambda: api.describe(pid, dn)["status"] == "offline", timeout=10)
    assert presence_lines(api, pid, dn)[-1] == "Device keepalive timeout"
    sock = device.client.socket()
    if sock is not None:
        sock.close()


def test_a_reconnect_with_the_same_client_id_takes_over_and_stays_online(local_stack, api, pid):
    dn, secret = api.device(pid)
    first = Device(local_stack, pid, dn, secret).connect()
    first.client.reconnect_delay_set(60, 120)  # the old client must not fight back
    second = Device(local_stack, pid, dn, secret).connect()
    try:
        assert first.disconnected.wait(5)
        # the old session's disconnect does not take the new session offline
        assert wait_until(lambda: len(presence_lines(api, pid, dn)) >= 3)
        assert api.describe(pid, dn)["status"] == "online"
    finally:
        first.client.loop_stop()
        second.close()
    assert wait_until(lambda: api.describe(pid, dn)["status"] == "offline")
