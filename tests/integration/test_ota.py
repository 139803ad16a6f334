"""OTA firmware upgrades and resource distribution (SPEC §8) over moto, through the HTTP API,
the uplink batch processor (device messages) and the jobs steps (run from an in-memory queue
that honours delays against the test clock).

Given devices that report version 1.0, when a task is created, its steps run and the devices
answer as Tencent-SDK devices do, then they receive exactly the notification of §8.4 and the
task's per-device states and statistics follow §8.3.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from chalicelib.core import clock
from chalicelib.core.config import reload_settings
from chalicelib.services import events
from chalicelib.services.ota import store as ota_store
from chalicelib.services.ota import tasks as ota_tasks
from tests.integration.helpers import FakeQueue, Recorder, expect_error, make_device, make_product, up

FILE = b"\x7fFIRMWARE" + bytes(range(256)) * 40
MD5 = hashlib.md5(FILE).hexdigest()


@pytest.fixture()
def env(monkeypatch: pytest.MonkeyPatch, aws: None) -> Iterator[None]:
    from infra.local.bootstrap import bootstrap

    monkeypatch.setenv("FLEETBOX_BUCKET", bootstrap("test")["bucket"])
    monkeypatch.setenv("FLEETBOX_OTA_MINUTE_S", "1")
    monkeypatch.setenv("FLEETBOX_DOWNLOAD_BASE_URL", "http://127.0.0.1:8000")
    monkeypatch.setenv("FLEETBOX_DOWNLOAD_KEY", "k" * 32)
    reload_settings()
    from chalicelib.services import files

    files.forget()
    ota_store.forget_live()
    yield
    clock.reset()
    monkeypatch.undo()
    reload_settings()
    files.forget()


@pytest.fixture()
def queue(monkeypatch: pytest.MonkeyPatch, env: None) -> FakeQueue:
    """Job steps in memory, their delays counted on the test clock."""
    return FakeQueue().install(monkeypatch)


@pytest.fixture()
def seen() -> Iterator[list[events.DomainEvent]]:
    got: list[events.DomainEvent] = []
    events.subscribe("ota.*", got.append)
    events.subscribe("resource.*", got.append)
    yield got
    events.unsubscribe(got.append)


@pytest.fixture()
def rec(queue: FakeQueue, recorder: Recorder) -> Recorder:
    """The device publisher's recorder, installed once the job queue is."""
    return recorder


def send(*messages: Any) -> None:
    from chalicelib.services import uplink

    result = uplink.process_batch(list(messages))
    assert not result.failed, result


def report_version(pid: str, dn: str, version: str, dollar: bool = False) -> Any:
    return up(pid, dn, "ota/report", {"type": "report_version", "report": {"version": version}}, dollar=dollar)


def progress(
    pid: str, dn: str, state: str, version: str = "2.0", percent: str | None = None, code: str = "0", msg: str = ""
) -> Any:
    p: dict[str, Any] = {"state": state, "result_code": code, "result_msg": msg}
    if percent is not None:
        p["percent"] = percent
    return up(pid, dn, "ota/report", {"type": "report_progress", "report": {"progress": p, "version": version}})


def upload_firmware(
    api: Any, pid: str, version: str = "2.0", custom_info: Any = '{"note":"fix"}', data: bytes = FILE, **extra: Any
) -> dict[str, Any]:
    body = {
        "product_id": pid,
        "name": "lamp-fw",
        "version": version,
        "fw_type": "mcu",
        "file_name": "lamp.bin",
        "file_size": len(data),
        "description": "fixes",
        **extra,
    }
    if custom_info is not None:
        body["custom_info"] = custom_info
    r = api.post("/v1/firmware", body)
    assert r.status_code == 201, r.body
    put = requests.put(r.json["upload_url"], data=data, timeout=10)
    assert put.status_code == 200, put.text
    done = api.post(f"/v1/firmware/{r.json['id']}/complete")
    assert done.status_code == 200, done.body
    return done.json


