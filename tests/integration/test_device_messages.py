"""``POST /v1/products/{pid}/devices/{dn}/messages``: a message to one of the device's custom topics
(Tencent's PublishMessage; the cloud-API action runs this route)."""

from __future__ import annotations

import base64

from tests.integration.helpers import Api, Recorder, make_device, make_product


def test_a_message_goes_to_a_custom_topic_the_device_subscribes_to(api: Api, recorder: Recorder) -> None:
    pid = make_product(api, "Raw lamp", data_protocol="custom")
    make_device(api, pid, "dev1")
    path = f"/v1/products/{pid}/devices/dev1/messages"

    sent = api.post(path, {"topic": f"{pid}/dev1/control", "payload": "hello", "qos": 1})
    assert sent.status_code == 200, sent.body
    assert sent.json == {
        "product_id": pid,
        "device_name": "dev1",
        "topic": f"{pid}/dev1/control",
        "qos": 1,
        "size": 5,
        "delivered": True,
    }
    assert recorder.raw[-1] == (f"{pid}/dev1/control", b"hello", 1)
    # bytes travel base64-encoded and arrive as they were
    blob = bytes(range(256))
    got = api.post(
        path, {"topic": f"{pid}/dev1/data", "payload": base64.b64encode(blob).decode(), "payload_encoding": "base64"}
    )
    assert got.status_code == 200 and got.json["size"] == 256 and recorder.raw[-1] == (f"{pid}/dev1/data", blob, 0)
    # the content log has it
    logs = api.get(f"/v1/products/{pid}/devices/dev1/logs?kind=content").json["items"]
    assert any(e["topic"] == f"{pid}/dev1/control" and e["direction"] == "down" for e in logs)

    # a device that is not listening: accepted, reported undelivered, diagnosed
    recorder.listening = False
    missed = api.post(path, {"topic": f"{pid}/dev1/control", "payload": "anyone?"})
    assert missed.status_code == 200 and missed.json["delivered"] is False
    diagnostics = api.get(f"/v1/products/{pid}/devices/dev1/logs?kind=diagnostic").json["items"]
    assert any(e["code"] == "Pub_To_Dev_No_Subscriber" for e in diagnostics)


def test_refusals_name_the_rule(api: Api, recorder: Recorder) -> None:
    pid = make_product(api, "Raw lamp", data_protocol="custom")
    make_device(api, pid, "dev1")
    make_device(api, pid, "dev2")
    path = f"/v1/products/{pid}/devices/dev1/messages"
    before = len(recorder.raw)

    def refused(body: dict, code: str, field: str) -> None:
        resp = api.post(path, body)
        assert resp.status_code == 400 or resp.status_code == 404, resp.body
        assert (resp.json["error"]["code"], resp.json["error"].get("field")) == (code, field), resp.body

    refused({"topic": f"{pid}/dev2/control", "payload": "x"}, "InvalidParameterValue.TopicInvalid", "topic")
    refused({"topic": f"{pid}/dev1/+", "payload": "x"}, "InvalidParameterValue.TopicInvalid", "topic")
    refused({"topic": f"{pid}/dev1/nothere", "payload": "x"}, "ResourceNotFound.TopicNotExist", "topic")
    # devices only publish to "event": nobody may send to it
    refused({"topic": f"{pid}/dev1/event", "payload": "x"}, "InvalidParameterValue.TopicPermissionInvalid", "topic")
    refused(
        {"topic": f"{pid}/dev1/control", "payload": "%%%", "payload_encoding": "base64"},
        "InvalidParameterValue.PayloadInvalid",
        "payload",
    )
    refused({"topic": f"{pid}/dev1/control", "payload": "x" * 40000}, "InvalidParameterValue.PayloadInvalid", "payload")
    refused({"topic": f"{pid}/dev1/control", "payload": "x", "qos": 2}, "InvalidParameterValue.QosInvalid", "qos")
    assert len(recorder.raw) == before  # nothing refused was sent

    # a thing-model product has no custom topics
    tm = make_product(api, "Model lamp")
    make_device(api, tm, "dev1")
    resp = api.post(f"/v1/products/{tm}/devices/dev1/messages", {"topic": f"{tm}/dev1/control", "payload": "x"})
    assert resp.status_code == 404 and resp.json["error"]["code"] == "ResourceNotFound.TopicNotExist"
    # a disabled device receives nothing
    api.patch(f"/v1/products/{pid}/devices/dev1", {"enabled": False})
    resp = api.post(path, {"topic": f"{pid}/dev1/control", "payload": "x"})
    assert resp.status_code == 409 and resp.json["error"]["code"] == "FailedOperation.DeviceDisabled"
