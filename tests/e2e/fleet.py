"""Helpers for the e2e tests: the HTTP API, devices, and paho clients built the way a
Tencent-SDK device builds its credentials (computed here, independently of the product's code),
and the stack's own AWS services (moto) read directly."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import requests

from tests.helpers import mqtt_password, wait_until

LAMP_MODEL: dict[str, Any] = {
    "properties": [
        {
            "id": "power_switch",
            "name": "Power",
            "mode": "rw",
            "define": {"type": "bool", "mapping": {"0": "off", "1": "on"}},
        },
        {
            "id": "brightness",
            "name": "Brightness",
            "mode": "rw",
            "define": {"type": "int", "min": "0", "max": "100", "step": "1", "unit": "%"},
        },
        {
            "id": "color",
            "name": "Color",
            "mode": "rw",
            "define": {"type": "enum", "mapping": {"0": "Red", "1": "Green", "2": "Blue"}},
        },
    ],
    "events": [
        {
            "id": "low_battery",
            "name": "LowBattery",
            "type": "alert",
            "params": [{"id": "level", "name": "Level", "define": {"type": "int", "min": "0", "max": "100"}}],
        },
    ],
    "actions": [
        {
            "id": "blink",
            "name": "Blink",
            "input": [{"id": "times", "name": "Times", "define": {"type": "int", "min": "0", "max": "10"}}],
            "output": [{"id": "done", "name": "Done", "define": {"type": "bool", "mapping": {"0": "no", "1": "yes"}}}],
        },
    ],
}


class Api:
    """An HTTP client of a local stack, as its admin."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.base = info["api_url"]
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {info['admin_api_key']}"

    def call(self, method: str, path: str, expect: int | tuple[int, ...] | None = None, **kw: Any) -> Any:
        resp = self.session.request(method, self.base + path, timeout=30, **kw)
        if expect is not None:
            expected = (expect,) if isinstance(expect, int) else expect
            assert resp.status_code in expected, f"{method} {path}: {resp.status_code} {resp.text[:500]}"
        return resp

    def product(
        self, *, device_type: str = "device", model: dict[str, Any] | None = LAMP_MODEL, name: str = "Lamp"
    ) -> str:
        body = {
            "name": f"{name} {uuid.uuid4().hex[:8]}",
            "category": "custom",
            "device_type": device_type,
            "comm_method": "wifi",
            "auth_type": "key",
            "data_protocol": "thing_model",
        }
        if device_type == "subdevice":
            body["subdevice_protocol"] = "zigbee"
        pid = self.call("POST", "/v1/products", 201, json=body).json()["product_id"]
        if model is not None:
            self.call("PUT", f"/v1/products/{pid}/thing-model", 200, json=model)
        return pid

    def device(self, pid: str, name: str | None = None) -> tuple[str, str]:
        name = name or f"d{uuid.uuid4().hex[:12]}"
        doc = self.call("POST", f"/v1/products/{pid}/devices", 201, json={"device_name": name}).json()
        return name, doc["secret"]

    def describe(self, pid: str, dn: str) -> dict[str, Any]:
        return self.call("GET", f"/v1/products/{pid}/devices/{dn}", 200).json()

    def logs(self, pid: str, dn: str, kind: str) -> list[dict[str, Any]]:
        return self.call("GET", f"/v1/products/{pid}/devices/{dn}/logs", 200, params={"kind": kind}).json()["items"]

    def reported(self, pid: str, dn: str) -> dict[str, Any]:
        """Latest reported values: property id → {"id", "value", time…}."""
        doc = self.call("GET", f"/v1/products/{pid}/devices/{dn}/properties", 200).json()
        return {item["id"]: item for item in doc.get("properties") or []}


def credentials(
    pid: str, dn: str, secret: str, *, algorithm: str = "hmacsha256", expiry: int | None = None
) -> tuple[str, str, str]:
    """(client id, username, password) of SPEC §6.2; expiry defaults to the start time in ms (the SDK's)."""
    expiry = expiry if expiry is not None else int(time.time() * 1000)
    username = f"{pid}{dn};12010126;{uuid.uuid4().hex[:5]};{expiry}"
    return f"{pid}{dn}", username, mqtt_password(username, secret, algorithm)