@pytest.fixture()
def fleet(api: Any, rec: Recorder) -> dict[str, Any]:
    """A product with dev0..dev4 on version 1.0 (reported) and firmware 2.0."""
    pid = make_product(api)
    for i in range(5):
        make_device(api, pid, f"dev{i}")
    send(*(report_version(pid, f"dev{i}", "1.0") for i in range(5)))
    fw = upload_firmware(api, pid)
    rec.clear()
    return {"pid": pid, "fw": fw}


def create_task(api: Any, queue: FakeQueue, fw_id: str, **body: Any) -> dict[str, Any]:
    payload = {"firmware_id": fw_id, "method": "by_version", "source_versions": ["1.0"], **body}
    payload = {k: v for k, v in payload.items() if v is not None}
    r = api.post("/v1/ota-tasks", payload)
    assert r.status_code == 202, r.body
    queue.drain()
    return api.get(f"/v1/ota-tasks/{r.json['id']}").json


def updates(rec: Recorder, pid: str, dn: str) -> list[dict[str, Any]]:
    return [p for p in rec.on(f"ota/update/{pid}/{dn}") if p.get("type") == "update_firmware"]


def states(api: Any, task_id: str, state: str | None = None) -> dict[str, str]:
    q = f"?state={state}" if state else ""
    r = api.get(f"/v1/ota-tasks/{task_id}/devices{q}")
    assert r.status_code == 200, r.body
    return {j["device_name"]: j["state"] for j in r.json["items"]}


# ------------------------------------------------------------------ firmware


def test_registration_measures_size_and_md5_from_the_stored_object(api, fleet):
    fw = fleet["fw"]
    assert fw["status"] == "ready" and fw["md5"] == MD5 and fw["file_size"] == len(FILE)
    got = api.get(f"/v1/firmware/{fw['id']}").json
    assert got["custom_info"] == '{"note":"fix"}' and got["version"] == "2.0" and got["fw_type"] == "mcu"
    assert got["statistics"]["tasks"] == 0
    listed = api.get(f"/v1/firmware?product_id={fleet['pid']}&q=lamp").json
    assert [f["id"] for f in listed["items"]] == [fw["id"]]
    patched = api.patch(f"/v1/firmware/{fw['id']}", {"name": "lamp-fw-2", "description": "better"})
    assert patched.status_code == 200 and patched.json["name"] == "lamp-fw-2"


def test_firmware_inputs_are_validated_with_their_codes(api, fleet, monkeypatch):
    pid = fleet["pid"]
    base = {"product_id": pid, "name": "fw", "version": "3.0", "fw_type": "mcu", "file_name": "a.bin", "file_size": 10}
    mb = 1024 * 1024
    expect_error(
        api.post("/v1/firmware", {**base, "file_size": 1025 * mb}), 413, "RequestTooLarge.FileTooLarge", "file_size"
    )
    assert api.post("/v1/firmware", {**base, "version": "3.1", "file_size": 1024 * mb}).status_code == 201
    expect_error(
        api.post("/v1/firmware", {**base, "file_name": "setup.exe"}),
        400,
        "InvalidParameterValue.FileTypeInvalid",
        "file_name",
    )
    info = json.dumps({"k": "x" * 1527})
    assert len(info.encode()) == 1536
    assert api.post("/v1/firmware", {**base, "version": "3.2", "custom_info": info}).status_code == 201
    too_long = json.dumps({"k": "x" * 1528})
    expect_error(
        api.post("/v1/firmware", {**base, "custom_info": too_long}),
        400,
        "InvalidParameterValue.CustomInfoTooLong",
        "custom_info",
    )
    multibyte = json.dumps({"k": "é" * 764}, ensure_ascii=False)  # 1537 bytes, 772 characters
    assert len(multibyte.encode()) == 1537
    expect_error(
        api.post("/v1/firmware", {**base, "custom_info": multibyte}),
        400,
        "InvalidParameterValue.CustomInfoTooLong",
        "custom_info",
    )
    expect_error(
        api.post("/v1/firmware", {**base, "custom_info": "not json"}),
        400,
        "InvalidParameterValue.CustomInfoInvalid",
        "custom_info",
    )
    expect_error(
        api.post("/v1/firmware", {**base, "name": "_bad"}), 400, "InvalidParameterValue.FirmwareNameInvalid", "name"
    )
    expect_error(
        api.post("/v1/firmware", {**base, "version": "1 0"}),
        400,
        "InvalidParameterValue.FirmwareVersionInvalid",
        "version",
    )
    expect_error(
        api.post("/v1/firmware", {**base, "version": "2.0"}), 409, "ResourceInUse.FirmwareVersionExists", "version"
    )
    # the same version is fine for another type (module firmware)
    assert api.post("/v1/firmware", {**base, "version": "2.0", "fw_type": "wifi_module"}).status_code == 201
    expect_error(
        api.post("/v1/firmware", {**base, "product_id": "ZZZZZZZZZZ"}),
        404,
        "ResourceNotFound.ProductNotExist",
        "product_id",
    )


