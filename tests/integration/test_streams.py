"""Message push data streams (SPEC §9.3) over moto: CRUD, all-AND / all-OR filters, the signed
custom push body, disabled streams processing nothing."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from chalicelib.protocol.events import UplinkMessage
from tests.integration.helpers import MODEL, drain_forwards, expect_error
from tests.receiver import Receiver


@pytest.fixture()
def lamp(api: Any, product: dict[str, Any], recorder: Any) -> tuple[str, str]:
    """This module's lamp: a device ``lamp1`` with the alias Kitchen (instead of conftest's ``dev1``)."""
    pid = product["product_id"]
    assert api.put(f"/v1/products/{pid}/thing-model", MODEL).status_code == 200
    assert api.post(f"/v1/products/{pid}/devices", {"device_name": "lamp1"}).status_code == 201
    assert api.patch(f"/v1/products/{pid}/devices/lamp1", {"tags": {"alias": "Kitchen"}}).status_code == 200
    return pid, "lamp1"


def report(pid: str, dn: str, params: dict[str, Any]) -> None:
    from chalicelib.services import uplink

    body = {"method": "report", "clientToken": "t1", "params": params}
    uplink.process_batch(
        [
            UplinkMessage(
                topic=f"thing/up/property/{pid}/{dn}",
                payload=json.dumps(body).encode(),
                client_id=f"{pid}{dn}",
                timestamp_ms=int(time.time() * 1000),
            )
        ]
    )


def stream(api: Any, pid: str, url: str, match: str, **extra: Any) -> dict[str, Any]:
    body = {
        "name": f"hot-{match}",
        "product_id": pid,
        "properties": ["temperature", "brightness"],
        "match": match,
        "conditions": [
            {"property": "temperature", "op": ">", "value": 30},
            {"property": "brightness", "op": ">=", "value": 60},
        ],
        "outputs": [
            {
                "type": "custom_push",
                "url": url,
                "token": "tok123",
                "title": "${Alias} is hot",
                "content": "$DeviceName of ${ProductId}: ${temperature} C",
            }
        ],
        "enabled": True,
        **extra,
    }
    resp = api.post("/v1/streams", body)
    assert resp.status_code == 201, resp.body
    return resp.json


def test_stream_validation(api: Any, loopback: None, receiver: Receiver, lamp: tuple[str, str]) -> None:
    pid, _ = lamp
    base = {"name": "s", "product_id": pid, "outputs": [{"type": "chat", "channel": "x"}]}
    expect_error(api.post("/v1/streams", base), 400, "InvalidParameterValue.ChatChannelInvalid", "outputs[0].channel")
    bad = dict(
        base,
        outputs=[{"type": "custom_push", "url": receiver.url}],
        conditions=[{"property": "temperature", "op": "~", "value": 1}],
    )
    expect_error(api.post("/v1/streams", bad), 400, "InvalidParameterValue.ConditionInvalid", "conditions[0].op")
    expect_error(
        api.post(
            "/v1/streams", dict(base, product_id="NOPE000000", outputs=[{"type": "custom_push", "url": receiver.url}])
        ),
        404,
        "ResourceNotFound.ProductNotExist",
        "product_id",
    )
    receiver.echo = False
    created = api.post(
        "/v1/streams", dict(base, outputs=[{"type": "custom_push", "url": receiver.url, "token": "tok123"}])
    ).json
    expect_error(
        api.post(f"/v1/streams/{created['id']}/enable"),
        400,
        "InvalidParameterValue.InvalidCallbackUrl",
        "outputs[0].url",
    )
    assert api.put(f"/v1/streams/{created['id']}", {"name": "renamed"}).json["name"] == "renamed"
    assert [s["id"] for s in api.get("/v1/streams").json["items"]] == [created["id"]]
    assert api.delete(f"/v1/streams/{created['id']}").status_code == 204
    expect_error(api.get(f"/v1/streams/{created['id']}"), 404, "ResourceNotFound.StreamNotExist", "stream_id")


def test_all_and_all_or_filters_and_the_signed_push(
    api: Any, loopback: None, receiver: Receiver, lamp: tuple[str, str]
) -> None:
    pid, dn = lamp
    and_stream = stream(api, pid, receiver.url, "all")
    or_stream = stream(api, pid, receiver.url.replace("/hook", "/or"), "any")
    receiver.secret = None
    report(pid, dn, {"temperature": 35.5, "brightness": 50})  # OR passes, AND does not
    # report() returns once the uplink's hand-off queued every push, and drain_forwards() returns
    # only on an empty forward queue: an AND push would have been delivered by then
    drain_forwards(lambda: len(receiver.ok_hits()) >= 1)
    (hit,) = receiver.ok_hits()
    assert hit.sha1_valid is True
    assert set(hit.body) == {"RequestId", "ProductId", "DeviceName", "MsgTitle", "MsgContent"}
    assert hit.body["ProductId"] == pid and hit.body["DeviceName"] == dn
    assert hit.body["MsgTitle"] == "Kitchen is hot" and hit.body["MsgContent"] == f"lamp1 of {pid}: 35.5 C"
    from standardwebhooks import Webhook

    Webhook(or_stream["outputs"][0]["secret"]).verify(hit.raw, {k.lower(): v for k, v in hit.headers.items()})
    log = api.get(f"/v1/deliveries?target=stream/{or_stream['id']}").json["items"]
    assert len(log) == 1 and log[0]["ok"]

    report(pid, dn, {"temperature": 31, "brightness": 80})  # both pass
    drain_forwards(lambda: len(receiver.ok_hits()) == 3)
    report(pid, dn, {"brightness": 10})  # neither: temperature absent
    report(pid, dn, {"temperature": 500, "brightness": 10})  # 500 is refused by the thing model
    assert api.post(f"/v1/streams/{and_stream['id']}/disable").json["enabled"] is False
    assert api.post(f"/v1/streams/{or_stream['id']}/disable").json["enabled"] is False
    report(pid, dn, {"temperature": 99, "brightness": 99})  # disabled: nothing
    drain_forwards(lambda: True, timeout=3)  # the queue is empty: nothing was pushed
    assert len(receiver.ok_hits()) == 3
