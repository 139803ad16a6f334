"""The embedded MQTT broker (infra/local/broker.py): each patch of amqtt, observed from a client.

The broker runs for real on a free port, with fake app hooks (authorizer answers, a policy
evaluator, presence and diagnostic recorders) and an in-memory uplink handler; clients are
paho-mqtt or a raw socket when the test needs bytes paho would never send.
"""

from __future__ import annotations

import fnmatch
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from chalicelib.protocol.events import UplinkMessage
from infra.local import broker as broker_mod
from infra.local.bridge import UplinkBridge
from infra.local.broker import AppHooks, BrokerLimits, BrokerPublisher, LocalBroker
from tests.helpers import wait_until

P = "ABCDEFGHIJ"
LONG_DN = "d" * 43  # {pid}{dn} = 53 characters, as the Tencent SDK sends
DEVICE = f"{P}{LONG_DN}"


# ------------------------------------------------------------------ the fake app


def own_policy(client_id: str) -> list[dict[str, Any]]:
    """A policy in the fake's shape: (action, glob) rules scoped to the device's own topics."""
    pid, dn = client_id[:10], client_id[10:]
    return [
        {
            "allow": [
                ("iot:Connect", client_id),
                ("iot:Publish", f"*/{pid}/{dn}"),
                ("iot:Publish", f"*/*/{pid}/{dn}"),
                ("iot:Subscribe", f"*/{pid}/{dn}"),
                ("iot:Subscribe", f"*/*/{pid}/{dn}"),
                ("iot:Receive", f"*/{pid}/{dn}"),
                ("iot:Receive", f"*/*/{pid}/{dn}"),
            ]
        }
    ]


def fake_policy_allows(docs: list[dict[str, Any]], action: str, topic: str) -> bool:
    return any(a == action and fnmatch.fnmatchcase(topic, pattern) for doc in docs for a, pattern in doc["allow"])


@dataclass
class FakeApp:
    """Records what the broker asked of the app; ``answers`` overrides the authorizer per client id."""

    answers: dict[str, Any] = field(default_factory=dict)
    presence: list[dict[str, Any]] = field(default_factory=list)
    diagnostics: list[tuple[str, str, str, str]] = field(default_factory=list)
    auth_events: list[dict[str, Any]] = field(default_factory=list)
    uplinks: list[UplinkMessage] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def authorize(self, event: dict[str, Any]) -> dict[str, Any]:
        self.auth_events.append(event)
        client_id = event["protocolData"]["mqtt"]["clientId"]
        answer = self.answers.get(client_id)
        if isinstance(answer, Exception):
            raise answer
        if answer is not None:
            return answer
        return {
            "isAuthenticated": True,
            "principalId": client_id,
            "refreshAfterInSeconds": 300,
            "disconnectAfterInSeconds": 86400,
            "policyDocuments": own_policy(client_id),
        }

    def record_presence(self, event: dict[str, Any]) -> None:
        with self.lock:
            self.presence.append(event)

    def record_diagnostic(self, pid: str, dn: str, code: str, message: str, **_: Any) -> None:
        with self.lock:
            self.diagnostics.append((pid, dn, code, message))

    def uplink_handler(self, event: dict[str, Any]) -> dict[str, Any]:
        import base64

        with self.lock:
            for record in event["Records"]:
                self.uplinks.append(UplinkMessage.from_record(base64.b64decode(record["kinesis"]["data"])))
        return {"batchItemFailures": []}

    def codes(self, client_id: str = DEVICE) -> list[str]:
        return [code for pid, dn, code, _ in self.diagnostics if pid + dn == client_id]

    def presence_of(self, client_id: str = DEVICE) -> list[tuple[str, str | None]]:
        return [(e["eventType"], e.get("disconnectReason")) for e in self.presence if e["clientId"] == client_id]


@pytest.fixture()
def app() -> FakeApp:
    return FakeApp()


