"""The cloud analyser: Amazon Rekognition, a Bedrock model for the words — no decoder needed on AWS.

OpenCV does not fit in the Lambda bundle, so on AWS this backend never decodes video itself:

* **images** (``IsImage``) — the file's bytes go to ``DetectLabels`` as they are (JPEG or PNG up
  to :data:`MAX_IMAGE_BYTES`); a multi-camera layout is cropped with Pillow first, one
  ``DetectLabels`` per selected view (other formats and larger files are re-encoded as JPEG);
* **MP4 and MOV files** (:data:`STORED_VIDEO`) with the whole frame analysed — **Amazon
  Rekognition Video**: the service layer copies the file to the app's bucket, :func:`start_video`
  starts ``StartLabelDetection`` and later job steps page ``GetLabelDetection``
  (:func:`video_labels`) until the job is done; its timed labels become one sample per second
  (:func:`per_second`), so the shared persistence rule (a class counts in 2 consecutive seconds)
  and the summary code apply unchanged.  Rekognition Video reports no motion, so its summaries
  have no "motion without a recognised object";
* anything else (HLS playlists, AVI/MKV/… files, one view of a stacked video) needs frames
  sampled by OpenCV (``frames.watch``, one ``DetectLabels`` per sampled view, as the local
  analyser samples): possible where OpenCV is installed (the local stack), refused when a task is
  created elsewhere (:func:`needs_decoder`).

Rekognition's labels (and their parents) map to the SPEC §11 classes by
:data:`LABELS` and to the PackageDetect kinds by :data:`PACKAGE_LABELS`; labels under
``settings().rekognition_min_confidence`` are ignored.  The timed detections then go to a
Bedrock model through the Converse API (``settings().bedrock_model_id``), which writes the
summary from those facts only; with nothing detected and nothing moving no model is asked and
the result is empty.

Classes it can detect: person, vehicle, dog, cat, fire, smoke, package, license plate, and the
package kinds plastic-bags, file-bags, paper-bags (as far as Rekognition's label set names them).

A Rekognition or Bedrock error fails the task with the service's error code and message as the
reason (:class:`CloudError`); throttling, a 5xx or a connection error is tried again on a later
step instead (:class:`CloudBusy`, counted against the task's attempts).  IAM: ``rekognition:DetectLabels``, ``rekognition:StartLabelDetection``,
``rekognition:GetLabelDetection``, ``s3:GetObject`` on the copied video (Rekognition Video reads it
with the caller's permissions) and ``bedrock:InvokeModel`` on the model (README,
.chalice/policy-*.json).
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ...core.config import settings
from .frames import Frame, MediaError, crop_rows, jpeg, watch
from .timeline import CLASSES, PACKAGE_KINDS, Layout, Sample, summary

NAME = "cloud"
#: the packages it always needs (``media.video.missing``): none beyond the bundle's boto3 and
#: Pillow; OpenCV only for the inputs :func:`needs_decoder` names
REQUIRES: tuple[str, ...] = ()
#: what Rekognition Video reads from S3 (MPEG-4 and QuickTime containers, H.264)
STORED_VIDEO = (".mp4", ".mov")
#: DetectLabels takes image bytes up to 5 MB, JPEG or PNG
MAX_IMAGE_BYTES = 5 * 1024 * 1024
#: GetLabelDetection's largest page
PAGE = 1000
#: the classes this backend can report
DETECTS = CLASSES + PACKAGE_KINDS

#: Rekognition label name -> SPEC class
LABELS = {
    **dict.fromkeys(("Person", "Human", "Man", "Woman", "Boy", "Girl", "Child", "Adult", "Pedestrian"), "person"),
    **dict.fromkeys(
        (
            "Vehicle",
            "Car",
            "Truck",
            "Bus",
            "Motorcycle",
            "Van",
            "Automobile",
            "Pickup Truck",
            "Taxi",
            "Suv",
            "Sedan",
            "Sports Car",
            "Ambulance",
            "Fire Truck",
            "Tractor",
            "Scooter",
        ),
        "vehicle",
    ),
    **dict.fromkeys(("Dog", "Puppy", "Canine"), "dog"),
    **dict.fromkeys(("Cat", "Kitten"), "cat"),
    **dict.fromkeys(("Fire", "Flame", "Bonfire", "Wildfire"), "fire"),
    **dict.fromkeys(("Smoke",), "smoke"),
    **dict.fromkeys(("Package", "Package Delivery", "Box", "Cardboard", "Carton"), "package"),
    **dict.fromkeys(("License Plate",), "license plate"),
}
#: Rekognition label name -> PackageDetect kind (each also counts as a package)
PACKAGE_LABELS = {
    "Plastic Bag": "plastic-bags",
    "Paper Bag": "paper-bags",
    "Shopping Bag": "paper-bags",
    "Envelope": "file-bags",
    "File Folder": "file-bags",
    "File Binder": "file-bags",
}


class CloudError(MediaError):
    """Rekognition or Bedrock refused or failed: the task fails with this reason."""


_clients: dict[str, Any] = {}


def use(**clients: Any) -> None:
    """Install clients (``rekognition``, ``bedrock``): tests hand in botocore-stubbed ones."""
    _clients.clear()
    _clients.update(clients)


def _client(name: str, service: str) -> Any:
    client = _clients.get(name)
    if client is None:
        import boto3

        client = _clients[name] = boto3.client(service, region_name=settings().region)
    return client


def classes_of(labels: Iterable[dict[str, Any]], min_confidence: float) -> frozenset[str]:
    """The SPEC classes and package kinds a ``DetectLabels`` answer names."""
    found: set[str] = set()
    for label in labels:
        if float(label.get("Confidence") or 0) < min_confidence:
            continue
        names = [label.get("Name", "")] + [p.get("Name", "") for p in label.get("Parents") or []]
        for name in names:
            if name in LABELS:
                found.add(LABELS[name])
            if name in PACKAGE_LABELS:
                found.update((PACKAGE_LABELS[name], "package"))
    return frozenset(found)


class CloudBusy(Exception):
    """Rekognition or Bedrock was busy or unreachable (throttled, a 5xx, too many running video
    jobs, a connection error): not a verdict on the media, so the step is tried again later, as
    often as ``video_max_attempts`` allows."""


#: error codes that say "later", not "never"
BUSY = frozenset(
    {
        "ThrottlingException",
        "ProvisionedThroughputExceededException",
        "LimitExceededException",
        "ServiceQuotaExceededException",
        "InternalServerError",
        "InternalServerException",
        "ServiceUnavailableException",
        "ModelNotReadyException",
    }
)


def _failure(exc: Exception, service: str) -> Exception:
    err = (getattr(exc, "response", None) or {}).get("Error") or {}
    code = err.get("Code") or type(exc).__name__
    why = f"{service} failed: {code}: {str(err.get('Message') or exc)[:200]}"
    return CloudBusy(why) if code in BUSY or isinstance(exc, BotoCoreError) else CloudError(why)


def detect(view: Any) -> frozenset[str]:
    """One decoded view (an OpenCV array) → the classes Rekognition sees in it."""
    return _labels_in(jpeg(view))


def needs_decoder(suffix: str, layout: Layout, *, is_image: bool) -> bool:
    """Whether analysing this input takes OpenCV: not for images, nor for an MP4/MOV file analysed
    whole (every stacked view selected is the whole frame), which Rekognition Video reads."""
    return not (is_image or stored_video(suffix, layout))


def stored_video(suffix: str, layout: Layout) -> bool:
    """Whether a video (file extension ``suffix``) goes to Rekognition Video as it is."""
    return suffix.lower() in STORED_VIDEO and len(layout.selected) == layout.views


def image_views(path: str, layout: Layout) -> list[bytes]:
    """The bytes DetectLabels gets for an image: the file itself when it is a JPEG or PNG of at
    most 5 MB shown whole, else each selected view cropped (Pillow) and encoded as JPEG."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            whole = layout.views == 1 and image.format in ("JPEG", "PNG")
            if whole and os.path.getsize(path) <= MAX_IMAGE_BYTES:
                with open(path, "rb") as fh:
                    return [fh.read()]
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as exc:
        raise MediaError(f"the image cannot be decoded (JPEG, PNG, BMP or WebP expected): {exc}") from None
    views = [rgb.crop((0, top, rgb.width, bottom)) for top, bottom in crop_rows(rgb.height, layout)]
    return [_jpeg_bytes(view) for view in views]


