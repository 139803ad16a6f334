"""The location service end to end over moto (SPEC §10, §16): spaces, fences and their rules,
alarms from reports through the uplink pipeline, cell / Wi-Fi resolution, positions,
trajectories, the map, permissions and the cost of a GPS report."""

from __future__ import annotations

import json
from typing import Any

import geojson
import pytest

from chalicelib.core import clock
from chalicelib.models import dynamo
from chalicelib.models.devices import ShadowRecord
from chalicelib.services import thing_model
from tests.helpers import gps_property, partner_policy, square
from tests.helpers import point_at as at
from tests.integration.helpers import DynamoCounter, expect_error, make_device, make_product, ok, report, run


def loc_model() -> dict[str, Any]:
    """Every location attribute of SPEC §10; GPS_Info carries an optional accuracy (m)."""
    props = [gps_property(accuracy=True)]
    for fid in ("GPS_ExtInfo", "Cell_Info", "Wifi_Info"):
        feat = thing_model.standard_feature(fid)
        assert feat is not None
        feat.pop("kind")
        props.append(feat)
    props.append({"id": "LBS_BS", "name": "LBS", "mode": "r", "define": {"type": "string", "min": "0", "max": "128"}})
    return {"version": "1.0", "properties": props, "events": [], "actions": []}


def gps(pid: str, dn: str, pos: tuple[float, float], t: int, accuracy: float | None = None) -> Any:
    value: dict[str, Any] = {"latitude": round(pos[0], 7), "longitude": round(pos[1], 7)}
    if accuracy is not None:
        value["accuracy"] = accuracy
    return report(pid, dn, {"GPS_Info": value}, ts_ms=t)


@pytest.fixture()
def tracker(api, recorder) -> str:
    pid = make_product(api, "Tracker", loc_model())
    for dn in ("t1", "t2", "t3"):
        make_device(api, pid, dn)
    return pid


def space(api, pid: str, name: str = "Depot") -> str:
    return ok(api.post("/v1/spaces", {"name": name, "products": [pid]}), 201)["space_id"]


def circle(api, sid: str, devices: list[str], pid: str, **extra: Any) -> str:
    """A 100 m circle fence at (1, 1) bound to ``devices`` of ``pid``; its id."""
    body = {
        "name": "c",
        "type": "circle",
        "circle": {"lat": 1.0, "lon": 1.0, "radius": 100},
        "devices": [{"product_id": pid, "device_name": dn} for dn in devices],
        **extra,
    }
    return ok(api.post(f"/v1/spaces/{sid}/fences", body), 201)["fence_id"]


def alarms(api, pid: str, **q: Any) -> list[dict[str, Any]]:
    query = "&".join(f"{k}={v}" for k, v in {"product_id": pid, "start": 0, **q}.items())
    return ok(api.get(f"/v1/alarms?{query}"))["items"]


# ------------------------------------------------------------------ validation


def test_space_rules_with_their_codes(api, tracker):
    expect_error(
        api.post("/v1/spaces", {"name": "x" * 21, "products": [tracker]}),
        400,
        "InvalidParameterValue.SpaceNameInvalid",
        "name",
    )
    expect_error(
        api.post("/v1/spaces", {"name": "ok", "remark": "r" * 26}),
        400,
        "InvalidParameterValue.SpaceRemarkInvalid",
        "remark",
    )
    expect_error(
        api.post("/v1/spaces", {"name": "ok", "products": ["NOPRODUCT1"]}),
        404,
        "ResourceNotFound.ProductNotExist",
        "products[0]",
    )
    sid = space(api, tracker)
    expect_error(api.post("/v1/spaces", {"name": "Depot"}), 409, "ResourceInUse.SpaceNameExists", "name")
    fence = {"name": "gate", "type": "circle", "circle": {"lat": 1, "lon": 2, "radius": 50}}
    fid = ok(api.post(f"/v1/spaces/{sid}/fences", fence), 201)["fence_id"]
    expect_error(api.delete(f"/v1/spaces/{sid}"), 409, "UnsupportedOperation.SpaceHasFences", "space_id")
    assert api.delete(f"/v1/fences/{fid}").status_code == 204
    assert api.delete(f"/v1/spaces/{sid}").status_code == 204
    expect_error(api.get(f"/v1/spaces/{sid}"), 404, "ResourceNotFound.SpaceNotExist", "space_id")


