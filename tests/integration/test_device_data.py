"""Device data over HTTP (SPEC §5, §16): time ranges and paging, control and action validation,
clear errors, and answers that match the models /openapi.json publishes."""

from __future__ import annotations

import json

import pytest

from chalicelib.core import clock
from chalicelib.handlers.api import ROUTES
from tests.integration.helpers import connect, expect_error, report, run, up

DEV = "/v1/products/{pid}/devices/dev1"


def conforms(method: str, path_template: str, body) -> None:
    """The answer validates against the route's declared response model (what /openapi.json says)."""
    spec = next(r for r in ROUTES if r.method == method and r.path == path_template)
    spec.response.validate(body, "")


def test_history_ranges_and_paging(api, lamp, recorder):
    base = clock.now_ms() - 10_000
    for i in range(5):
        run(
            up(
                lamp,
                "dev1",
                "thing/up/property",
                {"method": "report", "clientToken": str(i), "params": {"brightness": i}, "timestamp": base + i * 1000},
            )
        )
    path = DEV.format(pid=lamp) + "/properties/brightness/history"
    seen, nxt = [], None
    while True:
        r = api.get(path + "?limit=2" + (f"&next={nxt}" if nxt else ""))
        assert r.status_code == 200, r.body
        conforms("GET", "/v1/products/{product_id}/devices/{device_name}/properties/{property_id}/history", r.json)
        seen += [i["value"] for i in r.json["items"]]
        nxt = r.json["next"]
        if not nxt:
            break
    assert seen == [4, 3, 2, 1, 0]
    # start/end in milliseconds and in seconds select the same window
    ms = api.get(path + f"?start={base + 1000}&end={base + 3000}").json["items"]
    assert [i["value"] for i in ms] == [3, 2, 1]
    secs = api.get(path + f"?start={(base + 1000) // 1000}&end={(base + 3999) // 1000}").json["items"]
    assert {i["value"] for i in secs} >= {1, 2, 3}
    expect_error(
        api.get(path + f"?start={base}&end={base - 1}"), 400, "InvalidParameterValue.TimeRangeInvalid", "start"
    )
    expect_error(api.get(path + "?next=bm90LWEta2V5"), 400, "InvalidParameterValue.NextTokenInvalid", "next")
    expect_error(
        api.get(DEV.format(pid=lamp) + "/properties/nope/history"),
        404,
        "ResourceNotFound.PropertyNotExist",
        "property_id",
    )


def test_properties_answer_and_unknown_devices(api, lamp, recorder):
    run(report(lamp, "dev1", {"brightness": 12, "GPS_Info": {"latitude": 48.85, "longitude": 2.35}}))
    r = api.get(DEV.format(pid=lamp) + "/properties")
    conforms("GET", "/v1/products/{product_id}/devices/{device_name}/properties", r.json)
    values = {p["id"]: p for p in r.json["properties"]}
    assert values["GPS_Info"]["value"] == {"latitude": 48.85, "longitude": 2.35}
    assert values["brightness"]["name"] == "Brightness"
    expect_error(
        api.get(f"/v1/products/{lamp}/devices/ghost/properties"), 404, "ResourceNotFound.DeviceNotExist", "device_name"
    )
    expect_error(
        api.get("/v1/products/NOPRODUCT1/devices/dev1/properties"),
        404,
        "ResourceNotFound.ProductNotExist",
        "product_id",
    )


@pytest.mark.parametrize(
    "params, status, code, field",
    [
        ({"temperature": 20}, 400, "InvalidParameterValue.PropertyReadOnly", "params.temperature"),
        ({"brightness": 120}, 400, "InvalidParameterValue.ParamValueInvalid", "params.brightness"),
        ({"color": 1}, 400, "InvalidParameterValue.PropertyNotDefined", "params.color"),
        ({}, 400, "InvalidParameterValue.ParamsInvalid", "params"),
    ],
)
def test_control_validates_against_the_thing_model(api, lamp, recorder, params, status, code, field):
    err = expect_error(api.post(DEV.format(pid=lamp) + "/control", {"params": params}), status, code, field)
    assert err["message"]
    assert recorder.sent == []


