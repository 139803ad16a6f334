"""Video summary tasks over moto and the Chalice test client (SPEC §11, issue 14).

Every input rule answers its code and field and writes nothing; a task is analysed by the jobs
worker's step (run here in-process), never in the request; a step that breaks is retried and the
task then failed with the reason; the sweep fails tasks left running; the result callback is
Echostr-verified when saved, its token is write-only, and a finished task's POST carries the
documented body, ``User-Agent: IotVideo/1.0`` and both signatures (checked by the test receiver
with its own code).  The cloud analyser runs against botocore ``Stubber``s: moto implements
neither Rekognition nor Bedrock, so both are faked here, and only here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from chalicelib.core import clock
from tests.helpers import MEDIA_SAMPLES, VIDEO_CALLBACK_KEYS
from tests.integration.helpers import (
    Api,
    FakeQueue,
    drain_forwards,
    expect_error,
    make_device,
    make_product,
    ok,
    partner,
)


@pytest.fixture()
def media(monkeypatch: pytest.MonkeyPatch, aws: None) -> Iterator[FakeQueue]:
    """The samples folder is the media root; job steps queue in memory (run by ``drain``); the
    clock is reset afterwards."""
    from chalicelib.core.config import reload_settings

    monkeypatch.setenv("FLEETBOX_MEDIA_ROOT", str(MEDIA_SAMPLES))
    monkeypatch.setenv("FLEETBOX_ALLOW_LOOPBACK", "true")
    reload_settings()
    yield FakeQueue(honour_delays=False).install(monkeypatch)
    monkeypatch.undo()
    reload_settings()
    clock.reset()  # tests move it to order tasks or pass a deadline


@pytest.fixture()
def cam(api: Api, recorder: Any, media: FakeQueue) -> str:
    """A product with the AI video function on and one device, ``cam1``."""
    pid = make_product(api, "Camera")
    make_device(api, pid, "cam1")
    assert ok(api.patch(f"/v1/products/{pid}", {"ai_video_enabled": True}))["ai_video_enabled"] is True
    return pid


def body(pid: str, url: str = "person-standing.jpg", **extra: Any) -> dict[str, Any]:
    now = clock.now_s()
    out = {
        "ProductId": pid,
        "DeviceName": "cam1",
        "ServiceType": "VideoToText",
        "StartTime": now - 600,
        "EndTime": now,
        "VideoURLs": [url],
    }
    if url.endswith((".jpg", ".png", ".webp")):
        out["Config"] = json.dumps({"IsImage": True})
    out.update(extra)
    return out


def finished(api: Api, queue: FakeQueue, task_id: str) -> dict[str, Any]:
    queue.drain()
    return ok(api.get(f"/v1/video-tasks/{task_id}"))


# ------------------------------------------------------------------ input rules


def test_every_input_rule_answers_its_code_and_field_and_writes_nothing(api, cam, media):
    now = clock.now_s()
    cases = [
        ({"ServiceType": "Summary"}, 400, "InvalidParameterValue.ServiceTypeInvalid", "ServiceType"),
        ({"StartTime": now - 31 * 86400}, 400, "InvalidParameterValue.StartInvalid", "StartTime"),
        ({"EndTime": now + 3660}, 400, "InvalidParameterValue.EndInvalid", "EndTime"),
        ({"StartTime": now - 10, "EndTime": now - 20}, 400, "InvalidParameterValue.TimeRangeInvalid", "EndTime"),
        ({"VideoURLs": []}, 400, "InvalidParameterValue.VideoURLsInvalid", "VideoURLs"),
        ({"VideoURLs": ["clip.txt"]}, 400, "InvalidParameterValue.VideoURLsInvalid", "VideoURLs[0]"),
        ({"Config": "{}"}, 400, "InvalidParameterValue.VideoURLsInvalid", "VideoURLs[0]"),  # an image needs IsImage
        (
            {"VideoURLs": ["empty-room.mp4"], "Config": '{"IsImage":true}'},
            400,
            "InvalidParameterValue.VideoURLsInvalid",
            "VideoURLs[0]",
        ),
        ({"VideoURLs": ["../../etc/x.jpg"]}, 400, "InvalidParameterValue.VideoURLsInvalid", "VideoURLs[0]"),
        ({"VideoURLs": ["/etc/x.jpg"]}, 400, "InvalidParameterValue.VideoURLsInvalid", "VideoURLs[0]"),
        ({"VideoURLs": ["file:///etc/x.jpg"]}, 400, "InvalidParameterValue.VideoURLsInvalid", "VideoURLs[0]"),
        ({"VideoURLs": ["missing.jpg"]}, 400, "InvalidParameterValue.VideoURLsInvalid", "VideoURLs[0]"),
        (
            {"VideoURLs": ["http://169.254.169.254/latest/a.mp4"], "Config": ""},
            400,
            "InvalidParameterValue.InvalidUrl",
            "VideoURLs[0]",
        ),
        ({"VideoURLs": ["ftp://example.com/a.mp4"]}, 400, "InvalidParameterValue.VideoURLsInvalid", "VideoURLs[0]"),
        ({"Config": "not json"}, 400, "InvalidParameterValue.ConfigInvalid", "Config"),
        ({"Config": '{"IsImage":"yes"}'}, 400, "InvalidParameterValue.ConfigInvalid", "Config.IsImage"),
        ({"Config": '{"Zoom":1}'}, 400, "InvalidParameterValue.ConfigInvalid", "Config.Zoom"),
        (
            {"Config": '{"IsImage":true,"MultiCameraLayout":"Vertical,Num=4"}'},
            400,
            "InvalidParameterValue.MultiCameraLayoutInvalid",
            "Config.MultiCameraLayout",
        ),
        (
            {"Config": '{"IsImage":true,"MultiCameraLayout":"Vertical,Num=2,Index=2"}'},
            400,
            "InvalidParameterValue.MultiCameraLayoutInvalid",
            "Config.MultiCameraLayout",
        ),
        ({"wait": 21}, 400, "InvalidParameterValue.WaitInvalid", "wait"),
        ({"ChannelId": -1}, 400, "InvalidParameterValue.ChannelIdInvalid", "ChannelId"),
        ({"CustomId": "x" * 65}, 400, "InvalidParameterValue.CustomIdInvalid", "CustomId"),
        ({"DeviceName": "cam 1"}, 400, "InvalidParameterValue.DeviceNameInvalid", "DeviceName"),
        ({"ProductId": "nope"}, 400, "InvalidParameterValue.ProductIdInvalid", "ProductId"),
        ({"ProductId": "ZZZZZZZZZZ"}, 404, "ResourceNotFound.ProductNotExist", "ProductId"),
        ({"DeviceName": "cam2"}, 404, "ResourceNotFound.DeviceNotExist", "DeviceName"),
        ({"ServiceType": "PackageDetect"}, 409, "UnsupportedOperation.ServiceTypeUnsupported", "ServiceType"),
    ]
    for change, status, code, field in cases:
        expect_error(api.post("/v1/video-tasks", body(cam, **change)), status, code, field)
    missing = body(cam)
    del missing["VideoURLs"]
    assert api.post("/v1/video-tasks", missing).json["error"]["field"] == "VideoURLs"
    # a product without the AI video function
    other = make_product(api, "Doorbell")
    make_device(api, other, "cam1")
    expect_error(api.post("/v1/video-tasks", body(other)), 409, "UnsupportedOperation.AIVideoNotEnabled", "ProductId")
    # nothing was written, nothing queued
    assert ok(api.get("/v1/video-tasks"))["items"] == [] and media.items == []


def test_the_switch_is_validated_and_works_on_a_released_product(api, cam):
    expect_error(
        api.patch(f"/v1/products/{cam}", {"ai_video_enabled": "yes"}),
        400,
        "InvalidParameterValue.EnabledInvalid",
        "ai_video_enabled",
    )
    ok(api.post(f"/v1/products/{cam}/publish"))
    assert ok(api.patch(f"/v1/products/{cam}", {"ai_video_enabled": False}))["ai_video_enabled"] is False
    expect_error(api.post("/v1/video-tasks", body(cam)), 409, "UnsupportedOperation.AIVideoNotEnabled", "ProductId")


# ------------------------------------------------------------------ the task's life


def test_a_task_is_analysed_on_the_worker_not_in_the_request(api, cam, media):
    created = ok(api.post("/v1/video-tasks", body(cam, CustomId="c-1", ChannelId=2)), 202)
    assert created["Status"] == 4 and created["Result"] == "" and created["TaskId"].startswith("vt")
    assert [kind for _, kind, _ in media.items] == ["video.analyse"]  # queued, not run
    done = finished(api, media, created["TaskId"])
    assert done["Status"] == 3 and done["Files"] == ["person-standing.jpg"]
    assert json.loads(done["Result"]) == {"Summary": "The image shows a person.", "DetectedClassifications": ["person"]}
    assert (done["CustomId"], done["ChannelId"], done["Analyser"]) == ("c-1", 2, "local")
    # the domain event, recorded for its subscribers
    from chalicelib.models.events import EventRecord

    kinds = {(e.kind, e.data.get("task_id")) for e in EventRecord.query(cam)}
    assert ("video.task.done", created["TaskId"]) in kinds


def test_nothing_found_is_status_2_with_an_empty_result(api, cam, media):
    created = ok(api.post("/v1/video-tasks", body(cam, "no-object-coffee.png")), 202)
    done = finished(api, media, created["TaskId"])
    assert (done["Status"], done["Result"]) == (2, "")


def test_a_vertical_layout_analyses_only_the_selected_view(api, cam, media, tmp_path, monkeypatch):
    import cv2

    from chalicelib.core.config import reload_settings

    # a frame whose halves differ: the coffee cup above, the standing man below
    top = cv2.imread(str(MEDIA_SAMPLES / "no-object-coffee.png"))
    bottom = cv2.imread(str(MEDIA_SAMPLES / "person-standing.jpg"))
    width = bottom.shape[1]
    top = cv2.resize(top, (width, bottom.shape[0]))
    cv2.imwrite(str(tmp_path / "stacked.jpg"), cv2.vconcat([top, bottom]))
    monkeypatch.setenv("FLEETBOX_MEDIA_ROOT", str(tmp_path))
    reload_settings()
    results = {}
    for layout in ("Vertical,Num=2,Index=1", "Vertical,Num=2,Index=0", "Vertical"):
        config = json.dumps({"IsImage": True, "MultiCameraLayout": layout})
        task = ok(api.post("/v1/video-tasks", body(cam, "stacked.jpg", Config=config)), 202)
        results[layout] = finished(api, media, task["TaskId"])["Status"]
    assert results == {"Vertical,Num=2,Index=1": 3, "Vertical,Num=2,Index=0": 2, "Vertical": 3}


def test_a_disguised_playlist_is_refused_before_the_decoder_follows_it(api, cam, media, tmp_path, monkeypatch):
    from chalicelib.core.config import reload_settings

    segment = MEDIA_SAMPLES / "people-hls" / "seg000.ts"
    (tmp_path / "clip.mp4").write_text(f"#EXTM3U\n#EXTINF:6,\n{segment}\n#EXT-X-ENDLIST\n")
    monkeypatch.setenv("FLEETBOX_MEDIA_ROOT", str(tmp_path))
    reload_settings()
    task = ok(api.post("/v1/video-tasks", body(cam, "clip.mp4")), 202)
    done = finished(api, media, task["TaskId"])
    assert done["Status"] == 1 and "HLS playlist" in done["Reason"]


def test_a_step_that_breaks_is_retried_then_the_task_fails_with_the_reason(api, cam, media, monkeypatch):
    from chalicelib.media.video import local

    calls = []

    def broken(*args: Any, **kw: Any) -> Any:
        calls.append(1)
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(local, "observe", broken)
    task = ok(api.post("/v1/video-tasks", body(cam)), 202)
    done = finished(api, media, task["TaskId"])
    assert len(calls) == 3  # video_max_attempts
    assert done["Status"] == 1
    assert "3 times" in done["Reason"] and "RuntimeError: decoder exploded" in done["Reason"]


def test_a_worker_killed_mid_analysis_is_redelivered_counted_and_failed(api, cam, media, monkeypatch):
    from chalicelib.media.video import local
    from chalicelib.services import jobs

    def killed(*args: Any, **kw: Any) -> Any:
        raise SystemExit("the worker died")  # escapes the step like a kill: nothing is recorded

    monkeypatch.setattr(local, "observe", killed)
    task = ok(api.post("/v1/video-tasks", body(cam)), 202)
    ((_, kind, step),) = media.items
    message = json.dumps({"kind": kind, "body": step})
    for _ in range(3):  # SQS redelivers the same message after each death
        with pytest.raises(SystemExit):
            jobs.run(message)
        assert ok(api.get(f"/v1/video-tasks/{task['TaskId']}"))["Status"] == 4
    jobs.run(message)
    done = ok(api.get(f"/v1/video-tasks/{task['TaskId']}"))
    assert done["Status"] == 1 and "crash or timeout" in done["Reason"]


def test_the_sweep_fails_a_task_left_running_past_its_deadline(api, cam, media):
    from chalicelib.core.config import settings
    from chalicelib.services import video

    task = ok(api.post("/v1/video-tasks", body(cam)), 202)
    media.items.clear()  # the message is lost
    assert video.sweep() == 0
    clock.shift(settings().video_deadline_s + 1)
    assert video.sweep() == 1
    done = ok(api.get(f"/v1/video-tasks/{task['TaskId']}"))
    assert done["Status"] == 1 and "did not finish within" in done["Reason"]
    assert video.sweep() == 0


def test_invoke_waits_for_the_result(api, cam, media, monkeypatch):
    from chalicelib.services import jobs

    # the worker runs as soon as the step is queued (on the local stack it is another thread)
    monkeypatch.setattr(jobs, "enqueue", lambda kind, b, delay_s=0: jobs.run(json.dumps({"kind": kind, "body": b})))
    resp = api.post("/v1/video-tasks", body(cam, wait=20))
    assert resp.status_code == 200 and resp.json["Completed"] is True and resp.json["Status"] == 3
    media.install(monkeypatch)  # back to a queue nobody drains: the wait runs out
    resp = api.post("/v1/video-tasks", body(cam, wait=0))
    assert resp.status_code == 202 and resp.json["Completed"] is False and resp.json["Status"] == 4


def test_lists_filter_and_page(api, cam, media):
    make_device(api, cam, "cam2")
    ids = []
    for dn in ("cam1", "cam2", "cam1"):  # a second apart: lists are newest first by CreateTime
        ids.append(ok(api.post("/v1/video-tasks", body(cam, DeviceName=dn)), 202)["TaskId"])
        clock.shift(1)
    media.drain()
    assert [t["TaskId"] for t in ok(api.get(f"/v1/video-tasks?product_id={cam}"))["items"]] == ids[::-1]
    cam2 = ok(api.get(f"/v1/video-tasks?product_id={cam}&device_names=cam2"))["items"]
    assert [t["TaskId"] for t in cam2] == [ids[1]]
    assert len(ok(api.get("/v1/video-tasks?status=3&service_type=VideoToText"))["items"]) == 3
    assert ok(api.get("/v1/video-tasks?status=1"))["items"] == []
    first = ok(api.get("/v1/video-tasks?limit=2"))
    second = ok(api.get(f"/v1/video-tasks?limit=2&next={first['next']}"))
    assert [t["TaskId"] for t in first["items"] + second["items"]] == ids[::-1] and second["next"] is None
    expect_error(api.get("/v1/video-tasks?status=9"), 400, "InvalidParameterValue.StatusInvalid", "status")
    expect_error(api.get("/v1/video-tasks/vtnope"), 404, "ResourceNotFound.VideoTaskNotExist", "TaskId")


def test_a_partner_of_another_product_neither_creates_reads_nor_lists_tasks(api, cam, media):
    theirs = ok(api.post("/v1/video-tasks", body(cam)), 202)["TaskId"]
    other = make_product(api, "Other")
    scoped = partner(api, other)
    expect_error(scoped.post("/v1/video-tasks", body(cam)), 403, "UnauthorizedOperation", None)
    assert scoped.get(f"/v1/video-tasks/{theirs}").status_code == 403
    assert ok(scoped.get("/v1/video-tasks"))["items"] == []
    assert scoped.get(f"/v1/video-tasks?product_id={cam}").status_code == 403
    assert scoped.put(f"/v1/products/{cam}/video-callback", {"url": "http://127.0.0.1:9/x"}).status_code == 403


# ------------------------------------------------------------------ the result callback


def test_the_callback_is_verified_write_only_and_posts_the_documented_body(api, cam, media, receiver):
    url = f"/v1/products/{cam}/video-callback"
    receiver.echo = False
    err = expect_error(
        api.put(url, {"url": receiver.url, "token": "tok123"}), 400, "InvalidParameterValue.InvalidCallbackUrl", "url"
    )
    assert "echostr" in err["message"].lower() or "answer" in err["message"].lower()
    receiver.echo = True
    saved = ok(api.put(url, {"url": receiver.url, "token": "tok123"}))
    assert saved["token"] == "tok123" and saved["secret"].startswith("whsec_")  # shown once
    assert receiver.gets[-1]["User-Agent"] == "IotVideo/1.0"
    receiver.secret = saved["secret"]
    shown = ok(api.get(url))
    assert (shown["url"], shown["token_set"], shown["secret_set"]) == (receiver.url, True, True)
    assert "token" not in shown and "secret" not in shown
    assert ok(api.get(url + "?include_secret=true"))["token"] == "tok123"
    # the same URL saved again without a token keeps the token and the secret
    again = ok(api.put(url, {"url": receiver.url}))
    assert "token" not in again and "secret" not in again and again["token_set"] is True

    task = ok(api.post("/v1/video-tasks", body(cam)), 202)
    finished(api, media, task["TaskId"])
    drain_forwards(lambda: receiver.ok_hits())
    (hit,) = receiver.ok_hits()
    assert set(hit.body) == VIDEO_CALLBACK_KEYS and hit.body["MsgType"] == "ai_analytics_result"
    assert (hit.body["TaskId"], hit.body["Status"], hit.body["DeviceName"]) == (task["TaskId"], 3, "cam1")
    assert json.loads(hit.body["Result"])["DetectedClassifications"] == ["person"]
    assert hit.headers["User-Agent"] == "IotVideo/1.0"
    assert hit.sha1_valid is True and hit.standard_valid is True


# ------------------------------------------------------------------ the cloud analyser (stubbed)


@pytest.fixture()
def cloud(monkeypatch: pytest.MonkeyPatch, media: FakeQueue) -> Iterator[tuple[Stubber, Stubber]]:
    """FLEETBOX_VIDEO_ANALYSER=cloud with botocore-stubbed Rekognition and Bedrock clients: moto
    has neither service, so these two are the only AWS calls this suite fakes by hand."""
    from chalicelib.core.config import reload_settings
    from chalicelib.media.video import cloud as cloud_backend

    monkeypatch.setenv("FLEETBOX_VIDEO_ANALYSER", "cloud")
    reload_settings()
    rekognition = boto3.client("rekognition", region_name="us-east-1")
    bedrock = boto3.client("bedrock-runtime", region_name="us-east-1")
    stubs = Stubber(rekognition), Stubber(bedrock)
    for s in stubs:
        s.activate()
    cloud_backend.use(rekognition=rekognition, bedrock=bedrock)
    yield stubs
    cloud_backend.use()
    for s in stubs:
        s.deactivate()


def _labels(*names: tuple[str, float, list[str]]) -> dict[str, Any]:
    return {
        "Labels": [{"Name": n, "Confidence": c, "Parents": [{"Name": p} for p in parents]} for n, c, parents in names]
    }


class Facts:
    """Matches the Converse ``messages`` whose one user text is JSON holding ``expected``."""

    def __init__(self, **expected: Any) -> None:
        self.expected = expected
        self.seen: dict[str, Any] = {}

    def __eq__(self, messages: object) -> bool:
        assert isinstance(messages, list) and len(messages) == 1, messages
        self.seen = json.loads(messages[0]["content"][0]["text"])
        return all(self.seen.get(k) == v for k, v in self.expected.items())


def _converse(text: str) -> dict[str, Any]:
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2},
        "metrics": {"latencyMs": 1},
    }


DETECT = {"Image": {"Bytes": ANY}, "MaxLabels": 50, "MinConfidence": 70.0}


def _expect_summary(bedrock: Stubber, words: str, facts: Facts) -> None:
    """Bedrock answers ``words`` to the one Converse call whose detections match ``facts``."""
    bedrock.add_response(
        "converse",
        _converse(words),
        {"modelId": "amazon.nova-lite-v1:0", "system": ANY, "messages": facts, "inferenceConfig": ANY},
    )


def test_the_cloud_path_maps_labels_and_has_bedrock_word_the_summary(api, cam, media, cloud):
    rek, bed = cloud
    rek.add_response(
        "detect_labels",
        _labels(("Man", 98.0, ["Person"]), ("Sedan", 91.0, ["Car", "Vehicle"]), ("Dog", 40.0, ["Animal"])),
        DETECT,
    )
    words = "A man stands beside a car."
    facts = Facts(source="image", detections={"person": [[0, 0]], "vehicle": [[0, 0]]})
    _expect_summary(bed, words, facts)
    task = ok(api.post("/v1/video-tasks", body(cam)), 202)
    done = finished(api, media, task["TaskId"])
    rek.assert_no_pending_responses()
    bed.assert_no_pending_responses()
    assert done["Status"] == 3 and done["Analyser"] == "cloud"
    # the dog under the confidence floor is not reported; Bedrock's words are the summary
    assert json.loads(done["Result"]) == {"Summary": words, "DetectedClassifications": ["person", "vehicle"]}
    assert "dog" not in json.dumps(facts.seen)


def test_the_cloud_path_reports_package_kinds_for_package_detect(api, cam, media, cloud):
    rek, bed = cloud
    rek.add_response("detect_labels", _labels(("Plastic Bag", 88.0, ["Bag"]), ("Envelope", 80.0, [])), DETECT)
    task = ok(api.post("/v1/video-tasks", body(cam, ServiceType="PackageDetect")), 202)
    done = finished(api, media, task["TaskId"])
    bed.assert_no_pending_responses()  # package kinds need no words
    assert json.loads(done["Result"]) == {"Summary": "plastic-bags file-bags", "DetectedClassifications": ["package"]}


def test_a_rekognition_error_fails_the_task_with_the_reason(api, cam, media, cloud):
    rek, _ = cloud
    rek.add_client_error("detect_labels", "AccessDeniedException", "not authorized to perform rekognition:DetectLabels")
    task = ok(api.post("/v1/video-tasks", body(cam)), 202)
    done = finished(api, media, task["TaskId"])
    assert done["Status"] == 1
    assert done["Reason"].startswith("Rekognition DetectLabels failed: AccessDeniedException")


def test_a_video_analysed_in_many_parts_gives_the_result_of_one_part(api, cam, media, monkeypatch):
    from chalicelib.core.config import reload_settings

    whole = ok(api.post("/v1/video-tasks", body(cam, "people-hls/index.m3u8")), 202)
    one_part = finished(api, media, whole["TaskId"])
    assert media.ran.count("video.analyse") == 1
    # a step budget so small that every step looks at one sample, checkpoints and queues the next
    monkeypatch.setenv("FLEETBOX_VIDEO_STEP_BUDGET_S", "0.000001")
    reload_settings()
    parts = ok(api.post("/v1/video-tasks", body(cam, "people-hls/index.m3u8")), 202)
    in_parts = finished(api, media, parts["TaskId"])
    assert media.ran.count("video.analyse") == 1 + 24  # 24 one-second samples, one step each
    assert in_parts["Status"] == one_part["Status"] == 3
    assert json.loads(in_parts["Result"]) == json.loads(one_part["Result"]), (in_parts["Result"], one_part["Result"])
    assert "motion without a recognised object" in json.loads(one_part["Result"])["Summary"]


def test_a_deployment_without_the_decoder_refuses_tasks_before_accepting_them(api, cam, media, monkeypatch):
    import importlib.util

    # the Lambda bundle has no OpenCV (it would exceed 250 MB): what find_spec answers there
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "cv2" else real(name, *a))
    err = expect_error(
        api.post("/v1/video-tasks", body(cam)), 409, "UnsupportedOperation.VideoAnalyserUnavailable", None
    )
    assert "cv2" in err["message"]
    assert ok(api.get("/v1/video-tasks"))["items"] == [] and media.items == []


# ------------------------------------------------------------------ the cloud analyser on AWS (no OpenCV)
#
# The Lambda bundle has no OpenCV (it would exceed Lambda's 250 MB).  ``no_decoder`` makes this
# process look like that bundle: ``find_spec`` answers None for cv2 and mediapipe (what the app
# asks), and ``import cv2`` fails (so a path that still decoded would fail here too).  Rekognition
# (DetectLabels and Rekognition Video) and Bedrock are botocore ``Stubber``s: moto has neither;
# the S3 copy Rekognition Video reads is real moto S3.


@pytest.fixture()
def no_decoder(monkeypatch: pytest.MonkeyPatch, cloud: Any) -> Iterator[None]:
    """The Lambda bundle's view (no cv2, no mediapipe), the files bucket bootstrap created."""
    import importlib.util
    import sys

    from chalicelib.core.config import reload_settings
    from chalicelib.services import files

    real = importlib.util.find_spec
    absent = ("cv2", "mediapipe")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in absent else real(name, *a))
    for name in absent:
        monkeypatch.setitem(sys.modules, name, None)  # `import cv2` raises ImportError
    monkeypatch.setenv("FLEETBOX_BUCKET", "fleetbox-test-files-123456789012")  # what bootstrap creates
    reload_settings()
    files.forget()
    yield
    files.forget()