@pytest.fixture()
def make_broker(app: FakeApp):
    started: list[LocalBroker] = []

    def make(*, limits: BrokerLimits = BrokerLimits(), reauth_s: float = 60.0, bare: bool = False) -> LocalBroker:
        if bare:
            b = LocalBroker.bare()
        else:
            hooks = AppHooks(
                authorize=app.authorize,
                policy_allows=fake_policy_allows,
                presence=app.record_presence,
                diagnostic=app.record_diagnostic,
            )
            bridge = UplinkBridge(
                app.uplink_handler, "arn:aws:kinesis:us-east-1:123456789012:stream/uplink", max_wait_s=0.005
            )
            b = LocalBroker("127.0.0.1", 0, hooks=hooks, bridge=bridge, limits=limits, reauth_s=reauth_s)
        b.start()
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()


@pytest.fixture()
def broker(make_broker) -> LocalBroker:
    return make_broker()


# ------------------------------------------------------------------ clients


class Device:
    """A paho client that records what happened to it."""

    def __init__(
        self,
        port: int,
        client_id: str = DEVICE,
        *,
        protocol: int = mqtt.MQTTv311,
        keepalive: int = 60,
        username: str = "user",
        password: str = "pw",
    ) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
        self.client.username_pw_set(username, password)
        self.connack: list[Any] = []
        self.messages: list[tuple[str, bytes, int]] = []
        self.subacks: list[list[Any]] = []
        self.disconnected = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: self.connack.append(rc)
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload, m.qos))
        self.client.on_subscribe = lambda c, u, mid, codes, p: self.subacks.append(codes)
        self.client.on_disconnect = lambda c, u, f, rc, p: self.disconnected.set()
        self.port, self.keepalive = port, keepalive

    def connect(self) -> Device:
        self.client.connect("127.0.0.1", self.port, keepalive=self.keepalive)
        self.client.loop_start()
        assert wait_until(lambda: self.connack), "no CONNACK"
        return self

    @property
    def accepted(self) -> bool:
        return bool(self.connack) and not self.connack[0].is_failure

    def subscribe(self, topic: str, qos: int = 0) -> list[Any]:
        count = len(self.subacks)
        self.client.subscribe(topic, qos)
        assert wait_until(lambda: len(self.subacks) > count), "no SUBACK"
        return self.subacks[-1]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture()
def devices():
    made: list[Device] = []

    def make(*args: Any, **kwargs: Any) -> Device:
        d = Device(*args, **kwargs)
        made.append(d)
        return d

    yield make
    for d in made:
        try:
            d.client.disconnect()
            d.client.loop_stop()
        except Exception:  # noqa: BLE001
            pass


def _string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("!H", len(data)) + data


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + broker_mod._remaining_length(len(body)) + body


def raw_connect(
    port: int,
    *,
    client_id: str = DEVICE,
    name: str = "MQTT",
    level: int = 4,
    keepalive: int = 60,
    username: str | None = "user",
    password: str | None = "pw",
) -> socket.socket:
    flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    body = _string(name) + bytes([level, flags]) + struct.pack("!H", keepalive) + _string(client_id)
    if username is not None:
        body += _string(username)
    if password is not None:
        body += _string(password)
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(_packet(0x10, body))
    return sock


def read_packet(sock: socket.socket, timeout: float = 5.0) -> tuple[int, bytes] | None:
    """(first byte, body) of the next packet; None when the broker closed the connection."""
    sock.settimeout(timeout)
    try:
        first = sock.recv(1)
        if not first:
            return None
        length, multiplier = 0, 1
        while True:
            byte = sock.recv(1)[0]
            length += (byte & 0x7F) * multiplier
            if not byte & 0x80:
                break
            multiplier *= 128
        body = b""
        while len(body) < length:
            chunk = sock.recv(length - len(body))
            if not chunk:
                return None
            body += chunk
        return first[0], body
    except ConnectionResetError:
        return None


def closed_by_broker(sock: socket.socket, timeout: float = 5.0) -> bool:
    sock.settimeout(timeout)
    try:
        while True:
            if not sock.recv(4096):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


