"""Mass production through the real local stack (SPEC §7): a 10,000-device batch with QR codes,
upload rules, the quota, re-delivered steps, a killed-and-restarted worker, and binding by QR.

The stacks here run with a 20,000-device quota (the suite's default is 50).
"""

from __future__ import annotations

import io
import json
import random
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.fleet import Api, Device, aws_client, credentials
from tests.e2e.stack import StackProcess, start_stack
from tests.helpers import queue_counts, read_batch_csv, scan, sign_qr, wait_until

pytestmark = pytest.mark.e2e

BIG = 10_000
STACK_ENV = {"FLEETBOX_DEVICE_QUOTA": "20000"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackProcess]:
    proc = start_stack(tmp_path_factory.mktemp("batch-home"), **STACK_ENV)
    try:
        yield proc
    finally:
        code = proc.terminate(timeout=30)
        assert code == 0, proc.log_text()[-4000:]


@pytest.fixture(scope="module")
def api(stack: StackProcess) -> Api:
    return Api(stack.info)


# ------------------------------------------------------------------ helpers


def released(api: Api, **extra: Any) -> str:
    body = {
        "name": f"Batch {random.randrange(10**8)}",
        "category": "custom",
        "device_type": "device",
        "comm_method": "wifi",
        "auth_type": "key",
        "data_protocol": "thing_model",
        **extra,
    }
    pid = api.call("POST", "/v1/products", 201, json=body).json()["product_id"]
    api.call("POST", f"/v1/products/{pid}/publish", 200)
    return pid


def run_batch(api: Api, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    job = api.call("POST", "/v1/batches", 202, json=body).json()
    return wait_done(api, job["id"], timeout)


def wait_done(api: Api, batch_id: str, timeout: float) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def done() -> bool:
        seen.update(api.call("GET", f"/v1/batches/{batch_id}?include_secret=true", 200).json())
        return seen["status"] in ("done", "failed")

    assert wait_until(done, timeout, 0.5), f"batch not finished in {timeout} s: {seen}"
    return seen


def download(url: str) -> bytes:
    assert "/files/" in url and "e=" in url and "s=" in url  # the stack's own time-limited, signed link
    resp = requests.get(url, timeout=120)
    assert resp.status_code == 200, resp.text[:300]
    # served with the type it was stored with, as S3 would
    kind = resp.headers["Content-Type"]
    assert kind.startswith("text/csv") if url.split("?")[0].endswith(".csv") else kind == "application/zip", kind
    return resp.content


def stored_devices(info: dict[str, Any], pid: str) -> dict[str, dict[str, Any]]:
    """The product's device items as the stack stored them (moto's DynamoDB, read directly)."""
    ddb = aws_client(info, "dynamodb")
    out: dict[str, dict[str, Any]] = {}
    for page in ddb.get_paginator("query").paginate(
        TableName="fleetbox-local-devices",
        KeyConditionExpression="product_id = :p",
        ExpressionAttributeValues={":p": {"S": pid}},
        ConsistentRead=True,
    ):
        for item in page["Items"]:
            out[item["device_name"]["S"]] = item
    return out


def password_check_passes(pid: str, name: str, psk: str, stored_secret: str) -> bool:
    """A device built from the CSV row (independent signer) passes the platform's password check
    against the secret the platform stored."""
    from chalicelib.protocol import mqtt_auth

    client_id, username, password = credentials(pid, name, psk)
    try:
        mqtt_auth.authenticate(client_id, username, password, stored_secret, now_s=int(time.time()))
        return True
    except mqtt_auth.Refused:
        return False


# ------------------------------------------------------------------ the 10,000-device batch


@pytest.fixture(scope="module")
def big(api: Api, stack: StackProcess) -> dict[str, Any]:
    pid = released(api)
    t0 = time.monotonic()
    job = run_batch(
        api,
        {"product_id": pid, "burn_method": "per_device_secret", "generation": "auto", "quantity": BIG, "qr_code": True},
        timeout=300,
    )
    return {"pid": pid, "job": job, "seconds": time.monotonic() - t0}


def test_a_10000_device_batch_with_qr_codes_completes_with_valid_outputs(api, stack, big):
    pid, job = big["pid"], big["job"]
    assert (job["status"], job["progress"], job["success_count"], job["failure_count"]) == ("done", 100, BIG, 0)
    rows = read_batch_csv(download(job["csv_url"]))
    assert len(rows) == BIG and len({r["DeviceName"] for r in rows}) == BIG
    stored = stored_devices(stack.info, pid)
    assert len(stored) == BIG
    for r in rows:
        assert r["ProductId"] == pid and r["Status"] == "success" and r["ProductSecret"] == ""
        assert password_check_passes(pid, r["DeviceName"], r["DevicePsk"], stored[r["DeviceName"]]["secret"]["S"])
    archive = zipfile.ZipFile(io.BytesIO(download(job["download_url"])))
    names = archive.namelist()
    assert len(names) == BIG + 1 and sorted(n for n in names if n.endswith(".png")) == sorted(
        f"{r['DeviceName']}.png" for r in rows
    )
    assert read_batch_csv(archive.read("devices.csv")) == rows
    for r in random.sample(rows, 40):
        doc = json.loads(scan(archive.read(f"{r['DeviceName']}.png")))
        assert doc["ProductId"] == pid and doc["DeviceName"] == r["DeviceName"]
        assert doc["Signature"] == sign_qr(r["DevicePsk"], pid, r["DeviceName"])
    # a few of them connect for real through the broker
    for r in rows[:3]:
        device = Device(stack.info, pid, r["DeviceName"], r["DevicePsk"]).connect()
        device.client.disconnect()
        device.client.loop_stop()
    assert api.call("GET", f"/v1/products/{pid}", 200).json()["device_count"] == BIG


def test_redelivered_steps_of_a_finished_batch_create_nothing(api, stack, big):
    pid, job = big["pid"], big["job"]
    sqs = aws_client(stack.info, "sqs")
    url = sqs.get_queue_url(QueueName="fleetbox-local-jobs")["QueueUrl"]
    for body in (
        {"kind": "batch.chunk", "body": {"batch_id": job["id"], "chunk": 0}},
        {"kind": "batch.chunk", "body": {"batch_id": job["id"], "chunk": 0}},
        {"kind": "batch.finish", "body": {"batch_id": job["id"]}},
    ):
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(body))
    # the worker loop deletes a message once its handler returned: none visible and none in
    # flight means all three steps ran to the end (and any step they queued ran too)
    assert wait_until(lambda: queue_counts(sqs, url) == (0, 0), 20), queue_counts(sqs, url)
    again = api.call("GET", f"/v1/batches/{job['id']}?include_secret=true", 200).json()
    assert (again["status"], again["success_count"], again["processed"]) == ("done", BIG, BIG)
    assert api.call("GET", f"/v1/products/{pid}", 200).json()["device_count"] == BIG


