"""Location actions (SPEC §10, §14) through the real Tencent Cloud SDK against the session's local
stack: spaces, fences (GeoJSON ``FenceArea``), bindings, and — from a paho-mqtt tracker walking
into and out of a circle fence — the alarms, latest positions and location history, each checked
against the HTTP API's view.  ``ModifyPositionFence`` goes through ``CommonClient.call_json``: the
SDK's typed ``ModifyPositionFenceRequest`` declares no parameters at all (an SDK gap), so a typed
call cannot carry any.  A partner pair sees only its own product's devices and spaces."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from tencentcloud.common import credential
from tencentcloud.common.common_client import CommonClient
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile

from tests.cloudsdk import client, endpoint, pair_for, refused, sdk_call
from tests.e2e.fleet import Api, Device
from tests.helpers import gps_property, partner_policy, point_at, square, wait_until

pytestmark = pytest.mark.e2e

CENTRE = (61.0, 11.0)
DENIED = "UnauthorizedOperation.PermissionDenied"


@pytest.fixture(scope="module")
def pair(api: Api) -> dict[str, Any]:
    return pair_for(api)


@pytest.fixture(scope="module")
def cli(pair: dict[str, Any], local_stack: dict[str, Any]) -> Any:
    return client(endpoint(local_stack), pair["secret_id"], pair["secret_key"])


def common_client(pair: dict[str, Any], local_stack: dict[str, Any]) -> CommonClient:
    profile = ClientProfile(httpProfile=HttpProfile(endpoint=endpoint(local_stack), protocol="http"))
    cred = credential.Credential(pair["secret_id"], pair["secret_key"])
    return CommonClient("iotexplorer", "2019-04-23", cred, "ap-guangzhou", profile=profile)


def tracker(api: Api) -> str:
    return api.product(model={"version": "1.0", "properties": [gps_property(True)], "events": [], "actions": []})


def circle_area(radius: float) -> str:
    return json.dumps(
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [CENTRE[1], CENTRE[0]]},
            "properties": {"radius": radius},
        }
    )


def walk(local_stack: dict[str, Any], pid: str, dn: str, secret: str, metres: list[float]) -> int:
    """The device reports a GPS fix at each distance east of the centre; returns the first fix's ms."""
    device = Device(local_stack, pid, dn, secret).connect()
    device.subscribe(device.topic("thing/down/property"))
    start = int(time.time() * 1000) - 60_000
    try:
        for i, m in enumerate(metres):
            lat, lon = point_at(*CENTRE, m, 90)
            token = f"t{i}"
            value = {"latitude": round(lat, 6), "longitude": round(lon, 6), "accuracy": 3.0}
            body = {
                "method": "report",
                "clientToken": token,
                "timestamp": start + i * 1000,
                "params": {"GPS_Info": value},
            }
            device.publish(device.topic("thing/up/property"), body)
            reply = device.reply_to(token, "report_reply")
            assert reply is not None and reply[1]["code"] == 0, reply
    finally:
        device.close()
    return start


