"""A space's map as SVG or PNG, offline (no tiles): fences, latest positions, a trajectory and a
scale bar, in a local equirectangular plane (x = lon·cos(lat0), y = lat) fitted to the content.
PNG is drawn with Pillow (already in the bundle for QR codes), imported lazily."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import escape

from .geo import M_PER_DEG_LAT, Fence

WIDTH, HEIGHT, PAD = 800, 600, 40
FENCE_COLOUR, DEVICE_COLOUR, TRACK_COLOUR = "#1f77b4", "#d62728", "#2ca02c"


class _Frame:
    def __init__(self, lats: Sequence[float], lons: Sequence[float]) -> None:
        lat0 = (min(lats) + max(lats)) / 2 if lats else 0.0
        self.k = math.cos(math.radians(lat0))
        xs = [x * self.k for x in lons] or [0.0]
        ys = list(lats) or [0.0]
        self.x0, self.x1, self.y0, self.y1 = min(xs), max(xs), min(ys), max(ys)
        span = max(self.x1 - self.x0, self.y1 - self.y0, 1e-4)
        self.scale = min(
            (WIDTH - 2 * PAD) / max(self.x1 - self.x0, span * 0.1),
            (HEIGHT - 2 * PAD) / max(self.y1 - self.y0, span * 0.1),
        )

    def xy(self, lat: float, lon: float) -> tuple[float, float]:
        x = PAD + (lon * self.k - self.x0) * self.scale
        y = HEIGHT - PAD - (lat - self.y0) * self.scale
        return round(x, 1), round(y, 1)

    def metres_per_px(self) -> float:
        return M_PER_DEG_LAT / self.scale


def _rings(fence: Fence) -> list[list[tuple[float, float]]]:
    """(lat, lon) rings of a fence; a circle as a 72-gon."""
    if fence.kind == "circle" and fence.center is not None:
        lat, lon = fence.center
        dlat = fence.radius_m / M_PER_DEG_LAT
        dlon = fence.radius_m / (111_320.0 * max(math.cos(math.radians(lat)), 1e-6))
        return [[(lat + dlat * math.sin(a), lon + dlon * math.cos(a)) for a in (i * math.pi / 36 for i in range(73))]]
    polys = getattr(fence.geom, "geoms", [fence.geom])
    rings = []
    for p in polys:
        for ring in [p.exterior, *p.interiors]:
            rings.append([(y, x) for x, y in ring.coords])
    return rings


def _scale_bar(frame: _Frame) -> tuple[float, str]:
    """A round length near 150 px: (pixels, label)."""
    target = frame.metres_per_px() * 150
    step = 10 ** math.floor(math.log10(max(target, 1e-3)))
    for mult in (1, 2, 5, 10):
        if step * mult >= target:
            metres = step * mult
            break
    label = f"{metres / 1000:g} km" if metres >= 1000 else f"{metres:g} m"
    return metres / frame.metres_per_px(), label


def draw(
    title: str,
    fences: Sequence[tuple[str, Fence]],
    points: Sequence[dict[str, Any]],
    track: Sequence[dict[str, Any]],
    fmt: str,
) -> bytes:
    rings = [(name, _rings(f)) for name, f in fences]
    lats = [p[0] for _, rs in rings for r in rs for p in r] + [p["lat"] for p in points] + [p["lat"] for p in track]
    lons = [p[1] for _, rs in rings for r in rs for p in r] + [p["lon"] for p in points] + [p["lon"] for p in track]
    frame = _Frame(lats, lons)
    bar_px, bar_label = _scale_bar(frame)
    if fmt == "png":
        return _png(title, frame, rings, points, track, bar_px, bar_label)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
        f'<text x="{PAD}" y="24" font-family="sans-serif" font-size="16">{escape(title)}</text>',
    ]
    for name, rs in rings:
        d = " ".join("M" + " L".join(f"{x},{y}" for x, y in (frame.xy(*p) for p in r)) + " Z" for r in rs)
        out.append(
            f'<path class="fence" d="{d}" fill="{FENCE_COLOUR}" fill-opacity="0.15" fill-rule="evenodd" stroke="{FENCE_COLOUR}"/>'
        )
        x, y = frame.xy(*rs[0][0])
        out.append(f'<text x="{x}" y="{y}" font-family="sans-serif" font-size="12">{escape(name)}</text>')
    if len(track) >= 2:
        pts = " ".join(f"{x},{y}" for x, y in (frame.xy(p["lat"], p["lon"]) for p in track))
        out.append(f'<polyline class="track" points="{pts}" fill="none" stroke="{TRACK_COLOUR}" stroke-width="2"/>')
    for p in points:
        x, y = frame.xy(p["lat"], p["lon"])
        out.append(f'<circle class="device" cx="{x}" cy="{y}" r="5" fill="{DEVICE_COLOUR}"/>')
        out.append(
            f'<text x="{x + 7}" y="{y - 7}" font-family="sans-serif" font-size="11">{escape(p["device_name"])}</text>'
        )
    y = HEIGHT - 15
    out.append(
        f'<line class="scale" x1="{PAD}" y1="{y}" x2="{PAD + bar_px:.1f}" y2="{y}" stroke="#000" stroke-width="3"/>'
    )
    out.append(
        f'<text x="{PAD + bar_px + 6:.1f}" y="{y + 4}" font-family="sans-serif" font-size="12">{bar_label}</text>'
    )
    out.append("</svg>")
    return "\n".join(out).encode("utf-8")


def _png(
    title: str,
    frame: _Frame,
    rings: list[tuple[str, list[list[tuple[float, float]]]]],
    points: Sequence[dict[str, Any]],
    track: Sequence[dict[str, Any]],
    bar_px: float,
    bar_label: str,
) -> bytes:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (WIDTH, HEIGHT), "white")
    pen = ImageDraw.Draw(img)
    pen.text((PAD, 10), title, fill="black")
    for name, rs in rings:
        for r in rs:
            pen.line([frame.xy(*p) for p in r], fill=FENCE_COLOUR, width=2)
        pen.text(frame.xy(*rs[0][0]), name, fill=FENCE_COLOUR)
    if len(track) >= 2:
        pen.line([frame.xy(p["lat"], p["lon"]) for p in track], fill=TRACK_COLOUR, width=2)
    for p in points:
        x, y = frame.xy(p["lat"], p["lon"])
        pen.ellipse((x - 5, y - 5, x + 5, y + 5), fill=DEVICE_COLOUR)
        pen.text((x + 7, y - 14), p["device_name"], fill="black")
    y = HEIGHT - 15
    pen.line([(PAD, y), (PAD + bar_px, y)], fill="black", width=3)
    pen.text((PAD + bar_px + 6, y - 6), bar_label, fill="black")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