class Sent:
    """Matches any ``Image={"Bytes": …}`` and keeps the bytes DetectLabels was sent."""

    def __init__(self) -> None:
        self.images: list[bytes] = []

    def __eq__(self, image: object) -> bool:
        assert isinstance(image, dict) and set(image) == {"Bytes"}, image
        self.images.append(image["Bytes"])
        return True


def test_on_aws_an_image_goes_to_rekognition_as_it_is(api, cam, media, cloud, no_decoder):
    rek, bed = cloud
    sent = Sent()
    rek.add_response(
        "detect_labels", _labels(("Person", 97.0, [])), {"Image": sent, "MaxLabels": 50, "MinConfidence": 70.0}
    )
    bed.add_response("converse", _converse("A person stands in the picture."), None)
    task = ok(api.post("/v1/video-tasks", body(cam)), 202)
    done = finished(api, media, task["TaskId"])
    assert done["Status"] == 3, done
    assert json.loads(done["Result"])["DetectedClassifications"] == ["person"]
    # no decoding, no re-encoding: the JPEG's own bytes
    assert sent.images == [(MEDIA_SAMPLES / "person-standing.jpg").read_bytes()]


def test_on_aws_a_vertical_layout_sends_only_the_selected_view_cropped_with_pillow(
    api, cam, media, cloud, no_decoder, tmp_path, monkeypatch
):
    import io

    from PIL import Image, ImageChops, ImageStat

    from chalicelib.core.config import reload_settings

    bottom = Image.open(MEDIA_SAMPLES / "person-standing.jpg").convert("RGB")
    top = Image.open(MEDIA_SAMPLES / "no-object-coffee.png").convert("RGB").resize(bottom.size)
    stacked = Image.new("RGB", (bottom.width, bottom.height * 2))
    stacked.paste(top, (0, 0))
    stacked.paste(bottom, (0, bottom.height))
    stacked.save(tmp_path / "stacked.png")
    monkeypatch.setenv("FLEETBOX_MEDIA_ROOT", str(tmp_path))
    reload_settings()
    rek, bed = cloud
    sent = Sent()
    rek.add_response(
        "detect_labels", _labels(("Person", 97.0, [])), {"Image": sent, "MaxLabels": 50, "MinConfidence": 70.0}
    )
    bed.add_response("converse", _converse("A person stands in the lower view."), None)
    config = json.dumps({"IsImage": True, "MultiCameraLayout": "Vertical,Num=2,Index=1"})
    task = ok(api.post("/v1/video-tasks", body(cam, "stacked.png", Config=config)), 202)
    done = finished(api, media, task["TaskId"])
    rek.assert_no_pending_responses()
    assert done["Status"] == 3, done
    assert len(sent.images) == 1  # one view, one call
    view = Image.open(io.BytesIO(sent.images[0])).convert("RGB")
    expected_width = min(bottom.width, 1280)
    assert view.size == (expected_width, round(bottom.height * expected_width / bottom.width))

    def distance(a: Image.Image) -> float:
        return sum(ImageStat.Stat(ImageChops.difference(view, a.resize(view.size))).mean) / 3

    # what was sent is the lower half (JPEG-close), not the upper one
    assert distance(bottom) < 8 < 30 < distance(top), (distance(bottom), distance(top))