def test_fence_rules_with_their_codes(api, tracker):
    sid = space(api, tracker)
    base = {"name": "f", "type": "circle", "circle": {"lat": 1, "lon": 2, "radius": 50}}
    url = f"/v1/spaces/{sid}/fences"
    expect_error(api.post(url, {**base, "name": "x" * 11}), 400, "InvalidParameterValue.FenceNameInvalid", "name")
    expect_error(api.post(url, {**base, "type": "square"}), 400, "InvalidParameterValue.FenceTypeInvalid", "type")
    expect_error(api.post(url, {**base, "trigger": "near"}), 400, "InvalidParameterValue.TriggerInvalid", "trigger")
    expect_error(
        api.post(url, {**base, "circle": {"lat": 91, "lon": 2, "radius": 5}}),
        400,
        "InvalidParameterValue.CircleInvalid",
        "circle.lat",
    )
    expect_error(
        api.post(url, {**base, "circle": {"lat": 1, "lon": 2, "radius": 0}}),
        400,
        "InvalidParameterValue.CircleInvalid",
        "circle.radius",
    )
    expect_error(
        api.post(url, {**base, "accuracy_tolerance": 0}),
        400,
        "InvalidParameterValue.ToleranceInvalid",
        "accuracy_tolerance",
    )
    expect_error(api.post(url, {"name": "f", "type": "circle"}), 400, "MissingParameter", "circle")
    bowtie = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}
    err = expect_error(
        api.post(url, {"name": "p", "type": "polygon", "polygon": bowtie}),
        400,
        "InvalidParameterValue.GeometryInvalid",
        "polygon",
    )
    assert "Self-intersection" in err["message"]
    open_ring = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}
    err = expect_error(
        api.post(url, {"name": "p", "type": "polygon", "polygon": open_ring}),
        400,
        "InvalidParameterValue.GeometryInvalid",
        "polygon",
    )
    assert "not closed" in err["message"]
    expect_error(
        api.post(url, {"name": "d", "type": "district", "district_id": "dt_nothere"}),
        404,
        "ResourceNotFound.DistrictNotExist",
        "district_id",
    )
    ok(api.post(url, base), 201)
    expect_error(api.post(url, base), 409, "ResourceInUse.FenceNameExists", "name")
    other = make_product(api, "Other", loc_model())
    make_device(api, other, "o1")
    expect_error(
        api.post(url, {**base, "name": "g", "devices": [{"product_id": other, "device_name": "o1"}]}),
        409,
        "FailedOperation.DeviceNotInSpace",
        "devices[0].product_id",
    )
    expect_error(
        api.post(url, {**base, "name": "g", "devices": [{"product_id": tracker, "device_name": "nobody"}]}),
        404,
        "ResourceNotFound.DeviceNotExist",
        "devices[0].device_name",
    )


def test_district_import_is_validated(api):
    bad_level = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"level": "country", "name": "X"},
                "geometry": {"type": "Polygon", "coordinates": [square(0, 0, 100)]},
            }
        ],
    }
    expect_error(api.post("/v1/districts", bad_level), 400, "InvalidParameterValue.LevelInvalid", "features[0]")
    bad_geom = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"level": "city", "name": "X"},
                "geometry": {"type": "Point", "coordinates": [0, 0]},
            }
        ],
    }
    expect_error(
        api.post("/v1/districts", bad_geom), 400, "InvalidParameterValue.GeometryInvalid", "features[0].geometry"
    )
    no_props = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": "city", "geometry": None}]}
    expect_error(api.post("/v1/districts", no_props), 400, "InvalidParameterValue.GeometryInvalid", "features[0]")


# ------------------------------------------------------------------ alarms through the uplink


