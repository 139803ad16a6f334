"""Helpers shared by the integration tests (moto's ``mock_aws`` and the Chalice test client).

The fixtures that use them (``aws``, ``api``, ``product``, ``recorder``, ``lamp``, ``loopback``,
``receiver``, ``small_chunks``) are in ``tests/integration/conftest.py``; what every test level
shares (waiting, QR codes, signing) is in ``tests/helpers.py``.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import requests

from chalicelib.core import clock
from chalicelib.protocol.events import UplinkMessage, presence_event
from tests.helpers import sign_register_legacy, sign_register_v2, wait_until

# ------------------------------------------------------------------ the HTTP API


class Api:
    """A thin JSON wrapper over chalice.test.Client (what a user's HTTP client would see)."""

    def __init__(self, client: Any, key: str | None):
        self.client = client
        self.key = key

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        key: str | None = "default",
        headers: dict[str, str] | None = None,
        raw: str | bytes | None = None,
    ) -> Any:
        hdrs = {"Content-Type": "application/json"}
        use = self.key if key == "default" else key
        if use:
            hdrs["Authorization"] = f"Bearer {use}"
        hdrs.update(headers or {})
        payload = raw if raw is not None else (json.dumps(body) if body is not None else None)
        resp = getattr(self.client.http, method.lower())(path, headers=hdrs, body=payload)
        resp.json = json.loads(resp.body) if resp.body else None
        return resp

    def get(self, path: str, **kw: Any) -> Any:
        return self.call("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.call("POST", path, body, **kw)

    def put(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.call("PUT", path, body, **kw)

    def patch(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.call("PATCH", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.call("DELETE", path, **kw)

    def as_key(self, key: str | None) -> Api:
        return Api(self.client, key)


def partner(api: Api, pid: str, name: str = "partner") -> Api:
    """A client whose principal's policy allows everything on product ``pid`` and nothing else."""
    policy = {
        "version": "2.0",
        "statement": [
            {"effect": "allow", "action": ["iotexplorer:*"], "resource": [f"product/{pid}", f"product/{pid}/*"]}
        ],
    }
    p = api.post("/v1/principals", {"name": name, "policy": policy})
    assert p.status_code == 201, p.body
    key = api.post("/v1/keys", {"principal_id": p.json["principal_id"], "name": name})
    assert key.status_code == 201, key.body
    return api.as_key(key.json["api_key"])


def expect_error(resp: Any, status: int, code: str, field: str | None) -> dict[str, Any]:
    """The error envelope of SPEC §16, with the exact status, code and field."""
    assert resp.status_code == status, resp.body
    body = resp.json
    assert set(body) == {"error", "request_id"}, body
    assert body["error"]["code"] == code, body
    assert body["error"].get("field") == field, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    assert body["request_id"] == resp.headers["x-request-id"], body
    return body["error"]


def ok(resp: Any, status: int = 200) -> Any:
    """The JSON of an answer that must have ``status``."""
    assert resp.status_code == status, resp.body
    return resp.json


# ------------------------------------------------------------------ products and devices

PRODUCT = {
    "name": "Lamp",
    "category": "smart-life/lighting/lamp",
    "device_type": "device",
    "comm_method": "wifi",
    "auth_type": "key",
    "data_protocol": "thing_model",
}

MODEL = {
    "version": "1.0",
    "properties": [
        {
            "id": "brightness",
            "name": "Brightness",
            "mode": "rw",
            "define": {"type": "int", "min": "0", "max": "100", "start": "0", "step": "1", "unit": "%"},
        },
        {
            "id": "power_switch",
            "name": "Power",
            "mode": "rw",
            "define": {"type": "bool", "mapping": {"0": "off", "1": "on"}},
        },
        {
            "id": "temperature",
            "name": "Temperature",
            "mode": "r",
            "define": {"type": "float", "min": "-40", "max": "120", "step": "0.1", "unit": "C"},
        },
        {
            "id": "GPS_Info",
            "name": "GPS",
            "mode": "r",
            "define": {
                "type": "struct",
                "specs": [
                    {"id": "latitude", "name": "Lat", "dataType": {"type": "float", "min": "-90", "max": "90"}},
                    {"id": "longitude", "name": "Lon", "dataType": {"type": "float", "min": "-180", "max": "180"}},
                ],
            },
        },
    ],
    "events": [
        {
            "id": "low_voltage",
            "name": "LowVoltage",
            "type": "alert",
            "params": [
                {
                    "id": "voltage",
                    "name": "Voltage",
                    "define": {"type": "float", "min": "0.0", "max": "24.0", "step": "1", "unit": "V"},
                }
            ],
        },
        {"id": "boot", "name": "Boot", "type": "info", "params": []},
    ],
    "actions": [
        {
            "id": "unlock",
            "name": "Unlock",
            "input": [{"id": "order_id", "name": "Order", "define": {"type": "string", "min": "1", "max": "64"}}],
            "output": [{"id": "code", "name": "Code", "define": {"type": "int", "min": "0", "max": "100"}}],
        }
    ],
}


def make_product(api: Any, name: str = "Lamp", model: dict | None = MODEL, **fields: Any) -> str:
    """A :data:`PRODUCT` named ``name`` (``fields`` override), with ``model`` as its thing model
    (none when None); returns its ProductId."""
    body = {**PRODUCT, "name": name, **fields}
    r = api.post("/v1/products", body)
    assert r.status_code == 201, r.body
    pid = r.json["product_id"]
    if model is not None and body["data_protocol"] == "thing_model":
        r = api.put(f"/v1/products/{pid}/thing-model", model)
        assert r.status_code == 200, r.body
    return pid


def released(api: Any, developing: bool = False, **extra: Any) -> str:
    """A :data:`PRODUCT` (``extra`` overrides), published unless ``developing``; its ProductId."""
    resp = api.post("/v1/products", {**PRODUCT, **extra})
    assert resp.status_code == 201, resp.body
    pid = resp.json["product_id"]
    if developing:
        return pid
    assert api.post(f"/v1/products/{pid}/publish").status_code == 200
    return pid


def make_device(api: Any, pid: str, dn: str = "dev1", **extra: Any) -> dict[str, Any]:
    """A new device (``extra``: more fields of the request); the created document, secret included."""
    r = api.post(f"/v1/products/{pid}/devices", {"device_name": dn, **extra})
    assert r.status_code == 201, r.body
    return r.json


# ------------------------------------------------------------------ the device side: uplinks and downlinks


class Recorder:
    """The device publisher port (``chalicelib.protocol.publisher``) as a recorder: what the
    cloud publishes to devices, and the sessions it cuts.  A publish answers whether a device
    listens: no one does on the ``deaf`` topics, and nowhere once ``listening`` is False."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any, int]] = []  # (topic, the JSON payload — bytes when not JSON, qos)
        self.raw: list[tuple[str, bytes, int]] = []  # (topic, payload bytes, qos)
        self.times: list[float] = []  # wall-clock time of each publish
        self.cut: list[str] = []  # client ids whose session was cut
        self.deaf: set[str] = set()
        self.listening = True
        self.lock = threading.Lock()

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> bool:
        try:
            body: Any = json.loads(payload)
        except ValueError:
            body = bytes(payload)
        with self.lock:
            self.sent.append((topic, body, qos))
            self.raw.append((topic, bytes(payload), qos))
            self.times.append(time.time())
        return self.listening and topic not in self.deaf

    def disconnect(self, client_id: str) -> bool:
        with self.lock:
            self.cut.append(client_id)
        return True

    def on(self, topic: str) -> list[Any]:
        with self.lock:
            return [p for t, p, _ in self.sent if t == topic]

    def last(self, topic: str) -> Any:
        found = self.on(topic)
        assert found, (topic, self.sent)
        return found[-1]

    def clear(self) -> None:
        with self.lock:
            self.sent.clear()
            self.raw.clear()
            self.times.clear()


def up(
    pid: str,
    dn: str,
    family: str,
    body: Any,
    *,
    dollar: bool = False,
    client_id: str | None = None,
    ts_ms: int | None = None,
) -> UplinkMessage:
    """A device's message on ``{family}/{pid}/{dn}`` (``family`` may be a whole custom topic)."""
    prefix = "$" if dollar else ""
    topic = f"{prefix}{family}/{pid}/{dn}" if not family.startswith(pid) else family
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    return UplinkMessage(
        topic=topic,
        payload=payload,
        client_id=client_id if client_id is not None else f"{pid}{dn}",
        timestamp_ms=ts_ms or clock.now_ms(),
        qos=0,
        source_ip="10.0.0.9",
    )


def run(*messages: UplinkMessage) -> Any:
    """One uplink batch through ``uplink.process_batch``; none of it may fail."""
    from chalicelib.services import uplink

    result = uplink.process_batch(list(messages))
    assert not result.failed, result
    return result


def report(pid: str, dn: str, params: dict, token: str = "t-1", **kw: Any) -> UplinkMessage:
    return up(pid, dn, "thing/up/property", {"method": "report", "clientToken": token, "params": params}, **kw)


def connect(pid: str, dn: str, session: str = "s-1", **kw: Any) -> dict[str, Any]:
    """The broker's connect lifecycle event for the device, through ``lifecycle.handle``."""
    from chalicelib.services import lifecycle

    return lifecycle.handle(
        presence_event(
            f"{pid}{dn}", True, timestamp_ms=clock.now_ms(), ip="10.0.0.9", session_id=session, keepalive=60, **kw
        )
    )


def logs(api: Any, pid: str, dn: str, kind: str) -> list[dict[str, Any]]:
    """The device's cloud log of ``kind``, through the API."""
    r = api.get(f"/v1/products/{pid}/devices/{dn}/logs?kind={kind}&limit=100")
    assert r.status_code == 200, r.body
    return r.json["items"]


def diagnostics(pid: str, dn: str) -> list[dict[str, Any]]:
    """The device's diagnostic log, read from the store."""
    from chalicelib.services import device_logs

    return device_logs.query(pid, dn, "diagnostic", 0, clock.now_ms() + 1000, 50, None)[0]


def props(api: Any, pid: str, dn: str = "dev1") -> dict[str, Any]:
    r = api.get(f"/v1/products/{pid}/devices/{dn}/properties")
    assert r.status_code == 200, r.body
    return r.json


def mqtt_connects(pid: str, dn: str, secret: str) -> bool:
    """Whether the MQTT authorizer lets a device with ``secret`` connect."""
    from chalicelib.protocol import mqtt_auth
    from chalicelib.protocol.events import authorizer_event
    from chalicelib.services import connectivity

    cid, user, pw = mqtt_auth.credentials(pid, dn, secret)
    return connectivity.authorize(authorizer_event(cid, user, pw.encode()))["isAuthenticated"]


class DynamoCounter:
    """Counts DynamoDB API calls made through botocore (PynamoDB and raw clients alike), and
    keeps each call's parameters (``requests``) to tell which table it wrote."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.requests: list[tuple[str, dict]] = []

    @contextmanager
    def counting(self) -> Iterator[DynamoCounter]:
        import botocore.client

        original = botocore.client.BaseClient._make_api_call
        calls = self.calls

        def counted(client: Any, operation: str, params: Any) -> Any:
            if client.meta.service_model.service_name == "dynamodb":
                calls.append(operation)
                self.requests.append((operation, params))
            return original(client, operation, params)

        botocore.client.BaseClient._make_api_call = counted
        try:
            yield self
        finally:
            botocore.client.BaseClient._make_api_call = original


# ------------------------------------------------------------------ dynamic registration, as a device does it

REGISTER_HOST = "register.fleetbox.test"


def v2_request(
    api: Any,
    pid: str,
    dn: str,
    product_secret: str,
    *,
    ts: int | None = None,
    nonce: str | None = None,
    host: str = REGISTER_HOST + ":443",
    uri: str = "/device/register",
    title_case: bool = True,
    algorithm: str = "hmacsha256",
    sign_with: str | None = None,
    body: bytes | None = None,
    signature: str | None = None,
) -> Any:
    """What Tencent's SDK sends: title-cased X-Tc-* headers, the raw body hashed as sent."""
    body = body if body is not None else json.dumps({"ProductId": pid, "DeviceName": dn}).encode()
    ts = clock.now_s() if ts is None else ts
    nonce = nonce or str(secrets.randbelow(2**31))
    sig = signature or sign_register_v2(
        sign_with or product_secret, host.split(":")[0], uri, algorithm, str(ts), nonce, body
    )
    prefix = "X-Tc-" if title_case else "x-tc-"
    headers = {
        "Host": host,
        "Content-Type": "application/json; charset=UTF-8",
        "Accept": "text/xml,application/json;*/*",
        f"{prefix}Algorithm": algorithm,
        f"{prefix}Timestamp": str(ts),
        f"{prefix}Nonce": nonce,
        f"{prefix}Signature": sig,
    }
    return registration_answer(api.client.http.post("/device/register", headers=headers, body=body))


def legacy_request(
    api: Any,
    pid: str,
    dn: str,
    product_secret: str,
    *,
    ts: int | None = None,
    nonce: int | None = None,
    sign_with: str | None = None,
    content_type: str = "application/x-www-form-urlencoded",
) -> Any:
    ts = clock.now_s() if ts is None else ts
    nonce = secrets.randbelow(2**31) if nonce is None else nonce
    signature = sign_register_legacy(sign_with or product_secret, dn, str(nonce), pid, str(ts))
    body = json.dumps({"deviceName": dn, "nonce": nonce, "productId": pid, "timestamp": ts, "signature": signature})
    return registration_answer(api.client.http.post("/register/dev", headers={"Content-Type": content_type}, body=body))


def registration_answer(resp: Any) -> Any:
    # Every answer, refusals included, is HTTP 200 with exactly application/json (SPEC §6.6)
    assert resp.status_code == 200, resp.body
    assert resp.headers["Content-Type"] == "application/json"
    resp.json = json.loads(resp.body)
    return resp


# ------------------------------------------------------------------ job steps

#: rows per batch chunk under the ``small_chunks`` fixture: a few dozen devices cross several chunks
CHUNK = 10


def queued() -> list[dict[str, Any]]:
    """Take every message waiting on the jobs queue (moto's SQS)."""
    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.get_queue_url(QueueName="fleetbox-test-jobs")["QueueUrl"]
    out = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=0).get(
            "Messages", []
        )
        if not got:
            return out
        for m in got:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        out += got


def drain_jobs(limit: int = 500) -> int:
    """Run queued job steps (the worker's job) until the queue is empty; returns how many ran."""
    from chalicelib.services import jobs

    ran = 0
    while ran < limit:
        messages = queued()
        if not messages:
            return ran
        for m in messages:
            jobs.run(m["Body"])
            ran += 1
    raise AssertionError("the jobs never settled")


def finished(api: Any, batch_id: str) -> dict[str, Any]:
    """The batch job (secrets included) once its queued steps have all run."""
    drain_jobs()
    resp = api.get(f"/v1/batches/{batch_id}?include_secret=true")
    assert resp.status_code == 200, resp.body
    assert resp.json["status"] in ("done", "failed"), resp.json
    return resp.json


def fetch(url: str) -> bytes:
    """Download through the presigned URL (moto's mock answers it), as a user's browser would."""
    assert "X-Amz-Expires=" in url and "X-Amz-Signature=" in url, url[:80]
    resp = requests.get(url, timeout=10)
    assert resp.status_code == 200, resp.text[:300]
    return resp.content


class FakeQueue:
    """``jobs.enqueue`` / ``enqueue_many`` into memory (:meth:`install`); :meth:`drain` runs the
    steps that are due.  With ``honour_delays`` a step's delay counts on the test clock
    (``clock.shift`` / :meth:`advance`); without, every step is due at once."""

    def __init__(self, honour_delays: bool = True) -> None:
        self.honour_delays = honour_delays
        self.items: list[tuple[float, str, dict[str, Any]]] = []
        self.ran: list[str] = []

    def install(self, monkeypatch: Any) -> FakeQueue:
        from chalicelib.services import jobs

        monkeypatch.setattr(jobs, "enqueue", self.enqueue)
        monkeypatch.setattr(jobs, "enqueue_many", self.enqueue_many)
        return self

    def enqueue(self, kind: str, body: dict[str, Any], *, delay_s: int = 0) -> str:
        from chalicelib.services import jobs

        assert kind in jobs.KINDS, kind
        json.dumps(body)  # what SQS would carry
        due = clock.now() + delay_s if self.honour_delays else 0.0
        self.items.append((due, kind, body))
        return str(len(self.items))

    def enqueue_many(self, steps: Any, *, delay_s: int = 0) -> int:
        steps = list(steps)
        for kind, body in steps:
            self.enqueue(kind, body, delay_s=delay_s)
        return len(steps)

    def drain(self, max_steps: int = 2000) -> None:
        from chalicelib.services import jobs

        for _ in range(max_steps):
            ready = [i for i in self.items if i[0] <= clock.now()]
            if not ready:
                return
            item = ready[0]
            self.items.remove(item)
            self.ran.append(item[1])
            jobs.run(json.dumps({"kind": item[1], "body": item[2]}))
        raise AssertionError("the steps did not settle")

    def advance(self, seconds: float) -> None:
        clock.shift(seconds)
        self.drain()


# ------------------------------------------------------------------ the forward queue


def drain_forwards(until: Callable[[], bool], timeout: float = 30.0) -> None:
    """Run the forward worker in-process until the queue is empty and ``until()`` holds: what the
    ``forward`` worker's event source does (receive a batch, ``delivery.run_batch``, delete what
    succeeded).  An empty queue with ``until()`` true also proves every job queued before the
    call has been run."""
    from chalicelib.forwarders import engine
    from chalicelib.services import delivery

    sqs = boto3.client("sqs", region_name="us-east-1")
    url = engine.queue_url()

    def settled() -> bool:
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        if not msgs:
            return until()
        failed = set(delivery.run_batch([(m["MessageId"], m["Body"]) for m in msgs]))
        done = [m for m in msgs if m["MessageId"] not in failed]
        if done:
            sqs.delete_message_batch(
                QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)]
            )
        return False

    # no pause between rounds: an empty queue's receive already waits a second
    if not wait_until(settled, timeout, interval=0):
        raise AssertionError("the forward queue did not settle in time")
