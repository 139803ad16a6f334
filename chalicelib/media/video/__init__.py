"""Video analysis backends (SPEC §11): one interface, two analysers chosen by configuration.

``observe(backend, path, layout, …)`` samples a **local** file (the service layer fetched it
through the outbound guard) and runs the backend's detectors on every sample, from a start time
and until a deadline so a long video is analysed in parts (the samples are the checkpoint,
``pack``/``unpack``); ``conclude`` writes the result from all of them:

* ``local`` (``local.py``) — offline: MediaPipe Pose for people, frame differencing for motion;
  the summary is the template of ``timeline.summary``;
* ``cloud`` (``cloud.py``) — Amazon Rekognition (``DetectLabels`` on an image's bytes or on
  sampled frames; Rekognition Video on MP4/MOV files copied to S3, which the service layer drives
  with ``cloud.start_video`` / ``cloud.video_labels``), a Bedrock model (Converse API) for the
  summary.

Decoding video takes OpenCV, which is not in the Lambda bundle (it would exceed Lambda's 250 MB):
:func:`needs_decoder` says which inputs take it, :func:`decodes` whether this deployment can.

Each backend declares the classes it can detect (:func:`detects`); neither invents one.  The
result is what SPEC §11 stores: ``{"Summary", "DetectedClassifications"}`` — for PackageDetect
the summary is the package kinds found, space-separated.  An empty summary means nothing was
found (task status 2).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from types import ModuleType

from . import cloud, local
from .frames import IMAGE_EXTENSIONS, MediaError, refuse_playlist
from .timeline import CLASSES, PACKAGE_KINDS, Layout, Sample, Timeline, pack, summary, unpack

__all__ = [
    "BACKENDS",
    "CLASSES",
    "IMAGE_EXTENSIONS",
    "PACKAGE_KINDS",
    "Layout",
    "MediaError",
    "Outcome",
    "Sample",
    "analyse",
    "conclude",
    "decodes",
    "missing",
    "needs_decoder",
    "observe",
    "pack",
    "refuse_playlist",
    "stored_video",
    "unpack",
]

BACKENDS: dict[str, ModuleType] = {local.NAME: local, cloud.NAME: cloud}
PACKAGE_DETECT = "PackageDetect"


@dataclass(frozen=True)
class Outcome:
    """What a task stores: the summary ("" = nothing found) and the classes detected."""

    summary: str
    classes: list[str]
    samples: int

    @property
    def empty(self) -> bool:
        return not self.summary


def missing(backend: str) -> list[str]:
    """The packages ``backend`` needs that this deployment does not have (OpenCV is a local and
    dev package: with it the Lambda bundle would exceed Lambda's 250 MB)."""
    return [name for name in BACKENDS[backend].REQUIRES if importlib.util.find_spec(name) is None]


def decodes() -> bool:
    """Whether this deployment can decode video itself (OpenCV: the local stack, not Lambda)."""
    return importlib.util.find_spec("cv2") is not None


def needs_decoder(backend: str, suffix: str, layout: Layout, *, is_image: bool) -> bool:
    """Whether ``backend`` needs OpenCV for this input (``suffix``: the media's file extension)."""
    if backend == cloud.NAME:
        return cloud.needs_decoder(suffix, layout, is_image=is_image)
    return True


def stored_video(backend: str, suffix: str, layout: Layout, *, is_image: bool) -> bool:
    """Whether the input is analysed by Rekognition Video from a copy in S3 (no decoder)."""
    return backend == cloud.NAME and not is_image and cloud.stored_video(suffix, layout)


def detects(backend: str) -> tuple[str, ...]:
    """The classes (and package kinds) ``backend`` can report."""
    return tuple(BACKENDS[backend].DETECTS)


def _result(backend: str, timeline: Timeline, service_type: str) -> Outcome:
    n = len(timeline.samples)
    if service_type == PACKAGE_DETECT:
        kinds = timeline.intervals(PACKAGE_KINDS)
        return Outcome(" ".join(k for k in PACKAGE_KINDS if k in kinds), ["package"] if kinds else [], n)
    found = timeline.intervals(CLASSES)
    motion = [] if timeline.is_image else timeline.unexplained_motion(found)
    classes = [c for c in CLASSES if c in found]
    if backend == cloud.NAME:
        return Outcome(cloud.narrate(found, motion, timeline.is_image), classes, n)
    return Outcome(summary(found, motion, timeline.is_image), classes, n)


def observe(
    backend: str,
    path: str,
    layout: Layout,
    *,
    is_image: bool,
    night: bool,
    max_duration_s: float,
    start_s: float = 0.0,
    offset_s: float = 0.0,
    deadline: float | None = None,
) -> tuple[list[Sample], float | None]:
    """Part of the analysis of the local file ``path`` with ``backend``: the samples from
    ``start_s`` on (times shifted by ``offset_s``) until ``deadline``, and where to resume (None:
    the end was reached).  Raises :class:`MediaError` (with the reason the task fails with) when
    the media or the cloud service cannot be used."""
    return BACKENDS[backend].observe(
        path,
        layout,
        is_image=is_image,
        night=night,
        max_duration_s=max_duration_s,
        start_s=start_s,
        offset_s=offset_s,
        deadline=deadline,
    )


def conclude(backend: str, samples: list[Sample], *, is_image: bool, service_type: str) -> Outcome:
    """The result of every sample of a source (the cloud backend asks its model for the words)."""
    return _result(backend, Timeline(samples, is_image), service_type)


def analyse(
    backend: str, path: str, layout: Layout, *, is_image: bool, night: bool, service_type: str, max_duration_s: float
) -> Outcome:
    """The whole analysis of ``path`` in one go (what bench/video.py times)."""
    samples, _ = observe(backend, path, layout, is_image=is_image, night=night, max_duration_s=max_duration_s)
    return conclude(backend, samples, is_image=is_image, service_type=service_type)
