"""Operational analytics (SPEC §13): counters maintained on the message path, the overview,
message series per hour/day, and the regional distribution — per product and for all."""

from __future__ import annotations

import datetime as dt

from chalicelib.core import clock
from chalicelib.services import analytics
from tests.integration.helpers import (
    DynamoCounter,
    connect,
    expect_error,
    make_device,
    make_product,
    partner,
    report,
    run,
    up,
)


def _hour_row(items, now_s):
    start = now_s - now_s % 3600
    return next(i for i in items if i["time"] == start)


def test_message_counters_per_hour_and_day(api, lamp, recorder):
    make_device(api, lamp, "dev2")
    run(
        report(lamp, "dev1", {"brightness": 1}),
        report(lamp, "dev2", {"brightness": 999}),
        up(lamp, "dev1", "thing/up/property", b"not json"),
    )
    now = clock.now_s()
    hourly = api.get(f"/v1/stats/messages?product_id={lamp}&granularity=hour")
    assert hourly.status_code == 200, hourly.body
    row = _hour_row(hourly.json["items"], now)
    assert (row["uplink"], row["uplink_fail"], row["downlink"], row["downlink_fail"]) == (3, 2, 2, 0)
    assert row["rule_hits"] == 0 and row["rule_forwards"] == 0
    assert hourly.json["total"]["uplink"] == 3 and len(hourly.json["items"]) in (24, 25)
    daily = api.get(f"/v1/stats/messages?product_id={lamp}&granularity=day").json
    assert daily["items"][-1]["uplink"] == 3 and daily["items"][-1]["iso"].endswith("T00:00:00Z")
    # a control published through the API counts as a downlink
    connect(lamp, "dev1")
    api.post(f"/v1/products/{lamp}/devices/dev1/control", {"params": {"brightness": 5}})
    row = _hour_row(api.get(f"/v1/stats/messages?product_id={lamp}").json["items"], now)
    assert row["downlink"] == 3


def test_counters_are_one_request_per_product_per_batch(api, lamp, recorder):
    for i in range(5):
        make_device(api, lamp, f"n{i}")
    run(*[report(lamp, f"n{i}", {"brightness": 0}) for i in range(5)])  # first messages: topic form noted
    counter = DynamoCounter()
    with counter.counting():
        run(*[report(lamp, f"n{i}", {"brightness": i}) for i in range(5)])
    counter_updates = [c for c in counter.calls if c == "UpdateItem"]
    assert len(counter_updates) == 5 + 1  # five device shadows, one counter item


def test_overview_for_one_product_and_for_all(api, lamp, recorder):
    other = make_product(api, "Fan")
    make_device(api, other, "f1")
    make_device(api, lamp, "dev2")
    connect(lamp, "dev1")
    connect(lamp, "dev2")
    connect(other, "f1")
    one = api.get(f"/v1/stats/overview?product_id={lamp}").json
    assert (one["products"], one["activated"], one["online"]) == (1, 2, 2)
    assert one["last_7_days"]["activations"] == 2 and one["previous_7_days"]["activations"] == 0
    assert one["last_7_days"]["online_peak"] == 2
    assert [d["date"] for d in one["daily"]][-1] == dt.datetime.now(dt.UTC).date().isoformat()
    assert len(one["daily"]) == 7
    every = api.get("/v1/stats/overview").json
    assert (every["products"], every["activated"], every["online"]) == (2, 3, 3)
    # a chosen range of days
    start = clock.now_s() - 2 * 86400
    ranged = api.get(f"/v1/stats/overview?product_id={lamp}&start={start}&end={clock.now_s()}").json
    assert len(ranged["daily"]) == 3 and ranged["daily"][-1]["activations"] == 2
    expect_error(
        api.get("/v1/stats/overview?product_id=NOPRODUCT1"), 404, "ResourceNotFound.ProductNotExist", "product_id"
    )
    expect_error(
        api.get("/v1/stats/messages?granularity=minute"), 400, "InvalidParameterValue.GranularityInvalid", "granularity"
    )
    expect_error(
        api.get(f"/v1/stats/messages?start={clock.now_s()}&end={clock.now_s() - 5}"),
        400,
        "InvalidParameterValue.TimeRangeInvalid",
        "start",
    )


def test_a_principal_sees_only_its_products_figures(api, lamp, recorder):
    other = make_product(api, "Fan")
    make_device(api, other, "f1")
    connect(lamp, "dev1")
    connect(other, "f1")
    limited = partner(api, lamp)
    assert limited.get("/v1/stats/overview").json["online"] == 1
    assert limited.get(f"/v1/stats/overview?product_id={other}").status_code == 403


def test_distribution_by_label_and_by_position(api, lamp, recorder):
    for dn in ("dev2", "dev3", "dev4"):
        make_device(api, lamp, dn)
    # a device label wins; a report_info position and a GPS report map to continents
    run(
        up(
            lamp,
            "dev1",
            "thing/up/property",
            {
                "method": "report_info",
                "clientToken": "a",
                "params": {"fw_ver": "1.0", "lat": 31.23, "lon": 121.47, "device_label": {"region": "Shanghai"}},
            },
        ),
        up(
            lamp,
            "dev2",
            "thing/up/property",
            {"method": "report_info", "clientToken": "b", "params": {"fw_ver": "1.0", "lat": 48.85, "lon": 2.35}},
        ),
        report(lamp, "dev3", {"GPS_Info": {"latitude": 40.7, "longitude": -74.0}}),
    )
    dist = api.get(f"/v1/stats/distribution?product_id={lamp}").json
    assert dist["devices"] == 4 and dist["located"] == 3 and dist["unlocated"] == 1
    assert {i["region"]: i["count"] for i in dist["items"]} == {"Shanghai": 1, "Europe": 1, "North America": 1}
    assert round(sum(i["percent"] for i in dist["items"])) == 100
    # moving a device moves its count
    run(report(lamp, "dev3", {"GPS_Info": {"latitude": -33.9, "longitude": 151.2}}))
    dist = api.get(f"/v1/stats/distribution?product_id={lamp}").json
    assert {i["region"]: i["count"] for i in dist["items"]} == {"Shanghai": 1, "Europe": 1, "Oceania": 1}


def test_region_boxes():
    assert analytics.region_of(39.9, 116.4) == "Asia"
    assert analytics.region_of(-23.5, -46.6) == "South America"
    assert analytics.region_of(6.5, 3.4) == "Africa"
    assert analytics.region_of(51.5, -0.1) == "Europe"
    assert analytics.region_of(21.3, -157.8) == "Oceania"
    assert analytics.region_of(0, 0) is None and analytics.region_of("x", 1) is None
    assert analytics.region_of(95, 0) is None


def test_deleting_an_online_device_releases_its_gauges(api, lamp, recorder):
    # Given two activated devices, one of them online
    make_device(api, lamp, "dev2")
    connect(lamp, "dev1")
    connect(lamp, "dev2")
    before = api.get(f"/v1/stats/overview?product_id={lamp}").json
    assert (before["activated"], before["online"]) == (2, 2)
    # When the online device is deleted
    assert api.delete(f"/v1/products/{lamp}/devices/dev1").status_code == 204
    # Then it no longer counts as online or activated
    after = api.get(f"/v1/stats/overview?product_id={lamp}").json
    assert (after["activated"], after["online"]) == (1, 1)
