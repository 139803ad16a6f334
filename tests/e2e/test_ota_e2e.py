"""OTA on the real local stack (SPEC §8): firmware uploaded through the presigned URL, tasks
driven by the jobs worker and its ticks, simulated Tencent-SDK devices over MQTT that download
through the root-level link (with Range), check the MD5, report progress and their new version.

The stack runs with a one-second OTA "minute" and ticks every two seconds, so timeouts of
"2 minutes" take seconds.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import requests

from infra.local.simulate import Api as SimApi
from infra.local.simulate import Simulator, load_devices
from tests.e2e.fleet import Api, aws_client
from tests.e2e.stack import start_stack
from tests.helpers import queue_counts, wait_until

pytestmark = pytest.mark.e2e

FILE = b"\x7fELF-fleetbox-firmware" + bytes(range(256)) * 64  # 16 KB: several Range spans
MD5 = hashlib.md5(FILE).hexdigest()
CUSTOM = '{"channel":"stable","notes":"fixes"}'


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    proc = start_stack(
        tmp_path_factory.mktemp("ota-home"),
        FLEETBOX_OTA_MINUTE_S="1",
        FLEETBOX_SCHEDULE_SPEEDUP="30",
        FLEETBOX_DEVICE_QUOTA="1000",
    )
    try:
        yield proc.info
    finally:
        code = proc.terminate()
        assert code == 0, proc.log_text()[-4000:]


@pytest.fixture(scope="module")
def client(stack: dict) -> Api:
    return Api(stack)


def firmware(client: Api, pid: str, version: str = "2.0") -> dict[str, Any]:
    fw = client.call(
        "POST",
        "/v1/firmware",
        201,
        json={
            "product_id": pid,
            "name": "lamp-fw",
            "version": version,
            "file_name": "lamp.bin",
            "file_size": len(FILE),
            "custom_info": CUSTOM,
        },
    ).json()
    assert requests.put(fw["upload_url"], data=FILE, timeout=30).status_code == 200
    done = client.call("POST", f"/v1/firmware/{fw['id']}/complete", 200).json()
    assert done["md5"] == MD5 and done["file_size"] == len(FILE)
    return done


def fleet(stack: dict, pid: str, count: int, prefix: str, **sim: Any) -> Simulator:
    devices = load_devices(SimApi(stack["api_url"], stack["admin_api_key"]), pid, count, create=True, prefix=prefix)
    simulator = Simulator(
        devices, stack["mqtt_host"], stack["mqtt_port"], rate=0, ota=True, dollar=True, mqtt31=True, **sim
    )
    assert simulator.start(wait=True, timeout=60), simulator.refusals[:3]
    return simulator


def task(client: Api, body: dict[str, Any]) -> str:
    return client.call("POST", "/v1/ota-tasks", 202, json=body).json()["id"]


def view(client: Api, task_id: str) -> dict[str, Any]:
    return client.call("GET", f"/v1/ota-tasks/{task_id}", 200).json()


def devices(client: Api, task_id: str, state: str | None = None) -> dict[str, dict[str, Any]]:
    params = {"limit": 100, **({"state": state} if state else {})}
    items = client.call("GET", f"/v1/ota-tasks/{task_id}/devices", 200, params=params).json()["items"]
    return {j["device_name"]: j for j in items}


def reported_versions(client: Api, pid: str, count: int, version: str) -> bool:
    page = client.call(
        "GET", f"/v1/products/{pid}/devices", 200, params={"firmware_version": version, "limit": 100}
    ).json()
    return len(page["items"]) >= count


def test_fifty_devices_upgrade_by_version_end_to_end(stack, client):
    pid = client.product(name="OTA fleet")
    sim = fleet(stack, pid, 50, "ota")
    try:
        assert wait_until(lambda: reported_versions(client, pid, 50, "1.0"), timeout=30)
        fw = firmware(client, pid)
        task_id = task(client, {"firmware_id": fw["id"], "method": "by_version", "source_versions": ["1.0"]})
        assert wait_until(lambda: view(client, task_id)["status"] == "done", timeout=90), view(client, task_id)
        final = view(client, task_id)
        assert final["statistics"] == {
            "total": 50,
            "pending": 0,
            "pushed": 0,
            "upgrading": 0,
            "succeeded": 50,
            "failed": 0,
        }
        for device in sim.devices:
            doc = device.updates[0]
            assert doc["version"] == "2.0" and doc["md5sum"] == MD5 and doc["file_size"] == len(FILE)
            assert doc["user_defined"] == CUSTOM and doc["url"].split("://", 1)[1].count("/") == 1
        stats = sim.stats()
        assert stats["ota_downloads"] == 50 and stats["ota_md5_ok"] == 50 and stats["ota_upgraded"] == 50
        assert stats["ota_ranged"] == 100  # the first-KB Range request and the SDK-style rest, both 206
        assert all(j["running_version"] == "2.0" for j in devices(client, task_id, "succeeded").values())
        assert wait_until(lambda: reported_versions(client, pid, 50, "2.0"), timeout=10)
        # the link honours Range exactly as the SDK asks (end = file size) and is signed
        url = sim.devices[0].updates[0]["url"]
        part = requests.get(url, headers={"Range": "bytes=16-31", "Accept-Encoding": "gzip"}, timeout=10)
        assert part.status_code == 206 and part.content == FILE[16:32]
        assert part.headers["Content-Range"] == f"bytes 16-31/{len(FILE)}"
        sdk = requests.get(url, headers={"Range": f"bytes=0-{len(FILE)}"}, timeout=10)
        assert sdk.status_code == 206 and hashlib.md5(sdk.content).hexdigest() == MD5
        assert requests.get(url.replace("s=", "s=0"), timeout=10).status_code == 403
    finally:
        sim.stop()


def test_timeouts_retries_cancel_and_abort(stack, client):
    pid = client.product(name="OTA faults")
    sim = fleet(stack, pid, 6, "bad", ota_behaviour={"bad00000": "silent"}, default_ota="fail")
    try:
        assert wait_until(lambda: reported_versions(client, pid, 6, "1.0"), timeout=30)
        fw = firmware(client, pid)
        # a silent device: re-dispatched after the "2-minute" timeout, failed after one retry
        silent = task(
            client,
            {
                "firmware_id": fw["id"],
                "method": "by_device",
                "devices_csv": "bad00000\nghost",
                "timeout_minutes": 2,
                "max_retries": 1,
            },
        )
        assert wait_until(lambda: view(client, silent)["status"] == "done", timeout=40), view(client, silent)
        job = devices(client, silent)["bad00000"]
        assert job["state"] == "failed" and job["reason"] == "timeout" and job["attempts"] == 2
        assert len(sim.device(f"{pid}bad00000").updates) == 2
        assert view(client, silent)["rejected_devices"] == [{"device_name": "ghost", "reason": "device does not exist"}]
        # the task lists filter by status and product on DynamoDB Local (which, unlike moto, refuses
        # a filter on an index key)
        done = client.call("GET", "/v1/ota-tasks", 200, params={"status": "done", "product_id": pid}).json()
        assert silent in [t["id"] for t in done["items"]]
        assert client.call("GET", "/v1/ota-tasks", 200, params={"status": "not_started"}).json()["items"] == []
        # retry brings it back to pending and pushes it again; cancel fails it "cancelled"
        client.call("POST", f"/v1/ota-tasks/{silent}/devices/bad00000/retry", 200)
        assert wait_until(lambda: len(sim.device(f"{pid}bad00000").updates) == 3, timeout=15)
        job = client.call("POST", f"/v1/ota-tasks/{silent}/devices/bad00000/cancel", 200).json()
        assert job["state"] == "failed" and job["reason"] == "cancelled"
        assert wait_until(lambda: view(client, silent)["status"] == "done", timeout=10)
        # five devices that fail: the abort rule stops the task after three decided devices
        failing = "\n".join(f"bad{i:05d}" for i in range(1, 6))
        aborted = task(
            client,
            {
                "firmware_id": fw["id"],
                "method": "by_device",
                "devices_csv": failing,
                "rate_per_minute": 3,
                "abort": {"failure_ratio": 0.5, "min_devices": 3},
            },
        )
        assert wait_until(lambda: view(client, aborted)["status"] == "failed", timeout=30), view(client, aborted)
        final = view(client, aborted)
        assert final["reason"].startswith("aborted:")
        assert wait_until(lambda: view(client, aborted)["statistics"]["failed"] == 5, timeout=15)
        assert final["statistics"]["succeeded"] == 0
    finally:
        sim.stop()


def test_a_dynamic_task_picks_up_a_device_that_activates_later(stack, client):
    pid = client.product(name="OTA dynamic")
    first = fleet(stack, pid, 1, "early")
    try:
        assert wait_until(lambda: reported_versions(client, pid, 1, "1.0"), timeout=20)
        fw = firmware(client, pid)
        task_id = task(
            client, {"firmware_id": fw["id"], "method": "by_version", "source_versions": ["1.0"], "mode": "dynamic"}
        )
        assert wait_until(lambda: view(client, task_id)["statistics"]["succeeded"] == 1, timeout=30)
        late = fleet(stack, pid, 1, "late")  # created and connected after the task started
        try:
            assert wait_until(lambda: view(client, task_id)["statistics"]["succeeded"] == 2, timeout=30), view(
                client, task_id
            )
            assert late.stats()["ota_upgraded"] == 1
            assert view(client, task_id)["status"] == "created"  # dynamic: runs until stopped
            assert client.call("POST", f"/v1/ota-tasks/{task_id}/cancel", 200).json()["status"] == "cancelled"
        finally:
            late.stop()
    finally:
        first.stop()


def test_a_user_confirm_task_waits_for_confirmation(stack, client):
    pid = client.product(name="OTA confirm")
    sim = fleet(stack, pid, 1, "conf")
    try:
        assert wait_until(lambda: reported_versions(client, pid, 1, "1.0"), timeout=20)
        fw = firmware(client, pid)
        task_id = task(
            client,
            {"firmware_id": fw["id"], "method": "by_version", "source_versions": ["1.0"], "confirm": "user_confirm"},
        )
        assert wait_until(lambda: devices(client, task_id).get("conf00000"), timeout=20)
        # markers instead of a pause: the planning step that starts the task ("created") queues
        # the first dispatch step before its own message is deleted, so an empty jobs queue (none
        # visible, none in flight) after that means the dispatch ran and held the notification
        sqs = aws_client(stack, "sqs")
        jobs_queue = sqs.get_queue_url(QueueName="fleetbox-local-jobs")["QueueUrl"]
        assert wait_until(lambda: view(client, task_id)["status"] == "created", timeout=20), view(client, task_id)
        assert wait_until(lambda: queue_counts(sqs, jobs_queue) == (0, 0), timeout=20), queue_counts(sqs, jobs_queue)
        # and a control published after it reaches the device after anything the dispatch sent
        client.call("POST", f"/v1/products/{pid}/devices/conf00000/control", 200, json={"params": {"color": 1}})
        assert wait_until(lambda: sim.stats()["controls_answered"] >= 1, timeout=10), sim.stats()
        assert sim.stats()["ota_notifications"] == 0
        assert devices(client, task_id)["conf00000"]["awaiting_confirmation"] is True
        client.call("POST", f"/v1/ota-tasks/{task_id}/devices/conf00000/confirm", 200)
        assert wait_until(lambda: view(client, task_id)["status"] == "done", timeout=30), view(client, task_id)
        assert view(client, task_id)["statistics"]["succeeded"] == 1
    finally:
        sim.stop()