def test_a_500m_circle_at_latitude_60_fires_at_499m_not_at_501m(api, tracker):
    sid = space(api, tracker)
    centre = (60.0, 10.0)
    devices = [{"product_id": tracker, "device_name": dn} for dn in ("t1", "t2")]
    body = {"name": "ring", "type": "circle", "circle": {"lat": 60.0, "lon": 10.0, "radius": 500}, "devices": devices}
    fid = ok(api.post(f"/v1/spaces/{sid}/fences", body), 201)["fence_id"]
    t = clock.now_ms() - 10_000
    # both devices start far outside, then t1 stops 501 m east of the centre and t2 499 m east
    run(gps(tracker, "t1", at(*centre, 2000, 90), t, 1), gps(tracker, "t2", at(*centre, 2000, 90), t, 1))
    run(
        gps(tracker, "t1", at(*centre, 501, 90), t + 1000, 0.5), gps(tracker, "t2", at(*centre, 499, 90), t + 1000, 0.5)
    )
    got = alarms(api, tracker)
    assert [(a["device_name"], a["type"], a["fence_id"]) for a in got] == [("t2", "enter", fid)]


def test_a_device_unbound_and_bound_again_decides_afresh(api, tracker):
    # t1 enters the circle; unbound, it leaves and comes back unseen; bound again inside, its next
    # fix raises a new enter (its old "inside" state was forgotten with the binding)
    sid = space(api, tracker)
    fid = circle(api, sid, ["t1"], tracker)
    t = clock.now_ms() - 20_000
    run(gps(tracker, "t1", (1.0, 1.0), t, 1))
    ok(api.post(f"/v1/fences/{fid}/bindings/delete", {"devices": [{"product_id": tracker, "device_name": "t1"}]}))
    run(gps(tracker, "t1", at(1.0, 1.0, 5000, 0), t + 1000, 1))
    ok(api.post(f"/v1/fences/{fid}/bindings", {"devices": [{"product_id": tracker, "device_name": "t1"}]}))
    run(gps(tracker, "t1", (1.0, 1.0), t + 2000, 1))
    assert [a["type"] for a in alarms(api, tracker)] == ["enter", "enter"]
    # deleting the fence forgets every bound device's state with it
    run(gps(tracker, "t1", (1.0, 1.0), t + 3000, 1))
    assert f"gf_{fid}" in shadow_item(tracker, "t1")
    assert api.delete(f"/v1/fences/{fid}").status_code in (200, 204)
    assert f"gf_{fid}" not in shadow_item(tracker, "t1")


def shadow_item(pid: str, dn: str) -> dict[str, Any]:
    """The device's shadow as stored (fence state attributes included)."""
    table = ShadowRecord.Meta.table_name
    key = {"product_id": {"S": pid}, "device_name": {"S": dn}}
    return dynamo.client().get_item(TableName=table, Key=key, ConsistentRead=True)["Item"]


def test_a_walk_through_a_polygon_with_a_hole_jitter_and_poor_fixes(api, tracker):
    sid = space(api, tracker)
    c = (45.0, 7.0)
    poly = {"type": "Polygon", "coordinates": [square(*c, 1000), square(*c, 300)]}
    dev = [{"product_id": tracker, "device_name": "t1"}]
    fid = ok(
        api.post(f"/v1/spaces/{sid}/fences", {"name": "yard", "type": "polygon", "polygon": poly, "devices": dev}), 201
    )["fence_id"]
    t = clock.now_ms() - 100_000
    path = [2000, 600, 0, 600, 2000]  # metres east of the centre: out, ring, hole, ring, out
    for i, d in enumerate(path):
        run(gps(tracker, "t1", at(*c, d, 90), t + i * 1000))
    got = [(a["type"], a["fence_id"]) for a in alarms(api, tracker)]
    assert got == [("enter", fid), ("exit", fid), ("enter", fid), ("exit", fid)]
    # jitter within 3 m of the outer boundary (default GPS accuracy 10 m): nothing
    for i in range(50):
        run(gps(tracker, "t1", at(*c, 1000 + (i % 7) - 3, 90), t + 10_000 + i * 100))
    # poor fixes (accuracy 500 m > the 100 m tolerance) well inside: nothing
    for i in range(3):
        run(gps(tracker, "t1", at(*c, 600, 90), t + 20_000 + i * 100, accuracy=500))
    assert len(alarms(api, tracker)) == 4
    # an old fix (before the stored one) inside the ring moves nothing
    run(gps(tracker, "t1", at(*c, 600, 90), t + 5000))
    assert len(alarms(api, tracker)) == 4
    # filters
    assert len(alarms(api, tracker, fence_id=fid, device_name="t1")) == 4
    assert alarms(api, tracker, device_name="t2") == []
    page = ok(api.get(f"/v1/alarms?product_id={tracker}&start=0&limit=3"))
    assert len(page["items"]) == 3 and page["next"]
    rest = ok(api.get(f"/v1/alarms?product_id={tracker}&start=0&limit=3&next={page['next']}"))
    assert [a["type"] for a in rest["items"]] == ["exit"]