# ------------------------------------------------------------------ P1, P2: CONNECT


def test_mqtt31_with_a_53_character_client_id_is_accepted(broker, devices, app):
    # Given a Tencent Python SDK device: MQTT 3.1 (MQIsdp, level 3) and {pid}{dn} of 53 characters
    device = devices(broker.port, DEVICE, protocol=mqtt.MQTTv31)
    # When it connects
    device.connect()
    # Then it is accepted, and the authorizer saw its credentials as IoT Core would pass them
    assert device.accepted
    assert len(DEVICE) == 53
    mqtt_data = app.auth_events[-1]["protocolData"]["mqtt"]
    assert mqtt_data["clientId"] == DEVICE and mqtt_data["username"] == "user"
    assert app.auth_events[-1]["connectionMetadata"]["sourceIp"] == "127.0.0.1"


def test_mqtt311_is_accepted_and_other_protocol_versions_are_refused(broker, devices):
    assert devices(broker.port).connect().accepted
    # MQTT 5 (level 5): CONNACK 1, unacceptable protocol version, then the socket closes
    sock = raw_connect(broker.port, level=5)
    assert read_packet(sock) == (0x20, bytes([0, broker_mod.UNACCEPTABLE_PROTOCOL]))
    assert closed_by_broker(sock)
    # a level that does not go with the name ("MQIsdp" is 3.1 only)
    sock = raw_connect(broker.port, name="MQIsdp", level=4)
    assert read_packet(sock) == (0x20, bytes([0, broker_mod.UNACCEPTABLE_PROTOCOL]))


def test_connect_without_a_client_id_is_refused(broker):
    sock = raw_connect(broker.port, client_id="")
    assert read_packet(sock) == (0x20, bytes([0, broker_mod.IDENTIFIER_REJECTED]))
    assert closed_by_broker(sock)


def test_a_client_that_never_sends_connect_is_closed(make_broker, monkeypatch):
    monkeypatch.setattr(broker_mod, "CONNECT_TIMEOUT_S", 0.3)
    b = make_broker()
    sock = socket.create_connection(("127.0.0.1", b.port), timeout=5)
    assert closed_by_broker(sock, timeout=3)


# ------------------------------------------------------------------ P3: $ topics


def test_dollar_topics_work_for_publish_and_subscribe(broker, devices, app):
    # Given a connected device using only $-prefixed topics
    device = devices(broker.port).connect()
    assert device.subscribe(f"$thing/down/property/{P}/{LONG_DN}", 0)[0].value == 0
    # When it publishes on $thing/up/property several times
    for i in range(3):
        device.client.publish(f"$thing/up/property/{P}/{LONG_DN}", f'{{"n":{i}}}', qos=1)
    # Then its session survives (stock amqtt ends it silently) and each message reaches the
    # uplink handler with the topic exactly as published
    assert wait_until(lambda: len(app.uplinks) == 3)
    assert [m.topic for m in app.uplinks] == [f"$thing/up/property/{P}/{LONG_DN}"] * 3
    assert [m.payload for m in app.uplinks] == [b'{"n":0}', b'{"n":1}', b'{"n":2}']
    assert app.uplinks[0].client_id == DEVICE and app.uplinks[0].qos == 1
    assert not device.disconnected.is_set()
    # and a cloud publish on the bare form reaches it on the $ form it subscribed with
    assert broker.publish(f"thing/down/property/{P}/{LONG_DN}", b'{"method":"report_reply"}', 0)
    assert wait_until(lambda: device.messages)
    assert device.messages[0][:2] == (f"$thing/down/property/{P}/{LONG_DN}", b'{"method":"report_reply"}')


