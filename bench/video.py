"""Local video analyser speed: seconds of video analysed per wall second, beside plain decoding.

On `people-walking.mp4` (139 s, 768x432, 10 fps, from ../shared/media-samples), each round
times, interleaved so machine noise hits both alike:

* **decode** — the baseline: OpenCV reads every frame of the file (`VideoCapture.read`), nothing
  else; what any analyser of this file pays at the least;
* **analyse** — the local analyser as the jobs worker runs it (`media/video/local.observe`): the
  one-frame-per-second sampling, motion, MediaPipe pose on every sample.

The pose model is loaded by a warm-up run first (once per worker process, not per task).
Figures are medians over the rounds, in real-time multiples (video seconds per wall second);
the goal is ≥ 10× on this 2-core machine.

Run: .venv/bin/python bench/video.py [rounds]   (make bench runs it too)
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SAMPLE = REPO.parent / "shared" / "media-samples" / "people-walking.mp4"
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
GOAL = 10.0


def duration_s(path: Path) -> float:
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        return cap.get(cv2.CAP_PROP_FRAME_COUNT) / cap.get(cv2.CAP_PROP_FPS)
    finally:
        cap.release()


def decode(path: Path) -> int:
    """Every frame decoded and converted, nothing else (the baseline)."""
    import cv2

    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    frames = 0
    try:
        while True:
            ok, _ = cap.read()
            if not ok:
                return frames
            frames += 1
    finally:
        cap.release()


def analyse(path: Path) -> int:
    from chalicelib.media.video import Layout, local

    samples, _ = local.observe(str(path), Layout(), is_image=False, night=False, max_duration_s=900)
    return len(samples)


def main() -> int:
    if not SAMPLE.is_file():
        sys.exit(f"{SAMPLE} is missing: the shared media samples sit beside the repository")
    os.environ.setdefault("GLOG_minloglevel", "2")
    length = duration_s(SAMPLE)
    frames, samples = decode(SAMPLE), analyse(SAMPLE)  # warm-up: page cache, the pose model
    times: dict[str, list[float]] = {"decode": [], "analyse": []}
    for _ in range(ROUNDS):
        for name, fn in (("decode", decode), ("analyse", analyse)):
            start = time.perf_counter()
            fn(SAMPLE)
            times[name].append(time.perf_counter() - start)
    speed = {name: length / statistics.median(t) for name, t in times.items()}
    print(f"{SAMPLE.name}: {length:.1f} s of video, {frames} frames; the analyser looks at {samples} samples")
    print(f"rounds: {ROUNDS} (medians; one warm-up run of each first)")
    for name, t in times.items():
        print(f"  {name:8s} {statistics.median(t):6.2f} s wall  {speed[name]:6.1f}x real time  (min {min(t):.2f} s)")
    print(f"analyser / plain decoding: {speed['analyse'] / speed['decode']:.2f}")
    verdict = "meets" if speed["analyse"] >= GOAL else "MISSES"
    print(f"goal: the analyser at >= {GOAL:.0f}x real time: {verdict} ({speed['analyse']:.1f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
