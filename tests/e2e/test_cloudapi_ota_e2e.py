"""Batch-production, firmware and OTA actions (SPEC §7.1, §8, §14) through the real Tencent Cloud SDK
client against the session's local stack, each checked against the HTTP API's view of the same
objects; a partner pair reaches only its own product."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import requests

from tests.cloudsdk import client, endpoint, pair_for, refused, sdk_call
from tests.e2e.fleet import Api
from tests.helpers import partner_policy, wait_until

pytestmark = pytest.mark.e2e

FILE = b"\x7fELF-sdk-firmware" + bytes(range(256)) * 8
MD5 = hashlib.md5(FILE).hexdigest()
DENIED = "UnauthorizedOperation.PermissionDenied"


@pytest.fixture(scope="module")
def cli(api: Api, local_stack: dict[str, Any]) -> Any:
    pair = pair_for(api)
    return client(endpoint(local_stack), pair["secret_id"], pair["secret_key"])


def released(api: Api) -> str:
    pid = api.product(name="SDK OTA")
    api.call("POST", f"/v1/products/{pid}/publish", 200)
    return pid


def uploaded(cli: Any, pid: str, version: str, name: str = "sdkfw") -> None:
    """GetCOSURL → PUT the bytes → UploadFirmware, as a Tencent client does."""
    url = sdk_call(cli, "GetCOSURL", {"ProductID": pid, "FirmwareVersion": version, "FileSize": len(FILE)})["Url"]
    assert requests.put(url, data=FILE, timeout=30).status_code == 200
    sdk_call(
        cli,
        "UploadFirmware",
        {
            "ProductID": pid,
            "FirmwareVersion": version,
            "Md5sum": MD5,
            "FileSize": len(FILE),
            "FirmwareName": name,
            "FirmwareDescription": "via the SDK",
            "FwType": "mcu",
        },
    )


def test_batch_production_through_the_sdk(api: Api, cli: Any) -> None:
    pid = released(api)
    made = sdk_call(
        cli,
        "CreateBatchProduction",
        {
            "ProjectId": "0",
            "ProductId": pid,
            "BurnMethod": 0,
            "GenerationMethod": 0,
            "BatchCnt": 3,
            "GenerationQRCode": 1,
        },
    )
    bid = made["BatchProductionId"]
    assert made["ProductId"] == pid

    def finished() -> dict[str, Any] | None:
        got = api.call("GET", f"/v1/batches/{bid}", 200).json()
        return got if got["status"] in ("done", "failed") else None

    http = wait_until(finished, 60, 0.5)
    assert http and http["status"] == "done" and http["success_count"] == 3
    seen = sdk_call(cli, "DescribeBatchProduction", {"ProductId": pid, "BatchProductionId": bid})
    assert (seen["Status"], seen["BatchCnt"], seen["SuccessCount"], seen["BurnMethod"]) == (3, 3, 3, 0)
    assert seen["GenerationMethod"] == 0 and seen["CreateTime"] == http["created_at"]
    assert seen["DownloadUrl"].startswith("http")  # root may read device secrets: the ZIP link
    assert requests.get(seen["DownloadUrl"], timeout=30).content[:2] == b"PK"
    assert len(api.call("GET", f"/v1/products/{pid}/devices", 200).json()["items"]) == 3

    listed = sdk_call(cli, "GetBatchProductionsList", {"Offset": 0, "Limit": 100})
    mine = [b for b in listed["BatchProductions"] if b["ProductId"] == pid]
    assert [b["BatchProductionId"] for b in mine] == [bid] and mine[0]["ProductName"].startswith("SDK OTA")
    assert listed["TotalCnt"] >= 1
    assert refused(cli, "DescribeBatchProduction", {"ProductId": pid, "BatchProductionId": "nope"}) == (
        "ResourceNotFound.BatchNotExist"
    )
    upload = {"ProductId": pid, "BurnMethod": 0, "GenerationMethod": 1, "UploadUrl": "https://example.com/n.csv"}
    assert refused(cli, "CreateBatchProduction", upload) == "InvalidParameterValue.GenerationInvalid"
    assert (
        refused(
            cli, "CreateBatchProduction", {"ProductId": pid, "BurnMethod": 0, "GenerationMethod": 0, "BatchCnt": 10001}
        )
        == "InvalidParameterValue.QuantityInvalid"
    )


def test_firmware_upload_and_listing_through_the_sdk(api: Api, cli: Any) -> None:
    pid = released(api)
    uploaded(cli, pid, "2.0.1", name="lampfw")
    http = [f for f in api.call("GET", "/v1/firmware", 200, params={"product_id": pid}).json()["items"]]
    assert len(http) == 1 and http[0]["status"] == "ready" and http[0]["md5"] == MD5
    assert (http[0]["name"], http[0]["description"], http[0]["file_size"]) == ("lampfw", "via the SDK", len(FILE))

    got = sdk_call(cli, "DescribeFirmware", {"ProductID": pid, "FirmwareVersion": "2.0.1"})
    assert (got["Md5sum"], got["Name"], got["FwType"], got["ProductId"]) == (MD5, "lampfw", "mcu", pid)
    assert got["Createtime"] == http[0]["created_at"] and got["ProductName"].startswith("SDK OTA")

    uploaded(cli, pid, "2.0.2")
    order = [f["version"] for f in api.call("GET", "/v1/firmware", 200, params={"product_id": pid}).json()["items"]]
    assert sorted(order) == ["2.0.1", "2.0.2"]
    page = sdk_call(cli, "ListFirmwares", {"PageNum": 1, "PageSize": 1, "ProductID": pid})
    assert page["TotalCount"] == 2 and [f["Version"] for f in page["Firmwares"]] == order[:1]
    page2 = sdk_call(cli, "ListFirmwares", {"PageNum": 2, "PageSize": 1, "ProductID": pid})
    assert [f["Version"] for f in page2["Firmwares"]] == order[1:]
    one = sdk_call(
        cli,
        "ListFirmwares",
        {"PageNum": 1, "PageSize": 10, "ProductID": pid, "Filters": [{"Key": "FirmwareVersion", "Value": "2.0.1"}]},
    )
    assert [f["Version"] for f in one["Firmwares"]] == ["2.0.1"] and one["TotalCount"] == 1

    # a file that is not what UploadFirmware claims is not registered; asking twice for the URL of a
    # version still awaiting its file replaces the first declaration
    cos = {"ProductID": pid, "FirmwareVersion": "9.9", "FileSize": len(FILE)}
    first = sdk_call(cli, "GetCOSURL", cos)["Url"]
    url = sdk_call(cli, "GetCOSURL", cos)["Url"]
    waiting = [
        f
        for f in api.call("GET", "/v1/firmware", 200, params={"product_id": pid}).json()["items"]
        if f["version"] == "9.9"
    ]
    assert url != first and len(waiting) == 1 and waiting[0]["status"] == "uploading"
    assert requests.put(url, data=FILE + b"x", timeout=30).status_code == 200
    bad = {"ProductID": pid, "FirmwareVersion": "9.9", "Md5sum": MD5, "FileSize": len(FILE), "FirmwareName": "x"}
    assert refused(cli, "UploadFirmware", bad) == "InvalidParameterValue.Md5Mismatch"
    assert "9.9" not in {
        f["version"] for f in api.call("GET", "/v1/firmware", 200, params={"product_id": pid}).json()["items"]
    }
    assert refused(cli, "DescribeFirmware", {"ProductID": pid, "FirmwareVersion": "9.9"}) == (
        "ResourceNotFound.FirmwareNotExist"
    )
    assert (
        refused(cli, "UploadFirmware", {**bad, "FirmwareVersion": "2.0.1", "FirmwareUserDefined": '{"a":1}'})
        == "InvalidParameterValue.CustomInfoInvalid"
    )


def test_upgrade_tasks_through_the_sdk(api: Api, cli: Any) -> None:
    pid = released(api)
    names = [api.device(pid)[0] for _ in range(3)]
    uploaded(cli, pid, "3.0")
    fw_id = api.call("GET", "/v1/firmware", 200, params={"product_id": pid}).json()["items"][0]["id"]
    task_id = sdk_call(
        cli,
        "BatchUpdateFirmware",
        {
            "ProductID": pid,
            "FirmwareVersion": "3.0",
            "DeviceNames": names[:2],
            "TimeoutInterval": 300,
            "MaxRetryNum": 2,
            "RateLimit": 50,
        },
    )["TaskId"]
    http = api.call("GET", f"/v1/ota-tasks/{task_id}", 200).json()
    assert (http["firmware_id"], http["method"], http["timeout_minutes"], http["max_retries"]) == (
        fw_id,
        "by_device",
        5,
        2,
    )
    seen = sdk_call(cli, "DescribeFirmwareTask", {"ProductID": pid, "FirmwareVersion": "3.0", "TaskId": task_id})
    assert (seen["TaskId"], seen["UpgradeMode"], seen["TimeoutInterval"], seen["MaxRetryNum"]) == (
        task_id,
        "devicenames",
        300,
        2,
    )
    assert seen["RateLimit"] == 50 and seen["UpgradeMethod"] == 0 and seen["CreateTime"] == http["created_at"]

    by_version = sdk_call(
        cli,
        "BatchUpdateFirmware",
        {"ProductID": pid, "FirmwareVersion": "3.0", "FirmwareOriVersion": "1.0", "UpgradeMethod": 1, "Type": 7},
    )["TaskId"]
    v = api.call("GET", f"/v1/ota-tasks/{by_version}", 200).json()
    assert (v["method"], v["source_versions"], v["confirm"], v["mode"]) == (
        "by_version",
        ["1.0"],
        "user_confirm",
        "dynamic",
    )

    tasks = sdk_call(cli, "DescribeFirmwareTasks", {"ProductID": pid, "FirmwareVersion": "3.0", "Limit": 10})
    assert [t["TaskId"] for t in tasks["TaskInfos"]] == [
        t["id"] for t in api.call("GET", "/v1/ota-tasks", 200, params={"firmware_id": fw_id}).json()["items"]
    ] and tasks["Total"] == 2

    def resolved() -> list[dict[str, Any]] | None:
        items = api.call("GET", f"/v1/firmware/{fw_id}/devices", 200).json()["items"]
        return items if len(items) == 2 else None

    jobs = wait_until(resolved, 30, 0.5)
    assert jobs
    devices = sdk_call(cli, "DescribeFirmwareTaskDevices", {"ProductID": pid, "FirmwareVersion": "3.0", "Limit": 10})
    assert devices["Total"] == 2 and {d["DeviceName"] for d in devices["Devices"]} == set(names[:2])
    by_name = {j["device_name"]: j for j in jobs}
    for d in devices["Devices"]:
        state = by_name[d["DeviceName"]]["state"]
        assert d["Status"] == {"pending": 1, "pushed": 2, "failed": 50, "succeeded": 40}.get(state, 20)
        assert d["TaskId"] == task_id and d["DstVersion"] == "3.0"

    # one device cancelled, then retried (actions the SDK has no method for: sdk_call uses CommonClient)
    def job_of(dn: str) -> dict[str, Any]:
        items = api.call("GET", f"/v1/ota-tasks/{task_id}/devices", 200).json()["items"]
        return next(j for j in items if j["device_name"] == dn)

    one = {"ProductID": pid, "FirmwareVersion": "3.0", "TaskId": task_id, "DeviceName": names[0]}
    assert sdk_call(cli, "CancelDeviceFirmwareTask", one)["RequestId"]
    assert (job_of(names[0])["state"], job_of(names[0])["reason"]) == ("failed", "cancelled")
    assert refused(cli, "CancelDeviceFirmwareTask", one) == "FailedOperation.DeviceUpgradeFinished"
    assert sdk_call(cli, "RetryDeviceFirmwareTask", one)["RequestId"]
    assert job_of(names[0])["state"] in ("pending", "pushed")
    assert refused(cli, "RetryDeviceFirmwareTask", one) == "FailedOperation.DeviceNotFailed"
    assert refused(cli, "RetryDeviceFirmwareTask", {**one, "DeviceName": names[2]}) == (
        "ResourceNotFound.DeviceNotExist"
    )
    assert refused(cli, "CancelDeviceFirmwareTask", {**one, "FirmwareVersion": "9.9"}) == (
        "ResourceNotFound.FirmwareNotExist"
    )

    assert refused(cli, "BatchUpdateFirmware", {"ProductID": pid, "FirmwareVersion": "3.0"}) == "MissingParameter"
    target = {"ProductID": pid, "FirmwareVersion": "3.0", "DeviceNames": names}
    for extra, code in (
        ({"DelayTime": 60}, "InvalidParameterValue.InvalidParameter"),
        ({"TimeoutInterval": 60}, "InvalidParameterValue.TimeoutInvalid"),
        ({"Type": 3}, "InvalidParameterValue.ModeInvalid"),
    ):
        assert refused(cli, "BatchUpdateFirmware", {**target, **extra}) == code, extra
    assert refused(
        cli, "DescribeFirmwareTask", {"ProductID": pid, "FirmwareVersion": "3.0", "TaskId": "ota000000000000"}
    ) == ("ResourceNotFound.OtaTaskNotExist")


def test_a_partner_pair_reaches_only_its_products_batches_and_firmware(
    api: Api, local_stack: dict[str, Any], cli: Any
) -> None:
    mine, theirs = released(api), released(api)
    for pid in (mine, theirs):
        uploaded(cli, pid, "5.0")
    dn = api.device(theirs)[0]
    their_task = sdk_call(
        cli, "BatchUpdateFirmware", {"ProductID": theirs, "FirmwareVersion": "5.0", "DeviceNames": [dn]}
    )["TaskId"]
    their_batch = sdk_call(
        cli, "CreateBatchProduction", {"ProductId": theirs, "BurnMethod": 0, "GenerationMethod": 0, "BatchCnt": 1}
    )["BatchProductionId"]
    pair = pair_for(api, partner_policy(mine))
    partner = client(endpoint(local_stack), pair["secret_id"], pair["secret_key"])

    own_batch = sdk_call(
        partner, "CreateBatchProduction", {"ProductId": mine, "BurnMethod": 0, "GenerationMethod": 0, "BatchCnt": 1}
    )["BatchProductionId"]
    batches = sdk_call(partner, "GetBatchProductionsList", {"Limit": 100})
    assert [b["BatchProductionId"] for b in batches["BatchProductions"]] == [own_batch] and batches["TotalCnt"] == 1
    firmwares = sdk_call(partner, "ListFirmwares", {"PageNum": 1, "PageSize": 100})
    assert {f["ProductId"] for f in firmwares["Firmwares"]} == {mine} and firmwares["TotalCount"] == 1
    assert sdk_call(partner, "DescribeFirmware", {"ProductID": mine, "FirmwareVersion": "5.0"})["ProductId"] == mine

    fw = {"ProductID": theirs, "FirmwareVersion": "5.0"}
    for action, params in (
        ("CreateBatchProduction", {"ProductId": theirs, "BurnMethod": 0, "GenerationMethod": 0, "BatchCnt": 1}),
        ("DescribeBatchProduction", {"ProductId": theirs, "BatchProductionId": their_batch}),
        ("DescribeBatchProduction", {"ProductId": mine, "BatchProductionId": their_batch}),
        ("GetCOSURL", {**fw, "FirmwareVersion": "6.0", "FileSize": 10}),
        ("UploadFirmware", {**fw, "Md5sum": MD5, "FileSize": len(FILE), "FirmwareName": "x"}),
        ("DescribeFirmware", fw),
        ("ListFirmwares", {"PageNum": 1, "PageSize": 10, "ProductID": theirs}),
        ("BatchUpdateFirmware", {**fw, "DeviceNames": [dn]}),
        ("DescribeFirmwareTask", {**fw, "TaskId": their_task}),
        ("DescribeFirmwareTasks", fw),
        ("DescribeFirmwareTaskDevices", fw),
        ("CancelDeviceFirmwareTask", {**fw, "TaskId": their_task, "DeviceName": dn}),
        ("RetryDeviceFirmwareTask", {**fw, "TaskId": their_task, "DeviceName": dn}),
    ):
        assert refused(partner, action, params) == DENIED, action
    assert len(api.call("GET", "/v1/ota-tasks", 200, params={"product_id": theirs}).json()["items"]) == 1
    assert len(api.call("GET", f"/v1/products/{theirs}/batches", 200).json()["items"]) == 1
