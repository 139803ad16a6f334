"""The location service's geometry (media/geo.py): distances on the sphere, polygons with holes,
hysteresis, the STRtree engine against the naive loop, LBS_BS parsing, weighted centroids."""

from __future__ import annotations

import random

import pytest

from chalicelib.media import geo
from tests.helpers import point_at, square


def test_haversine_matches_a_known_distance():
    # Paris (48.8566, 2.3522) to London (51.5074, -0.1278): 343.5 km on the sphere
    assert geo.haversine_m(48.8566, 2.3522, 51.5074, -0.1278) == pytest.approx(343_560, rel=2e-3)
    lat, lon = point_at(60.0, 10.0, 1234.0, 77)
    assert geo.haversine_m(60.0, 10.0, lat, lon) == pytest.approx(1234.0, abs=0.01)


@pytest.mark.parametrize("bearing", [0, 45, 90, 180, 270])
def test_a_500m_circle_at_latitude_60_fires_at_499m_and_not_at_501m(bearing):
    # metres on the sphere, not degrees: at 60° a degree of longitude is half a degree of latitude
    fence = geo.Fence("c", "circle", 100, center=(60.0, 10.0), radius_m=500)
    index = geo.FenceIndex.build([fence])
    inside, outside = point_at(60.0, 10.0, 499, bearing), point_at(60.0, 10.0, 501, bearing)
    got = index.decide_many([inside[0], outside[0]], [inside[1], outside[1]], [0.5, 0.5])
    assert got == [{"c": geo.IN}, {"c": geo.OUT}]


def donut(lat: float, lon: float) -> dict:
    return {"type": "Polygon", "coordinates": [square(lat, lon, 1000), square(lat, lon, 300)]}


def test_a_polygon_with_a_hole_is_inside_on_the_ring_and_outside_in_the_hole():
    fence = geo.Fence("p", "polygon", 100, geom=geo.polygon_of(donut(45.0, 7.0)))
    index = geo.FenceIndex.build([fence])
    ring = point_at(45.0, 7.0, 600, 90)
    hole = (45.0, 7.0)
    far = point_at(45.0, 7.0, 5000, 0)
    edge = point_at(45.0, 7.0, 1002, 90)  # 2 m outside the outer boundary: within a 5 m margin
    got = index.decide_many(
        [ring[0], hole[0], far[0], edge[0]], [ring[1], hole[1], far[1], edge[1]], [5.0, 5.0, 5.0, 5.0]
    )
    assert got[0] == {"p": geo.IN}
    assert got[1] == {"p": geo.OUT}  # in the hole: outside, 300 m from the inner boundary
    assert got[2] == {}  # far: the tree does not even return it (definitely outside)
    assert got[3] == {}  # the hysteresis band: no decision
    assert index.near_ids([far[0]], [far[1]]) == [set()]


def test_hysteresis_and_tolerance():
    assert geo.decide(-6, 5, 100) == geo.IN
    assert geo.decide(-4, 5, 100) is None  # within the fix's own accuracy of the boundary
    assert geo.decide(4, 5, 100) is None
    assert geo.decide(6, 5, 100) == geo.OUT
    assert geo.decide(-500, 150, 100) is None  # worse than the fence's tolerance: not used
    assert geo.decide(-1, 0, 100) == geo.IN  # the minimum margin is half a metre
    assert geo.decide(-0.2, 0, 100) is None


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ({"type": "Point", "coordinates": [0, 0]}, "must be a GeoJSON Polygon"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0.5]]]}, "is not closed"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}, "Self-intersection"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [200, 0], [1, 1], [0, 0]]]}, "outside longitude"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 0]]]}, "at least 4 positions"),
        ({"type": "Polygon", "coordinates": [[[0, 0], ["a", 0], [1, 1], [0, 0]]]}, "[longitude, latitude]"),
    ],
)
def test_invalid_polygons_are_refused_with_the_problem_named(doc, problem):
    with pytest.raises(geo.GeoError) as err:
        geo.polygon_of(doc)
    assert problem in str(err.value)


def test_the_strtree_engine_decides_exactly_like_the_naive_loop_on_random_data():
    rng = random.Random(13)
    fences = []
    for i in range(300):
        lat, lon = rng.uniform(59.5, 60.5), rng.uniform(9.0, 11.0)
        if i % 2:
            fences.append(
                geo.Fence(f"c{i}", "circle", rng.choice([20, 100]), center=(lat, lon), radius_m=rng.uniform(50, 3000))
            )
        else:
            doc = {"type": "Polygon", "coordinates": [square(lat, lon, rng.uniform(100, 3000)), square(lat, lon, 50)]}
            fences.append(geo.Fence(f"p{i}", "polygon", rng.choice([20, 100]), geom=geo.polygon_of(doc)))
    index = geo.FenceIndex.build(fences)
    lats = [rng.uniform(59.5, 60.5) for _ in range(2000)]
    lons = [rng.uniform(9.0, 11.0) for _ in range(2000)]
    accs = [rng.choice([1.0, 5.0, 30.0, 200.0]) for _ in range(2000)]
    fast = index.decide_many(lats, lons, accs)
    near = index.near_ids(lats, lons)
    for i in range(0, 2000, 7):
        # a fence the tree does not return is definitely outside (for a fix it may use)
        far = {f.fence_id: geo.OUT for f in fences if f.fence_id not in near[i] and accs[i] <= f.tolerance_m}
        assert {**far, **fast[i]} == geo.naive_decide(fences, lats[i], lons[i], accs[i]), i
    assert sum(1 for f in fast for d in f.values() if d == geo.IN) > 50  # the data exercise real decisions


def test_lbs_bs_parsing():
    assert geo.parse_lbs("mcc:460;mnc:0;lac:4301;cid:20986;rss:-60") == {
        "mcc": 460,
        "mnc": 0,
        "lac": 4301,
        "cid": 20986,
        "rss": -60,
    }
    with pytest.raises(geo.GeoError, match="lacks cid"):
        geo.parse_lbs("mcc:460;mnc:0;lac:4301")
    with pytest.raises(geo.GeoError, match="lac must be an integer"):
        geo.parse_lbs("mcc:460;mnc:0;lac:x;cid:1")
    assert geo.mac_key("AA-BB-CC-DD-EE-FF") == "wifi:aa:bb:cc:dd:ee:ff"
    assert geo.mac_key("zz") is None


def test_weighted_centroid_leans_to_the_strongest_access_point():
    a, b = (60.0, 10.0), (60.0, 10.01)
    lat, lon, acc = geo.weighted_centroid(
        [(a[0], a[1], 20.0, geo.rssi_weight(-50)), (b[0], b[1], 20.0, geo.rssi_weight(-70))]
    )
    # -50 dBm carries 100x the power of -70 dBm: the centroid sits 1/101 of the way to b
    assert lon == pytest.approx(10.0 + 0.01 / 101, abs=1e-9)
    assert lat == pytest.approx(60.0)
    assert 20 < acc < 40
    # equal weights: the midpoint
    lat, lon, _ = geo.weighted_centroid([(a[0], a[1], 20.0, 1.0), (b[0], b[1], 20.0, 1.0)])
    assert lon == pytest.approx(10.005)
