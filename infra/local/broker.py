"""The embedded MQTT broker of the local stack: amqtt 0.12.1, patched for Tencent-SDK devices.

It plays IoT Core locally.  On CONNECT it calls the *same* custom-authorizer Lambda IoT Core
calls (``mqtt_authorizer``) with the same request shape
(:func:`chalicelib.protocol.events.authorizer_event`) and enforces the IoT policy documents
that Lambda answers (:func:`chalicelib.services.connectivity.policy_allows`) on every publish,
subscribe and delivery; connects and disconnects invoke the ``presence`` Lambda with IoT
Core's lifecycle-event shape; device uplinks go through :mod:`infra.local.bridge` to the
``uplink`` Kinesis handler; and :class:`BrokerPublisher` is the device publisher port
(``chalicelib.protocol.publisher``) for everything the cloud sends to devices.

Threading: the broker runs on its own asyncio loop in its own thread (:class:`LocalBroker`).
Blocking app calls (authorizer, presence, diagnostic-log writes) run in worker threads, never
on the loop; ``publish``/``kick`` may be called from any thread.

PATCHES — every way this differs from stock amqtt 0.12.1, and why
===================================================================

amqtt provides the listener and server lifecycle (:class:`amqtt.broker.Broker`: ``start``,
``shutdown``, the listener config) and the MQTT codec for the control packets (CONNECT,
CONNACK, SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK).  Its per-connection session handling is
replaced by :meth:`FleetboxBroker.stream_connected` (the one entry point amqtt calls for a
new TCP connection), because that is where each of these defects lives:

P1 MQTT 3.1.  ``BrokerProtocolHandler.init_from_connect`` refuses protocol name ``MQIsdp``
   and level 3, which Tencent's Python device SDK speaks (SPEC §6.6).  → accepted, as are
   ``MQTT``/4 (3.1.1); anything else gets CONNACK 1 (unacceptable protocol version).
P2 Client ids.  No length limit is applied (the SDK's ``{pid}{dn}`` is 53 characters; MQTT 3.1
   capped ids at 23).  An empty client id is refused (CONNACK 2): Fleetbox devices are
   ``{pid}{dn}``.
P3 ``$`` topics.  ``Broker._handle_message_delivery`` ends the session of any client that
   publishes to a ``$`` topic, without a word to the client.  → ``$thing/...`` publishes and
   subscriptions work; a cloud publish on one form reaches subscribers of both forms, each on
   the form it subscribed with (``$thing/down/...`` ↔ ``thing/down/...``, SPEC §6.1).
P4 Never silently killed.  amqtt drops a connection on invalid topics, reader exceptions and
   duplicate CONNECTs with at most a debug line.  → every close has a reason: protocol errors
   are logged, written to the device's diagnostic log (``Dev_Conn_System_Err``) and the socket
   is closed cleanly; an unexpected broker error is logged with its traceback; every close of
   an accepted connection produces a presence event with IoT Core's ``disconnectReason``.
P5 SUBACK.  amqtt queues SUBSCRIBE behind its session loop and grants the requested QoS
   (even 2).  → SUBACK is written as soon as the SUBSCRIBE is read, granting min(requested, 1)
   (IoT Core's maximum) — the SDK needs QoS 1 on ``$ota/update`` within 2 s.
P6 Keep-alive.  ``BrokerProtocolHandler.handle_read_timeout`` is a no-op, so a silent client
   is never disconnected.  → a watchdog closes connections idle for 1.5 × their keep-alive,
   reported as ``MQTT_KEEP_ALIVE_TIMEOUT``.
P7 Session takeover.  With a clean session, amqtt replaces a duplicate client id's session
   but leaves the old connection running.  → the old connection is closed first
   (``DUPLICATE_CLIENTID``), then the new one is accepted.
P8 Authentication and ACL.  amqtt's auth/topic plugins see only username and session.  → the
   authorizer Lambda decides (CONNACK 4 for bad credentials, 5 for unknown/disabled devices,
   3 when the authorizer fails); its policy documents decide iot:Publish, iot:Subscribe and
   iot:Receive (``$`` mapped to the bare form first); a refused publish is dropped
   (``Dev_Pub_Unauthorized``), a refused subscription gets return code 0x80
   (``Subscribe_Topic_Unauthorized``).  Connections are re-authorised every
   min(refreshAfterInSeconds, ``reauth_s``) and closed when refused (``AUTH_ERROR``) or after
   disconnectAfterInSeconds (``CUSTOMAUTH_TTL_EXPIRATION``); :meth:`LocalBroker.kick` closes
   one at once.
P9 Limits (IoT Core-like): payloads over ``max_payload`` are dropped
   (``Dev_Pub_Payload_TooLong``); more than ``publish_rate`` publishes per second per
   connection are dropped (``Dev_Pub_Reach_Max_Limit``).
P10 Throughput.  amqtt creates a task per incoming packet, wakes four futures per message and
   scans every subscription filter for every publish.  → packets are handled inline; the
   subscription index is a dict of exact filters plus a short list of wildcard filters;
   outgoing PUBLISHes are written directly (in order), QoS 1 tracked by packet id.
P11 Backlog.  ``asyncio.start_server``'s default backlog (100) refuses bursts of connects from
   a fleet → the listening socket is bound by us with a backlog of 4096 (which also makes
   "port in use" a clean error at start-up).

Not supported (as documented in the README): persistent sessions (every session starts
clean; CONNACK session-present is 0), retained messages (the retain flag is ignored), QoS 2
towards devices (granted QoS is at most 1; QoS 2 publishes from devices are accepted).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import queue
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from amqtt.adapters import BufferReader
from amqtt.broker import Broker
from amqtt.mqtt.connack import ConnackPacket
from amqtt.mqtt.connect import ConnectPacket
from amqtt.mqtt.packet import MQTTFixedHeader
from amqtt.mqtt.suback import SubackPacket
from amqtt.mqtt.subscribe import SubscribePacket
from amqtt.mqtt.unsuback import UnsubackPacket
from amqtt.mqtt.unsubscribe import UnsubscribePacket

from chalicelib.protocol import diagnostics
from infra.local.bridge import LambdaInvoker, UplinkBridge, find_uplink_source

log = logging.getLogger("infra.local.mqtt")

# ---------------------------------------------------------------- protocol constants

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14

#: (protocol name, level) pairs accepted in CONNECT (P1)
ACCEPTED_PROTOCOLS = {("MQTT", 4), ("MQIsdp", 3)}

ACCEPTED, UNACCEPTABLE_PROTOCOL, IDENTIFIER_REJECTED, SERVER_UNAVAILABLE = 0, 1, 2, 3
BAD_USERNAME_PASSWORD, NOT_AUTHORIZED = 4, 5
CONNACK_TEXT = {
    ACCEPTED: "accepted",
    UNACCEPTABLE_PROTOCOL: "unacceptable protocol version",
    IDENTIFIER_REJECTED: "identifier rejected",
    SERVER_UNAVAILABLE: "server unavailable",
    BAD_USERNAME_PASSWORD: "bad username or password",
    NOT_AUTHORIZED: "not authorized",
}

#: authorizer refusal reasons that mean "bad credentials" (CONNACK 4); other refusals are 5
BAD_CREDENTIAL_REASONS = frozenset(
    {
        "username_malformed",
        "client_id_mismatch",
        "connid_invalid",
        "expiry_invalid",
        "expired",
        "password_malformed",
        "algorithm_unsupported",
        "signature_mismatch",
        "secret_unusable",
    }
)

# IoT Core's lifecycle-event disconnect reasons
CLIENT_INITIATED_DISCONNECT = "CLIENT_INITIATED_DISCONNECT"
CONNECTION_LOST = "CONNECTION_LOST"
MQTT_KEEP_ALIVE_TIMEOUT = "MQTT_KEEP_ALIVE_TIMEOUT"
DUPLICATE_CLIENTID = "DUPLICATE_CLIENTID"
SERVER_INITIATED_DISCONNECT = "SERVER_INITIATED_DISCONNECT"
AUTH_ERROR = "AUTH_ERROR"
CUSTOMAUTH_TTL_EXPIRATION = "CUSTOMAUTH_TTL_EXPIRATION"
CLIENT_ERROR = "CLIENT_ERROR"
SERVER_ERROR = "SERVER_ERROR"

# diagnostic codes (spelled once, in chalicelib/protocol/diagnostics.py)
DEV_CONN_SYSTEM_ERR = diagnostics.DEV_CONN_SYSTEM_ERR
SUBSCRIBE_TOPIC_UNAUTHORIZED = diagnostics.SUBSCRIBE_TOPIC_UNAUTHORIZED
DEV_PUB_UNAUTHORIZED = diagnostics.DEV_PUB_UNAUTHORIZED
DEV_PUB_REACH_MAX_LIMIT = diagnostics.DEV_PUB_REACH_MAX_LIMIT
DEV_PUB_PAYLOAD_TOOLONG = diagnostics.DEV_PUB_PAYLOAD_TOOLONG

PUBLISH_ACTION, SUBSCRIBE_ACTION, RECEIVE_ACTION, CONNECT_ACTION = (
    "iot:Publish",
    "iot:Subscribe",
    "iot:Receive",
    "iot:Connect",
)

CONNECT_TIMEOUT_S = 10.0
MAX_CONTROL_PACKET = 65_536 * 4  # CONNECT/SUBSCRIBE/UNSUBSCRIBE bodies
MAX_DISCARDED_PACKET = 64 * 1024 * 1024
OUT_BUFFER_LIMIT = 8 * 1024 * 1024  # bytes queued towards one client before deliveries are dropped
MAX_INFLIGHT_OUT = 65_000
PINGRESP_BYTES = bytes([PINGRESP << 4, 0])


@dataclass(frozen=True)
class BrokerLimits:
    """Per-connection limits (IoT Core's defaults, except the payload size: Tencent's 16 KB)."""

    max_payload: int = 16 * 1024
    publish_rate: float = 100.0  # publishes per second per connection (burst of one second)
    max_filters: int = 50  # subscriptions per connection (IoT Core: 50)
    diagnostic_interval_s: float = 1.0  # at most one diagnostic per code per device per interval


class _Closed(Exception):
    """The peer went away."""


class ProtocolError(Exception):
    """The client broke the MQTT protocol; the connection is closed with a diagnostic."""


# ---------------------------------------------------------------- wire helpers


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def encode_publish(
    topic: str, payload: bytes, qos: int = 0, packet_id: int | None = None, retain: bool = False, dup: bool = False
) -> bytes:
    """One PUBLISH packet."""
    name = topic.encode("utf-8")
    variable = len(name).to_bytes(2, "big") + name
    if qos:
        variable += int(packet_id or 0).to_bytes(2, "big")
    first = (PUBLISH << 4) | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
    return bytes([first]) + _remaining_length(len(variable) + len(payload)) + variable + payload


def _ack(packet_type: int, packet_id: int) -> bytes:
    flags = 0x02 if packet_type == PUBREL else 0
    return bytes([(packet_type << 4) | flags, 2]) + packet_id.to_bytes(2, "big")


def _connack(code: int) -> bytes:
    return ConnackPacket.build(0, code).to_bytes()


def parse_publish(flags: int, body: bytes) -> tuple[str, bytes, int, bool, int | None]:
    """(topic, payload, qos, retain, packet id) of a PUBLISH body; raises ProtocolError."""
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise ProtocolError("PUBLISH with QoS 3")
    if len(body) < 2:
        raise ProtocolError("PUBLISH without a topic")
    end = 2 + int.from_bytes(body[:2], "big")
    if len(body) < end + (2 if qos else 0):
        raise ProtocolError("PUBLISH shorter than its topic")
    try:
        topic = body[2:end].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("PUBLISH topic is not UTF-8") from None
    packet_id = None
    if qos:
        packet_id = int.from_bytes(body[end : end + 2], "big")
        end += 2
    return topic, body[end:], qos, bool(flags & 0x01), packet_id


def valid_topic_name(topic: str) -> bool:
    return bool(topic) and len(topic) <= 65_535 and "+" not in topic and "#" not in topic and "\x00" not in topic


def valid_topic_filter(topic_filter: str) -> bool:
    if not topic_filter or len(topic_filter) > 65_535 or "\x00" in topic_filter:
        return False
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True


def bare(topic: str) -> str:
    """The topic without a leading ``$`` (what IoT policies name)."""
    return topic[1:] if topic.startswith("$") else topic


def _alternate_form(topic: str) -> str | None:
    """``thing/down/...`` ↔ ``$thing/down/...`` for Tencent-layout device topics (custom topics have no ``$`` form)."""
    from chalicelib.protocol import topics

    parsed = topics.parse(topic)
    if parsed is None or parsed.family == topics.CUSTOM:
        return None
    return topic[1:] if parsed.dollar else "$" + topic


def _filter_matches(levels: Sequence[str], topic: str) -> bool:
    parts = topic.split("/")
    if topic.startswith("$") and levels and levels[0] in ("+", "#"):
        return False  # [MQTT-4.7.2-1]
    for i, level in enumerate(levels):
        if level == "#":
            return True
        if i >= len(parts) or (level != "+" and level != parts[i]):
            return False
    return len(levels) == len(parts)


# ---------------------------------------------------------------- subscriptions


class SubscriptionIndex:
    """Topic filter → {client id: granted QoS}.

    Written on the broker loop only; copy-on-write, so :meth:`match` may run on any thread
    (the device publisher port matches in the caller's thread).
    """

    def __init__(self) -> None:
        self._exact: dict[str, dict[str, int]] = {}
        self._wild: dict[str, dict[str, int]] = {}
        self._wild_items: tuple[tuple[str, tuple[str, ...], dict[str, int]], ...] = ()

    def add(self, topic_filter: str, client_id: str, qos: int) -> None:
        table = self._wild if ("+" in topic_filter or "#" in topic_filter) else self._exact
        table[topic_filter] = {**table.get(topic_filter, {}), client_id: qos}
        if table is self._wild:
            self._rebuild_wild()

    def remove(self, topic_filter: str, client_id: str) -> None:
        table = self._wild if ("+" in topic_filter or "#" in topic_filter) else self._exact
        subs = table.get(topic_filter)
        if not subs or client_id not in subs:
            return
        rest = {cid: q for cid, q in subs.items() if cid != client_id}
        if rest:
            table[topic_filter] = rest
        else:
            del table[topic_filter]
        if table is self._wild:
            self._rebuild_wild()

    def _rebuild_wild(self) -> None:
        self._wild_items = tuple((f, tuple(f.split("/")), subs) for f, subs in self._wild.items())

    def __len__(self) -> int:
        return sum(len(s) for s in self._exact.values()) + sum(len(s) for s in self._wild.values())

    def match(self, topic: str) -> dict[str, tuple[str, int]]:
        """client id → (the topic form to deliver on, granted QoS); each client once."""
        forms = [topic]
        alternate = _alternate_form(topic)
        if alternate is not None:
            forms.append(alternate)
        found: dict[str, tuple[str, int]] = {}
        for form in forms:
            for client_id, qos in self._exact.get(form, {}).items():
                found.setdefault(client_id, (form, qos))
        for _filter, levels, subs in self._wild_items:
            for form in forms:
                if _filter_matches(levels, form):
                    for client_id, qos in subs.items():
                        found.setdefault(client_id, (form, qos))
                    break
        return found


# ---------------------------------------------------------------- the app side


@dataclass
class AppHooks:
    """What the broker calls in the app (all blocking; run off the event loop)."""

    authorize: Callable[[dict], dict]
    policy_allows: Callable[[Any, str, str], bool]
    presence: Callable[[dict], Any] | None = None
    diagnostic: Callable[..., Any] | None = None  # (pid, dn, code, message, *, topic=None, payload=None)

    @classmethod
    def from_app(
        cls, app: Any, *, region: str = "us-east-1", account_id: str = "123456789012", stage: str = "local"
    ) -> AppHooks:
        """The hooks of the Chalice app: its ``mqtt_authorizer`` and ``presence`` Lambdas (invoked
        as Lambda would), connectivity's policy evaluation and device_logs' diagnostics."""
        from chalicelib.services import connectivity, device_logs

        def lambda_or(name: str, fallback: Callable[[dict], Any] | None) -> Callable[[dict], Any] | None:
            if name in app.handler_map:
                return LambdaInvoker(app, name, region=region, account_id=account_id, stage=stage)
            if fallback is None:
                log.warning("the app has no %r Lambda: the broker cannot call it", name)
            else:
                log.warning("the app does not register the %r Lambda (app.py); calling the service directly", name)
            return fallback

        def diagnostic(
            pid: str, dn: str, code: str, message: str, *, topic: str | None = None, payload: Any = None
        ) -> Any:
            return device_logs.diagnostic(pid, dn, code, message, topic=topic, payload=payload, direction="up")

        authorize = lambda_or("mqtt_authorizer", connectivity.authorize)
        assert authorize is not None
        return cls(
            authorize=authorize,
            policy_allows=connectivity.policy_allows,
            presence=lambda_or("presence", None),
            diagnostic=diagnostic,
        )


class _KeyedWorkers:
    """N worker threads; work with the same key runs in submission order (one device's
    presence events must reach the handler connect → disconnect, in order)."""

    def __init__(self, count: int, name: str) -> None:
        self._queues: list[queue.SimpleQueue] = [queue.SimpleQueue() for _ in range(count)]
        self._threads = [
            threading.Thread(target=self._run, args=(q,), name=f"{name}-{i}", daemon=True)
            for i, q in enumerate(self._queues)
        ]
        self._pending = 0
        self._abandon = False
        self._lock = threading.Lock()
        for thread in self._threads:
            thread.start()

    def submit(self, key: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        with self._lock:
            self._pending += 1
        self._queues[hash(key) % len(self._queues)].put((fn, args, kwargs))

    def pending(self) -> int:
        return self._pending

    def _run(self, q: queue.SimpleQueue) -> None:
        while True:
            item = q.get()
            if item is None:
                return
            fn, args, kwargs = item
            try:
                if not self._abandon:
                    fn(*args, **kwargs)
            except Exception:
                if not self._abandon:  # after the stop, failures are the stack going away
                    log.exception("%s failed", getattr(fn, "__name__", fn))
            finally:
                with self._lock:
                    self._pending -= 1

    def stop(self, timeout: float) -> int:
        """Finish the queued work within ``timeout``; returns what is left undone."""
        deadline = time.monotonic() + timeout
        for q in self._queues:
            q.put(None)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        left = self._pending
        self._abandon = True  # what is left is skipped, not run against a stack going away
        return left


# ---------------------------------------------------------------- one connection


class _TokenBucket:
    __slots__ = ("rate", "capacity", "tokens", "stamp")

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Connection:
    """One client connection, from TCP accept to close."""

    _ids = itertools.count(1)

    def __init__(self, broker: FleetboxBroker, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.broker = broker
        self.number = next(self._ids)
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.ip: str = str(peer[0])
        self.port: int = int(peer[1]) if len(peer) > 1 else 0
        self.client_id: str | None = None
        self.product_id: str | None = None
        self.device_name: str | None = None
        self.session_id = str(uuid.uuid4())
        self.protocol = ""
        self.keepalive = 0
        self.username = ""
        self.password = b""
        self.will: tuple[str, bytes, int, bool] | None = None
        self.policy: list[Any] = []
        self.acl: dict[tuple[str, str], bool] = {}
        self.filters: set[str] = set()
        self.accepted = False
        self.closing = False
        self.clean = False  # the client sent DISCONNECT
        self.reason: str | None = None  # why we closed it (None: the client did)
        self.last_rx = 0.0
        self.connected_at = 0.0
        self.bucket = _TokenBucket(broker.limits.publish_rate)
        self.next_packet_id = 0
        self.inflight: dict[int, float] = {}
        self.qos2_in: set[int] = set()
        self.refresh_handle: asyncio.TimerHandle | None = None
        self.lifetime_handle: asyncio.TimerHandle | None = None
        self.done = asyncio.Event()
        self.dropped_out = 0

    def __repr__(self) -> str:
        return f"<Connection #{self.number} {self.client_id or '-'} {self.ip}:{self.port}>"

    @property
    def label(self) -> str:
        return self.client_id or f"{self.ip}:{self.port}"

    @property
    def device(self) -> tuple[str, str] | None:
        if self.product_id and self.device_name:
            return self.product_id, self.device_name
        return None

    # -- sending (loop thread only)

    def write(self, data: bytes) -> bool:
        transport = self.writer.transport
        if transport is None or transport.is_closing():
            return False
        self.writer.write(data)
        return True

    def send_publish(self, topic: str, payload: bytes, qos: int) -> bool:
        if self.closing:
            return False
        transport = self.writer.transport
        if transport is None or transport.is_closing():
            return False
        if transport.get_write_buffer_size() > OUT_BUFFER_LIMIT:
            self.dropped_out += 1
            if self.dropped_out == 1 or self.dropped_out % 1000 == 0:
                log.warning("%s is not reading: %d message(s) to it dropped", self.label, self.dropped_out)
            return False
        packet_id = None
        if qos:
            self.next_packet_id = self.next_packet_id % 65_535 + 1
            packet_id = self.next_packet_id
            if len(self.inflight) >= MAX_INFLIGHT_OUT:
                self.inflight.pop(next(iter(self.inflight)))
            self.inflight[packet_id] = time.monotonic()
        self.writer.write(encode_publish(topic, payload, qos, packet_id))
        return True

    # -- access control (any thread)

    def allowed(self, action: str, topic: str) -> bool:
        if self.broker.hooks is None:
            return True
        key = (action, topic)
        hit = self.acl.get(key)
        if hit is None:
            try:
                hit = bool(self.broker.hooks.policy_allows(self.policy, action, topic))
            except Exception:
                log.exception("evaluating the policy of %s failed; denying %s on %s", self.label, action, topic)
                hit = False
            if len(self.acl) < 512:
                self.acl[key] = hit
        return hit

    # -- closing (loop thread)

    def cancel_timers(self) -> None:
        for handle in (self.refresh_handle, self.lifetime_handle):
            if handle is not None:
                handle.cancel()

    def close(self, reason: str | None) -> None:
        """Close the connection (reason in IoT Core's spelling; None when the client ended it)."""
        if self.reason is None and reason is not None:
            self.reason = reason
        if self.closing:
            return
        self.closing = True
        self.cancel_timers()
        # wake the read loop: it sees EOF (or `closing`) and ends the session
        self.reader.feed_eof()


# ---------------------------------------------------------------- the broker


class FleetboxBroker(Broker):
    """amqtt's Broker with the connection handling of the module docstring (P1–P11)."""

    def __init__(
        self,
        config: dict[str, Any],
        *,
        listen_socket: socket.socket,
        hooks: AppHooks | None,
        bridge: UplinkBridge | None,
        limits: BrokerLimits,
        reauth_s: float,
        executor: ThreadPoolExecutor,
        workers: _KeyedWorkers,
    ) -> None:
        super().__init__(config, loop=asyncio.get_running_loop())
        self._listen_socket = listen_socket
        self.hooks = hooks
        self.bridge = bridge
        self.limits = limits
        self.reauth_s = reauth_s
        self.executor = executor
        self.workers = workers
        self.index = SubscriptionIndex()
        self.connections: dict[str, Connection] = {}  # accepted, by client id
        self.live: set[Connection] = set()  # every open TCP connection
        self._diag_stamps: dict[tuple[str, str], tuple[float, int]] = {}
        self._watchdog_task: asyncio.Task | None = None
        self.counters = {"connects": 0, "refused": 0, "publishes_in": 0, "delivered_out": 0, "dropped_in": 0}

    # -- lifecycle (P11)

    async def _create_server_instance(
        self, listener_name: str, listener_type: Any, address: str | None, port: int, ssl_context: Any
    ) -> asyncio.Server:
        return await asyncio.start_server(self.stream_connected, sock=self._listen_socket)

    async def start(self) -> None:
        await super().start()
        self._watchdog_task = asyncio.ensure_future(self._watchdog())

    async def close_all(self, timeout: float) -> None:
        """Stop accepting, close every connection (presence events included), wait for them."""
        for server in self._servers.values():
            server.instance.close()
        if self._watchdog_task is not None:
            self._watchdog_task.cancel()
        for conn in list(self.live):
            conn.close(SERVER_INITIATED_DISCONNECT)
        waiting = [asyncio.ensure_future(conn.done.wait()) for conn in list(self.live)]
        if waiting:
            _, pending = await asyncio.wait(waiting, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("%d connection(s) did not close within %.0f s", len(pending), timeout)

    async def _watchdog(self) -> None:
        """P6: close connections silent for 1.5 × their keep-alive."""
        while True:
            await asyncio.sleep(0.5)
            now = self._loop.time()
            for conn in list(self.connections.values()):
                if conn.keepalive and not conn.closing and now - conn.last_rx > 1.5 * conn.keepalive:
                    log.info(
                        "%s: no packet for %.1f s (keep-alive %d s): closing",
                        conn.label,
                        now - conn.last_rx,
                        conn.keepalive,
                    )
                    conn.close(MQTT_KEEP_ALIVE_TIMEOUT)

    # -- a connection, start to end (P4)

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str = "default"
    ) -> None:
        conn = Connection(self, reader, writer)
        self.live.add(conn)
        try:
            if await self._handshake(conn):
                await self._read_loop(conn)
        except Exception as exc:
            log.exception("broker error on %s; closing it", conn.label)
            conn.reason = conn.reason or SERVER_ERROR
            self.diagnose(
                conn,
                DEV_CONN_SYSTEM_ERR,
                f"connection closed by a broker error ({type(exc).__name__}); see the stack log",
            )
        finally:
            try:
                await self._finish(conn)
            except Exception:
                log.exception("cleaning up %s failed", conn.label)
            finally:
                self.live.discard(conn)
                conn.done.set()

    async def _read_packet(self, conn: Connection, *, max_length: int | None = None) -> tuple[int, int, bytes]:
        reader = conn.reader
        try:
            first = (await reader.readexactly(1))[0]
            length, multiplier = 0, 1
            for _ in range(4):
                byte = (await reader.readexactly(1))[0]
                length += (byte & 0x7F) * multiplier
                if not byte & 0x80:
                    break
                multiplier *= 128
            else:
                raise ProtocolError("malformed remaining length")
            packet_type, flags = first >> 4, first & 0x0F
            limit = (
                max_length
                if max_length is not None
                else (self.limits.max_payload + 65_600 if packet_type == PUBLISH else MAX_CONTROL_PACKET)
            )
            if length > limit:
                if packet_type == PUBLISH and max_length is None and length <= MAX_DISCARDED_PACKET:
                    return await self._discard_publish(conn, flags, length)
                raise ProtocolError(f"packet of type {packet_type} is {length} bytes long")
            body = await reader.readexactly(length) if length else b""
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise _Closed() from exc
        return packet_type, flags, body

    async def _discard_publish(self, conn: Connection, flags: int, length: int) -> tuple[int, int, bytes]:
        """Read an oversized PUBLISH without keeping its payload; answer it as a too-long one."""
        reader = conn.reader
        head_len = int.from_bytes(await reader.readexactly(2), "big")
        head = await reader.readexactly(head_len + (2 if (flags >> 1) & 3 else 0))
        left = length - 2 - len(head)
        while left > 0:
            chunk = await reader.readexactly(min(left, 65_536))
            left -= len(chunk)
        # marked -PUBLISH with (topic and packet id, payload size): _handle_publish reports it too long
        return -PUBLISH, flags, (head_len.to_bytes(2, "big") + head, length - 2 - len(head))  # type: ignore[return-value]

    async def _handshake(self, conn: Connection) -> bool:
        """Read CONNECT, authenticate, take over a duplicate, CONNACK.  True when accepted."""
        try:
            packet_type, flags, body = await asyncio.wait_for(
                self._read_packet(conn, max_length=MAX_CONTROL_PACKET), CONNECT_TIMEOUT_S
            )
        except TimeoutError:
            log.info("%s sent no CONNECT within %.0f s; closed", conn.label, CONNECT_TIMEOUT_S)
            return False
        except _Closed:
            return False
        except ProtocolError as exc:
            log.warning("%s: %s before CONNECT; closed", conn.label, exc)
            return False
        if packet_type != CONNECT:
            log.warning("%s: first packet is of type %d, not CONNECT; closed", conn.label, packet_type)
            return False
        try:
            connect = await ConnectPacket.from_stream(
                BufferReader(body), fixed_header=MQTTFixedHeader(CONNECT, flags, len(body))
            )
        except Exception as exc:  # noqa: BLE001 - any decoding failure is the client's
            log.warning("%s: malformed CONNECT (%s); closed", conn.label, exc)
            return False
        header, payload = connect.variable_header, connect.payload
        assert header is not None and payload is not None
        conn.protocol = f"{header.proto_name}/{header.proto_level}"
        if (header.proto_name, header.proto_level) not in ACCEPTED_PROTOCOLS:  # P1
            log.warning("%s: protocol %s refused (MQTT 3.1.1 or 3.1 only)", conn.label, conn.protocol)
            conn.write(_connack(UNACCEPTABLE_PROTOCOL))
            return False
        if header.reserved_flag or (header.will_flag and (payload.will_topic is None or payload.will_message is None)):
            log.warning("%s: malformed CONNECT flags; closed", conn.label)
            return False
        if payload.client_id_is_random or not payload.client_id:  # P2
            log.info("%s: CONNECT without a client id refused", conn.label)
            conn.write(_connack(IDENTIFIER_REJECTED))
            return False
        conn.client_id = payload.client_id
        conn.keepalive = int(header.keep_alive or 0)
        conn.username = payload.username or ""
        conn.password = (payload.password or "").encode("utf-8") if header.password_flag else b""
        if header.will_flag:
            conn.will = (
                payload.will_topic or "",
                bytes(payload.will_message or b""),
                header.will_qos,
                header.will_retain_flag,
            )
        try:
            from chalicelib.protocol.topics import split_client_id

            conn.product_id, conn.device_name = split_client_id(conn.client_id)
        except (ImportError, ValueError):
            pass

        code, detail = await self._authenticate(conn)
        if code != ACCEPTED:
            self.counters["refused"] += 1
            log.info("MQTT %s from %s refused: %s (%s)", conn.client_id, conn.ip, CONNACK_TEXT[code], detail)
            conn.write(_connack(code))
            return False

        # P7: one connection per client id; the newest wins
        while (old := self.connections.get(conn.client_id)) is not None and old is not conn:
            log.info("%s connected again from %s: closing its previous connection", conn.client_id, conn.ip)
            old.close(DUPLICATE_CLIENTID)
            try:
                await asyncio.wait_for(old.done.wait(), 5.0)
            except TimeoutError:
                log.warning("%s: the previous connection did not close within 5 s", conn.client_id)
                self.connections.pop(conn.client_id, None)
        if conn.closing:
            return False
        self.connections[conn.client_id] = conn
        conn.accepted = True
        conn.last_rx = conn.connected_at = self._loop.time()
        self.counters["connects"] += 1
        conn.write(_connack(ACCEPTED))
        self._presence(conn, connected=True)
        log.info(
            "MQTT %s connected from %s (%s, keepalive %d s)", conn.client_id, conn.ip, conn.protocol, conn.keepalive
        )
        return True

    # -- authentication (P8)

    async def _authenticate(self, conn: Connection) -> tuple[int, str]:
        if self.hooks is None:
            return ACCEPTED, "no authentication (bare broker)"
        answer = await self._call_authorizer(conn)
        if answer is None:
            return SERVER_UNAVAILABLE, "the authorizer failed"
        code, detail = self._judge(conn, answer)
        if code == ACCEPTED:
            self._apply_answer(conn, answer)
        return code, detail

    async def _call_authorizer(self, conn: Connection) -> dict | None:
        from chalicelib.protocol.events import authorizer_event

        assert self.hooks is not None and conn.client_id is not None
        event = authorizer_event(conn.client_id, conn.username, conn.password, source_ip=conn.ip)
        try:
            answer = await self._loop.run_in_executor(self.executor, self.hooks.authorize, event)
        except Exception:
            log.exception("the MQTT authorizer failed for %s", conn.client_id)
            self.diagnose(conn, DEV_CONN_SYSTEM_ERR, "MQTT connect failed: the authorizer raised an error")
            return None
        if not isinstance(answer, dict):
            log.error("the MQTT authorizer answered %r for %s; refusing", type(answer).__name__, conn.client_id)
            return None
        return answer

    def _judge(self, conn: Connection, answer: dict) -> tuple[int, str]:
        reason = str(answer.get("reason") or "")
        if answer.get("isAuthenticated") is not True:
            if reason == "system_error":
                return SERVER_UNAVAILABLE, reason
            return (BAD_USERNAME_PASSWORD if reason in BAD_CREDENTIAL_REASONS else NOT_AUTHORIZED), reason or "refused"
        docs = answer.get("policyDocuments") or []
        assert self.hooks is not None
        try:
            may_connect = self.hooks.policy_allows(docs, CONNECT_ACTION, conn.client_id or "")
        except Exception:
            log.exception("evaluating the policy of %s failed", conn.client_id)
            may_connect = False
        if not may_connect:
            return NOT_AUTHORIZED, "the policy does not allow iot:Connect for this client id"
        return ACCEPTED, "ok"

    def _apply_answer(self, conn: Connection, answer: dict) -> None:
        conn.policy = list(answer.get("policyDocuments") or [])
        conn.acl = {}
        refresh = min(_positive(answer.get("refreshAfterInSeconds"), self.reauth_s), self.reauth_s)
        self._schedule_reauth(conn, refresh)
        if conn.lifetime_handle is None:  # the lifetime counts from CONNECT, not from each refresh
            lifetime = _positive(answer.get("disconnectAfterInSeconds"), 0)
            if lifetime:
                conn.lifetime_handle = self._loop.call_later(lifetime, conn.close, CUSTOMAUTH_TTL_EXPIRATION)

    def _schedule_reauth(self, conn: Connection, seconds: float) -> None:
        if conn.refresh_handle is not None:
            conn.refresh_handle.cancel()
        # jitter: a fleet that connected at once does not re-authorise at once
        conn.refresh_handle = self._loop.call_later(seconds * random.uniform(0.9, 1.1), self._spawn_reauth, conn)

    def _spawn_reauth(self, conn: Connection) -> None:
        if not conn.closing:
            asyncio.ensure_future(self._reauthorize(conn))

    async def _reauthorize(self, conn: Connection) -> None:
        """P8: the periodic policy refresh; a refusal closes the connection."""
        answer = await self._call_authorizer(conn)
        if conn.closing:
            return
        if answer is None:  # the authorizer is failing: keep the connection, try again later
            self._schedule_reauth(conn, self.reauth_s)
            return
        code, detail = self._judge(conn, answer)
        if code == ACCEPTED:
            self._apply_answer(conn, answer)
            return
        log.info("MQTT %s: authorisation refresh refused (%s); disconnecting", conn.client_id, detail)
        conn.close(AUTH_ERROR)

    # -- the session (P3, P4, P5)

    async def _read_loop(self, conn: Connection) -> None:
        while not conn.closing:
            try:
                packet_type, flags, body = await self._read_packet(conn)
            except _Closed:
                return
            except ProtocolError as exc:
                self._protocol_error(conn, str(exc))
                return
            if conn.closing:
                return
            conn.last_rx = self._loop.time()
            try:
                if packet_type == PUBLISH or packet_type == -PUBLISH:
                    await self._handle_publish(conn, packet_type, flags, body)
                elif packet_type == PUBACK:
                    conn.inflight.pop(int.from_bytes(body[:2], "big"), None)
                elif packet_type == PUBREC:
                    conn.write(_ack(PUBREL, int.from_bytes(body[:2], "big")))
                elif packet_type == PUBREL:
                    packet_id = int.from_bytes(body[:2], "big")
                    conn.qos2_in.discard(packet_id)
                    conn.write(_ack(PUBCOMP, packet_id))
                elif packet_type == PUBCOMP:
                    pass
                elif packet_type == SUBSCRIBE:
                    await self._handle_subscribe(conn, flags, body)
                elif packet_type == UNSUBSCRIBE:
                    await self._handle_unsubscribe(conn, flags, body)
                elif packet_type == PINGREQ:
                    conn.write(PINGRESP_BYTES)
                elif packet_type == DISCONNECT:
                    conn.clean = True
                    return
                elif packet_type == CONNECT:
                    raise ProtocolError("a second CONNECT on the same connection")
                else:
                    raise ProtocolError(f"unexpected packet type {packet_type} from a client")
            except ProtocolError as exc:
                self._protocol_error(conn, str(exc))
                return
            try:
                await conn.writer.drain()
            except ConnectionError:
                return

    def _protocol_error(self, conn: Connection, problem: str) -> None:
        log.warning("MQTT %s: protocol error: %s; closing the connection", conn.label, problem)
        conn.reason = conn.reason or CLIENT_ERROR
        self.diagnose(conn, DEV_CONN_SYSTEM_ERR, f"MQTT protocol error: {problem}; connection closed")

    async def _handle_publish(self, conn: Connection, packet_type: int, flags: int, body: Any) -> None:
        qos = (flags >> 1) & 0x03
        if packet_type == -PUBLISH:  # oversized, already discarded
            head, size = body
            topic, _, qos, _, packet_id = parse_publish(flags, head)
            self.counters["publishes_in"] += 1
            self._too_long(conn, topic, size)
        else:
            topic, payload, qos, retain, packet_id = parse_publish(flags, body)
            self.counters["publishes_in"] += 1
            if qos == 2 and packet_id in conn.qos2_in:
                conn.write(_ack(PUBREC, packet_id))  # a re-sent QoS 2 message: already routed
                return
            await self.route_publish(conn, topic, payload, qos, retain)
        if qos == 1 and packet_id is not None:
            conn.write(_ack(PUBACK, packet_id))
        elif qos == 2 and packet_id is not None:
            conn.qos2_in.add(packet_id)
            conn.write(_ack(PUBREC, packet_id))

    def _too_long(self, conn: Connection, topic: str, size: int, payload: bytes = b"") -> None:
        self.counters["dropped_in"] += 1
        log.info("MQTT %s: %d-byte publish to %s dropped (limit %d)", conn.label, size, topic, self.limits.max_payload)
        self.diagnose(
            conn,
            DEV_PUB_PAYLOAD_TOOLONG,
            f"publish to {topic} dropped: payload of {size} bytes exceeds {self.limits.max_payload}",
            topic=topic,
        )
        self._answer_too_long(topic, size, payload)

    def _answer_too_long(self, topic: str, size: int, payload: bytes) -> None:
        """A thing-model request the device will wait on (it has a method and a clientToken) is
        answered on its reply topic with code 413, so the device learns why nothing happened;
        other messages are only logged (MQTT 3.1.1 has no negative acknowledgement)."""
        try:
            from chalicelib.protocol import topics

            parsed = topics.parse(topic)
            if parsed is None or parsed.family not in ("thing/up/property", "thing/up/event", "thing/up/action"):
                return
            body = json.loads(payload)
            if not isinstance(body, dict) or not isinstance(body.get("method"), str) or "clientToken" not in body:
                return
            reply = {
                "method": f"{body['method'][:40]}_reply",
                "clientToken": body["clientToken"],
                "code": 413,
                "status": f"payload of {size} bytes exceeds the {self.limits.max_payload}-byte limit; "
                f"nothing was stored",
            }
            self.fan_out(topics.reply_topic(topic), json.dumps(reply, separators=(",", ":")).encode(), 0)
        except (ValueError, UnicodeDecodeError, RecursionError, ImportError):
            return

    async def route_publish(
        self, conn: Connection, topic: str, payload: bytes, qos: int, retain: bool, *, will: bool = False
    ) -> None:
        """A device's PUBLISH: limits, policy, then MQTT subscribers and the uplink bridge."""
        if not valid_topic_name(topic):
            raise ProtocolError(f"PUBLISH to an invalid topic name {topic[:80]!r}")
        if self.hooks is not None:
            if len(payload) > self.limits.max_payload:
                self._too_long(conn, topic, len(payload), payload)
                return
            if not will and not conn.bucket.take():
                self.counters["dropped_in"] += 1
                self.diagnose(
                    conn,
                    DEV_PUB_REACH_MAX_LIMIT,
                    f"publish to {topic} dropped: more than {self.limits.publish_rate:g} messages per second",
                    topic=topic,
                )
                return
            if not conn.allowed(PUBLISH_ACTION, bare(topic)):
                self._unauthorized_publish(conn, topic, payload)
                return
        self.fan_out(topic, payload, qos)
        if self.bridge is not None:
            from chalicelib.protocol import topics
            from chalicelib.protocol.events import UplinkMessage

            parsed = topics.parse(topic)
            if parsed is not None and parsed.direction != topics.DOWN:
                message = UplinkMessage(
                    topic=topic,
                    payload=bytes(payload),
                    client_id=conn.client_id or "",
                    timestamp_ms=_now_ms(),
                    qos=qos,
                    source_ip=conn.ip,
                )
                if not self.bridge.submit(message):
                    await self.bridge.wait_for_room(message)

    def _unauthorized_publish(self, conn: Connection, topic: str, payload: bytes) -> None:
        self.counters["dropped_in"] += 1
        log.info("MQTT %s: publish to %s refused (not allowed by its policy)", conn.label, topic)
        self.diagnose(
            conn,
            DEV_PUB_UNAUTHORIZED,
            f"publish to {topic} refused: the device may not publish there",
            topic=topic,
            payload=payload,
        )
        try:
            from chalicelib.protocol import topics

            target = topics.parse(topic)
        except ImportError:
            target = None
        if target is not None and (target.product_id, target.device_name) != conn.device:
            # the device whose topic it was sees the attempt too
            self.diagnose_device(
                target.product_id,
                target.device_name,
                DEV_PUB_UNAUTHORIZED,
                f"publish to {topic} by client {conn.client_id} ({conn.ip}) refused: not authorized",
                topic=topic,
                payload=payload,
            )

    async def _handle_subscribe(self, conn: Connection, flags: int, body: bytes) -> None:
        try:
            packet = await SubscribePacket.from_stream(
                BufferReader(body), fixed_header=MQTTFixedHeader(SUBSCRIBE, flags, len(body))
            )
        except Exception as exc:  # noqa: BLE001
            raise ProtocolError(f"malformed SUBSCRIBE ({exc})") from None
        assert packet.variable_header is not None and packet.payload is not None
        requested = packet.payload.topics
        if not requested:
            raise ProtocolError("SUBSCRIBE without a topic filter")
        codes = [self._subscribe_one(conn, topic_filter, qos) for topic_filter, qos in requested]
        # P5: the SUBACK goes out now, in this read loop, before anything else is read
        conn.write(SubackPacket.build(packet.variable_header.packet_id, codes).to_bytes())

    def _subscribe_one(self, conn: Connection, topic_filter: str, qos: int) -> int:
        if qos > 2:
            raise ProtocolError(f"SUBSCRIBE with QoS {qos}")
        if not valid_topic_filter(topic_filter):
            self.diagnose(
                conn,
                SUBSCRIBE_TOPIC_UNAUTHORIZED,
                f"subscription to {topic_filter[:200]!r} refused: not a valid topic filter",
                topic=topic_filter[:200],
            )
            return 0x80
        if not conn.allowed(SUBSCRIBE_ACTION, bare(topic_filter)):
            log.info("MQTT %s: subscription to %s refused (not allowed by its policy)", conn.label, topic_filter)
            self.diagnose(
                conn,
                SUBSCRIBE_TOPIC_UNAUTHORIZED,
                f"subscription to {topic_filter} refused: the device may not subscribe there",
                topic=topic_filter,
            )
            return 0x80
        if topic_filter not in conn.filters and len(conn.filters) >= self.limits.max_filters:
            self.diagnose(
                conn,
                SUBSCRIBE_TOPIC_UNAUTHORIZED,
                f"subscription to {topic_filter} refused: more than {self.limits.max_filters} subscriptions",
                topic=topic_filter,
            )
            return 0x80
        granted = min(qos, 1)
        conn.filters.add(topic_filter)
        self.index.add(topic_filter, conn.client_id or "", granted)
        return granted

    async def _handle_unsubscribe(self, conn: Connection, flags: int, body: bytes) -> None:
        try:
            packet = await UnsubscribePacket.from_stream(
                BufferReader(body), fixed_header=MQTTFixedHeader(UNSUBSCRIBE, flags, len(body))
            )
        except Exception as exc:  # noqa: BLE001
            raise ProtocolError(f"malformed UNSUBSCRIBE ({exc})") from None
        assert packet.variable_header is not None and packet.payload is not None
        for topic_filter in packet.payload.topics:
            if topic_filter in conn.filters:
                conn.filters.discard(topic_filter)
                self.index.remove(topic_filter, conn.client_id or "")
        conn.write(UnsubackPacket.build(packet.variable_header.packet_id).to_bytes())

    # -- delivery to clients

    def fan_out(self, topic: str, payload: bytes, qos: int) -> int:
        """Deliver to the current subscribers (loop thread).  Returns how many got it."""
        delivered = 0
        for conn, form, granted in self.targets(topic):
            if conn.send_publish(form, payload, min(qos, granted)):
                delivered += 1
        self.counters["delivered_out"] += delivered
        return delivered

    def targets(self, topic: str) -> list[tuple[Connection, str, int]]:
        """Subscribers of ``topic`` allowed to receive it: (connection, topic form, granted QoS).  Any thread."""
        found = []
        for client_id, (form, granted) in self.index.match(topic).items():
            conn = self.connections.get(client_id)
            if conn is None or conn.closing:
                continue
            if not conn.allowed(RECEIVE_ACTION, bare(form)):
                continue
            found.append((conn, form, granted))
        return found

    def send_to(self, targets: Iterable[tuple[Connection, str, int]], payload: bytes, qos: int) -> None:
        delivered = 0
        for conn, form, granted in targets:
            if conn.send_publish(form, payload, min(qos, granted)):
                delivered += 1
        self.counters["delivered_out"] += delivered

    # -- ending a connection

    async def _finish(self, conn: Connection) -> None:
        conn.closing = True
        conn.cancel_timers()
        if conn.accepted and conn.client_id is not None:
            for topic_filter in conn.filters:
                self.index.remove(topic_filter, conn.client_id)
            if self.connections.get(conn.client_id) is conn:
                del self.connections[conn.client_id]
            if not conn.clean and conn.will is not None and conn.reason != CLIENT_ERROR:
                will_topic, will_payload, will_qos, will_retain = conn.will
                try:
                    await self.route_publish(conn, will_topic, will_payload, will_qos, will_retain, will=True)
                except Exception:
                    log.exception("publishing the will of %s failed", conn.client_id)
        await self._close_socket(conn)
        if conn.accepted:
            reason = conn.reason or (CLIENT_INITIATED_DISCONNECT if conn.clean else CONNECTION_LOST)
            self._presence(conn, connected=False, reason=reason)
            log.info(
                "MQTT %s disconnected (%s) after %.1f s", conn.client_id, reason, self._loop.time() - conn.connected_at
            )

    async def _close_socket(self, conn: Connection) -> None:
        writer = conn.writer
        try:
            if not writer.is_closing():
                writer.close()
            await asyncio.wait_for(writer.wait_closed(), 2.0)
        except (TimeoutError, ConnectionError, OSError):
            transport = writer.transport
            if transport is not None:
                transport.abort()

    # -- app calls off the loop

    def _presence(self, conn: Connection, *, connected: bool, reason: str | None = None) -> None:
        if self.hooks is None or self.hooks.presence is None or conn.client_id is None:
            return
        from chalicelib.protocol.events import presence_event

        event = presence_event(
            conn.client_id,
            connected,
            timestamp_ms=_now_ms(),
            ip=conn.ip,
            reason=reason,
            client_initiated=(reason == CLIENT_INITIATED_DISCONNECT),
            session_id=conn.session_id,
            keepalive=conn.keepalive if connected else None,
        )
        self.workers.submit(conn.client_id, self.hooks.presence, event)

    def diagnose(
        self, conn: Connection, code: str, message: str, *, topic: str | None = None, payload: Any = None
    ) -> None:
        """A diagnostic-log entry for the connection's device (throttled per code)."""
        if conn.device is None:
            return
        self.diagnose_device(*conn.device, code, message, topic=topic, payload=payload)

    def diagnose_device(
        self,
        product_id: str,
        device_name: str,
        code: str,
        message: str,
        *,
        topic: str | None = None,
        payload: Any = None,
    ) -> None:
        if self.hooks is None or self.hooks.diagnostic is None:
            return
        key = (f"{product_id}/{device_name}", code)
        now = time.monotonic()
        last, suppressed = self._diag_stamps.get(key, (0.0, 0))
        if now - last < self.limits.diagnostic_interval_s:
            self._diag_stamps[key] = (last, suppressed + 1)
            return
        if len(self._diag_stamps) > 50_000:
            self._diag_stamps.clear()
        self._diag_stamps[key] = (now, 0)
        if suppressed:
            message = f"{message} (and {suppressed} more like it in the last {now - last:.0f} s)"
        self.workers.submit(
            key[0], self.hooks.diagnostic, product_id, device_name, code, message, topic=topic, payload=payload
        )


def _positive(value: Any, default: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if number > 0 and math.isfinite(number) else default


def _now_ms() -> int:
    try:
        from chalicelib.core import clock
    except ImportError:
        return int(time.time() * 1000)
    return clock.now_ms()


# ---------------------------------------------------------------- running it in a thread


class BrokerStartError(RuntimeError):
    """The broker cannot start (the message says why)."""


class LocalBroker:
    """The broker on its own event loop thread: ``start()``, ``stop()``, and thread-safe
    ``publish()`` / ``kick()`` for the rest of the process.

    ``hooks=None`` and ``bridge=None`` give the *bare* broker (no authentication, no ACL, no
    presence, no uplink bridge): the same code path, used as the publish→subscribe baseline
    of the benchmarks (:meth:`bare`).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        hooks: AppHooks | None = None,
        bridge: UplinkBridge | None = None,
        limits: BrokerLimits = BrokerLimits(),
        reauth_s: float = 60.0,
        auth_threads: int = 16,
        event_threads: int = 8,
    ) -> None:
        self.host = host
        self.port = port
        self.hooks = hooks
        self.bridge = bridge
        self.limits = limits
        self.reauth_s = reauth_s
        self.auth_threads = auth_threads
        self.event_threads = event_threads
        self.broker: FleetboxBroker | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._workers: _KeyedWorkers | None = None
        self._running = False

    # -- construction

    @classmethod
    def for_app(
        cls,
        app: Any,
        host: str,
        port: int,
        *,
        region: str = "us-east-1",
        account_id: str = "123456789012",
        stage: str = "local",
        reauth_s: float = 60.0,
        limits: BrokerLimits = BrokerLimits(),
        shards: int = 4,
        max_wait_s: float = 0.03,
    ) -> LocalBroker:
        """The broker of the local stack: the app's authorizer, presence and uplink handlers."""
        from chalicelib.core.config import settings

        hooks = AppHooks.from_app(app, region=region, account_id=account_id, stage=stage)
        stream = settings().stream("uplink")
        source = find_uplink_source(app, stream)
        bridge = None
        if source is None:
            log.warning("the app has no Kinesis handler for stream %s: device uplinks reach no handler", stream)
        else:
            invoker = LambdaInvoker(app, source.name, region=region, account_id=account_id, stage=stage)
            bridge = UplinkBridge(
                invoker,
                f"arn:aws:kinesis:{region}:{account_id}:stream/{stream}",
                region=region,
                shards=shards,
                max_batch=max(1, int(source.batch_size or 100)),
                max_wait_s=max_wait_s,
                on_failed=_failure_recorder(hooks),
            )
        return cls(host, port, hooks=hooks, bridge=bridge, limits=limits, reauth_s=reauth_s)

    @classmethod
    def bare(cls, host: str = "127.0.0.1", port: int = 0) -> LocalBroker:
        """The same broker without the app: every client accepted, every topic allowed."""
        return cls(host, port)

    # -- lifecycle

    def start(self, timeout: float = 15.0) -> None:
        """Bind the port (raises BrokerStartError when it cannot), start the loop thread and the broker."""
        try:
            listen = socket.create_server((self.host, self.port), backlog=4096, reuse_port=False)
        except OSError as exc:
            raise BrokerStartError(f"cannot listen on {self.host}:{self.port} ({exc.strerror or exc})") from exc
        self.port = listen.getsockname()[1]
        logging.getLogger("amqtt").setLevel(logging.WARNING)  # one line per connection is ours, not amqtt's
        self.loop = asyncio.new_event_loop()
        self._executor = ThreadPoolExecutor(self.auth_threads, thread_name_prefix="mqtt-auth")
        self._workers = _KeyedWorkers(self.event_threads, "mqtt-events")
        self._thread = threading.Thread(target=self._run_loop, name="mqtt-broker", daemon=True)
        self._thread.start()
        config = {"listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}}, "plugins": {}}

        async def boot() -> FleetboxBroker:
            broker = FleetboxBroker(
                config,
                listen_socket=listen,
                hooks=self.hooks,
                bridge=self.bridge,
                limits=self.limits,
                reauth_s=self.reauth_s,
                executor=self._executor,
                workers=self._workers,
            )
            await broker.start()
            return broker

        try:
            if self.bridge is not None:
                self.bridge.start(self.loop)
            self.broker = asyncio.run_coroutine_threadsafe(boot(), self.loop).result(timeout)
        except BaseException:
            listen.close()
            self._stop_loop()
            raise
        self._running = True
        log.info(
            "MQTT broker listening on %s:%d%s",
            self.host,
            self.port,
            "" if self.hooks is not None else " (bare: no authentication)",
        )

    def _run_loop(self) -> None:
        assert self.loop is not None
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            finally:
                self.loop.close()

    def stop(self, timeout: float = 4.0) -> None:
        """Close every session (with its presence event), deliver queued uplinks, release the port.

        Bounded by ``timeout`` (the local stack must stop within seconds of SIGTERM): what could
        not be done by then (uplinks, presence events) is counted in a warning."""
        if self.loop is None:
            return
        started = time.monotonic()
        deadline = started + timeout
        self._running = False
        sessions = len(self.broker.connections) if self.broker is not None else 0
        if self.broker is not None and self.loop.is_running():
            broker = self.broker

            async def shutdown() -> None:
                await broker.close_all(timeout=timeout * 0.4)
                await broker.shutdown()

            try:
                asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(max(0.5, deadline - time.monotonic()))
            except Exception:
                log.exception("the MQTT broker did not shut down cleanly")
        uplinks_left = events_left = 0
        if self.bridge is not None:
            uplinks_left = self.bridge.stop(timeout=max(0.5, (deadline - time.monotonic()) * 0.7))
        if self._workers is not None:
            events_left = self._workers.stop(max(0.2, deadline - time.monotonic()))
            if events_left:
                log.warning("%d presence/diagnostic event(s) not written before the stop", events_left)
        self._stop_loop()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self.broker = None
        log.info(
            "MQTT broker stopped in %.1f s (%d session(s) closed, %d uplink(s) and %d event(s) left undone)",
            time.monotonic() - started,
            sessions,
            uplinks_left,
            events_left,
        )

    def _stop_loop(self) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread is not None:
            self._thread.join(5.0)
        self._thread = None
        self.loop = None

    @property
    def running(self) -> bool:
        return self._running and self.broker is not None

    # -- thread-safe operations

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> bool:
        """Deliver ``payload`` to the current subscribers of ``topic`` (both ``$`` forms).
        True when at least one subscriber (allowed to receive it) was found.  Any thread."""
        broker, loop = self.broker, self.loop
        if not self.running or broker is None or loop is None:
            return False
        if not valid_topic_name(topic):
            raise ValueError(f"not a topic name: {topic!r}")
        targets = broker.targets(topic)
        if not targets:
            return False
        qos = max(0, min(int(qos), 1))
        if _on_loop(loop):
            broker.send_to(targets, bytes(payload), qos)
        else:
            loop.call_soon_threadsafe(broker.send_to, targets, bytes(payload), qos)
        return True

    def kick(self, client_id: str, reason: str = SERVER_INITIATED_DISCONNECT) -> bool:
        """Close ``client_id``'s connection now (a disabled or deleted device).  True when it was connected."""
        broker, loop = self.broker, self.loop
        if broker is None or loop is None:
            return False
        conn = broker.connections.get(client_id)
        if conn is None:
            return False
        if _on_loop(loop):
            conn.close(reason)
        else:
            loop.call_soon_threadsafe(conn.close, reason)
        return True

    def connected(self) -> list[str]:
        """Client ids connected now."""
        broker = self.broker
        return sorted(broker.connections) if broker is not None else []

    def stats(self) -> dict[str, Any]:
        broker = self.broker
        out: dict[str, Any] = {
            "connected": len(broker.connections) if broker else 0,
            "subscriptions": len(broker.index) if broker else 0,
        }
        if broker is not None:
            out.update(broker.counters)
        if self.bridge is not None:
            out["bridge"] = self.bridge.stats.as_dict()
        return out


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _failure_recorder(hooks: AppHooks) -> Callable[[Sequence[Any], str], None]:
    """Record uplinks the handler failed on in their devices' diagnostic logs (one entry per device)."""

    def record(messages: Sequence[Any], reason: str) -> None:
        from chalicelib.protocol import topics

        by_device: dict[tuple[str, str], list[Any]] = {}
        for message in messages:
            parsed = topics.parse(message.topic)
            if parsed is not None:
                by_device.setdefault((parsed.product_id, parsed.device_name), []).append(message)
        if hooks.diagnostic is None:
            return
        for (pid, dn), failed in by_device.items():
            first = failed[0]
            hooks.diagnostic(
                pid,
                dn,
                DEV_CONN_SYSTEM_ERR,
                f"{len(failed)} uplink message(s) not processed: {reason}",
                topic=first.topic,
                payload=first.payload,
            )

    return record


# ---------------------------------------------------------------- the device publisher port


class BrokerPublisher:
    """``chalicelib.protocol.publisher`` implementation of the local stack: the embedded broker.

    ``publish`` answers whether any subscriber was there (False → ``Pub_To_Dev_No_Subscriber``);
    ``disconnect`` closes a device's live connection (a disabled or deleted device).
    """

    def __init__(self, broker: LocalBroker) -> None:
        self._broker = broker

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> bool:
        return self._broker.publish(topic, payload, qos)

    def disconnect(self, client_id: str) -> bool:
        return self._broker.kick(client_id, SERVER_INITIATED_DISCONNECT)