def test_a_district_fence_fires_inside_and_not_in_the_neighbour(api, tracker):
    west = [[10.0, 50.0], [10.1, 50.0], [10.1, 50.1], [10.0, 50.1], [10.0, 50.0]]
    east = [[10.1, 50.0], [10.2, 50.0], [10.2, 50.1], [10.1, 50.1], [10.1, 50.0]]
    doc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"level": "district", "name": "West"},
                "geometry": {"type": "Polygon", "coordinates": [west]},
            },
            {
                "type": "Feature",
                "properties": {"level": "district", "name": "East"},
                "geometry": {"type": "Polygon", "coordinates": [east]},
            },
        ],
    }
    made = ok(api.post("/v1/districts", doc), 201)["items"]
    west_id = next(d["district_id"] for d in made if d["name"] == "West")
    sid = space(api, tracker)
    devs = [{"product_id": tracker, "device_name": n} for n in ("t1", "t2")]
    fid = ok(
        api.post(
            f"/v1/spaces/{sid}/fences", {"name": "west", "type": "district", "district_id": west_id, "devices": devs}
        ),
        201,
    )["fence_id"]
    t = clock.now_ms() - 5000
    run(gps(tracker, "t1", (50.05, 10.05), t), gps(tracker, "t2", (50.05, 10.15), t))
    assert [(a["device_name"], a["type"], a["fence_id"]) for a in alarms(api, tracker)] == [("t1", "enter", fid)]


def test_an_alarm_is_a_domain_event_on_the_documented_kind(api, tracker):
    from chalicelib.models.events import EventRecord

    sid = space(api, tracker)
    circle(api, sid, ["t1"], tracker, trigger="exit")
    t = clock.now_ms() - 5000
    run(gps(tracker, "t1", (1.0, 1.0), t))  # enter: not a triggering direction here
    run(gps(tracker, "t1", (1.01, 1.0), t + 1000))  # exit
    assert [a["type"] for a in alarms(api, tracker)] == ["exit"]
    (event,) = [e for e in EventRecord.query(tracker) if e.kind == "fence.alarm"]
    assert event.data["type"] == "exit" and event.data["device_name"] == "t1"


# ------------------------------------------------------------------ cost


def test_a_gps_report_that_crosses_nothing_costs_what_any_report_costs(api, tracker):
    sid = space(api, tracker)
    circle(api, sid, ["t1"], tracker)
    t = clock.now_ms() - 5000
    run(gps(tracker, "t1", (5.0, 5.0), t))  # the first report makes the shadow and loads the fence index
    counter = DynamoCounter()
    with counter.counting():
        run(gps(tracker, "t1", (5.001, 5.0), t + 1000))
    assert sorted(counter.calls) == ["BatchWriteItem", "UpdateItem", "UpdateItem"], counter.calls
    (update,) = [p for op, p in counter.requests if op == "UpdateItem" and p["TableName"].endswith("shadows")]
    assert "position" in update["ExpressionAttributeNames"].values()