def _label_hits(*hits: tuple[int, str, float, list[str]]) -> list[dict[str, Any]]:
    return [
        {"Timestamp": ms, "Label": {"Name": n, "Confidence": c, "Parents": [{"Name": p} for p in parents]}}
        for ms, n, c, parents in hits
    ]


def _job_page(status: str, hits: list[dict[str, Any]] | None = None, token: str | None = None) -> dict[str, Any]:
    page: dict[str, Any] = {"JobStatus": status}
    if status == "SUCCEEDED":
        page.update(
            VideoMetadata={"Codec": "h264", "DurationMillis": 12_000, "Format": "QuickTime / MOV", "FrameRate": 25.0},
            Labels=hits or [],
            LabelModelVersion="3.0",
        )
    if token:
        page["NextToken"] = token
    return page


def _input_copies() -> list[str]:
    from chalicelib.core.config import settings
    from chalicelib.services import files

    listed = files.s3().list_objects_v2(Bucket=settings().bucket, Prefix="video-input/")
    return [o["Key"] for o in listed.get("Contents", [])]


def test_on_aws_an_mp4_goes_through_rekognition_video_in_short_re_queued_steps(api, cam, media, cloud, no_decoder):
    from chalicelib.core.config import settings
    from chalicelib.models.video import VideoTaskRecord
    from chalicelib.services import video

    rek, bed = cloud
    media.honour_delays = True  # the poll's delay counts on the test clock
    task = ok(api.post("/v1/video-tasks", body(cam, "people-walking.mp4")), 202)
    tid, key = task["TaskId"], f"video-input/{task['TaskId']}.mp4"
    start = {
        "Video": {"S3Object": {"Bucket": settings().bucket, "Name": key}},
        "MinConfidence": 70.0,
        "ClientRequestToken": tid,
        "JobTag": tid,
    }
    rek.add_response("start_label_detection", {"JobId": "job-1"}, start)
    media.drain()
    # step 1: the file copied to the bucket, the job started and remembered, the next step delayed
    assert _input_copies() == [key]
    assert VideoTaskRecord.get(tid).video_job == "job-1"
    assert ok(api.get(f"/v1/video-tasks/{tid}"))["Status"] == 4
    poll = {"JobId": "job-1", "MaxResults": 1000, "SortBy": "TIMESTAMP"}
    rek.add_response("get_label_detection", _job_page("IN_PROGRESS"), poll)
    assert media.ran.count("video.analyse") == 1
    media.advance(video.REKOGNITION_POLL_S - 1)
    assert media.ran.count("video.analyse") == 1  # the poll waits its delay: no step spins
    media.advance(1)
    assert media.ran.count("video.analyse") == 2
    rek.assert_no_pending_responses()
    assert ok(api.get(f"/v1/video-tasks/{tid}"))["Status"] == 4  # still running: re-queued again
    # done: two result pages, read in one step; a person in seconds 0-1 (counts) and alone at
    # 5 s (one second: does not count), a car 7-9 s, a dog under the confidence floor
    page1 = _label_hits(
        (0, "Person", 99.0, []), (500, "Man", 95.0, ["Person"]), (1000, "Person", 98.0, []), (3000, "Dog", 40.0, [])
    )
    page2 = _label_hits((5000, "Person", 90.0, []), (7000, "Car", 92.0, ["Vehicle"]), (8000, "Sedan", 88.0, ["Car"]))
    page2 += _label_hits((9000, "Car", 91.0, []))
    rek.add_response("get_label_detection", _job_page("SUCCEEDED", page1, "t2"), poll)
    rek.add_response("get_label_detection", _job_page("SUCCEEDED", page2), {**poll, "NextToken": "t2"})
    words = "A person walks in at the start; a car is there from 0:07 to 0:09."
    facts = Facts(source="video", detections={"person": [[0, 1]], "vehicle": [[7, 9]]})
    _expect_summary(bed, words, facts)
    media.advance(video.REKOGNITION_POLL_S)
    rek.assert_no_pending_responses()
    bed.assert_no_pending_responses()
    done = ok(api.get(f"/v1/video-tasks/{tid}"))
    assert done["Status"] == 3 and done["Analyser"] == "cloud"
    assert json.loads(done["Result"]) == {"Summary": words, "DetectedClassifications": ["person", "vehicle"]}
    assert facts.seen["motion_without_recognised_object"] == []  # Rekognition Video reports no motion
    assert _input_copies() == []  # the copy is deleted once the task is final


