"""A fleet of simulated devices speaking real MQTT, as Tencent-SDK devices do.

``python -m infra.local.simulate --product PID --count N [--create] [--rate R] [--duration S]
[--dollar] [--mqtt31] [--algorithm hmacsha1] [--mqtt host:port] [--api URL --key KEY]``

Each device connects with a Tencent-style username/password (``{pid}{dn};12010126;{connid};
{start ms}`` and the hex HMAC of it keyed with the base64-decoded secret, ``;hmacsha256`` by
default), subscribes to its downlink topics, asks the time service once, reports ``--params``
random valid properties of the product's thing model ``--rate`` times a second, and answers
every ``control`` (``control_reply``) and ``action`` (``action_reply``).  It prints what it
sent and received.  Without ``--api``/``--key``/``--mqtt`` it uses the running local stack
(``.fleetbox/local.json``).

``--create`` creates the devices (``{prefix}00000`` …) through the HTTP API; otherwise the first
N devices of the product are loaded.  Secrets come from ``GET …?include_secret=true``.

Importable: :class:`Simulator` (``start`` / ``stop`` / ``stats``) drives the benchmark and the
e2e tests.  With ``echo=True`` each device also subscribes to its own report topic, so the
same fleet measures a broker's bare publish→subscribe throughput (``echoes_received``) —
against :meth:`infra.local.broker.LocalBroker.bare`, the baseline of the uplink benchmark.  One process handles thousands of devices: the clients share a few network-loop
threads (paho's external-loop API with a selector), not one thread per client.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import heapq
import hmac
import itertools
import json
import logging
import os
import random
import secrets as _secrets
import selectors
import signal
import string
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("infra.local.simulate")

SDKAPPID = "12010126"
DOWN_FAMILIES = ("thing/down/property", "thing/down/event", "thing/down/action", "sys/operation/result", "ota/update")


# ---------------------------------------------------------------- credentials and payloads


@dataclass(frozen=True)
class DeviceCredentials:
    product_id: str
    device_name: str
    secret: str

    @property
    def client_id(self) -> str:
        return f"{self.product_id}{self.device_name}"


def mqtt_login(
    device: DeviceCredentials, *, algorithm: str = "hmacsha256", expiry: int | None = None, connid: str | None = None
) -> tuple[str, str, str]:
    """``(client_id, username, password)`` as the Tencent SDK builds them.

    ``expiry`` defaults to the start time in milliseconds, as the Python SDK sends it (the
    cloud compares it with the current time in seconds, so it always passes).
    """
    connid = connid or "".join(_secrets.choice(string.ascii_letters + string.digits) for _ in range(5))
    expiry = expiry if expiry is not None else int(time.time() * 1000)
    username = f"{device.client_id};{SDKAPPID};{connid};{expiry}"
    digest = {"hmacsha256": hashlib.sha256, "hmacsha1": hashlib.sha1}[algorithm]
    mac = hmac.new(base64.b64decode(device.secret), username.encode(), digest).hexdigest()
    return device.client_id, username, f"{mac};{algorithm}"


def _number(value: Any, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def random_value(define: dict[str, Any], rng: random.Random) -> Any:
    """A random value valid for a thing-model ``define`` (or struct member ``dataType``)."""
    kind = define.get("type")
    if kind == "bool":
        return rng.randint(0, 1)
    if kind == "int":
        lo, hi = int(_number(define.get("min"), 0)), int(_number(define.get("max"), 100))
        return rng.randint(lo, max(lo, hi))
    if kind == "float":
        lo, hi = _number(define.get("min"), 0.0), _number(define.get("max"), 100.0)
        return round(rng.uniform(lo, max(lo, hi)), 2)
    if kind == "enum":
        keys = [int(k) for k in (define.get("mapping") or {"0": ""})]
        return rng.choice(keys)
    if kind == "stringenum":
        return rng.choice(list(define.get("mapping") or {"a": ""}))
    if kind == "string":
        hi = int(_number(define.get("max"), 16))
        lo = int(_number(define.get("min"), 0))
        length = max(lo, min(hi, 8))
        return "".join(rng.choice(string.ascii_lowercase) for _ in range(length))
    if kind == "timestamp":
        return int(time.time())
    if kind == "struct":
        return {spec["id"]: random_value(spec.get("dataType") or {}, rng) for spec in define.get("specs") or []}
    if kind == "array":
        info = define.get("arrayInfo") or {"type": "int", "min": 0, "max": 9}
        return [random_value(info, rng) for _ in range(min(2, int(_number(define.get("maxItems"), 2))))]
    return 0


@dataclass
class ThingModel:
    """What the simulator needs of a product's thing model."""

    properties: list[dict[str, Any]] = field(default_factory=list)
    actions: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_document(cls, doc: dict[str, Any] | None) -> ThingModel:
        doc = doc or {}
        props = [p for p in doc.get("properties") or [] if isinstance(p, dict) and p.get("id")]
        actions = {a["id"]: a for a in doc.get("actions") or [] if isinstance(a, dict) and a.get("id")}
        return cls(props, actions)

    def report_params(self, rng: random.Random, count: int) -> dict[str, Any]:
        if not self.properties:
            return {}
        chosen = rng.sample(self.properties, min(count, len(self.properties))) if count > 0 else self.properties
        return {p["id"]: random_value(p.get("define") or {}, rng) for p in chosen}

    def action_outputs(self, action_id: str, rng: random.Random) -> dict[str, Any]:
        action = self.actions.get(action_id) or {}
        return {o["id"]: random_value(o.get("define") or {}, rng) for o in action.get("output") or [] if o.get("id")}


