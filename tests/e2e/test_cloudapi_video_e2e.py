"""The video summary actions (SPEC §11, §14) through the Tencent Cloud SDK against the local stack:
the SPEC §11 examples — Create, Invoke with ``Completed`` true and false, Describe — round-trip
through ``CommonClient.call_json`` as Tencent's own sample does, and every mapped video action
through the SDK's typed client too, checked against ``GET /v1/video-tasks``.  The tasks are
analysed for real by the stack's local analyser (the shared samples, as tests/e2e/test_video_e2e.py);
the long playlist that Invoke cannot finish in 20 s is served from loopback HTTP."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from tencentcloud.common import credential
from tencentcloud.common.common_client import CommonClient
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile

from tests.cloudsdk import client, endpoint, pair_for, refused, sdk_call
from tests.e2e.fleet import Api
from tests.e2e.test_video_e2e import done, static, task_body  # noqa: F401 - static is a fixture
from tests.helpers import partner_policy

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pair(api: Api) -> dict[str, Any]:
    return pair_for(api)


@pytest.fixture(scope="module")
def common(pair: dict[str, Any], local_stack: dict[str, Any]) -> CommonClient:
    """Tencent's generic client, as its own sample builds it."""
    cred = credential.Credential(pair["secret_id"], pair["secret_key"])
    profile = ClientProfile(httpProfile=HttpProfile(endpoint=endpoint(local_stack), protocol="http"))
    return CommonClient("iotexplorer", "2019-04-23", cred, "ap-guangzhou", profile=profile)


@pytest.fixture(scope="module")
def cli(pair: dict[str, Any], local_stack: dict[str, Any]) -> Any:
    return client(endpoint(local_stack), pair["secret_id"], pair["secret_key"])


@pytest.fixture(scope="module")
def cam(api: Api) -> str:
    """A product with the AI video function on and a device ``cam1``."""
    pid = api.product(name="SDK camera")
    api.device(pid, "cam1")
    api.call("PATCH", f"/v1/products/{pid}", 200, json={"ai_video_enabled": True})
    return pid


def result(task: dict[str, Any]) -> dict[str, Any]:
    return json.loads(task["Result"]) if task["Result"] else {}


def test_the_spec_examples_round_trip_through_call_json(api: Api, common: CommonClient, cam: str, static) -> None:  # noqa: F811
    # Create: async, answers the TaskId; the task is the HTTP API's
    made = common.call_json("CreateCloudStorageAIServiceTask", task_body(cam, "person-standing.jpg"))["Response"]
    assert set(made) == {"TaskId", "RequestId"}
    http = done(api, made["TaskId"])
    assert http["Status"] == 3 and result(http)["DetectedClassifications"] == ["person"]

    # Describe: the same task under Tencent's names
    info = common.call_json("DescribeCloudStorageAIServiceTask", {"TaskId": made["TaskId"]})["Response"]["TaskInfo"]
    for key in (
        "TaskId",
        "ProductId",
        "DeviceName",
        "ServiceType",
        "Status",
        "Result",
        "Files",
        "CreateTime",
        "UpdateTime",
        "StartTime",
        "EndTime",
    ):
        assert info[key] == http[key], key
    assert info["StartTimeMs"] == http["StartTime"] * 1000

    # Invoke on a still: Completed true with the finished TaskInfo
    got = common.call_json("InvokeCloudStorageAIServiceTask", task_body(cam, "person-astronaut.png"))["Response"]
    assert got["Completed"] is True and got["TaskInfo"]["TaskId"] == got["TaskId"]
    assert got["TaskInfo"]["Status"] == 3 and result(got["TaskInfo"])["DetectedClassifications"] == ["person"]
    assert api.call("GET", f"/v1/video-tasks/{got['TaskId']}", 200).json()["Result"] == got["TaskInfo"]["Result"]

    # Invoke on a 12-minute playlist: Completed false after the 20-s wait, the task goes on
    base, root = static
    segments = [f"samples/people-hls/seg{i:03d}.ts" for i in range(4)] * 30
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:6", "#EXT-X-PLAYLIST-TYPE:VOD"]
    for seg in segments:
        lines += ["#EXTINF:6.000000,", seg]
    (root / "sdk-long.m3u8").write_text("\n".join([*lines, "#EXT-X-ENDLIST", ""]))
    started = time.monotonic()
    slow = common.call_json("InvokeCloudStorageAIServiceTask", task_body(cam, f"{base}/sdk-long.m3u8"))["Response"]
    assert slow["Completed"] is False and not slow.get("TaskInfo") and 19 <= time.monotonic() - started < 30
    assert api.call("GET", f"/v1/video-tasks/{slow['TaskId']}", 200).json()["Status"] == 4
    finished = done(api, slow["TaskId"], timeout=180)
    later = common.call_json("DescribeCloudStorageAIServiceTask", {"TaskId": slow["TaskId"]})["Response"]
    assert later["TaskInfo"]["Status"] == finished["Status"] == 3

    # a bad input is Tencent's precise InvalidParameterValue.* through call_json too
    with pytest.raises(TencentCloudSDKException) as err:
        common.call_json("CreateCloudStorageAIServiceTask", task_body(cam, "person-standing.jpg", ServiceType="Nope"))
    assert err.value.get_code() == "InvalidParameterValue.ServiceTypeInvalid"