def test_a_cloud_publish_reaches_both_subscription_forms(broker, devices):
    dollar = devices(broker.port, f"{P}dollar").connect()
    plain = devices(broker.port, f"{P}plain").connect()
    dollar.subscribe(f"$thing/down/property/{P}/dollar")
    plain.subscribe(f"thing/down/property/{P}/plain")
    assert broker.publish(f"thing/down/property/{P}/dollar", b"a")
    assert broker.publish(f"$thing/down/property/{P}/plain", b"b")
    assert wait_until(lambda: dollar.messages and plain.messages)
    assert dollar.messages == [(f"$thing/down/property/{P}/dollar", b"a", 0)]
    assert plain.messages == [(f"thing/down/property/{P}/plain", b"b", 0)]


def test_downlink_publishes_by_a_device_do_not_reach_the_uplink_handler(broker, devices, app):
    device = devices(broker.port).connect()
    device.client.publish(f"thing/down/property/{P}/{LONG_DN}", b"{}", qos=1)
    device.client.publish(f"thing/up/event/{P}/{LONG_DN}", b"{}", qos=1)
    # the event is the marker: the broker reads one connection's packets in order and the bridge
    # keeps one device's order, so the downlink publish would have reached the handler first
    assert wait_until(lambda: any(m.topic == f"thing/up/event/{P}/{LONG_DN}" for m in app.uplinks))
    assert [m.topic for m in app.uplinks] == [f"thing/up/event/{P}/{LONG_DN}"]


# ------------------------------------------------------------------ P5: SUBACK


def test_suback_grants_qos1_at_once(broker):
    # Given a connected device (raw socket, to time the SUBACK exactly)
    sock = raw_connect(broker.port)
    assert read_packet(sock) == (0x20, b"\x00\x00")
    # When it subscribes to $ota/update with QoS 1 (and something else with QoS 2)
    body = (
        struct.pack("!H", 7)
        + _string(f"$ota/update/{P}/{LONG_DN}")
        + b"\x01"
        + _string(f"$thing/down/action/{P}/{LONG_DN}")
        + b"\x02"
    )
    started = time.monotonic()
    sock.sendall(_packet(0x82, body))
    # Then the SUBACK grants QoS 1 to both (IoT Core's maximum), well within the SDK's 2 s
    assert read_packet(sock) == (0x90, struct.pack("!H", 7) + b"\x01\x01")
    assert time.monotonic() - started < 0.5


def test_a_refused_subscription_gets_0x80_and_a_diagnostic(broker, devices, app):
    device = devices(broker.port).connect()
    codes = device.subscribe(f"thing/down/property/{P}/someone_else", 1)
    assert codes[0].value == 0x80
    assert wait_until(lambda: "Subscribe_Topic_Unauthorized" in app.codes())
    assert device.subscribe(f"thing/down/property/{P}/{LONG_DN}", 1)[0].value == 1
    assert not device.disconnected.is_set()


# ------------------------------------------------------------------ P6: keep-alive


def test_keep_alive_timeout_closes_the_session_and_says_so(broker, app):
    # Given a device with a 1 s keep-alive that then goes silent
    sock = raw_connect(broker.port, keepalive=1)
    assert read_packet(sock) == (0x20, b"\x00\x00")
    started = time.monotonic()
    # Then the broker closes it after 1.5 × keep-alive (stock amqtt never does)
    assert closed_by_broker(sock, timeout=5)
    assert 1.4 <= time.monotonic() - started < 3.5
    # and the presence handler hears connect (with the keep-alive) then a keep-alive timeout
    assert wait_until(lambda: len(app.presence_of()) == 2)
    assert app.presence_of() == [("connected", None), ("disconnected", "MQTT_KEEP_ALIVE_TIMEOUT")]
    assert app.presence[0]["keepAlive"] == 1
    assert app.presence[0]["sessionIdentifier"] == app.presence[1]["sessionIdentifier"]


def test_pings_keep_a_session_alive(broker):
    sock = raw_connect(broker.port, keepalive=1)
    assert read_packet(sock) == (0x20, b"\x00\x00")
    for _ in range(5):
        time.sleep(0.5)  # the behaviour under test: a PINGREQ every 0.5 s, inside the 1.5 s grace of a 1 s keep-alive
        sock.sendall(b"\xc0\x00")
        assert read_packet(sock) == (0xD0, b"")