# ---------------------------------------------------------------- statistics


@dataclass
class SimStats:
    connected: int = 0
    connect_refused: int = 0
    disconnects: int = 0
    reports_sent: int = 0
    report_replies: int = 0
    report_errors: int = 0  # report_reply with a non-zero code
    other_replies: int = 0  # get_status_reply, event_reply, … (anything else with a code)
    controls_answered: int = 0
    actions_answered: int = 0
    time_replies: int = 0
    messages_received: int = 0
    bad_messages: int = 0  # downlinks that are not complete JSON
    echoes_received: int = 0  # own reports received back (``echo``: the bare-broker baseline)
    # OTA (``ota=True``): update_firmware received, downloads done (and how many answered 206
    # to a Range request), MD5 checks, upgrades completed (new version reported)
    ota_notifications: int = 0
    ota_downloads: int = 0
    ota_ranged: int = 0
    ota_md5_ok: int = 0
    ota_md5_bad: int = 0
    ota_upgraded: int = 0
    ota_failed_on_purpose: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "latencies_ms"}
        lat = sorted(self.latencies_ms)
        if lat:
            out["reply_latency_ms"] = {
                "p50": round(lat[len(lat) // 2], 1),
                "p95": round(lat[int(len(lat) * 0.95)], 1),
                "max": round(lat[-1], 1),
            }
        return out


# ---------------------------------------------------------------- one simulated device


class _Device:
    """One paho client; every call on it happens on its network-loop thread."""

    def __init__(self, sim: Simulator, creds: DeviceCredentials, loop: _NetLoop) -> None:
        import paho.mqtt.client as mqtt

        self.sim = sim
        self.creds = creds
        self.loop = loop
        self.rng = random.Random(hash(creds.client_id) ^ random.getrandbits(32))
        protocol = mqtt.MQTTv31 if sim.mqtt31 else mqtt.MQTTv311
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=creds.client_id, protocol=protocol, clean_session=True
        )
        self.client.suppress_exceptions = True
        client_id, username, password = mqtt_login(creds, algorithm=sim.algorithm)
        self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_socket_open = lambda c, u, sock: loop.register(self, sock)
        self.client.on_socket_close = lambda c, u, sock: loop.unregister(self, sock)
        self.client.on_socket_register_write = lambda c, u, sock: loop.want_write(self, sock, True)
        self.client.on_socket_unregister_write = lambda c, u, sock: loop.want_write(self, sock, False)
        self.prefix = "$" if sim.dollar else ""
        self.connected = False
        self.refused = False
        self.stats = loop.stats
        self.tokens = itertools.count()
        self.pending: dict[str, float] = {}
        self.sock: Any = None
        self.version = sim.version
        self.upgrading = False
        self.updates: list[dict[str, Any]] = []  # update_firmware notifications received

    def topic(self, family: str) -> str:
        return f"{self.prefix}{family}/{self.creds.product_id}/{self.creds.device_name}"

    def connect(self) -> None:
        try:
            self.client.connect(self.sim.host, self.sim.port, keepalive=self.sim.keepalive)
        except OSError as exc:
            log.debug("%s: connect failed: %s", self.creds.client_id, exc)
            self.loop.schedule(time.monotonic() + 1.0 + self.rng.random(), self.reconnect)

    def reconnect(self) -> None:
        if self.sim.stopping or self.connected or self.refused:
            return
        try:
            self.client.reconnect()
        except OSError:
            self.loop.schedule(time.monotonic() + 2.0 + self.rng.random(), self.reconnect)

    # -- paho callbacks (network-loop thread)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        stats = self.stats
        if getattr(reason, "is_failure", False) or (isinstance(reason, int) and reason):
            stats.connect_refused += 1
            self.refused = True
            self.sim.refusals.append((self.creds.client_id, str(reason)))
            self.sim.note_connected()
            return
        self.connected = True
        stats.connected += 1
        self.sim.note_connected()
        topics = [(self.topic(f), 1 if f == "ota/update" else 0) for f in DOWN_FAMILIES]
        if self.sim.echo:
            topics.append((self.topic("thing/up/property"), self.sim.qos))
        client.subscribe(topics)
        client.publish(self.topic("sys/operation"), json.dumps({"type": "get", "resource": ["time"]}), qos=0)
        if self.sim.ota:
            self.publish_json("ota/report", {"type": "report_version", "report": {"version": self.version}}, qos=1)
        if self.sim.rate > 0 and self.sim.reporting:
            first = time.monotonic() + self.rng.random() / self.sim.rate
            self.loop.schedule(first, self.report)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        if self.connected:
            self.connected = False
            self.stats.connected -= 1
            self.stats.disconnects += 1
        if not self.sim.stopping and not self.refused:
            self.loop.schedule(time.monotonic() + 1.0 + self.rng.random(), self.reconnect)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        stats = self.stats
        stats.messages_received += 1
        try:
            doc = json.loads(message.payload)
            if not isinstance(doc, dict):
                raise ValueError("not an object")
        except ValueError:
            stats.bad_messages += 1
            return
        family = message.topic.lstrip("$").rsplit("/", 2)[0]
        method = doc.get("method")
        if family == "thing/up/property":  # echo mode: our own report came back through the broker
            stats.echoes_received += 1
            self._latency(doc)
            return
        if family == "thing/down/property":
            if method == "control":
                self.publish_json(
                    "thing/up/property",
                    {"method": "control_reply", "clientToken": doc.get("clientToken"), "code": 0, "status": "ok"},
                )
                stats.controls_answered += 1
            elif method == "report_reply":
                stats.report_replies += 1
                if doc.get("code") not in (0, None):
                    stats.report_errors += 1
                    if len(self.sim.errors) < 50:
                        self.sim.errors.append(doc)
                self._latency(doc)
            elif "code" in doc:
                stats.other_replies += 1
        elif family == "thing/down/action":
            if method == "action":
                outputs = self.sim.model.action_outputs(str(doc.get("actionId")), self.rng)
                self.publish_json(
                    "thing/up/action",
                    {
                        "method": "action_reply",
                        "clientToken": doc.get("clientToken"),
                        "code": 0,
                        "status": "ok",
                        "response": outputs,
                    },
                )
                stats.actions_answered += 1
            elif "code" in doc:
                stats.other_replies += 1
        elif family == "ota/update":
            if doc.get("type") == "update_firmware":
                self._on_update(doc)
        elif family == "sys/operation/result":
            if doc.get("type") == "get" and "time" in doc:
                stats.time_replies += 1
        elif "code" in doc:
            stats.other_replies += 1

    def _latency(self, doc: dict[str, Any]) -> None:
        sent = self.pending.pop(str(doc.get("clientToken")), None)
        if sent is not None and len(self.stats.latencies_ms) < 200_000:
            self.stats.latencies_ms.append((time.monotonic() - sent) * 1000)

    # -- OTA (SPEC §8.4), as Tencent's SDK does it; behaviours "ok", "silent", "fail"

    def _on_update(self, doc: dict[str, Any]) -> None:
        self.stats.ota_notifications += 1
        self.updates.append(doc)
        behaviour = self.sim.ota_behaviour.get(self.creds.device_name, self.sim.default_ota)
        if behaviour == "silent" or self.upgrading or not self.sim.ota:
            return
        self.upgrading = True
        self.sim.pool().submit(self._upgrade, doc, behaviour)

    def _progress(self, state: str, version: str, percent: int | None = None, code: str = "0", msg: str = "") -> None:
        progress: dict[str, Any] = {"state": state, "result_code": code, "result_msg": msg}
        if percent is not None:
            progress["percent"] = str(percent)
        doc = {"type": "report_progress", "report": {"progress": progress, "version": version}}
        self.loop.call(lambda: self.publish_json("ota/report", doc, qos=0 if state == "downloading" else 1))

    def _upgrade(self, doc: dict[str, Any], behaviour: str) -> None:
        """Worker thread: download (one Range request for the first KB, then the SDK's own
        ``bytes=N-{file_size}``), check the MD5, report, "reboot" into the new version."""
        import requests

        version, size = str(doc.get("version")), int(doc.get("file_size") or 0)
        try:
            self._progress("downloading", version, 0)
            if behaviour == "fail":
                self.loop.call(
                    lambda: setattr(self.stats, "ota_failed_on_purpose", self.stats.ota_failed_on_purpose + 1)
                )
                self._progress("fail", version, code="-5", msg="burn failed (simulated)")
                return
            data, ranged = b"", 0
            first = min(1024, size) - 1
            spans = [(0, first), (first + 1, size)] if size > 1024 else [(0, size)]
            for start, end in spans:
                resp = requests.get(str(doc.get("url")), headers={"Range": f"bytes={start}-{end}"}, timeout=30)
                if resp.status_code not in (200, 206):
                    self._progress("fail", version, code="-2", msg=f"download answered {resp.status_code}")
                    return
                ranged += resp.status_code == 206
                data += resp.content
            md5_ok = hashlib.md5(data).hexdigest() == doc.get("md5sum") and len(data) == size

            def count() -> None:
                self.stats.ota_downloads += 1
                self.stats.ota_ranged += ranged
                if md5_ok:
                    self.stats.ota_md5_ok += 1
                else:
                    self.stats.ota_md5_bad += 1

            self.loop.call(count)
            if not md5_ok:
                self._progress("fail", version, code="-4", msg="MD5 mismatch")
                self._progress("fail", version, code="-5", msg="burn failed")
                return
            self._progress("downloading", version, 100)
            self._progress("burning", version, 100)
            self._progress("done", version, 100)

            def rebooted() -> None:
                self.version = version
                self.stats.ota_upgraded += 1
                self.publish_json("ota/report", {"type": "report_version", "report": {"version": version}}, qos=1)

            self.loop.schedule(time.monotonic() + 0.2, rebooted)
        except Exception as exc:  # noqa: BLE001 - a simulated device reports, never crashes the fleet
            log.warning("%s: OTA failed: %s", self.creds.client_id, exc)
            self._progress("fail", version, code="-1", msg=str(exc)[:100])
        finally:
            self.upgrading = False

    # -- behaviour

    def publish_json(self, family: str, doc: dict[str, Any], qos: int = 0) -> None:
        self.client.publish(self.topic(family), json.dumps(doc, separators=(",", ":")), qos=qos)

    def report(self) -> None:
        if self.sim.stopping or not self.sim.reporting or not self.connected:
            return
        token = f"{self.creds.product_id}-{next(self.tokens)}"
        params = self.sim.model.report_params(self.rng, self.sim.params)
        if self.sim.gps is not None:
            lat, lon = self.sim.gps
            jitter = 0.0001  # ≈ 10 m
            params["GPS_Info"] = {
                "latitude": round(lat + self.rng.uniform(-jitter, jitter), 6),
                "longitude": round(lon + self.rng.uniform(-jitter, jitter), 6),
            }
        self.pending[token] = time.monotonic()
        if len(self.pending) > 1000:  # replies that never came
            self.pending.pop(next(iter(self.pending)))
        self.publish_json(
            "thing/up/property",
            {"method": "report", "clientToken": token, "timestamp": int(time.time() * 1000), "params": params},
            qos=self.sim.qos,
        )
        self.stats.reports_sent += 1
        self.loop.schedule(time.monotonic() + 1.0 / self.sim.rate, self.report)


class _NetLoop(threading.Thread):
    """One selector over many paho clients (paho's external-loop API), plus a timer heap."""

    def __init__(self, sim: Simulator, index: int) -> None:
        super().__init__(name=f"sim-net-{index}", daemon=True)
        self.sim = sim
        self.selector = selectors.DefaultSelector()
        self.devices: list[_Device] = []
        self.timers: list[tuple[float, int, Callable[[], None]]] = []
        self.seq = itertools.count()
        self.inbox: list[Callable[[], None]] = []
        self.inbox_lock = threading.Lock()
        self.stop_flag = False
        self.stats = SimStats()

    # selector bookkeeping (called from paho callbacks, on this thread)
    def register(self, device: _Device, sock: Any) -> None:
        device.sock = sock
        try:
            self.selector.register(sock, selectors.EVENT_READ, device)
        except (KeyError, ValueError):
            pass

    def unregister(self, device: _Device, sock: Any) -> None:
        try:
            self.selector.unregister(sock)
        except (KeyError, ValueError):
            pass

    def want_write(self, device: _Device, sock: Any, on: bool) -> None:
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if on else 0)
        try:
            self.selector.modify(sock, events, device)
        except (KeyError, ValueError):
            pass

    def schedule(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self.timers, (when, next(self.seq), action))

    def call(self, action: Callable[[], None]) -> None:
        """Run ``action`` on this thread (from any thread)."""
        with self.inbox_lock:
            self.inbox.append(action)

    def run(self) -> None:
        next_misc = time.monotonic() + 1.0
        while not self.stop_flag:
            now = time.monotonic()
            timeout = 0.02
            if self.timers:
                timeout = max(0.0, min(timeout, self.timers[0][0] - now))
            if self.selector.get_map():
                events = self.selector.select(timeout)
            else:
                time.sleep(timeout)
                events = []
            for key, mask in events:
                device: _Device = key.data
                if mask & selectors.EVENT_READ:
                    device.client.loop_read()
                if mask & selectors.EVENT_WRITE and device.client.want_write():
                    device.client.loop_write()
            if self.inbox:
                with self.inbox_lock:
                    actions, self.inbox = self.inbox, []
                for action in actions:
                    self._safely(action)
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                _, _, action = heapq.heappop(self.timers)
                self._safely(action)
            if now >= next_misc:  # keep-alive pings and ping timeouts
                next_misc = now + 1.0
                for device in self.devices:
                    device.client.loop_misc()
        for device in self.devices:
            try:
                device.client.disconnect()
                device.client.loop_write()
            except Exception:  # noqa: BLE001
                pass
        for device in self.devices:
            sock = device.client.socket()
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass
        self.selector.close()

    @staticmethod
    def _safely(action: Callable[[], None]) -> None:
        try:
            action()
        except Exception:
            log.exception("simulated device action failed")