def _jpeg_bytes(image: Any, width: int = 1280) -> bytes:
    if image.width > width:
        image = image.resize((width, max(1, round(image.height * width / image.width))))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


def _labels_in(data: bytes) -> frozenset[str]:
    min_confidence = settings().rekognition_min_confidence
    try:
        answer = _client("rekognition", "rekognition").detect_labels(
            Image={"Bytes": data}, MaxLabels=50, MinConfidence=min_confidence
        )
    except (ClientError, BotoCoreError) as exc:
        raise _failure(exc, "Rekognition DetectLabels") from None
    return classes_of(answer.get("Labels") or [], min_confidence)


def start_video(bucket: str, key: str, task_id: str) -> str:
    """Start Rekognition Video label detection on ``s3://bucket/key``; the job id.  The task id is
    the idempotency token: a redelivered step gets the same job, not a second one."""
    try:
        answer = _client("rekognition", "rekognition").start_label_detection(
            Video={"S3Object": {"Bucket": bucket, "Name": key}},
            MinConfidence=settings().rekognition_min_confidence,
            ClientRequestToken=task_id,
            JobTag=task_id,
        )
    except (ClientError, BotoCoreError) as exc:
        raise _failure(exc, "Rekognition StartLabelDetection") from None
    return str(answer["JobId"])