def test_upload_rows_existing_invalid_duplicate_are_reported_and_nothing_is_overwritten(api):
    pid = released(api)
    existing = api.call("POST", f"/v1/products/{pid}/devices", 201, json={"device_name": "unit-2"}).json()
    text = "DeviceName\nunit-1\nunit-2\nno spaces allowed\nunit-1\nunit-3\n"
    job = run_batch(
        api,
        {"product_id": pid, "burn_method": "per_device_secret", "generation": "upload", "names_csv": text},
        timeout=60,
    )
    assert (job["status"], job["success_count"], job["failure_count"]) == ("done", 2, 3)
    assert {f["row"]: f["device_name"] for f in job["failures"]} == {3: "unit-2", 4: "no spaces allowed", 5: "unit-1"}
    rows = read_batch_csv(download(job["download_url"]))
    assert [(r["DeviceName"], r["Status"] == "success") for r in rows] == [
        ("unit-1", True),
        ("unit-2", False),
        ("no spaces allowed", False),
        ("unit-1", False),
        ("unit-3", True),
    ]
    secret = api.call("GET", f"/v1/products/{pid}/devices/unit-2", 200, params={"include_secret": "true"}).json()
    assert secret["secret"] == existing["secret"]


def test_over_quota_fails_first_and_unreleased_products_are_refused(api, big):
    pid = released(api)
    remaining = api.call("GET", "/v1/quota", 200).json()["remaining"]
    over = api.call(
        "POST",
        "/v1/batches",
        409,
        json={
            "product_id": pid,
            "burn_method": "per_device_secret",
            "generation": "auto",
            "quantity": min(remaining + 1, BIG),
        },
    )
    assert over.json()["error"]["code"] == "LimitExceeded.DeviceExceedLimit"
    assert api.call("GET", "/v1/quota", 200).json()["remaining"] == remaining
    assert api.call("GET", f"/v1/products/{pid}/batches", 200).json()["items"] == []
    draft = api.product(model=None)
    refused = api.call(
        "POST",
        "/v1/batches",
        409,
        json={"product_id": draft, "burn_method": "per_device_secret", "generation": "auto", "quantity": 1},
    )
    assert refused.json()["error"]["code"] == "UnsupportedOperation.ProductNotReleased"