def test_the_typed_client_lists_and_filters_like_the_http_api(api: Api, cli: Any, cam: str) -> None:
    api.device(cam, "cam2")
    ids = [
        sdk_call(cli, "CreateCloudStorageAIServiceTask", {**task_body(cam, "empty-room.mp4"), "DeviceName": dn})[
            "TaskId"
        ]
        for dn in ("cam1", "cam2", "cam2")
    ]
    for task_id in ids:
        done(api, task_id)
    http = api.call("GET", "/v1/video-tasks", 200, params={"product_id": cam, "limit": 100}).json()["items"]
    listed = sdk_call(cli, "DescribeCloudStorageAIServiceTasks", {"ProductId": cam, "Limit": 100})
    assert [t["TaskId"] for t in listed["Tasks"]] == [t["TaskId"] for t in http] and listed["Total"] == len(http)
    only2 = sdk_call(cli, "DescribeCloudStorageAIServiceTasks", {"ProductId": cam, "DeviceName": "cam2", "Limit": 100})
    assert {t["TaskId"] for t in only2["Tasks"]} == set(ids[1:]) and only2["Total"] == 2
    paged = sdk_call(
        cli,
        "DescribeCloudStorageAIServiceTasks",
        {"ProductId": cam, "DeviceNames": ["cam1", "cam2"], "Offset": 1, "Limit": 1},
    )
    assert [t["TaskId"] for t in paged["Tasks"]] == [http[1]["TaskId"]]
    one = sdk_call(cli, "DescribeCloudStorageAIServiceTask", {"TaskId": ids[0]})["TaskInfo"]
    assert one["DeviceName"] == "cam1" and one["Status"] == 2 and one["Result"] == ""
    invoked = sdk_call(cli, "InvokeCloudStorageAIServiceTask", task_body(cam, "no-object-coffee.png"))
    assert invoked["Completed"] is True and invoked["TaskInfo"]["Status"] == 2
    assert refused(cli, "DescribeCloudStorageAIServiceTask", {"TaskId": "vt" + "0" * 16}) == (
        "ResourceNotFound.VideoTaskNotExist"
    )
    assert refused(cli, "CreateCloudStorageAIServiceTask", task_body(cam, "empty-room.mp4", ROI="x")) == (
        "UnknownParameter"
    )


def test_a_partner_pair_reaches_only_its_products_tasks(
    api: Api, local_stack: dict[str, Any], cli: Any, cam: str
) -> None:
    mine = api.product(name="partner cam")
    api.device(mine, "cam1")
    api.call("PATCH", f"/v1/products/{mine}", 200, json={"ai_video_enabled": True})
    theirs = sdk_call(cli, "CreateCloudStorageAIServiceTask", task_body(cam, "empty-room.mp4"))["TaskId"]
    pair = pair_for(api, partner_policy(mine))
    partner = client(endpoint(local_stack), pair["secret_id"], pair["secret_key"])
    own = sdk_call(partner, "CreateCloudStorageAIServiceTask", task_body(mine, "empty-room.mp4"))["TaskId"]
    assert sdk_call(partner, "DescribeCloudStorageAIServiceTask", {"TaskId": own})["TaskInfo"]["ProductId"] == mine
    listed = sdk_call(partner, "DescribeCloudStorageAIServiceTasks", {"ProductId": mine, "Limit": 100})
    assert [t["TaskId"] for t in listed["Tasks"]] == [own]
    denied = "UnauthorizedOperation.PermissionDenied"
    for action, params in (
        ("CreateCloudStorageAIServiceTask", task_body(cam, "empty-room.mp4")),
        ("InvokeCloudStorageAIServiceTask", task_body(cam, "empty-room.mp4")),
        ("DescribeCloudStorageAIServiceTask", {"TaskId": theirs}),
        ("DescribeCloudStorageAIServiceTasks", {"ProductId": cam}),
    ):
        assert refused(partner, action, params) == denied, action
    assert len(api.call("GET", "/v1/video-tasks", 200, params={"product_id": cam, "limit": 100}).json()["items"]) >= 1
