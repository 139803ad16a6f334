"""What an analyser saw, second by second, and the summary written from it (pure: no heavy imports).

Both analysers (``local.py``, ``cloud.py``) sample about one frame per second and record, per
sample, the classes they recognised and whether the picture moved (:class:`Sample`).  The rules
that turn those samples into a result are shared, so both backends report the same way:

* **persistence** — in a video a class counts only where it is seen in at least
  :data:`MIN_RUN` consecutive samples (a single-frame hit is what a false positive looks like);
  an image is one sample and counts alone;
* **intervals** — consecutive positive samples merge into ``[first, last]`` seconds;
* **motion** is reported only where no recognised class explains it (one sample of margin on
  each side of a class interval: the frames where someone walks in or out);
* **the summary** is a template with times: "A person is visible from 0:07 to 0:19 and from
  0:23 to 0:44; motion without a recognised object at 1:10."
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: the classes of SPEC §11, in the order summaries list them
CLASSES = ("person", "vehicle", "dog", "cat", "fire", "smoke", "package", "license plate")
#: what PackageDetect reports (SPEC §11): package kinds, space-separated
PACKAGE_KINDS = ("plastic-bags", "file-bags", "paper-bags")
#: a video class needs this many consecutive 1-s samples
MIN_RUN = 2

_SUBJECT = {
    "person": "A person is",
    "vehicle": "A vehicle is",
    "dog": "A dog is",
    "cat": "A cat is",
    "fire": "Fire is",
    "smoke": "Smoke is",
    "package": "A package is",
    "license plate": "A license plate is",
    "plastic-bags": "Plastic bags are",
    "file-bags": "File bags are",
    "paper-bags": "Paper bags are",
}


@dataclass(frozen=True)
class Layout:
    """Which of the frame's stacked views to analyse (SPEC §11 ``MultiCameraLayout``): the frame
    holds ``views`` views one above the other, ``selected`` are their 0-based indexes."""

    views: int = 1
    selected: tuple[int, ...] = (0,)

    def bands(self, height: int) -> list[tuple[int, int]]:
        """(top, bottom) pixel rows of each selected view in a frame ``height`` pixels high."""
        return [(height * i // self.views, height * (i + 1) // self.views) for i in self.selected]


@dataclass(frozen=True)
class Sample:
    """One sampled frame: its time, what was recognised in it, whether it moved since the last."""

    t: float
    found: frozenset[str] = frozenset()
    motion: bool = False


@dataclass
class Timeline:
    """Every sample of one analysed source, in time order."""

    samples: list[Sample] = field(default_factory=list)
    is_image: bool = False

    @property
    def duration_s(self) -> float:
        return self.samples[-1].t if self.samples else 0.0

    def settled(self, name: str) -> list[bool]:
        """Per sample, whether ``name`` counts there (the persistence rule)."""
        flags = [name in s.found for s in self.samples]
        return flags if self.is_image else keep_runs(flags, MIN_RUN)

    def intervals(self, names: Iterable[str]) -> dict[str, list[tuple[float, float]]]:
        """name -> its merged intervals, for the names that count somewhere."""
        times = [s.t for s in self.samples]
        out = {}
        for name in names:
            spans = merge(times, self.settled(name))
            if spans:
                out[name] = spans
        return out

    def unexplained_motion(self, explained: Iterable[str]) -> list[tuple[float, float]]:
        """Intervals where the picture moved and no counted class was there (± one sample)."""
        names = list(explained)
        covered = [False] * len(self.samples)
        for name in names:
            for i, on in enumerate(self.settled(name)):
                if on:
                    for j in (i - 1, i, i + 1):
                        if 0 <= j < len(covered):
                            covered[j] = True
        flags = [s.motion and not c for s, c in zip(self.samples, covered, strict=True)]
        return merge([s.t for s in self.samples], flags)


def pack(samples: Iterable[Sample]) -> list[list[object]]:
    """Samples as compact JSON rows ``[t, [classes…], moved 0|1]`` (a task's checkpoint)."""
    return [[s.t, sorted(s.found), int(s.motion)] for s in samples]


def unpack(rows: Iterable[Sequence[Any]]) -> list[Sample]:
    return [Sample(float(t), frozenset(str(c) for c in found), bool(moved)) for t, found, moved in rows]


def keep_runs(flags: Sequence[bool], k: int) -> list[bool]:
    """Drop positive runs shorter than ``k`` samples."""
    out = list(flags)
    i = 0
    while i < len(out):
        if not out[i]:
            i += 1
            continue
        j = i
        while j < len(out) and out[j]:
            j += 1
        if j - i < k:
            out[i:j] = [False] * (j - i)
        i = j
    return out


def merge(times: Sequence[float], flags: Sequence[bool]) -> list[tuple[float, float]]:
    """Consecutive positive samples as ``(first, last)`` time intervals."""
    spans: list[tuple[float, float]] = []
    start: float | None = None
    last = 0.0
    for t, on in zip(times, flags, strict=True):
        if on:
            if start is None:
                start = t
            last = t
        elif start is not None:
            spans.append((start, last))
            start = None
    if start is not None:
        spans.append((start, last))
    return spans


def clock_text(seconds: float) -> str:
    """``m:ss`` (``h:mm:ss`` from an hour on), rounded to the second."""
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _span_text(span: tuple[float, float]) -> str:
    a, b = clock_text(span[0]), clock_text(span[1])
    return f"at {a}" if a == b else f"from {a} to {b}"


def _spans_text(spans: Sequence[tuple[float, float]]) -> str:
    parts = [_span_text(s) for s in spans]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def summary(found: dict[str, list[tuple[float, float]]], motion: Sequence[tuple[float, float]], is_image: bool) -> str:
    """The template summary; "" when nothing was found and nothing moved."""
    order = [n for n in (*CLASSES, *PACKAGE_KINDS) if n in found]
    if is_image:
        if not order:
            return ""
        names = [_SUBJECT[n].rsplit(" ", 1)[0].lower() for n in order]
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        return f"The image shows {listed}."
    clauses = [f"{_SUBJECT[n][0].lower()}{_SUBJECT[n][1:]} visible {_spans_text(found[n])}" for n in order]
    if motion:
        clauses.append(f"motion without a recognised object {_spans_text(motion)}")
    if not clauses:
        return ""
    text = "; ".join(clauses)
    return text[0].upper() + text[1:] + "."
