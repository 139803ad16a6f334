"""The cloud analyser: Amazon Rekognition on sampled frames, a Bedrock model for the words.

Same sampling, layout crop, motion and persistence rules as the local analyser
(``frames.py``, ``timeline.py``); per sampled view one ``DetectLabels`` call with the JPEG
bytes.  Rekognition's labels (and their parents) map to the SPEC §11 classes by
:data:`LABELS` and to the PackageDetect kinds by :data:`PACKAGE_LABELS`; labels under
``settings().rekognition_min_confidence`` are ignored.  The timed detections then go to a
Bedrock model through the Converse API (``settings().bedrock_model_id``), which writes the
summary from those facts only; with nothing detected and nothing moving no model is asked and
the result is empty.

Classes it can detect: person, vehicle, dog, cat, fire, smoke, package, license plate, and the
package kinds plastic-bags, file-bags, paper-bags (as far as Rekognition's label set names them).

Any Rekognition or Bedrock error fails the task with the service's error code and message as the
reason (:class:`CloudError`).  IAM: ``rekognition:DetectLabels`` and ``bedrock:InvokeModel`` on
the model (README, .chalice/policy-*.json).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ...core.config import settings
from .frames import Frame, MediaError, jpeg, watch
from .timeline import CLASSES, PACKAGE_KINDS, Layout, Sample, summary

NAME = "cloud"
#: the packages it imports when it runs (``media.video.missing``)
REQUIRES = ("cv2",)
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


def _failure(exc: Exception, service: str) -> CloudError:
    err = (getattr(exc, "response", None) or {}).get("Error") or {}
    code = err.get("Code") or type(exc).__name__
    return CloudError(f"{service} failed: {code}: {str(err.get('Message') or exc)[:200]}")


def detect(view: Any) -> frozenset[str]:
    """One view → the classes Rekognition sees in it."""
    min_confidence = settings().rekognition_min_confidence
    try:
        answer = _client("rekognition", "rekognition").detect_labels(
            Image={"Bytes": jpeg(view)}, MaxLabels=50, MinConfidence=min_confidence
        )
    except (ClientError, BotoCoreError) as exc:
        raise _failure(exc, "Rekognition DetectLabels") from None
    return classes_of(answer.get("Labels") or [], min_confidence)


def look(frame: Frame, moved: bool) -> Sample:
    found: set[str] = set()
    for view in frame.views:
        found |= detect(view)
    return Sample(frame.t, frozenset(found), moved)


def observe(
    path: str, layout: Layout, *, is_image: bool, night: bool, max_duration_s: float, **part: Any
) -> tuple[list[Sample], float | None]:
    """Sample ``path`` and ask Rekognition about every sample (``night`` needs no preparation:
    Rekognition reads infrared frames as they are; ``part``: ``frames.watch``'s start, offset
    and deadline)."""
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
