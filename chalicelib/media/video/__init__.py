"""Video analysis backends (SPEC §11): one interface, two analysers chosen by configuration.

``analyse(backend, path, layout, …)`` samples a **local** file (the service layer fetched it
through the outbound guard), runs the backend's detectors on every sample and writes the result:

* ``local`` (``local.py``) — offline: MediaPipe Pose for people, frame differencing for motion;
  the summary is the template of ``timeline.summary``;
* ``cloud`` (``cloud.py``) — Amazon Rekognition ``DetectLabels`` per sample, a Bedrock model
  (Converse API) for the summary.

Each backend declares the classes it can detect (:func:`detects`); neither invents one.  The
result is what SPEC §11 stores: ``{"Summary", "DetectedClassifications"}`` — for PackageDetect
the summary is the package kinds found, space-separated.  An empty summary means nothing was
found (task status 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from . import cloud, local
from .frames import IMAGE_EXTENSIONS, MediaError, refuse_playlist
from .timeline import CLASSES, PACKAGE_KINDS, Layout, Timeline, summary

__all__ = [
    "BACKENDS",
    "CLASSES",
    "IMAGE_EXTENSIONS",
    "PACKAGE_KINDS",
    "Layout",
    "MediaError",
    "Outcome",
    "analyse",
    "refuse_playlist",
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


def analyse(
    backend: str,
    path: str,
    layout: Layout,
    *,
    is_image: bool,
    night: bool,
    service_type: str,
    max_duration_s: float,
) -> Outcome:
    """Analyse the local file ``path`` with ``backend``; raises :class:`MediaError` (with the
    reason the task fails with) when the media or the cloud service cannot be used."""
    module = BACKENDS[backend]
    timeline = module.observe(path, layout, is_image=is_image, night=night, max_duration_s=max_duration_s)
    return _result(backend, timeline, service_type)