# ------------------------------------------------------------------ resolution, positions, trajectories


def test_cell_and_wifi_reports_resolve_through_the_uploaded_table(api, tracker):
    from chalicelib.models.telemetry import DeviceLogRecord

    csv_text = "key,lat,lon,accuracy\n460-0-4301-20986,39.9,116.4,800\naa:bb:cc:00:00:01,39.91,116.41,30\naa:bb:cc:00:00:02,39.91,116.42,30\n"
    assert ok(api.post("/v1/geo-cells", {"csv": csv_text}))["imported"] == 3
    expect_error(
        api.post("/v1/geo-cells", {"csv": "nonsense,1,2\n"}), 400, "InvalidParameterValue.CellKeyInvalid", "csv"
    )
    t = clock.now_ms() - 5000
    cell = {"mcc": 460, "mnc": 0, "lac": 4301, "cid": 20986, "rss": -70}
    run(report(tracker, "t1", {"Cell_Info": cell}, ts_ms=t))
    run(
        report(
            tracker,
            "t2",
            {"Wifi_Info": [{"Mac": "AA:BB:CC:00:00:01", "Rssi": -50}, {"Mac": "aa:bb:cc:00:00:02", "Rssi": -50}]},
            ts_ms=t,
        )
    )
    run(report(tracker, "t3", {"LBS_BS": "mcc:460;mnc:0;lac:1;cid:999"}, ts_ms=t))
    pos = {p["device_name"]: p for p in ok(api.get(f"/v1/positions?product_ids={tracker}"))["items"]}
    assert pos["t1"]["source"] == "cell" and (pos["t1"]["lat"], pos["t1"]["lon"], pos["t1"]["accuracy"]) == (
        39.9,
        116.4,
        800,
    )
    assert (
        pos["t2"]["source"] == "wifi"
        and pos["t2"]["lon"] == pytest.approx(116.415)
        and pos["t2"]["lat"] == pytest.approx(39.91)
    )
    assert "t3" not in pos  # unknown cell: no position …
    (row,) = [r for r in DeviceLogRecord.query(f"{tracker}/t3/content") if r.fix is not None]
    fix = row.fix.as_dict()
    assert (
        fix["source"] == "cell" and "cell 460-0-1-999 is not in the resolver table" in fix["unresolved"]
    )  # … but kept and marked


def test_trajectory_as_json_and_valid_geojson(api, tracker):
    t = clock.now_ms() - 60_000
    points = [(round(48.85 + i * 0.001, 7), round(2.35 + i * 0.0005, 7)) for i in range(5)]
    for i, p in enumerate(points):
        run(gps(tracker, "t1", p, t + i * 1000, accuracy=5 if i != 2 else 80))
    run(gps(tracker, "t2", (1.0, 1.0), t))
    got = ok(api.get(f"/v1/trajectories?devices={tracker}/t1,{tracker}/t2&start={t - 1}"))
    tracks = {d["device_name"]: d["points"] for d in got["devices"]}
    kept = [p for i, p in enumerate(points) if i != 2]  # the 80 m fix is over the 60 m default
    assert [(p["lat"], p["lon"]) for p in tracks["t1"]] == kept
    assert [p["time"] for p in tracks["t1"]] == [t + i * 1000 for i in (0, 1, 3, 4)]
    gj = ok(api.get(f"/v1/trajectories?devices={tracker}/t1&start={t - 1}&format=geojson&accuracy=100"))
    parsed = geojson.loads(json.dumps(gj))
    assert parsed.is_valid, parsed.errors()
    (line,) = [f for f in parsed["features"] if f["geometry"]["type"] == "LineString"]
    assert [tuple(c) for c in line["geometry"]["coordinates"]] == [(p[1], p[0]) for p in points]
    pts = [f for f in parsed["features"] if f["geometry"]["type"] == "Point"]
    assert [f["properties"]["accuracy"] for f in pts] == [5, 5, 80, 5, 5]
    expect_error(
        api.get("/v1/trajectories?devices=a/1,a/2,a/3,a/4"), 400, "InvalidParameterValue.DevicesInvalid", "devices"
    )
    expect_error(
        api.get(f"/v1/trajectories?devices={tracker}/t1&start=0"),
        400,
        "InvalidParameterValue.TimeRangeInvalid",
        "start",
    )


