"""The location service on the real local stack (SPEC §10): a paho-mqtt tracker walks a scripted
path through a circle and a polygon with a hole; the alarm list holds exactly the expected
enter/exit alarms in order, none for 50 fixes jittering within 3 m of a boundary, none for fixes
with poor accuracy; a rule on the alarm topic delivers them to a loopback receiver that checks
the signature with its own code; the trajectory GeoJSON matches the points; the map is served."""

from __future__ import annotations

import json
import time
import uuid

import geojson
import pytest

from tests.e2e.fleet import Device
from tests.helpers import gps_property, point_at, square, wait_until
from tests.receiver import Receiver

pytestmark = pytest.mark.e2e

GPS = gps_property(accuracy=True)
CIRCLE = (60.0, 10.0)  # 200 m radius
YARD = (60.0, 10.05)  # a 2 km square with a 600 m square hole


def test_a_tracker_walks_through_fences_and_the_alarms_reach_a_signed_webhook(local_stack, api):
    pid = api.product(model={"version": "1.0", "properties": [GPS], "events": [], "actions": []}, name="Tracker")
    dn, secret = api.device(pid, "walker")
    sid = api.call("POST", "/v1/spaces", 201, json={"name": f"e2e {uuid.uuid4().hex[:6]}", "products": [pid]}).json()[
        "space_id"
    ]
    bound = [{"product_id": pid, "device_name": dn}]
    circle = {"name": "gate", "type": "circle", "circle": {"lat": CIRCLE[0], "lon": CIRCLE[1], "radius": 200}}
    yard = {
        "name": "yard",
        "type": "polygon",
        "polygon": {"type": "Polygon", "coordinates": [square(*YARD, 1000), square(*YARD, 300)]},
    }
    gate_id = api.call("POST", f"/v1/spaces/{sid}/fences", 201, json={**circle, "devices": bound}).json()["fence_id"]
    yard_id = api.call("POST", f"/v1/spaces/{sid}/fences", 201, json={**yard, "devices": bound}).json()["fence_id"]

    receiver = Receiver(token="loc-token").start()
    device = Device(local_stack, pid, dn, secret).connect()
    try:
        rule = {
            "name": f"alarms{uuid.uuid4().hex[:6]}",
            "sql": f"SELECT * FROM '$events/{pid}/fence/alarm'",
            "enabled": True,
            "actions": [{"type": "http", "url": receiver.url, "token": "loc-token"}],
        }
        receiver.secret = api.call("POST", "/v1/rules", 201, json=rule).json()["actions"][0]["secret"]
        device.subscribe(device.topic("thing/down/property"))
        clock = [int(time.time() * 1000) - 600_000]
        sent: list[tuple[float, float, float]] = []

        def fix(pos: tuple[float, float], accuracy: float = 3.0) -> None:
            clock[0] += 1000
            token = f"t{clock[0]}"
            value = {"latitude": round(pos[0], 6), "longitude": round(pos[1], 6), "accuracy": accuracy}
            body = {"method": "report", "clientToken": token, "timestamp": clock[0], "params": {"GPS_Info": value}}
            device.publish(device.topic("thing/up/property"), body)
            reply = device.reply_to(token, "report_reply")
            assert reply is not None and reply[1]["code"] == 0, reply
            sent.append((value["latitude"], value["longitude"], accuracy))

        # the scripted walk: far → into the circle → out → into the yard's ring → the hole → the
        # ring → out (distances in metres east of each centre)
        for metres in (1000, 100, 1000):
            fix(point_at(*CIRCLE, metres, 90))
        for metres in (2000, 600, 0, 600, 2000):
            fix(point_at(*YARD, metres, 90))
        # 50 fixes jittering within 3 m of the yard's outer boundary (accuracy 5 m): no alarm
        for i in range(50):
            fix(point_at(*YARD, 1000 + (i % 7) - 3, 90), accuracy=5.0)
        # poor fixes (accuracy 500 m, over the 100 m tolerance) deep in the circle: no alarm
        for _ in range(3):
            fix(CIRCLE, accuracy=500.0)

        expected = [
            (gate_id, "enter"),
            (gate_id, "exit"),
            (yard_id, "enter"),
            (yard_id, "exit"),
            (yard_id, "enter"),
            (yard_id, "exit"),
        ]

        def listed() -> list[tuple[str, str]]:
            doc = api.call("GET", "/v1/alarms", 200, params={"product_id": pid, "start": 0, "limit": 100}).json()
            return [(a["fence_id"], a["type"]) for a in doc["items"]]

        assert wait_until(lambda: listed() == expected, timeout=20), listed()
        # the rule delivers each alarm, signed (the receiver checks the SHA1 signature itself)
        assert wait_until(lambda: len(receiver.ok_hits()) >= len(expected), timeout=60), receiver.ok_hits()
        time.sleep(1)
        hits = receiver.ok_hits()
        assert len(hits) == len(expected)
        assert all(h.sha1_valid and h.standard_valid for h in hits)
        got = sorted(
            (h.body["payload"]["time"], h.body["payload"]["fence_id"], h.body["payload"]["type"]) for h in hits
        )
        assert [(f, t) for _, f, t in got] == expected
        assert {h.body["payload"]["event"] for h in hits} == {"fence.alarm"}

        # the trajectory: every fix with accuracy ≤ 60 m (the default), in order, as valid GeoJSON
        doc = api.call(
            "GET",
            "/v1/trajectories",
            200,
            params={"devices": f"{pid}/{dn}", "start": clock[0] - 3_600_000, "format": "geojson"},
        ).json()
        parsed = geojson.loads(json.dumps(doc))
        assert parsed.is_valid, parsed.errors()
        points = [f for f in parsed["features"] if f["geometry"]["type"] == "Point"]
        good = [s for s in sent if s[2] <= 60]
        assert [tuple(p["geometry"]["coordinates"]) for p in points] == [(s[1], s[0]) for s in good]
        (line,) = [f for f in parsed["features"] if f["geometry"]["type"] == "LineString"]
        assert len(line["geometry"]["coordinates"]) == len(good)

        # the map of the space, as SVG and PNG
        svg = api.call(
            "GET", f"/v1/spaces/{sid}/map.svg", 200, params={"device": f"{pid}/{dn}", "start": clock[0] - 3_600_000}
        )
        assert svg.headers["Content-Type"].startswith("image/svg+xml")
        assert svg.text.count('class="fence"') == 2 and 'class="track"' in svg.text
        png = api.call("GET", f"/v1/spaces/{sid}/map.png", 200, headers={"Accept": "image/png"})
        assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        device.close()
        receiver.stop()