def test_binding_a_scanned_device_code(api, big):
    job = big["job"]
    archive = zipfile.ZipFile(io.BytesIO(download(job["download_url"])))
    name = read_batch_csv(archive.read("devices.csv"))[7]["DeviceName"]
    code = scan(archive.read(f"{name}.png"))
    first = api.call("POST", "/v1/bindings", 201, json={"code": code, "user_id": "alice"}).json()
    assert api.call("POST", "/v1/bindings", 201, json={"code": code, "user_id": "alice"}).json()["id"] == first["id"]
    forged = json.dumps({**json.loads(code), "Signature": "0" * 64}, separators=(",", ":"))
    assert (
        api.call("POST", "/v1/bindings", 400, json={"code": forged, "user_id": "eve"}).json()["error"]["code"]
        == "InvalidParameterValue.QRCodeSignatureInvalid"
    )
    # the product is preemptive (default): a new scan takes the device over
    api.call("POST", "/v1/bindings", 201, json={"code": code, "user_id": "bob"})
    assert api.call("GET", "/v1/users/alice/devices", 200).json()["items"] == []
    assert [d["device_name"] for d in api.call("GET", "/v1/users/bob/devices", 200).json()["items"]] == [name]


# ------------------------------------------------------------------ a killed worker


def test_a_killed_stack_resumes_the_batch_to_the_same_result(tmp_path: Path):
    state, home = tmp_path / "state", tmp_path / "home"
    # the default 60 s staleness: the restarted stack must resume the batch at once, not a minute later
    env = {**STACK_ENV, "FLEETBOX_STATE_DIR": str(state), "FLEETBOX_BATCH_CHUNK_SIZE": "150"}
    n = 3000
    first = start_stack(home, **env)
    try:
        api = Api(first.info)
        pid = released(api)
        job = api.call(
            "POST",
            "/v1/batches",
            202,
            json={
                "product_id": pid,
                "burn_method": "per_device_secret",
                "generation": "auto",
                "quantity": n,
                "qr_code": True,
            },
        ).json()
        seen: dict[str, Any] = {}

        def midway() -> bool:
            seen.update(api.call("GET", f"/v1/batches/{job['id']}", 200).json())
            return seen["processed"] >= 450

        assert wait_until(midway, 60, 0.05), seen
        assert seen["status"] == "processing" and seen["processed"] < n, seen
    finally:
        first.kill()  # SIGKILL: the worker dies holding its message
    second = start_stack(home, **env)
    try:
        api = Api(second.info)
        # the message died with the worker: the restarted stack resumes the batch as it starts and
        # says so — not after the sweep's 60 s of staleness, in silence
        assert "resumed 1 batch job(s) that were running when the stack stopped" in second.log_text()
        assert "batch resumed" in second.log_text()
        at_start = api.call("GET", f"/v1/batches/{job['id']}", 200).json()
        moved = wait_until(
            lambda: (
                at_start["status"] == "done"
                or api.call("GET", f"/v1/batches/{job['id']}", 200).json()["processed"] > at_start["processed"]
            ),
            30,
            0.2,
        )
        assert moved, "the batch did not move within 30 s of the restart"
        done = wait_done(api, job["id"], 120)
        assert (done["status"], done["success_count"], done["failure_count"], done["processed"]) == ("done", n, 0, n)
        rows = read_batch_csv(download(done["csv_url"]))
        assert len(rows) == n and len({r["DeviceName"] for r in rows}) == n
        stored = stored_devices(second.info, pid)
        assert set(stored) == {r["DeviceName"] for r in rows}  # no device twice, none missing
        for r in rows:
            assert r["DevicePsk"] == stored[r["DeviceName"]]["secret"]["S"]
        archive = zipfile.ZipFile(io.BytesIO(download(done["download_url"])))
        assert len([x for x in archive.namelist() if x.endswith(".png")]) == n
        assert api.call("GET", f"/v1/products/{pid}", 200).json()["device_count"] == n
        assert api.call("GET", "/v1/quota", 200).json()["registered"] == n
    finally:
        code = second.terminate(timeout=30)
        assert code == 0, second.log_text()[-4000:]