def test_spaces_fences_bindings_and_positions_through_the_sdk(
    api: Api, cli: Any, pair: dict[str, Any], local_stack: dict[str, Any]
) -> None:
    pid = tracker(api)
    dn, secret = api.device(pid, "walker")
    space_name = f"sdk {uuid.uuid4().hex[:6]}"
    sid = sdk_call(
        cli,
        "CreatePositionSpace",
        {"SpaceName": space_name, "AuthorizeType": 0, "ProductIdList": [pid], "Description": "yard"},
    )["SpaceId"]
    http = api.call("GET", f"/v1/spaces/{sid}", 200).json()
    assert (http["name"], http["products"], http["remark"]) == (space_name, [pid], "yard")
    sdk_call(cli, "ModifyPositionSpace", {"SpaceId": sid, "Description": "north yard"})
    assert api.call("GET", f"/v1/spaces/{sid}", 200).json()["remark"] == "north yard"
    every = [s["space_id"] for s in api.call("GET", "/v1/spaces", 200, params={"limit": 100}).json()["items"]]
    listed = sdk_call(cli, "GetPositionSpaceList", {"Offset": 0, "Limit": 100})
    assert [s["SpaceId"] for s in listed["List"]] == every and listed["Total"] == len(every)
    mine = next(s for s in listed["List"] if s["SpaceId"] == sid)
    assert (mine["SpaceName"], mine["Description"], mine["ProductIdList"], mine["AuthorizeType"]) == (
        space_name,
        "north yard",
        [pid],
        0,
    )
    assert refused(cli, "CreatePositionSpace", {"SpaceName": "rw", "AuthorizeType": 1}) == (
        "InvalidParameterValue.InvalidParameter"
    )

    # fences: a circle (Point + radius) and a polygon with a hole
    sdk_call(cli, "CreatePositionFence", {"SpaceId": sid, "FenceName": "gate", "FenceArea": circle_area(200)})
    polygon = {"type": "Polygon", "coordinates": [square(*CENTRE, 5000), square(*CENTRE, 3000)]}
    sdk_call(cli, "CreatePositionFence", {"SpaceId": sid, "FenceName": "ring", "FenceArea": json.dumps(polygon)})
    fences = {f["name"]: f for f in api.call("GET", f"/v1/spaces/{sid}/fences", 200).json()["items"]}
    assert fences["gate"]["type"] == "circle" and fences["gate"]["circle"]["radius"] == 200
    assert fences["ring"]["type"] == "polygon"
    got = sdk_call(cli, "DescribePositionFenceList", {"SpaceId": sid, "Limit": 10})
    assert got["Total"] == 2 and {f["GeoFence"]["FenceName"] for f in got["List"]} == {"gate", "ring"}
    gate = next(f["GeoFence"] for f in got["List"] if f["GeoFence"]["FenceName"] == "gate")
    assert gate["FenceId"] == fences["gate"]["fence_id"] and json.loads(gate["FenceArea"]) == json.loads(
        circle_area(200)
    )
    assert refused(
        cli, "CreatePositionFence", {"SpaceId": sid, "FenceName": "bad", "FenceArea": '{"type":"Line"}'}
    ) == ("InvalidParameterValue.GeometryInvalid")

    common = common_client(pair, local_stack)
    ring_id = fences["ring"]["fence_id"]
    common.call_json("ModifyPositionFence", {"SpaceId": sid, "FenceId": ring_id, "FenceName": "ring2"})
    assert api.call("GET", f"/v1/fences/{ring_id}", 200).json()["name"] == "ring2"
    gate_id = fences["gate"]["fence_id"]
    common.call_json("ModifyPositionFence", {"SpaceId": sid, "FenceId": gate_id, "FenceArea": circle_area(300)})
    assert api.call("GET", f"/v1/fences/{gate_id}", 200).json()["circle"]["radius"] == 300

    # bindings: the fence's trigger is "both" (InOrOut)
    bind = {
        "FenceId": gate_id,
        "Items": [
            {"ProductId": pid, "Devices": [{"DeviceName": dn, "AlertCondition": "InOrOut", "FenceEnable": True}]}
        ],
    }
    sdk_call(cli, "CreateFenceBind", bind)
    assert api.call("GET", f"/v1/fences/{gate_id}", 200).json()["devices"] == [{"product_id": pid, "device_name": dn}]
    binds = sdk_call(cli, "DescribeFenceBindList", {"FenceId": gate_id})
    assert binds["Total"] == 1 and binds["List"][0]["ProductId"] == pid
    assert binds["List"][0]["Devices"][0]["DeviceName"] == dn and binds["List"][0]["Devices"][0]["AlertCondition"] == (
        "InOrOut"
    )
    wrong = json.loads(json.dumps(bind))
    wrong["Items"][0]["Devices"][0]["AlertCondition"] = "In"
    assert refused(cli, "CreateFenceBind", wrong) == "InvalidParameterValue.TriggerInvalid"

    # the tracker walks in and out of the gate: two alarms, its positions and history
    start = walk(local_stack, pid, dn, secret, [1000, 100, 1000])
    end = start + 10_000

    def alarms() -> list[dict[str, Any]]:
        q = {"product_id": pid, "start": start, "end": end, "limit": 100}
        return api.call("GET", "/v1/alarms", 200, params=q).json()["items"]

    assert wait_until(lambda: len(alarms()) == 2, 20), alarms()
    events = sdk_call(
        cli, "DescribeFenceEventList", {"ProductId": pid, "StartTime": start, "EndTime": end, "Limit": 10}
    )
    assert events["Total"] == 2 and [e["AlertType"] for e in events["List"]] == ["In", "Out"]
    assert [e["Data"]["AlarmTime"] for e in events["List"]] == [a["time"] for a in alarms()]
    assert {e["FenceId"] for e in events["List"]} == {gate_id} and events["List"][0]["DeviceName"] == dn

    http_pos = api.call("GET", "/v1/positions", 200, params={"product_ids": pid}).json()["items"]
    pos = sdk_call(cli, "DescribeDevicePositionList", {"ProductIdList": [pid], "Limit": 10})
    assert pos["Total"] == len(http_pos) == 1
    item = pos["Positions"][0]["Items"][0]
    assert (item["DeviceName"], item["Latitude"], item["Longitude"]) == (dn, http_pos[0]["lat"], http_pos[0]["lon"])

    history = sdk_call(
        cli, "GetDeviceLocationHistory", {"ProductId": pid, "DeviceName": dn, "StartTime": start, "EndTime": end}
    )["Positions"]
    track = api.call(
        "GET",
        "/v1/trajectories",
        200,
        params={"devices": f"{pid}/{dn}", "start": start, "end": end, "accuracy": 100000},
    ).json()["devices"][0]["points"]
    assert [(p["CreateTime"], p["Latitude"], p["Longitude"]) for p in history] == [
        (p["time"], p["lat"], p["lon"]) for p in track
    ] and len(history) == 3
    assert {p["LocationType"] for p in history} == {"gps"} and history[0]["Accuracy"] == 3.0

    # unbinding, deleting (a space with fences cannot go)
    sdk_call(
        cli, "DeleteFenceBind", {"FenceId": gate_id, "Items": [{"ProductId": pid, "Devices": [{"DeviceName": dn}]}]}
    )
    assert api.call("GET", f"/v1/fences/{gate_id}", 200).json()["devices"] == []
    assert refused(cli, "DeletePositionSpace", {"SpaceId": sid}) == "UnsupportedOperation.SpaceHasFences"
    for fid in (gate_id, ring_id):
        sdk_call(cli, "DeletePositionFence", {"SpaceId": sid, "FenceId": fid})
        api.call("GET", f"/v1/fences/{fid}", 404)
    sdk_call(cli, "DeletePositionSpace", {"SpaceId": sid})
    api.call("GET", f"/v1/spaces/{sid}", 404)
    assert refused(cli, "DeletePositionFence", {"SpaceId": sid, "FenceId": gate_id}) == "ResourceNotFound.FenceNotExist"