def test_the_101st_firmware_is_refused(api, fleet):
    pid = fleet["pid"]  # holds 1
    for i in range(99):
        r = api.post(
            "/v1/firmware",
            {"product_id": pid, "name": f"fw{i}", "version": f"9.{i}", "file_name": "a.bin", "file_size": 1},
        )
        assert r.status_code == 201, (i, r.body)
    expect_error(
        api.post(
            "/v1/firmware",
            {"product_id": pid, "name": "one-more", "version": "10.0", "file_name": "a.bin", "file_size": 1},
        ),
        409,
        "LimitExceeded.FirmwareExceedLimit",
        "product_id",
    )
    # deleting one frees a slot
    victim = api.get(f"/v1/firmware?product_id={pid}&limit=1").json["items"][0]["id"]
    assert api.delete(f"/v1/firmware/{victim}").status_code == 204
    assert (
        api.post(
            "/v1/firmware",
            {"product_id": pid, "name": "one-more", "version": "10.0", "file_name": "a.bin", "file_size": 1},
        ).status_code
        == 201
    )


def test_the_real_size_is_checked_again_at_registration(api, fleet, monkeypatch):
    # a configured 1000-byte limit stands in for 1024 MB: the declared size passes, the upload lies
    monkeypatch.setenv("FLEETBOX_FIRMWARE_MAX_BYTES", "1000")
    reload_settings()
    r = api.post(
        "/v1/firmware",
        {"product_id": fleet["pid"], "name": "big", "version": "5.0", "file_name": "big.bin", "file_size": 900},
    )
    assert r.status_code == 201
    assert requests.put(r.json["upload_url"], data=b"x" * 1001, timeout=10).status_code == 200
    expect_error(api.post(f"/v1/firmware/{r.json['id']}/complete"), 413, "RequestTooLarge.FileTooLarge", "file")
    expect_error(api.post(f"/v1/firmware/{r.json['id']}/complete"), 409, "FailedOperation.FileNotUploaded", "id")


# ------------------------------------------------------------------ a task end to end