class Simulator:
    """Many simulated devices on a few threads.  ``start()`` connects them (and waits), ``stop()``
    disconnects them, ``stats()`` counts what they did."""

    def __init__(
        self,
        devices: Sequence[DeviceCredentials],
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        model: ThingModel | dict | None = None,
        rate: float = 1.0,
        params: int = 3,
        dollar: bool = False,
        mqtt31: bool = False,
        algorithm: str = "hmacsha256",
        keepalive: int = 60,
        qos: int = 0,
        threads: int | None = None,
        connect_rate: float = 500.0,
        reporting: bool = True,
        echo: bool = False,
        ota: bool = False,
        version: str = "1.0",
        default_ota: str = "ok",
        ota_behaviour: dict[str, str] | None = None,
        gps: tuple[float, float] | None = None,
    ) -> None:
        #: (lat, lon): every report also carries GPS_Info within ~10 m of it (a parked fleet:
        #: fixes that cross no fence boundary)
        self.gps = gps
        if algorithm not in ("hmacsha256", "hmacsha1"):
            raise ValueError("algorithm must be hmacsha256 or hmacsha1")
        self.creds = list(devices)
        self.host, self.port = host, port
        self.model = model if isinstance(model, ThingModel) else ThingModel.from_document(model)
        self.rate, self.params, self.dollar, self.mqtt31 = rate, params, dollar, mqtt31
        self.algorithm, self.keepalive, self.qos = algorithm, keepalive, qos
        self.reporting = reporting
        self.echo = echo
        #: OTA behaviour: report ``version`` at connect, answer update_firmware per device with
        #: ``ota_behaviour[device_name]`` or ``default_ota``: "ok", "silent" (never answers), "fail"
        self.ota, self.version = ota, version
        self.default_ota, self.ota_behaviour = default_ota, dict(ota_behaviour or {})
        self._pool: ThreadPoolExecutor | None = None
        self.connect_rate = connect_rate
        count = threads or max(1, min(8, (len(self.creds) + 249) // 250))
        self.loops = [_NetLoop(self, i) for i in range(count)]
        self.devices: list[_Device] = []
        self.refusals: list[tuple[str, str]] = []
        self.errors: list[dict[str, Any]] = []
        self.stopping = False
        self._connected_event = threading.Event()
        self.started_at = 0.0

    def note_connected(self) -> None:
        total = self._sum()
        if total.connected + total.connect_refused >= len(self.creds):
            self._connected_event.set()

    def _sum(self) -> SimStats:
        total = SimStats()
        for loop in self.loops:
            part = loop.stats
            for name, value in part.__dict__.items():
                if name == "latencies_ms":
                    total.latencies_ms.extend(value)
                else:
                    setattr(total, name, getattr(total, name) + value)
        return total

    def start(self, wait: bool = True, timeout: float = 120.0) -> bool:
        """Connect every device (at ``connect_rate`` per second); with ``wait``, return once all
        are connected (True) or ``timeout`` passed / some were refused (False)."""
        self.started_at = time.monotonic()
        for i, creds in enumerate(self.creds):
            loop = self.loops[i % len(self.loops)]
            device = _Device(self, creds, loop)
            loop.devices.append(device)
            self.devices.append(device)
            loop.schedule(self.started_at + i / self.connect_rate, device.connect)
        for loop in self.loops:
            loop.start()
        if not wait:
            return True
        self._connected_event.wait(timeout)
        total = self._sum()
        return total.connected == len(self.creds)

    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(8, thread_name_prefix="sim-ota")
        return self._pool

    def quiesce(self, timeout: float = 5.0) -> None:
        """Send no more reports; the devices stay connected and keep answering (replies to the
        reports already out can still arrive and be counted).  Returns once every network loop
        has passed the change (no report is half-sent and uncounted)."""
        self.reporting = False
        passed = []
        for loop in self.loops:
            if loop.is_alive():
                event = threading.Event()
                loop.call(event.set)
                passed.append(event)
        for event in passed:
            event.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping = True
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        for loop in self.loops:
            loop.stop_flag = True
        for loop in self.loops:
            if loop.is_alive():
                loop.join(timeout)

    def reset_latencies(self) -> None:
        """Forget the reply latencies seen so far (a benchmark window starts)."""
        for loop in self.loops:
            loop.call(loop.stats.latencies_ms.clear)

    def stats(self) -> dict[str, Any]:
        out = self._sum().as_dict()
        out["devices"] = len(self.creds)
        out["elapsed_s"] = round(time.monotonic() - self.started_at, 1) if self.started_at else 0.0
        return out

    def device(self, client_id: str) -> _Device | None:
        return next((d for d in self.devices if d.creds.client_id == client_id), None)


# ---------------------------------------------------------------- the HTTP side (devices and model)


class Api:
    """The few Fleetbox HTTP calls the simulator needs."""

    def __init__(self, base_url: str, key: str, timeout: float = 30.0) -> None:
        import requests

        self.base = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {key}"}
        self.timeout = timeout
        self._local = threading.local()
        self._requests = requests

    def _session(self) -> Any:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = self._requests.Session()
            session.headers.update(self.headers)
        return session

    def call(self, method: str, path: str, **kw: Any) -> Any:
        resp = self._session().request(method, f"{self.base}{path}", timeout=self.timeout, **kw)
        if resp.status_code >= 400:
            raise RuntimeError(f"{method} {path}: HTTP {resp.status_code} {resp.text[:300]}")
        return resp.json() if resp.content else None

    def thing_model(self, product_id: str) -> dict[str, Any]:
        return self.call("GET", f"/v1/products/{product_id}/thing-model")

    def device(self, product_id: str, device_name: str) -> DeviceCredentials:
        doc = self.call("GET", f"/v1/products/{product_id}/devices/{device_name}", params={"include_secret": "true"})
        if not doc.get("secret"):
            raise RuntimeError(f"device {product_id}/{device_name} has no key secret (certificate product?)")
        return DeviceCredentials(product_id, device_name, doc["secret"])

    def create_device(self, product_id: str, device_name: str) -> DeviceCredentials:
        for attempt in range(4):
            resp = self._session().post(
                f"{self.base}/v1/products/{product_id}/devices", json={"device_name": device_name}, timeout=self.timeout
            )
            if resp.status_code < 500:
                break
            time.sleep(0.2 * (attempt + 1))  # moto sometimes fails concurrent transactions with a 500
        if resp.status_code == 409:  # already there: load it
            return self.device(product_id, device_name)
        if resp.status_code >= 400:
            raise RuntimeError(f"creating {product_id}/{device_name}: HTTP {resp.status_code} {resp.text[:300]}")
        doc = resp.json()
        return DeviceCredentials(product_id, device_name, doc["secret"])

    def device_names(self, product_id: str, count: int) -> list[str]:
        names: list[str] = []
        token = None
        while len(names) < count:
            params: dict[str, Any] = {"limit": 100}
            if token:
                params["next"] = token
            page = self.call("GET", f"/v1/products/{product_id}/devices", params=params)
            names += [item["device_name"] for item in page.get("items") or []]
            token = page.get("next")
            if not token:
                break
        return names[:count]


def load_devices(
    api: Api, product_id: str, count: int, *, create: bool, prefix: str = "sim", workers: int = 8
) -> list[DeviceCredentials]:
    """Create (``create``) or load ``count`` devices of the product, with their secrets."""
    if create:
        names = [f"{prefix}{i:05d}" for i in range(count)]
        work: Callable[[str], DeviceCredentials] = lambda name: api.create_device(product_id, name)  # noqa: E731
    else:
        names = api.device_names(product_id, count)
        if len(names) < count:
            raise RuntimeError(f"product {product_id} has {len(names)} device(s), {count} asked: use --create")
        work = lambda name: api.device(product_id, name)  # noqa: E731
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(work, names))


def local_stack_info() -> dict[str, Any]:
    """The running local stack's ``.fleetbox/local.json`` (FLEETBOX_HOME or the repo root)."""
    home = Path(os.environ.get("FLEETBOX_HOME") or Path(__file__).resolve().parents[2])
    path = home / ".fleetbox" / "local.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


# ---------------------------------------------------------------- command line


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m infra.local.simulate", description="Simulated Tencent-SDK devices over real MQTT."
    )
    parser.add_argument("--product", required=True, help="ProductId")
    parser.add_argument("--count", type=int, default=1, help="number of devices (default 1)")
    parser.add_argument("--create", action="store_true", help="create the devices ({prefix}00000 …) first")
    parser.add_argument("--prefix", default="sim", help="device name prefix with --create (default sim)")
    parser.add_argument("--rate", type=float, default=1.0, help="reports per device per second (default 1; 0 = none)")
    parser.add_argument("--params", type=int, default=3, help="properties per report (default 3; 0 = all)")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds to run (default: until Ctrl-C)")
    parser.add_argument("--dollar", action="store_true", help="use the $thing/... topic forms (Tencent SDK)")
    parser.add_argument("--mqtt31", action="store_true", help="speak MQTT 3.1 (MQIsdp) as the Python SDK does")
    parser.add_argument("--algorithm", choices=("hmacsha256", "hmacsha1"), default="hmacsha256")
    parser.add_argument("--qos", type=int, choices=(0, 1), default=0, help="QoS of reports (default 0)")
    parser.add_argument("--keepalive", type=int, default=60)
    parser.add_argument("--threads", type=int, default=None, help="network-loop threads (default: 1 per 250 devices)")
    parser.add_argument("--mqtt", default=None, help="broker host:port (default: the local stack's)")
    parser.add_argument("--api", default=None, help="API base URL (default: the local stack's)")
    parser.add_argument("--key", default=None, help="API key (default: the local stack's admin key)")
    parser.add_argument("--json", action="store_true", help="print the final counts as JSON")
    parser.add_argument(
        "--ota",
        choices=("ok", "silent", "fail"),
        default=None,
        help="OTA behaviour: report --version at connect and answer update_firmware",
    )
    parser.add_argument("--version", default="1.0", help="firmware version reported with --ota (default 1.0)")
    parser.add_argument(
        "--gps",
        default=None,
        metavar="LAT,LON",
        help="every report also carries GPS_Info within ~10 m of LAT,LON (the product's model needs GPS_Info)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    info = local_stack_info()
    api_url = args.api or info.get("api_url")
    key = args.key or os.environ.get("FLEETBOX_API_KEY") or info.get("admin_api_key")
    mqtt_addr = args.mqtt or (f"{info['mqtt_host']}:{info['mqtt_port']}" if info.get("mqtt_port") else None)
    if not api_url or not key or not mqtt_addr:
        print("no running local stack found (.fleetbox/local.json): pass --api, --key and --mqtt", file=sys.stderr)
        return 2
    host, _, port = mqtt_addr.rpartition(":")
    api = Api(api_url, key)
    try:
        model = api.thing_model(args.product)
        started = time.monotonic()
        devices = load_devices(api, args.product, args.count, create=args.create, prefix=args.prefix)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"{len(devices)} device(s) of {args.product} {'created' if args.create else 'loaded'} in "
        f"{time.monotonic() - started:.1f} s; connecting to mqtt://{host}:{port} …",
        flush=True,
    )
    sim = Simulator(
        devices,
        host or "127.0.0.1",
        int(port),
        model=model,
        rate=args.rate,
        params=args.params,
        dollar=args.dollar,
        mqtt31=args.mqtt31,
        algorithm=args.algorithm,
        keepalive=args.keepalive,
        qos=args.qos,
        threads=args.threads,
        ota=args.ota is not None,
        version=args.version,
        default_ota=args.ota or "ok",
        gps=tuple(float(v) for v in args.gps.split(",")) if args.gps else None,  # type: ignore[arg-type]
    )
    ok = sim.start(wait=True, timeout=max(60.0, args.count / 100))
    stats = sim.stats()
    print(
        f"{stats['connected']} connected, {stats['connect_refused']} refused in {stats['elapsed_s']:.1f} s", flush=True
    )
    for client_id, reason in sim.refusals[:5]:
        print(f"  refused: {client_id}: {reason}", file=sys.stderr)
    code = 0 if ok else 1

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        deadline = time.monotonic() + args.duration if args.duration > 0 else None
        last = time.monotonic()
        while deadline is None or time.monotonic() < deadline:
            time.sleep(min(1.0, max(0.0, (deadline or float("inf")) - time.monotonic())))
            if time.monotonic() - last >= 5.0:
                last = time.monotonic()
                s = sim.stats()
                print(
                    f"  reports {s['reports_sent']}, replies {s['report_replies']} ({s['report_errors']} errors), "
                    f"controls {s['controls_answered']}, actions {s['actions_answered']}",
                    flush=True,
                )
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    stats = sim.stats()
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        print(
            f"reports sent {stats['reports_sent']}, report replies {stats['report_replies']} "
            f"({stats['report_errors']} with an error code), controls answered {stats['controls_answered']}, "
            f"actions answered {stats['actions_answered']}, time replies {stats['time_replies']}, "
            f"disconnects {stats['disconnects']}"
        )
        if stats.get("reply_latency_ms"):
            lat = stats["reply_latency_ms"]
            print(f"report → reply latency: p50 {lat['p50']} ms, p95 {lat['p95']} ms, max {lat['max']} ms")
        for doc in sim.errors[:3]:
            print(f"  error reply: {json.dumps(doc)[:200]}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