def test_on_aws_a_failed_rekognition_video_job_fails_the_task_with_its_reason(api, cam, media, cloud, no_decoder):
    rek, bed = cloud
    task = ok(api.post("/v1/video-tasks", body(cam, "empty-room.mp4")), 202)
    rek.add_response("start_label_detection", {"JobId": "job-2"}, None)
    rek.add_response("get_label_detection", {"JobStatus": "FAILED", "StatusMessage": "Unsupported codec: hevc"}, None)
    done = finished(api, media, task["TaskId"])
    rek.assert_no_pending_responses()
    bed.assert_no_pending_responses()
    assert done["Status"] == 1
    assert done["Reason"] == "Rekognition Video failed: Unsupported codec: hevc"
    assert _input_copies() == []


def test_on_aws_a_throttled_poll_is_tried_again_and_an_empty_video_is_status_2(api, cam, media, cloud, no_decoder):
    rek, bed = cloud
    task = ok(api.post("/v1/video-tasks", body(cam, "empty-room.mp4")), 202)
    rek.add_response("start_label_detection", {"JobId": "job-3"}, None)
    rek.add_client_error("get_label_detection", "ThrottlingException", "Rate exceeded")
    rek.add_response("get_label_detection", _job_page("SUCCEEDED", []), None)
    done = finished(api, media, task["TaskId"])
    rek.assert_no_pending_responses()
    bed.assert_no_pending_responses()  # nothing detected: no words to ask for
    assert done["Status"] == 2 and done["Result"] == "" and done["Reason"] is None
    assert _input_copies() == []