class Device:
    """A paho-mqtt device that records what happens to it."""

    def __init__(
        self,
        info: dict[str, Any],
        pid: str,
        dn: str,
        secret: str,
        *,
        algorithm: str = "hmacsha256",
        expiry: int | None = None,
        protocol: int = mqtt.MQTTv311,
        keepalive: int = 60,
        password: str | None = None,
    ) -> None:
        client_id, username, good_password = credentials(pid, dn, secret, algorithm=algorithm, expiry=expiry)
        self.pid, self.dn = pid, dn
        self.host, self.port, self.keepalive = info["mqtt_host"], info["mqtt_port"], keepalive
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
        self.client.username_pw_set(username, password if password is not None else good_password)
        self.connack: list[Any] = []
        self.subacks: list[tuple[float, list[Any]]] = []
        self.messages: list[tuple[str, dict[str, Any] | bytes]] = []
        self.disconnected = threading.Event()
        self.lock = threading.Lock()
        self.client.on_connect = lambda c, u, f, rc, p: self.connack.append(rc)
        self.client.on_subscribe = lambda c, u, mid, codes, p: self.subacks.append((time.monotonic(), codes))
        self.client.on_message = self._on_message
        self.client.on_disconnect = lambda c, u, f, rc, p: self.disconnected.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            body: Any = json.loads(msg.payload)
        except ValueError:
            body = msg.payload
        with self.lock:
            self.messages.append((msg.topic, body))

    # -- connection

    def connect(self, expect_ok: bool = True) -> Device:
        self.client.connect(self.host, self.port, keepalive=self.keepalive)
        self.client.loop_start()
        assert wait_until(lambda: self.connack, 10), "no CONNACK"
        if expect_ok:
            assert not self.connack[0].is_failure, f"refused: {self.connack[0]}"
        return self

    @property
    def refused_with(self) -> str | None:
        return str(self.connack[0]) if self.connack and self.connack[0].is_failure else None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    # -- topics

    def topic(self, family: str, dollar: bool = False, pid: str | None = None, dn: str | None = None) -> str:
        return f"{'$' if dollar else ''}{family}/{pid or self.pid}/{dn or self.dn}"

    def subscribe(self, topic: str, qos: int = 0) -> tuple[float, list[Any]]:
        count = len(self.subacks)
        started = time.monotonic()
        self.client.subscribe(topic, qos)
        assert wait_until(lambda: len(self.subacks) > count, 5), f"no SUBACK for {topic}"
        at, codes = self.subacks[-1]
        return at - started, codes

    def publish(self, topic: str, body: dict[str, Any] | bytes, qos: int = 1) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body)
        self.client.publish(topic, payload, qos=qos).wait_for_publish(5)

    def wait_message(self, predicate: Callable[[str, Any], bool], timeout: float = 10.0) -> tuple[str, Any] | None:
        def find() -> tuple[str, Any] | None:
            with self.lock:
                return next(((t, b) for t, b in self.messages if predicate(t, b)), None)

        return wait_until(find, timeout)

    def answer_next_action(
        self, response: dict[str, Any], status: str = "ok", timeout: float = 10.0
    ) -> threading.Thread:
        """In the background: wait for the next action sent to this device and answer it with an
        ``action_reply`` carrying ``response``; join the returned thread after the call."""

        def answer() -> None:
            got = self.wait_message(lambda t, b: isinstance(b, dict) and b.get("method") == "action", timeout)
            if got:
                self.publish(
                    self.topic("thing/up/action", dollar=True),
                    {
                        "method": "action_reply",
                        "clientToken": got[1]["clientToken"],
                        "code": 0,
                        "status": status,
                        "response": response,
                    },
                )

        responder = threading.Thread(target=answer)
        responder.start()
        return responder

    def reply_to(self, token: str, method: str | None = None, timeout: float = 10.0) -> tuple[str, Any] | None:
        return self.wait_message(
            lambda t, b: (
                isinstance(b, dict) and b.get("clientToken") == token and (method is None or b.get("method") == method)
            ),
            timeout,
        )


def aws_client(info: dict[str, Any], service: str) -> Any:
    """A boto3 client of the stack's own servers (DynamoDB Local for tables, moto for the rest),
    with the stack's credentials (local.json)."""
    import boto3

    return boto3.client(
        service,
        endpoint_url=info["dynamodb_endpoint"] if service == "dynamodb" else info["s3_endpoint"],
        region_name="us-east-1",
        aws_access_key_id=info["aws_access_key_id"],
        aws_secret_access_key=info["aws_secret_access_key"],
    )