def test_the_map_is_drawn_as_svg_and_png(api, tracker):
    sid = space(api, tracker)
    poly = {"type": "Polygon", "coordinates": [square(45.0, 7.0, 1000), square(45.0, 7.0, 300)]}
    ok(api.post(f"/v1/spaces/{sid}/fences", {"name": "yard", "type": "polygon", "polygon": poly}), 201)
    ok(
        api.post(
            f"/v1/spaces/{sid}/fences",
            {"name": "gate", "type": "circle", "circle": {"lat": 45.01, "lon": 7.0, "radius": 200}},
        ),
        201,
    )
    t = clock.now_ms() - 5000
    run(gps(tracker, "t1", (45.0, 7.005), t), gps(tracker, "t1", (45.002, 7.006), t + 1000))
    auth = {"Authorization": f"Bearer {api.key}"}
    svg = api.client.http.get(f"/v1/spaces/{sid}/map.svg?device={tracker}/t1&start={t - 1}", headers=auth)
    assert svg.status_code == 200, svg.body
    assert svg.headers["Content-Type"] == "image/svg+xml"
    text = svg.body.decode() if isinstance(svg.body, bytes) else svg.body
    assert text.count('class="fence"') == 2 and text.count('class="device"') == 1
    assert 'class="track"' in text and 'class="scale"' in text and ">t1<" in text
    png = api.client.http.get(f"/v1/spaces/{sid}/map.png", headers={**auth, "Accept": "image/png"})
    assert png.status_code == 200 and png.headers["Content-Type"] == "image/png"
    assert png.body[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ permissions


def test_a_partner_of_another_product_sees_no_alarms_or_positions_of_this_one(api, tracker):
    other = make_product(api, "Other", loc_model())
    partner = ok(api.post("/v1/principals", {"name": "partner", "policy": partner_policy(other)}), 201)
    key = ok(api.post("/v1/keys", {"principal_id": partner["principal_id"], "name": "p"}), 201)["api_key"]
    sid = space(api, tracker)
    circle(api, sid, ["t1"], tracker)
    run(gps(tracker, "t1", (1.0, 1.0), clock.now_ms() - 1000))
    assert len(alarms(api, tracker)) == 1
    as_partner = api.as_key(key)
    assert ok(as_partner.get(f"/v1/alarms?product_id={tracker}&start=0"))["items"] == []
    assert ok(as_partner.get(f"/v1/positions?product_ids={tracker}"))["items"] == []
    expect_error(as_partner.get(f"/v1/trajectories?devices={tracker}/t1"), 403, "UnauthorizedOperation", None)
    expect_error(as_partner.get(f"/v1/spaces/{sid}"), 403, "UnauthorizedOperation", None)
    assert ok(as_partner.get("/v1/spaces"))["items"] == []


def test_bad_map_and_cell_inputs_are_refused_with_their_codes(api, tracker):
    # inputs the API fuzzer found answered 500: a device that is not product_id/device_name, a start
    # in the future, a CSV the csv module cannot read
    sid = space(api, tracker)
    for fmt in ("svg", "png"):
        expect_error(
            api.get(f"/v1/spaces/{sid}/map.{fmt}?device=nodevice"),
            400,
            "InvalidParameterValue.DevicesInvalid",
            "device",
        )
        future = clock.now_ms() + 86_400_000
        expect_error(
            api.get(f"/v1/spaces/{sid}/map.{fmt}?device={tracker}/t1&start={future}"),
            400,
            "InvalidParameterValue.StartInvalid",
            "start",
        )
    expect_error(api.post("/v1/geo-cells", {"csv": 'a\rb,"c\n'}), 400, "InvalidParameterValue.CsvInvalid", "csv")