def test_control_and_actions_refuse_what_cannot_work(api, lamp, recorder):
    path = DEV.format(pid=lamp)
    expect_error(api.post(path + "/control", {"params": "x"}), 400, "InvalidParameterValue.ParamsInvalid", "params")
    expect_error(
        api.post(path + "/control", {"params": {"brightness": 1}, "timeout": 99}),
        400,
        "InvalidParameterValue.TimeoutInvalid",
        "timeout",
    )
    expect_error(
        api.post(path + "/actions/explode", {"params": {}}), 404, "ResourceNotFound.ActionNotExist", "action_id"
    )
    expect_error(
        api.post(path + "/actions/unlock", {"params": {"order_id": "x"}}),
        409,
        "FailedOperation.DeviceOffline",
        "device_name",
    )
    connect(lamp, "dev1")
    expect_error(
        api.post(path + "/actions/unlock", {"params": {"order_id": ""}}),
        400,
        "InvalidParameterValue.ParamValueInvalid",
        "params.order_id",
    )
    expect_error(
        api.post(path + "/actions/unlock", {"params": {"order_id": "x"}, "mode": "later"}),
        400,
        "InvalidParameterValue.ModeInvalid",
        "mode",
    )
    assert api.patch(path, {"enabled": False}).status_code == 200
    expect_error(
        api.post(path + "/control", {"params": {"brightness": 1}}), 409, "FailedOperation.DeviceDisabled", "device_name"
    )
    expect_error(api.get(path + "/calls/clientToken-nope"), 404, "ResourceNotFound.CallNotExist", "client_token")


def test_async_action_and_control_answers_match_their_models(api, lamp, recorder):
    connect(lamp, "dev1")
    path = DEV.format(pid=lamp)
    r = api.post(path + "/actions/unlock", {"params": {"order_id": "x"}, "mode": "async"})
    conforms("POST", "/v1/products/{product_id}/devices/{device_name}/actions/{action_id}", r.json)
    c = api.get(path + f"/calls/{r.json['client_token']}")
    conforms("GET", "/v1/products/{product_id}/devices/{device_name}/calls/{client_token}", c.json)
    r = api.post(path + "/control", {"params": {"power_switch": 0}})
    conforms("POST", "/v1/products/{product_id}/devices/{device_name}/control", r.json)


def test_logs_and_events_filters(api, lamp, recorder):
    run(
        report(lamp, "dev1", {"brightness": 500}),
        up(
            lamp,
            "dev1",
            "thing/up/event",
            {
                "method": "event_post",
                "clientToken": "e",
                "eventId": "boot",
                "type": "info",
                "timestamp": 0,
                "params": {},
            },
        ),
    )
    path = DEV.format(pid=lamp)
    for kind in ("content", "presence", "diagnostic"):
        r = api.get(path + f"/logs?kind={kind}")
        assert r.status_code == 200, r.body
        conforms("GET", "/v1/products/{product_id}/devices/{device_name}/logs", r.json)
        assert all(i["kind"] == kind for i in r.json["items"])
    assert len(api.get(path + "/logs").json["items"]) == 4  # content is the default kind
    expect_error(api.get(path + "/logs?kind=everything"), 400, "InvalidParameterValue.LogKindInvalid", "kind")
    ev = api.get(path + "/events?type=info")
    conforms("GET", "/v1/products/{product_id}/devices/{device_name}/events", ev.json)
    assert [e["event_id"] for e in ev.json["items"]] == ["boot"]
    assert api.get(path + "/events?type=alert").json["items"] == []
    sub = api.get(path + "/subdevices")
    conforms("GET", "/v1/products/{product_id}/devices/{device_name}/subdevices", sub.json)


def test_openapi_documents_every_device_data_and_stats_route(api):
    doc = json.loads(api.get("/openapi.json", key=None).body)
    paths = doc["paths"]
    dev = "/v1/products/{product_id}/devices/{device_name}"
    for path, method in [
        (dev + "/properties", "get"),
        (dev + "/properties/{property_id}/history", "get"),
        (dev + "/control", "post"),
        (dev + "/actions/{action_id}", "post"),
        (dev + "/calls/{client_token}", "get"),
        (dev + "/events", "get"),
        (dev + "/logs", "get"),
        (dev + "/subdevices", "get"),
        ("/v1/stats/overview", "get"),
        ("/v1/stats/messages", "get"),
        ("/v1/stats/distribution", "get"),
    ]:
        op = paths[path][method]
        ok = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        assert ok.rsplit("/", 1)[1] in doc["components"]["schemas"], (path, ok)
    assert "504" in paths[dev + "/actions/{action_id}"]["post"]["responses"]
