"""Decoding a local copy of the media: about one frame per second, cropped to the selected views.

OpenCV (``cv2``, FFmpeg inside) reads MP4/AVI/MOV/MKV files, HLS playlists whose segments are
local files, and still images.  Video is decoded sequentially and only the frames at or after
each whole second are converted (``grab`` everywhere, ``retrieve`` only for sampled frames: a
10 fps clip pays the colour conversion once a second, not ten times).  The caller gives local
paths only: what is fetched, from where, is decided above this layer (``services/video.py``).

A frame's time follows the stream's timestamps while they run forward; where they jump (HLS
discontinuities, segments whose timestamps restart, a camera that restarted) the clock moves on
by one frame instead, so every second of the video is sampled once.

Motion is measured on a small blurred grey copy of each view: the share of pixels whose
brightness changed by more than :data:`MOTION_DELTA` since the previous sample (one second
earlier); a share of :data:`MOTION_SHARE` or more is motion.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .timeline import Layout, Sample

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
PERIOD_S = 1.0
MOTION_WIDTH = 160
MOTION_DELTA = 25
MOTION_SHARE = 0.01
#: a frame's time follows the stream's timestamps unless they jump back or by more than this; then
#: it advances by one frame (1/fps, or this default when the container states no rate)
MAX_STEP_S = 2.0
DEFAULT_STEP_S = 0.1


class MediaError(Exception):
    """The media cannot be analysed (unreadable, too long, not what it claims): the task fails
    with this message as its reason; retrying cannot help."""


@dataclass
class Frame:
    """One sampled frame: its time and the selected views (BGR arrays), top to bottom."""

    t: float
    views: list[Any]


def refuse_playlist(path: str) -> None:
    """Refuse a media file that is really an HLS playlist: FFmpeg sniffs content, not names, and
    would follow the URIs inside it (local files, other hosts) past every check made above."""
    with open(path, "rb") as fh:
        head = fh.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"#EXTM3U"):
        raise MediaError("the file is an HLS playlist, not the video or image its name says")


def crop_rows(height: int, layout: Layout) -> list[tuple[int, int]]:
    """(top, bottom) rows of the selected stacked views of a frame ``height`` px high."""
    if height < layout.views:
        raise MediaError(f"the frame is {height} px high: too small for {layout.views} stacked views")
    return layout.bands(height)


def crop(image: Any, layout: Layout) -> list[Any]:
    """The selected stacked views of ``image`` (numpy rows, no copy)."""
    return [image[top:bottom] for top, bottom in crop_rows(image.shape[0], layout)]


def sample(path: str, layout: Layout, *, is_image: bool, max_duration_s: float) -> Iterator[Frame]:
    """The frames of ``path`` at about one per second (an image is one frame at 0 s).

    Raises :class:`MediaError` when the file cannot be decoded or runs past ``max_duration_s``."""
    import cv2

    if is_image:
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise MediaError("the image cannot be decoded (JPEG, PNG, BMP or WebP expected)")
        yield Frame(0.0, crop(image, layout))
        return
    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    try:
        if not cap.isOpened():
            raise MediaError("the video cannot be opened (MP4/AVI/MOV/MKV or an HLS playlist expected)")
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        frames = cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0.0
        if fps > 0 and frames > 0 and frames / fps > max_duration_s + 1:
            raise MediaError(f"the video lasts {frames / fps:.0f} s; at most {max_duration_s:.0f} s can be analysed")
        step = 1.0 / fps if fps > 0 else DEFAULT_STEP_S
        due, t, last_pos, produced = 0.0, 0.0, None, 0
        while cap.grab():
            pos = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if last_pos is not None:
                # the video's own clock while it runs forward in plausible steps; across a jump
                # (an HLS discontinuity, a camera restart, segments that restart at 0) one frame
                delta = pos - last_pos
                t += delta if 0 < delta <= MAX_STEP_S else step
            last_pos = pos
            if t > max_duration_s + 1:
                raise MediaError(f"the video runs past {max_duration_s:.0f} s, the most that can be analysed")
            if t + 1e-6 < due:
                continue
            ok, image = cap.retrieve()
            if not ok or image is None:
                continue
            while due <= t + 1e-6:
                due += PERIOD_S
            produced += 1
            yield Frame(round(t, 3), crop(image, layout))
        if not produced:
            raise MediaError("the video holds no decodable frame")
    finally:
        cap.release()


class Motion:
    """Per view, whether the picture changed since the previous sample."""

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}

    def moved(self, index: int, view: Any) -> bool:
        import cv2

        h, w = view.shape[:2]
        small = cv2.resize(view, (MOTION_WIDTH, max(1, round(h * MOTION_WIDTH / w))), interpolation=cv2.INTER_AREA)
        grey = cv2.GaussianBlur(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), (5, 5), 0)
        previous = self._previous.get(index)
        self._previous[index] = grey
        if previous is None or previous.shape != grey.shape:
            return False
        return float((cv2.absdiff(previous, grey) > MOTION_DELTA).mean()) >= MOTION_SHARE

    def any_moved(self, frame: Frame) -> bool:
        """Whether any selected view of ``frame`` moved (every view is compared, so each keeps
        its reference frame)."""
        return any([self.moved(i, view) for i, view in enumerate(frame.views)])


def jpeg(view: Any, width: int = 1280) -> bytes:
    """A view as JPEG bytes, at most ``width`` px wide (what the cloud analyser uploads)."""
    import cv2

    h, w = view.shape[:2]
    if w > width:
        view = cv2.resize(view, (width, round(h * width / w)), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", view, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise MediaError("a frame could not be encoded as JPEG")
    return bytes(data)


def watch(
    path: str,
    layout: Layout,
    look: Callable[[Frame, bool], Sample],
    *,
    is_image: bool,
    max_duration_s: float,
    start_s: float = 0.0,
    offset_s: float = 0.0,
    deadline: float | None = None,
) -> tuple[list[Sample], float | None]:
    """Sample ``path`` and ``look(frame, moved)`` at every sample from ``start_s`` on (sample
    times shifted by ``offset_s``: the part of a longer video the file starts at), until
    ``deadline`` (``time.monotonic()``) if given.  Samples before ``start_s`` are decoded for
    motion only (the first one looked at compares with the sample before it).

    Returns the samples and where to resume: None when the media was read to its end, else the
    time of the first sample not looked at (at least one sample is looked at per call)."""
    motion = Motion()
    out: list[Sample] = []
    for frame in sample(path, layout, is_image=is_image, max_duration_s=max_duration_s):
        frame.t = round(frame.t + offset_s, 3)
        if frame.t + 1e-6 < start_s:
            motion.any_moved(frame)
            continue
        if deadline is not None and out and time.monotonic() >= deadline:
            return out, frame.t
        out.append(look(frame, motion.any_moved(frame)))
    return out, None