# ------------------------------------------------------------------ P4: never silently killed


@pytest.mark.parametrize(
    "packet",
    [
        _packet(0x36, _string(f"thing/up/property/{P}/{LONG_DN}") + b"\x00\x01{}"),  # QoS 3
        _packet(0x10, _string("MQTT") + b"\x04\x02\x00\x3c" + _string(DEVICE)),  # a second CONNECT
        _packet(0x30, _string(f"thing/up/+/{P}/{LONG_DN}") + b"{}"),  # wildcard in a topic name
    ],
    ids=["qos3", "second-connect", "wildcard-topic"],
)
def test_a_protocol_error_is_logged_diagnosed_and_closed_cleanly(broker, app, packet, caplog):
    sock = raw_connect(broker.port)
    assert read_packet(sock) == (0x20, b"\x00\x00")
    sock.sendall(packet)
    assert closed_by_broker(sock)
    assert wait_until(lambda: app.presence_of()[-1:] == [("disconnected", "CLIENT_ERROR")])
    assert wait_until(lambda: "Dev_Conn_System_Err" in app.codes())
    assert any("protocol error" in r.getMessage() for r in caplog.records)


def test_clean_disconnect_and_lost_connection_are_told_apart(broker, devices, app):
    device = devices(broker.port).connect()
    device.close()
    assert wait_until(lambda: len(app.presence_of()) == 2)
    sock = raw_connect(broker.port)
    assert read_packet(sock) == (0x20, b"\x00\x00")
    sock.close()
    assert wait_until(lambda: len(app.presence_of()) == 4)
    assert app.presence_of() == [
        ("connected", None),
        ("disconnected", "CLIENT_INITIATED_DISCONNECT"),
        ("connected", None),
        ("disconnected", "CONNECTION_LOST"),
    ]
    assert [e.get("clientInitiatedDisconnect") for e in app.presence if e["eventType"] == "disconnected"] == [
        True,
        False,
    ]


# ------------------------------------------------------------------ P7: takeover


def test_a_duplicate_client_id_takes_the_session_over(broker, devices, app):
    first = devices(broker.port).connect()
    second = devices(broker.port).connect()
    assert second.accepted
    assert first.disconnected.wait(5)
    assert wait_until(lambda: len(app.presence_of()) == 3)
    # the old session's disconnect is reported before the new session's connect
    assert app.presence_of() == [("connected", None), ("disconnected", "DUPLICATE_CLIENTID"), ("connected", None)]
    assert (
        app.presence[0]["sessionIdentifier"]
        == app.presence[1]["sessionIdentifier"]
        != app.presence[2]["sessionIdentifier"]
    )
    assert broker.connected() == [DEVICE]


# ------------------------------------------------------------------ P8: authentication and policy


@pytest.mark.parametrize(
    "answer,code",
    [
        ({"isAuthenticated": False, "reason": "signature_mismatch"}, 4),
        ({"isAuthenticated": False, "reason": "expired"}, 4),
        ({"isAuthenticated": False, "reason": "device_disabled"}, 5),
        ({"isAuthenticated": False, "reason": "device_not_found"}, 5),
        ({"isAuthenticated": False, "reason": "system_error"}, 3),
        (RuntimeError("authorizer down"), 3),
        ({"isAuthenticated": True, "policyDocuments": []}, 5),  # no iot:Connect in the policy
    ],
)
def test_the_authorizer_answer_decides_the_connack(broker, app, answer, code):
    app.answers[DEVICE] = answer
    sock = raw_connect(broker.port)
    assert read_packet(sock) == (0x20, bytes([0, code]))
    assert closed_by_broker(sock)
    assert broker.connected() == []
    assert app.presence_of() == []