def test_a_by_version_task_upgrades_every_device_and_ends_done(api, fleet, queue, rec, seen):
    pid, fw = fleet["pid"], fleet["fw"]
    task = create_task(api, queue, fw["id"])
    assert task["status"] == "created" and task["statistics"]["total"] == 5
    assert task["statistics"]["pushed"] == 5 and task["statistics"]["pending"] == 0
    msg = updates(rec, pid, "dev0")[-1]
    assert set(msg) == {"type", "version", "url", "md5sum", "file_size", "user_defined"}
    assert msg["version"] == "2.0" and msg["md5sum"] == MD5 and msg["file_size"] == len(FILE)
    assert msg["user_defined"] == '{"note":"fix"}' and isinstance(msg["file_size"], int)
    # root-level link (SPEC §6.6): nothing but the name between the host and the query
    assert msg["url"].startswith("http://127.0.0.1:8000/firmware-") and "/" not in msg["url"].split("8000/", 1)[1]
    for i in range(5):
        send(progress(pid, f"dev{i}", "downloading", percent="50"))
    assert states(api, task["id"]) == {f"dev{i}": "upgrading" for i in range(5)}
    job = api.get(f"/v1/ota-tasks/{task['id']}/devices?state=upgrading").json["items"][0]
    assert job["detail"] == "downloading" and job["percent"] == 50
    for i in range(5):
        send(progress(pid, f"dev{i}", "burning"), progress(pid, f"dev{i}", "done"))
    assert api.get(f"/v1/ota-tasks/{task['id']}").json["statistics"]["upgrading"] == 5  # done: awaiting version
    for i in range(5):
        send(report_version(pid, f"dev{i}", "2.0"))
    queue.drain()
    done = api.get(f"/v1/ota-tasks/{task['id']}").json
    assert done["status"] == "done"
    assert done["statistics"] == {"total": 5, "pending": 0, "pushed": 0, "upgrading": 0, "succeeded": 5, "failed": 0}
    items = api.get(f"/v1/ota-tasks/{task['id']}/devices?state=succeeded").json["items"]
    assert {j["running_version"] for j in items} == {"2.0"} and len(items) == 5
    assert api.get(f"/v1/products/{pid}/devices/dev0").json["firmware_version"] == "2.0"
    fw_stats = api.get(f"/v1/firmware/{fw['id']}").json["statistics"]
    assert fw_stats["succeeded"] == 5 and fw_stats["tasks"] == 1
    assert len(api.get(f"/v1/firmware/{fw['id']}/devices?state=succeeded").json["items"]) == 5
    kinds = [e.kind for e in seen]
    assert kinds.count("ota.task.started") == 1 and kinds.count("ota.task.done") == 1
    assert seen[-1].data["statistics"]["succeeded"] == 5
    # the reply to report_version is numeric and on the device's topic form
    reply = [p for p in rec.on(f"ota/update/{pid}/dev0") if p["type"] == "report_version_rsp"][-1]
    assert reply == {"type": "report_version_rsp", "result_code": 0, "result_msg": "success", "version": "2.0"}


def test_late_duplicate_and_illegal_reports_change_nothing(api, fleet, queue, rec):
    pid, fw = fleet["pid"], fleet["fw"]
    task = create_task(api, queue, fw["id"], device_names=["dev0", "dev1"], scope="selected")
    send(
        progress(pid, "dev0", "fail", code="-4", msg="md5 mismatch"),
        progress(pid, "dev0", "fail", code="-5", msg="burn failed"),
    )  # the SDK's double fail
    send(progress(pid, "dev0", "downloading", percent="10"))  # late: dev0 has failed
    job = {j["device_name"]: j for j in api.get(f"/v1/ota-tasks/{task['id']}/devices").json["items"]}["dev0"]
    assert job["state"] == "failed" and job["result_code"] == -4 and "md5 mismatch" in job["reason"]
    stats = api.get(f"/v1/ota-tasks/{task['id']}").json["statistics"]
    assert stats["failed"] == 1 and stats["pushed"] == 1 and stats["total"] == 2
    # a device not in the task reporting progress: nothing happens
    send(progress(pid, "dev4", "done"))
    assert "dev4" not in states(api, task["id"])
    # SDK devices skip burning: done straight after downloading is accepted
    send(
        progress(pid, "dev1", "downloading", percent="100"),
        progress(pid, "dev1", "done"),
        report_version(pid, "dev1", "2.0"),
    )
    send(report_version(pid, "dev1", "2.0"))  # a second confirmation is a no-op
    final = api.get(f"/v1/ota-tasks/{task['id']}").json
    assert final["statistics"]["succeeded"] == 1 and final["statistics"]["failed"] == 1
    assert final["status"] == "done"


def test_a_device_reporting_another_version_gets_the_notification_again(api, fleet, queue, rec):
    pid, fw = fleet["pid"], fleet["fw"]
    create_task(api, queue, fw["id"], device_names=["dev0"], scope="selected")
    assert len(updates(rec, pid, "dev0")) == 1
    send(report_version(pid, "dev0", "1.0", dollar=True))  # rebooted (offline at the push): asks again
    again = [p for p in rec.on(f"$ota/update/{pid}/dev0") if p.get("type") == "update_firmware"]
    assert len(again) == 1 and again[0]["version"] == "2.0"


# ------------------------------------------------------------------ timeouts, retries, aborts, cancel