def test_on_aws_a_refused_start_fails_the_task_with_the_service_code(api, cam, media, cloud, no_decoder):
    rek, _ = cloud
    task = ok(api.post("/v1/video-tasks", body(cam, "empty-room.mp4")), 202)
    rek.add_client_error("start_label_detection", "AccessDeniedException", "not authorized: s3:GetObject")
    done = finished(api, media, task["TaskId"])
    assert done["Status"] == 1
    assert done["Reason"].startswith("Rekognition StartLabelDetection failed: AccessDeniedException")
    assert _input_copies() == []


def test_on_aws_what_needs_a_decoder_is_refused_at_create_with_its_code_and_field(
    api, cam, media, cloud, no_decoder, tmp_path, monkeypatch
):
    from chalicelib.core.config import reload_settings

    for name in ("clip.avi", "clip.mov", "clip.mp4", "stacked.png"):
        (tmp_path / name).write_bytes(b"\0" * 16)
    segment = (MEDIA_SAMPLES / "people-hls" / "seg000.ts").resolve()
    (tmp_path / "live.m3u8").write_text(f"#EXTM3U\n#EXTINF:6,\n{segment}\n#EXT-X-ENDLIST\n")
    monkeypatch.setenv("FLEETBOX_MEDIA_ROOT", str(tmp_path))
    reload_settings()
    err = expect_error(
        api.post("/v1/video-tasks", body(cam, "live.m3u8")),
        409,
        "UnsupportedOperation.VideoFormatUnsupported",
        "VideoURLs[0]",
    )
    assert "HLS playlist" in err["message"] and "MP4 and MOV" in err["message"]
    err = expect_error(
        api.post("/v1/video-tasks", body(cam, "clip.mp4", VideoURLs=["clip.mp4", "clip.avi"])),
        409,
        "UnsupportedOperation.VideoFormatUnsupported",
        "VideoURLs[1]",
    )
    assert ".avi file" in err["message"]
    layout = json.dumps({"MultiCameraLayout": "Vertical,Num=2,Index=1"})
    err = expect_error(
        api.post("/v1/video-tasks", body(cam, "clip.mov", Config=layout)),
        409,
        "UnsupportedOperation.MultiCameraLayoutUnsupported",
        "Config.MultiCameraLayout",
    )
    assert "Rekognition Video" in err["message"]
    assert ok(api.get("/v1/video-tasks"))["items"] == [] and media.items == []
    # what it can do is accepted: a whole stacked video, a cropped still
    both = json.dumps({"MultiCameraLayout": "Vertical"})
    ok(api.post("/v1/video-tasks", body(cam, "clip.mov", Config=both)), 202)
    still = json.dumps({"IsImage": True, "MultiCameraLayout": "Vertical,Num=2,Index=1"})
    ok(api.post("/v1/video-tasks", body(cam, "stacked.png", Config=still)), 202)