def test_publishing_outside_the_policy_is_dropped_and_diagnosed(broker, devices, app):
    # Given a connected device
    device = devices(broker.port).connect()
    # When it publishes on another device's topic
    device.client.publish(f"thing/up/property/{P}/victim", b'{"method":"report"}', qos=1)
    # Then the message is dropped, both devices' diagnostic logs say so, and the session goes on
    assert wait_until(
        lambda: "Dev_Pub_Unauthorized" in app.codes() and "Dev_Pub_Unauthorized" in app.codes(f"{P}victim")
    )
    device.client.publish(f"thing/up/property/{P}/{LONG_DN}", b'{"method":"report"}', qos=1)
    assert wait_until(lambda: app.uplinks)
    assert [m.topic for m in app.uplinks] == [f"thing/up/property/{P}/{LONG_DN}"]
    assert not device.disconnected.is_set()


def test_delivery_needs_iot_receive(broker, devices, app):
    policy = own_policy(DEVICE)
    policy[0]["allow"] = [rule for rule in policy[0]["allow"] if rule[0] != "iot:Receive"]
    app.answers[DEVICE] = {"isAuthenticated": True, "policyDocuments": policy}
    device = devices(broker.port).connect()
    assert device.subscribe(f"thing/down/property/{P}/{LONG_DN}")[0].value == 0
    assert broker.publish(f"thing/down/property/{P}/{LONG_DN}", b"x") is False


def test_a_refused_reauthorisation_disconnects(make_broker, devices, app):
    b = make_broker(reauth_s=0.3)
    device = devices(b.port).connect()
    app.answers[DEVICE] = {"isAuthenticated": False, "reason": "device_disabled"}
    assert device.disconnected.wait(3)
    assert wait_until(lambda: app.presence_of()[-1:] == [("disconnected", "AUTH_ERROR")])


def test_a_successful_reauthorisation_keeps_the_session(make_broker, devices, app):
    b = make_broker(reauth_s=0.2)
    device = devices(b.port).connect()
    # a refresh is spawned only for a session that is still open: the fourth authorizer call
    # (the third refresh) is the marker that the first two refreshes kept the session
    assert wait_until(lambda: len(app.auth_events) >= 4, timeout=5)
    assert len(app.auth_events) >= 3
    assert not device.disconnected.is_set()


def test_disconnect_after_seconds_is_honoured(broker, devices, app):
    app.answers[DEVICE] = {
        "isAuthenticated": True,
        "disconnectAfterInSeconds": 1,
        "policyDocuments": own_policy(DEVICE),
    }
    device = devices(broker.port).connect()
    assert device.disconnected.wait(4)
    assert wait_until(lambda: app.presence_of()[-1:] == [("disconnected", "CUSTOMAUTH_TTL_EXPIRATION")])


def test_kick_closes_a_live_session(broker, devices, app):
    device = devices(broker.port).connect()
    assert BrokerPublisher(broker).disconnect(DEVICE) is True
    assert device.disconnected.wait(3)
    assert wait_until(lambda: app.presence_of()[-1:] == [("disconnected", "SERVER_INITIATED_DISCONNECT")])
    assert broker.kick(DEVICE) is False


# ------------------------------------------------------------------ P9: limits


def test_an_oversized_payload_is_dropped_and_diagnosed(make_broker, devices, app):
    b = make_broker(limits=BrokerLimits(max_payload=1024))
    device = devices(b.port).connect()
    topic = f"thing/up/property/{P}/{LONG_DN}"
    device.client.publish(topic, b"x" * 2000, qos=1)  # over the limit
    device.client.publish(topic, b"y" * 200_000, qos=1)  # far over: read and discarded
    device.client.publish(topic, b"{}", qos=1)
    assert wait_until(lambda: app.uplinks)
    assert [m.payload for m in app.uplinks] == [b"{}"]
    assert "Dev_Pub_Payload_TooLong" in app.codes()
    assert not device.disconnected.is_set()


