"""OTA dispatch benchmark: one by-version task over 10,000 devices on the local stack.

Prints, from one run on one machine:
  * the time from ``POST /v1/ota-tasks`` until every one of the 10,000 ``update_firmware``
    notifications has gone through the device publisher (the embedded broker), split into
    planning (target resolution: pages of the devices' firmware-version index → job records) and
    dispatch (chunks of 500 pushed through the jobs queue: state transitions in transactions of
    99 jobs + the task's counters, publishes, batched content logs), and the notifications per
    second of the dispatch;
  * DynamoDB requests per device over the whole task (counted at botocore's one choke point in
    this process, the benchmark's own progress reads subtracted);
  * the baseline: the same broker code bare (``LocalBroker.bare()``: no authorizer, no bridge)
    publishing the same 10,000 payloads to the same topics from one thread, with the same
    subscribers connected, measured in the same run — and the ratio.

The stack runs in this process (moto server as its child, the worker loop, the broker).  The
10,000 devices are written straight to the devices table (batch writes), not created through
10,000 API calls; ``--subscribers`` of them (default 1,000) are connected as simulated MQTT
devices that subscribe to their ``ota/update`` topic but never answer (so every job stays
``pushed``), and both runs wait until each subscriber has received its notification.  The
others are offline: their publishes find no subscriber, as for an offline fleet.

    .venv/bin/python bench/ota.py [--devices 10000] [--subscribers 1000]

moto is a Python server on this same 2-core machine: the absolute times say more about moto
than about DynamoDB; the requests-per-device figure carries over to AWS.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._stack import free_port


def dynamodb_total() -> int:
    from infra.local import awscalls

    return sum(awscalls.snapshot().get("dynamodb", {}).values())


def settle(quiet_s: float = 2.0, limit_s: float = 120.0) -> None:
    """Wait until this process has made no DynamoDB request for ``quiet_s`` seconds."""
    end = time.monotonic() + limit_s
    last, since = dynamodb_total(), time.monotonic()
    while time.monotonic() < end:
        time.sleep(0.2)
        now = dynamodb_total()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--subscribers", type=int, default=1_000, help="devices connected over MQTT")
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    subscribers = min(args.subscribers, args.devices)

    home = Path(tempfile.mkdtemp(prefix="fleetbox-bench-ota-"))
    os.environ.update(
        FLEETBOX_COUNT_AWS_CALLS="1", FLEETBOX_DEVICE_QUOTA=str(args.devices + 100), FLEETBOX_LOG_LEVEL="ERROR"
    )
    for name in ("AWS_ENDPOINT_URL", "FLEETBOX_STATE_DIR", "FLEETBOX_STAGE"):
        os.environ.pop(name, None)
    import logging

    from infra.local.stack import LocalStack, StackSettings, configure_logging

    configure_logging()
    logging.getLogger().setLevel(logging.WARNING)
    stack = LocalStack(StackSettings(home=home, http_port=free_port(), mqtt_port=free_port(), mqtt_reauth_s=3600))
    info = stack.start()
    try:
        return run(stack, info, args.devices, subscribers, args.timeout)
    finally:
        stack.stop()


def run(stack, info: dict, count: int, subscribers: int, timeout: float) -> int:
    import requests

    from chalicelib.core import clock
    from chalicelib.core.config import settings
    from chalicelib.models.txn import connection
    from chalicelib.services.ota import store as ota_store
    from infra.local.broker import LocalBroker
    from infra.local.simulate import DeviceCredentials, Simulator

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {info['admin_api_key']}"
    api = info["api_url"]

    def call(method: str, path: str, status: int, **kw):
        resp = session.request(method, api + path, timeout=60, **kw)
        if resp.status_code != status:
            raise SystemExit(f"{method} {path}: {resp.status_code} {resp.text[:300]}")
        return resp.json()

    pid = call(
        "POST",
        "/v1/products",
        201,
        json={
            "name": "OTA bench",
            "category": "custom",
            "device_type": "device",
            "comm_method": "wifi",
            "auth_type": "key",
            "data_protocol": "thing_model",
        },
    )["product_id"]

    # --- 10,000 devices on version 1.0, written directly (25 per BatchWriteItem)
    started = time.monotonic()
    table = settings().table("devices")
    ddb = connection().client
    now = clock.now_s()
    creds: list[DeviceCredentials] = []
    items = []
    for i in range(count):
        dn = f"bench{i:05d}"
        secret = base64.b64encode(secrets.token_bytes(16)).decode()
        creds.append(DeviceCredentials(pid, dn, secret))
        items.append(
            {
                "product_id": {"S": pid},
                "device_name": {"S": dn},
                "secret": {"S": secret},
                "status": {"S": "inactive"},
                "enabled": {"BOOL": True},
                "firmware_version": {"S": "1.0"},
                "dollar": {"BOOL": False},
                "created_at": {"N": str(now)},
                "updated_at": {"N": str(now)},
                "origin": {"S": "bench"},
                "reported": {"M": {}},
                "desired": {"M": {}},
            }
        )
    for start in range(0, len(items), 25):
        request = {table: [{"PutRequest": {"Item": it}} for it in items[start : start + 25]]}
        while request:
            request = ddb.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}
    print(f"{count} devices written in {time.monotonic() - started:.1f} s", flush=True)

    # --- subscribers on the stack's broker (silent: jobs stay pushed)
    # the last devices dispatched (state_key order) are the subscribers: when the last of them has
    # its notification, the publisher has carried (nearly) all of them
    subscribed = creds[-subscribers:] if subscribers else []
    sim = Simulator(subscribed, info["mqtt_host"], info["mqtt_port"], rate=0, connect_rate=300)
    if not sim.start(wait=True, timeout=120):
        raise SystemExit(f"stack broker: not every subscriber connected: {sim.stats()}")
    settle()  # the connects' presence writes land before counting starts

    # --- firmware
    settle()
    data = secrets.token_bytes(64 * 1024)
    fw = call(
        "POST",
        "/v1/firmware",
        201,
        json={
            "product_id": pid,
            "name": "bench",
            "version": "2.0",
            "file_name": "bench.bin",
            "file_size": len(data),
            "custom_info": json.dumps({"bench": True}),
        },
    )
    if requests.put(fw["upload_url"], data=data, timeout=60).status_code != 200:
        raise SystemExit("firmware upload failed")
    call("POST", f"/v1/firmware/{fw['id']}/complete", 200)

    # --- the task
    before = dynamodb_total()
    polls = 0
    t0 = time.monotonic()
    task_id = call(
        "POST", "/v1/ota-tasks", 202, json={"firmware_id": fw["id"], "method": "by_version", "source_versions": ["1.0"]}
    )["id"]
    t_created = t_pushed = None
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        task = ota_store.read_task(task_id)
        polls += 1
        if t_created is None and task["status"] == "created":
            t_created = time.monotonic()
        if task["status"] == "created" and int(task.get("n_pushed") or 0) >= count:
            t_pushed = time.monotonic()
            break
    if t_pushed is None:
        raise SystemExit(f"the task did not push every device in {timeout:.0f} s: {ota_store.statistics(task)}")
    while sim.stats()["ota_notifications"] < subscribers and time.monotonic() < deadline:
        time.sleep(0.05)
    t_received = time.monotonic()
    time.sleep(1.0)  # the last chunk's content logs and counters
    requests_made = dynamodb_total() - before - polls
    received = sim.stats()["ota_notifications"]
    sim.stop()
    sample = sim.devices[0].updates[0] if sim.devices and sim.devices[0].updates else None

    # --- baseline: the same broker code, bare, the same subscribers, the same 10,000 publishes
    bare = LocalBroker.bare("127.0.0.1", 0)
    bare.start()
    bsim = Simulator(subscribed, "127.0.0.1", bare.port, rate=0, connect_rate=300)
    if not bsim.start(wait=True, timeout=120):
        raise SystemExit(f"bare broker: not every subscriber connected: {bsim.stats()}")
    time.sleep(3)  # SUBACKs, as for the stack's subscribers
    payload = json.dumps(sample or {"type": "update_firmware"}, separators=(",", ":")).encode()
    b0 = time.monotonic()
    for c in creds:
        bare.publish(f"ota/update/{pid}/{c.device_name}", payload, 1)
    b_published = time.monotonic()
    while bsim.stats()["ota_notifications"] < subscribers and time.monotonic() < b0 + 120:
        time.sleep(0.01)
    b_received = time.monotonic()
    bare_received = bsim.stats()["ota_notifications"]
    bsim.stop()
    bare.stop()

    plan_s = t_created - t0
    dispatch_s = t_pushed - t_created
    total_s = t_pushed - t0
    bare_s = b_received - b0  # until the last subscriber had its message: the broker carried them all
    rate = count / dispatch_s
    bare_rate = count / bare_s
    print()
    print(f"OTA task over {count} devices ({subscribers} connected, silent), local stack, one run")
    print(f"  planning (targets → {count} pending jobs):                 {plan_s:8.2f} s")
    print(
        f"  dispatch (every notification through the publisher):    {dispatch_s:8.2f} s   ({rate:.0f} notifications/s)"
    )
    print(f"  task created → all {count} pushed:                        {total_s:8.2f} s")
    print(
        f"  connected subscribers that received theirs:             {received:8d} / {subscribers} "
        f"({t_received - t0:.2f} s after creation)"
    )
    print(
        f"  DynamoDB requests per device (whole task):              {requests_made / count:8.3f}   "
        f"({requests_made} requests)"
    )
    print(
        f"  baseline, same broker bare, {count} publishes from one thread: {bare_s:8.2f} s   "
        f"({bare_rate:.0f} publishes/s; {bare_received}/{subscribers} subscribers received theirs; "
        f"the publish calls returned after {b_published - b0:.2f} s)"
    )
    print(f"  ratio dispatch/bare (notifications per second):         {rate / bare_rate:8.4f}")
    print(f"  notification size: {len(payload)} bytes; md5 of the firmware {hashlib.md5(data).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