def test_a_silent_device_is_redispatched_then_failed_with_timeout(api, fleet, queue, rec, seen):
    pid, fw = fleet["pid"], fleet["fw"]
    task = create_task(
        api, queue, fw["id"], device_names=["dev0", "dev1"], scope="selected", timeout_minutes=2, max_retries=2
    )  # a "minute" is 1 s here
    send(progress(pid, "dev1", "downloading", percent="5"))
    queue.advance(1.5)
    assert len(updates(rec, pid, "dev0")) == 1  # not yet due
    queue.advance(1.5)
    assert len(updates(rec, pid, "dev0")) == 2  # re-dispatched after the timeout
    assert len(updates(rec, pid, "dev1")) == 2  # progress stopped coming: re-dispatched too
    for _ in range(3):
        queue.advance(3)
    jobs_ = {j["device_name"]: j for j in api.get(f"/v1/ota-tasks/{task['id']}/devices").json["items"]}
    assert jobs_["dev0"]["state"] == "failed" and jobs_["dev0"]["reason"] == "timeout"
    assert jobs_["dev0"]["attempts"] == 3 and len(updates(rec, pid, "dev0")) == 3
    final = api.get(f"/v1/ota-tasks/{task['id']}").json
    assert final["status"] == "done" and final["statistics"]["failed"] == 2
    failed = [e for e in seen if e.kind == "ota.device.failed"]
    assert {e.data["device_name"] for e in failed} == {"dev0", "dev1"} and failed[0].data["reason"] == "timeout"


def test_cancel_and_retry_per_device(api, fleet, queue, rec):
    pid, fw = fleet["pid"], fleet["fw"]
    task = create_task(api, queue, fw["id"])
    r = api.post(f"/v1/ota-tasks/{task['id']}/devices/dev0/cancel")
    assert r.status_code == 200 and r.json["state"] == "failed" and r.json["reason"] == "cancelled"
    expect_error(
        api.post(f"/v1/ota-tasks/{task['id']}/devices/dev0/cancel"),
        409,
        "FailedOperation.DeviceUpgradeFinished",
        "device_name",
    )
    expect_error(
        api.post(f"/v1/ota-tasks/{task['id']}/devices/dev1/retry"),
        409,
        "FailedOperation.DeviceNotFailed",
        "device_name",
    )
    expect_error(
        api.post(f"/v1/ota-tasks/{task['id']}/devices/nobody/retry"),
        404,
        "ResourceNotFound.DeviceNotExist",
        "device_name",
    )
    r = api.post(f"/v1/ota-tasks/{task['id']}/devices/dev0/retry")
    assert r.status_code == 200 and r.json["state"] == "pending"
    queue.drain()
    assert states(api, task["id"])["dev0"] == "pushed" and len(updates(rec, pid, "dev0")) == 2
    stats = api.get(f"/v1/ota-tasks/{task['id']}").json["statistics"]
    assert stats == {"total": 5, "pending": 0, "pushed": 5, "upgrading": 0, "succeeded": 0, "failed": 0}


def test_cancelling_a_task_fails_its_unfinished_devices(api, fleet, queue, rec):
    pid, fw = fleet["pid"], fleet["fw"]
    task = create_task(api, queue, fw["id"])
    send(progress(pid, "dev0", "done"), report_version(pid, "dev0", "2.0"))
    expect_error(api.delete(f"/v1/firmware/{fw['id']}"), 409, "UnsupportedOperation.TaskRunning", "id")
    r = api.post(f"/v1/ota-tasks/{task['id']}/cancel")
    assert r.status_code == 200 and r.json["status"] == "cancelled"
    queue.drain()
    final = api.get(f"/v1/ota-tasks/{task['id']}").json
    assert final["statistics"] == {"total": 5, "pending": 0, "pushed": 0, "upgrading": 0, "succeeded": 1, "failed": 4}
    assert set(states(api, task["id"], "failed")) == {"dev1", "dev2", "dev3", "dev4"}
    send(progress(pid, "dev1", "downloading", percent="1"))  # too late
    assert api.get(f"/v1/ota-tasks/{task['id']}").json["statistics"]["failed"] == 4
    expect_error(api.post(f"/v1/ota-tasks/{task['id']}/cancel"), 409, "FailedOperation.TaskNotRunning", "task_id")
    assert api.delete(f"/v1/firmware/{fw['id']}").status_code == 204