def test_the_publish_rate_is_limited_per_connection(make_broker, devices, app):
    b = make_broker(limits=BrokerLimits(publish_rate=5))
    device = devices(b.port).connect()
    for i in range(20):
        device.client.publish(f"thing/up/property/{P}/{LONG_DN}", str(i), qos=0)
    assert wait_until(lambda: "Dev_Pub_Reach_Max_Limit" in app.codes())
    # markers instead of a pause: the broker reads one connection's packets in order, so the
    # SUBACK of a refused subscription sent after the 20 publishes means all of them were
    # routed; its Subscribe_Topic_Unauthorized diagnostic is recorded after theirs (one queue per
    # device), and the bridge hands over everything it took
    assert device.subscribe(f"thing/down/property/{P}/someone_else", 0)[0].value == 0x80
    assert wait_until(lambda: "Subscribe_Topic_Unauthorized" in app.codes())
    assert b.bridge.drain(5)
    assert 4 <= len(app.uplinks) <= 7
    assert app.codes().count("Dev_Pub_Reach_Max_Limit") == 1  # diagnostics are throttled


# ------------------------------------------------------------------ the publisher port, shutdown


def test_the_publisher_says_whether_anyone_subscribed(broker, devices):
    publisher = BrokerPublisher(broker)
    topic = f"thing/down/property/{P}/{LONG_DN}"
    assert publisher.publish(topic, b"nobody", 1) is False
    device = devices(broker.port).connect()
    device.subscribe(topic, 1)
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(publisher.publish(topic, b"m", 1))) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 10
    assert wait_until(lambda: len(device.messages) == 10)
    assert {m[2] for m in device.messages} == {1}


def test_stop_closes_sessions_reports_them_and_releases_the_port(make_broker, devices, app):
    b = make_broker()
    device = devices(b.port).connect()
    port = b.port
    b.stop()
    assert device.disconnected.wait(3)
    assert app.presence_of()[-1:] == [("disconnected", "SERVER_INITIATED_DISCONNECT")]
    with socket.create_server(("127.0.0.1", port)):
        pass


def test_a_busy_port_is_a_clean_start_error(broker):
    again = LocalBroker("127.0.0.1", broker.port)
    with pytest.raises(broker_mod.BrokerStartError, match="cannot listen"):
        again.start()


def test_the_bare_broker_relays_between_clients(make_broker, devices):
    b = make_broker(bare=True)
    sub = devices(b.port, "subscriber").connect()
    pub = devices(b.port, "publisher").connect()
    sub.subscribe("bench/#", 1)
    for i in range(5):
        pub.client.publish(f"bench/{i}", str(i), qos=1)
    assert wait_until(lambda: len(sub.messages) == 5)
    assert [m[0] for m in sub.messages] == [f"bench/{i}" for i in range(5)]


def test_diagnostic_codes_are_the_device_logs_codes():
    from chalicelib.protocol import diagnostics

    for name in (
        "DEV_CONN_SYSTEM_ERR",
        "SUBSCRIBE_TOPIC_UNAUTHORIZED",
        "DEV_PUB_UNAUTHORIZED",
        "DEV_PUB_REACH_MAX_LIMIT",
        "DEV_PUB_PAYLOAD_TOOLONG",
    ):
        assert getattr(broker_mod, name) == getattr(diagnostics, name)


# ------------------------------------------------------------------ the subscription index


def test_subscription_index_matches_wildcards_and_both_forms():
    index = broker_mod.SubscriptionIndex()
    index.add(f"$thing/down/property/{P}/a", "a", 1)
    index.add(f"thing/down/+/{P}/b", "b", 0)
    index.add("#", "all", 0)
    found = index.match(f"thing/down/property/{P}/a")
    assert found["a"] == (f"$thing/down/property/{P}/a", 1)
    assert found["all"] == (f"thing/down/property/{P}/a", 0)
    assert index.match(f"$thing/down/event/{P}/b")["b"] == (f"thing/down/event/{P}/b", 0)
    # [MQTT-4.7.2-1]: a leading wildcard never matches a $ topic
    assert "all" not in broker_mod.SubscriptionIndex.match(index, "$SYS/x")
    index.remove("#", "all")
    assert "all" not in index.match(f"thing/down/property/{P}/a")