def video_labels(job_id: str, token: str | None, deadline: float) -> tuple[str, list[Sample], str | None, float]:
    """Pages of a label detection job from ``token`` on until the last page or ``deadline``:
    (job status, one sample per second that has labels, the next page's token or None, the
    video's duration in seconds).  A failed job raises :class:`CloudError` with Rekognition's
    message; an unfinished one answers ``IN_PROGRESS`` and nothing else."""
    min_confidence = settings().rekognition_min_confidence
    seconds: dict[int, set[str]] = {}
    duration_s = 0.0
    while True:
        args: dict[str, Any] = {"JobId": job_id, "MaxResults": PAGE, "SortBy": "TIMESTAMP"}
        if token:
            args["NextToken"] = token
        try:
            answer = _client("rekognition", "rekognition").get_label_detection(**args)
        except (ClientError, BotoCoreError) as exc:
            raise _failure(exc, "Rekognition GetLabelDetection") from None
        status = str(answer.get("JobStatus") or "")
        if status == "FAILED":
            raise CloudError(f"Rekognition Video failed: {str(answer.get('StatusMessage') or 'no reason given')[:300]}")
        if status != "SUCCEEDED":
            return status, [], token, 0.0
        duration_s = float((answer.get("VideoMetadata") or {}).get("DurationMillis") or 0) / 1000
        for hit in answer.get("Labels") or []:
            second = int(float(hit.get("Timestamp") or 0) // 1000)
            seconds.setdefault(second, set()).update(classes_of([hit.get("Label") or {}], min_confidence))
        token = answer.get("NextToken") or None
        if token is None or time.monotonic() >= deadline:
            samples = [Sample(float(t), frozenset(found), False) for t, found in sorted(seconds.items()) if found]
            return status, samples, token, duration_s


def per_second(samples: Iterable[Sample], duration_s: float) -> list[Sample]:
    """Rekognition Video's labelled seconds (from any number of pages) as one sample per second of
    the video, 0 … its last second: the shape the shared persistence and interval rules expect
    (a class seen in two consecutive seconds counts; a second without labels breaks a run)."""
    found: dict[int, set[str]] = {}
    for s in samples:
        found.setdefault(int(s.t), set()).update(s.found)
    last = max([int(duration_s - 1e-6)] + list(found))
    return [Sample(float(t), frozenset(found.get(t, ())), False) for t in range(max(0, last) + 1)]


def look(frame: Frame, moved: bool) -> Sample:
    found: set[str] = set()
    for view in frame.views:
        found |= detect(view)
    return Sample(frame.t, frozenset(found), moved)


def observe(
    path: str, layout: Layout, *, is_image: bool, night: bool, max_duration_s: float, **part: Any
) -> tuple[list[Sample], float | None]:
    """An image's selected views (no decoder), or the frames OpenCV samples from a video, each
    asked of Rekognition (``night`` needs no preparation: Rekognition reads infrared frames as
    they are; ``part``: ``frames.watch``'s start, offset and deadline).  MP4/MOV files analysed
    whole do not come here: they go to Rekognition Video (:func:`start_video`)."""
    if is_image:
        found: set[str] = set()
        for data in image_views(path, layout):
            found |= _labels_in(data)
        return [Sample(0.0, frozenset(found), False)], None
    return watch(path, layout, look, is_image=is_image, max_duration_s=max_duration_s, **part)


SYSTEM_PROMPT = (
    "You write the summary of a security-camera video analysis. Use only the detections you are "
    "given: never add objects, people, actions or times that are not in them. Write one or two "
    "plain sentences in English with times as m:ss, no preamble."
)


def narrate(found: dict[str, list[tuple[float, float]]], motion: list[tuple[float, float]], is_image: bool) -> str:
    """The Bedrock model's summary of the timed detections ("" when there is nothing to say)."""
    facts = summary(found, motion, is_image)
    if not facts:
        return ""
    detections = {
        "source": "image" if is_image else "video",
        "detections": {name: [[round(a), round(b)] for a, b in spans] for name, spans in found.items()},
        "motion_without_recognised_object": [[round(a), round(b)] for a, b in motion],
        "times_are": "seconds from the start of the video",
        "draft": facts,
    }
    try:
        answer = _client("bedrock", "bedrock-runtime").converse(
            modelId=settings().bedrock_model_id,
            system=[{"text": SYSTEM_PROMPT}],
            messages=[{"role": "user", "content": [{"text": json.dumps(detections)}]}],
            inferenceConfig={"maxTokens": 300, "temperature": 0},
        )
    except (ClientError, BotoCoreError) as exc:
        raise _failure(exc, "Bedrock Converse") from None
    parts = ((answer.get("output") or {}).get("message") or {}).get("content") or []
    text = " ".join(p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)).strip()
    if not text:
        raise CloudError(f"Bedrock Converse answered no text (stop reason {answer.get('stopReason')})")
    return text[:2000]