def test_an_abort_threshold_stops_a_failing_task(api, rec, queue, seen):
    pid = make_product(api, name="Many")
    for i in range(12):
        make_device(api, pid, f"d{i:02d}")
    send(*(report_version(pid, f"d{i:02d}", "1.0") for i in range(12)))
    fw = upload_firmware(api, pid)
    task = create_task(api, queue, fw["id"], rate_per_minute=6, abort={"failure_ratio": 0.5, "min_devices": 4})
    assert task["statistics"]["pushed"] == 6 and task["statistics"]["pending"] == 6  # the rollout rate
    pushed = sorted(states(api, task["id"], "pushed"))
    send(progress(pid, pushed[0], "done"), report_version(pid, pushed[0], "2.0"))
    for dn in pushed[1:4]:
        send(progress(pid, dn, "fail", code="-5", msg="burn failed"))
    final = api.get(f"/v1/ota-tasks/{task['id']}").json
    assert final["status"] == "failed" and final["reason"].startswith("aborted: 3 of 4")
    queue.advance(1.1)  # the next window would dispatch: an aborted task never does
    final = api.get(f"/v1/ota-tasks/{task['id']}").json
    assert final["statistics"]["succeeded"] == 1 and final["statistics"]["failed"] == 11
    assert final["statistics"]["pending"] == 0 and final["statistics"]["pushed"] == 0
    assert [e.kind for e in seen].count("ota.task.aborted") == 1
    assert sum(len(updates(rec, pid, f"d{i:02d}")) for i in range(12)) == 6


def test_a_rollout_rate_pushes_devices_per_minute(api, fleet, queue, rec):
    task = create_task(api, queue, fleet["fw"]["id"], rate_per_minute=2)
    assert task["statistics"]["pushed"] == 2
    queue.advance(1.0)
    assert api.get(f"/v1/ota-tasks/{task['id']}").json["statistics"]["pushed"] == 4
    queue.advance(1.0)
    assert api.get(f"/v1/ota-tasks/{task['id']}").json["statistics"]["pushed"] == 5


def test_a_user_confirm_task_waits_for_the_app(api, fleet, queue, rec):
    pid = fleet["pid"]
    task = create_task(api, queue, fleet["fw"]["id"], confirm="user_confirm")
    assert task["timeout_minutes"] == 2 and task["statistics"]["pending"] == 5
    queue.advance(3)
    assert not updates(rec, pid, "dev0")
    job = api.get(f"/v1/ota-tasks/{task['id']}/devices?state=pending").json["items"][0]
    assert job["awaiting_confirmation"] is True
    r = api.post(f"/v1/ota-tasks/{task['id']}/devices/dev0/confirm")
    assert r.status_code == 200 and r.json["awaiting_confirmation"] is False
    queue.drain()
    assert len(updates(rec, pid, "dev0")) == 1 and not updates(rec, pid, "dev1")
    expect_error(
        api.post(f"/v1/ota-tasks/{task['id']}/devices/dev0/confirm"),
        409,
        "FailedOperation.DeviceNotAwaitingConfirmation",
        "device_name",
    )


def test_a_dynamic_task_picks_up_devices_that_come_later(api, fleet, queue, rec):
    pid = fleet["pid"]
    task = create_task(api, queue, fleet["fw"]["id"], mode="dynamic")
    send(
        *(progress(pid, f"dev{i}", "done") for i in range(5)),
        *(report_version(pid, f"dev{i}", "2.0") for i in range(5)),
    )
    assert api.get(f"/v1/ota-tasks/{task['id']}").json["status"] == "created"  # dynamic: runs on
    make_device(api, pid, "late")  # activates after the task started
    send(report_version(pid, "late", "1.0"))
    queue.drain()
    assert len(updates(rec, pid, "late")) == 1
    send(report_version(pid, "other", "0.9"))  # not a source version: no job
    view = api.get(f"/v1/ota-tasks/{task['id']}").json
    assert view["statistics"]["total"] == 6 and view["statistics"]["pushed"] == 1