def test_a_partner_pair_sees_only_its_products_devices_and_no_foreign_space(
    api: Api, cli: Any, local_stack: dict[str, Any]
) -> None:
    mine, theirs = tracker(api), tracker(api)
    dn_a, secret_a = api.device(mine)
    dn_b, secret_b = api.device(theirs)
    start = walk(local_stack, mine, dn_a, secret_a, [10])
    walk(local_stack, theirs, dn_b, secret_b, [20])
    sid = sdk_call(cli, "CreatePositionSpace", {"SpaceName": f"b {uuid.uuid4().hex[:6]}", "ProductIdList": [theirs]})[
        "SpaceId"
    ]
    sdk_call(cli, "CreatePositionFence", {"SpaceId": sid, "FenceName": "b", "FenceArea": circle_area(50)})
    fid = api.call("GET", f"/v1/spaces/{sid}/fences", 200).json()["items"][0]["fence_id"]

    pair = pair_for(api, partner_policy(mine))
    partner = client(endpoint(local_stack), pair["secret_id"], pair["secret_key"])
    assert wait_until(
        lambda: api.call("GET", "/v1/positions", 200, params={"product_ids": f"{mine},{theirs}"}).json()["total"] == 2,
        10,
    )
    pos = sdk_call(partner, "DescribeDevicePositionList", {"ProductIdList": [mine, theirs], "Limit": 100})
    assert [(p["ProductId"], [i["DeviceName"] for i in p["Items"]]) for p in pos["Positions"]] == [(mine, [dn_a])]
    assert pos["Total"] == 1
    spaces = sdk_call(partner, "GetPositionSpaceList", {"Limit": 100})
    assert spaces["List"] == [] and spaces["Total"] == 0
    events = sdk_call(
        partner, "DescribeFenceEventList", {"ProductId": theirs, "StartTime": 0, "EndTime": start + 10**7}
    )
    assert events["List"] == []
    history = sdk_call(
        partner,
        "GetDeviceLocationHistory",
        {"ProductId": mine, "DeviceName": dn_a, "StartTime": start - 1000, "EndTime": start + 10_000},
    )
    assert len(history["Positions"]) == 1

    # a space's fence list is a list: it shows what the partner may read of it — nothing
    fences = sdk_call(partner, "DescribePositionFenceList", {"SpaceId": sid})
    assert fences["List"] == [] and fences["Total"] == 0
    b_item = [{"ProductId": theirs, "Devices": [{"DeviceName": dn_b}]}]
    for action, params in (
        (
            "GetDeviceLocationHistory",
            {"ProductId": theirs, "DeviceName": dn_b, "StartTime": start - 1000, "EndTime": start + 10_000},
        ),
        ("CreatePositionSpace", {"SpaceName": "intruder", "ProductIdList": [mine]}),
        ("ModifyPositionSpace", {"SpaceId": sid, "Description": "x"}),
        ("DeletePositionSpace", {"SpaceId": sid}),
        ("CreatePositionFence", {"SpaceId": sid, "FenceName": "x", "FenceArea": circle_area(10)}),
        ("DeletePositionFence", {"SpaceId": sid, "FenceId": fid}),
        ("CreateFenceBind", {"FenceId": fid, "Items": b_item}),
        ("DeleteFenceBind", {"FenceId": fid, "Items": b_item}),
        ("DescribeFenceBindList", {"FenceId": fid}),
    ):
        assert refused(partner, action, params) == DENIED, action
    assert api.call("GET", f"/v1/fences/{fid}", 200).json()["devices"] == []
    assert len(api.call("GET", f"/v1/spaces/{sid}/fences", 200).json()["items"]) == 1
