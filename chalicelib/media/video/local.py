"""The local analyser: fully offline, on this machine (SPEC §11 "locally, a real analyser").

What it detects, honestly:

* **person** — MediaPipe Pose (0.10.21; its ``model_complexity=1`` model ships inside the
  wheel, so nothing is downloaded).  A pose counts as a person when its torso (mid-shoulder to
  mid-hip) is at least :data:`MIN_TORSO` of the frame height and the shoulders are at least
  :data:`MIN_SHOULDER_RATIO` of the torso wide — what rejects poses hallucinated on furniture.
  Frames are scaled to :data:`WIDTH` px wide first (measured: same decisions, less time).
* **motion** — frame differencing (``frames.Motion``), reported where no person explains it.

What it cannot detect: vehicle, dog, cat, fire, smoke, package, license plate and the package
kinds.  No detector shipped inside an installable package recognises them reliably here (OpenCV's
HOG people detector fires on upright bottles in every frame; its cat and plate Haar cascades
found nothing on the test stills), so this backend never reports them: a VideoToText summary
covers people and motion, and a PackageDetect task is refused when the task is created.

MediaPipe and OpenCV are local-only packages (requirements-dev.txt): imported on first use.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from .frames import Frame, watch
from .timeline import Layout, Sample

NAME = "local"
#: the packages it imports when it runs (``media.video.missing``)
REQUIRES = ("cv2", "mediapipe")
#: the classes this backend can report
DETECTS = ("person",)
WIDTH = 640
MIN_CONFIDENCE = 0.5
MIN_TORSO = 0.05
MIN_SHOULDER_RATIO = 0.5
# pose landmarks (MediaPipe Pose): shoulders and hips
_L_SHOULDER, _R_SHOULDER, _L_HIP, _R_HIP = 11, 12, 23, 24

_lock = threading.Lock()
_pose: Any = None


def _detector() -> Any:
    """The process's pose model (loaded once; MediaPipe graphs are not thread-safe: callers hold
    :data:`_lock`)."""
    global _pose
    if _pose is None:
        os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ logging: warnings and up
        import mediapipe as mp

        _pose = mp.solutions.pose.Pose(
            static_image_mode=True, model_complexity=1, min_detection_confidence=MIN_CONFIDENCE
        )
    return _pose


def _prepare(view: Any, night: bool) -> Any:
    import cv2

    h, w = view.shape[:2]
    if w > WIDTH:
        view = cv2.resize(view, (WIDTH, max(1, round(h * WIDTH / w))), interpolation=cv2.INTER_AREA)
    if night:
        # infrared footage: grey, low contrast — equalise locally before looking for people
        grey = cv2.cvtColor(view, cv2.COLOR_BGR2GRAY)
        grey = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(grey)
        view = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    return view


def person_in(view: Any, night: bool = False) -> bool:
    """Whether a person-shaped pose is in ``view`` (a BGR array)."""
    import cv2
    import numpy as np

    image = _prepare(view, night)
    h, w = image.shape[:2]
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    with _lock:
        found = _detector().process(rgb).pose_landmarks
    if found is None:
        return False
    points = np.array([(p.x * w, p.y * h) for p in found.landmark])
    shoulders_mid = (points[_L_SHOULDER] + points[_R_SHOULDER]) / 2
    hips_mid = (points[_L_HIP] + points[_R_HIP]) / 2
    torso = float(np.linalg.norm(shoulders_mid - hips_mid)) / h
    shoulders = float(np.linalg.norm(points[_L_SHOULDER] - points[_R_SHOULDER])) / h
    return torso >= MIN_TORSO and shoulders >= MIN_SHOULDER_RATIO * torso


def look(frame: Frame, moved: bool, night: bool) -> Sample:
    """One sampled frame → whether a person is in it (any selected view)."""
    person = any(person_in(view, night) for view in frame.views)
    return Sample(frame.t, frozenset({"person"}) if person else frozenset(), moved)


def observe(
    path: str, layout: Layout, *, is_image: bool, night: bool, max_duration_s: float, **part: Any
) -> tuple[list[Sample], float | None]:
    """Sample ``path`` (a local file) and look at every sample (``part``: ``frames.watch``'s
    start, offset and deadline)."""
    return watch(
        path, layout, lambda f, moved: look(f, moved, night), is_image=is_image, max_duration_s=max_duration_s, **part
    )