# ------------------------------------------------------------------ device lists


def test_a_device_csv_reports_unknown_devices_and_refuses_10001_names(api, fleet, queue, rec):
    fw = fleet["fw"]["id"]
    csv_text = "DeviceName\ndev0\nghost1\ndev1\nbad name!\ndev0\n"
    task = create_task(api, queue, fw, method="by_device", source_versions=None, devices_csv=csv_text)
    assert task["statistics"]["total"] == 2 and task["rejected_count"] == 2
    assert {r["device_name"]: r["reason"] for r in task["rejected_devices"]} == {
        "ghost1": "device does not exist",
        "bad name!": "invalid device name",
    }
    template = api.client.http.get("/v1/ota-device-list-template", headers={"Authorization": f"Bearer {api.key}"})
    assert template.status_code == 200 and template.headers["Content-Type"].startswith("text/csv")
    assert ota_tasks._parse_names({"devices_csv": template.body.decode()}) == ["device_001", "device_002"]
    big = "\n".join(f"d{i}" for i in range(10_001))
    expect_error(
        api.post("/v1/ota-tasks", {"firmware_id": fw, "method": "by_device", "devices_csv": big}),
        409,
        "LimitExceeded.DeviceListExceedLimit",
        "devices_csv",
    )
    ok = "\n".join(f"d{i}" for i in range(10_000))
    assert api.post("/v1/ota-tasks", {"firmware_id": fw, "method": "by_device", "devices_csv": ok}).status_code == 202
    expect_error(
        api.post("/v1/ota-tasks", {"firmware_id": fw, "method": "by_version"}),
        400,
        "MissingParameter",
        "source_versions",
    )
    expect_error(
        api.post("/v1/ota-tasks", {"firmware_id": fw, "method": "by_device", "devices_csv": "a", "mode": "dynamic"}),
        400,
        "InvalidParameterValue.ModeInvalid",
        "mode",
    )
    expect_error(
        api.post("/v1/ota-tasks", {"firmware_id": "fwnothere0000", "method": "by_device", "devices_csv": "a"}),
        404,
        "ResourceNotFound.FirmwareNotExist",
        "id",
    )


# ------------------------------------------------------------------ resources


def test_a_resource_is_distributed_on_the_same_engine(api, fleet, queue, rec, seen):
    pid = fleet["pid"]
    data = b"RIFF" + b"\0" * 100
    r = api.post(
        "/v1/resources",
        {"product_id": pid, "name": "chime", "file_name": "chime.wav", "file_size": len(data), "thumbnails": ["a.png"]},
    )
    assert r.status_code == 201 and len(r.json["thumbnail_upload_urls"]) == 1
    assert requests.put(r.json["upload_url"], data=data, timeout=10).status_code == 200
    res = api.post(f"/v1/resources/{r.json['id']}/complete").json
    assert res["md5"] == hashlib.md5(data).hexdigest()
    t = api.post("/v1/resource-tasks", {"resource_id": res["id"], "device_name": "dev2"})
    assert t.status_code == 202, t.body
    queue.drain()
    msg = rec.last(f"resource/down/service/{pid}/dev2")
    assert msg["type"] == "download" and msg["name"] == "chime" and msg["size"] == len(data)
    assert msg["md5sum"] == res["md5"] and msg["url"].startswith("http://127.0.0.1:8000/resource-")
    body = {
        "type": "report_download_progress",
        "name": "chime",
        "progress": {"state": "downloading", "percent": "40", "result_code": "0", "result_msg": ""},
    }
    send(up(pid, "dev2", "resource/up/service", body))
    devs = api.get(f"/v1/resource-tasks/{t.json['id']}/devices?state=downloading").json["items"]
    assert [d["device_name"] for d in devs] == ["dev2"] and devs[0]["percent"] == 40
    body["progress"] = {"state": "done", "percent": "100", "result_code": "0", "result_msg": ""}
    send(up(pid, "dev2", "resource/up/service", body))
    final = api.get(f"/v1/resource-tasks/{t.json['id']}").json
    assert final["status"] == "done" and final["statistics"]["succeeded"] == 1
    assert "resource.task.done" in [e.kind for e in seen]


def test_local_download_links_are_signed_and_expire(env):
    from chalicelib.services import files

    url = files.download_url("firmware-fwx-a.bin", ttl_s=60)
    name, _, query = url.split("8000/", 1)[1].partition("?")
    params = dict(p.split("=") for p in query.split("&"))
    assert files.check_link(name, params["e"], params["s"]) == "firmware-fwx-a.bin"
    assert files.check_link(name, params["e"], "0" * 64) is None
    assert files.check_link(name.replace("a.bin", "b.bin"), params["e"], params["s"]) is None
    assert files.check_link(name, params["e"], params["s"], now=clock.now() + 61) is None


def test_on_aws_links_are_root_level_presigned_s3_urls_that_honour_range(env, monkeypatch):
    from chalicelib.services import files

    monkeypatch.delenv("FLEETBOX_DOWNLOAD_BASE_URL")
    reload_settings()
    files.forget()
    from chalicelib.core.config import settings

    files.s3().put_object(Bucket=settings().bucket, Key="firmware-fwx-a.bin", Body=FILE)
    url = files.download_url("firmware-fwx-a.bin", ttl_s=60)
    host_and_path = url.split("://", 1)[1].split("?", 1)
    assert host_and_path[0] == f"{settings().bucket}.s3.amazonaws.com/firmware-fwx-a.bin"
    assert "/" not in host_and_path[1]  # the SDK's Host = everything up to the last '/'
    part = requests.get(url, headers={"Range": f"bytes=0-{len(FILE)}"}, timeout=10)  # the SDK's range
    assert part.status_code == 206 and part.content == FILE
    with pytest.raises(ValueError):
        files.download_url("firmware/fwx/a.bin")


def test_resources_share_one_gigabyte_per_account_and_at_most_six_thumbnails(api, fleet, monkeypatch):
    monkeypatch.setenv("FLEETBOX_RESOURCE_ACCOUNT_BYTES", "150")  # stands in for 1 GB
    reload_settings()
    pid = fleet["pid"]

    def resource(name: str, size: int) -> Any:
        r = api.post("/v1/resources", {"product_id": pid, "name": name, "file_name": f"{name}.wav", "file_size": size})
        assert r.status_code == 201, r.body
        assert requests.put(r.json["upload_url"], data=b"a" * size, timeout=10).status_code == 200
        return api.post(f"/v1/resources/{r.json['id']}/complete")

    assert resource("one", 100).status_code == 200
    expect_error(resource("two", 60), 409, "LimitExceeded.ResourceStorageExceedLimit", "file")
    assert resource("three", 50).status_code == 200
    expect_error(
        api.post(
            "/v1/resources",
            {
                "product_id": pid,
                "name": "x",
                "file_name": "x.wav",
                "file_size": 1,
                "thumbnails": [f"t{i}.png" for i in range(7)],
            },
        ),
        400,
        "InvalidParameterValue.ThumbnailInvalid",
        "thumbnails",
    )


def test_tasks_are_listed_per_firmware_and_by_status(api, fleet, queue, rec):
    first = create_task(api, queue, fleet["fw"]["id"], device_names=["dev0"], scope="selected")
    clock.shift(1)  # newest first: a second later
    second = create_task(api, queue, fleet["fw"]["id"], device_names=["dev1"], scope="selected")
    api.post(f"/v1/ota-tasks/{first['id']}/cancel")
    listed = api.get(f"/v1/ota-tasks?firmware_id={fleet['fw']['id']}").json
    assert [t["id"] for t in listed["items"]] == [second["id"], first["id"]]
    assert [t["id"] for t in api.get("/v1/ota-tasks?status=cancelled").json["items"]] == [first["id"]]
    page = api.get(f"/v1/ota-tasks?product_id={fleet['pid']}&limit=1").json
    assert len(page["items"]) == 1 and page["next"]
    rest = api.get(f"/v1/ota-tasks?product_id={fleet['pid']}&limit=1&next={page['next']}").json
    assert [t["id"] for t in rest["items"]] == [first["id"]]
