"""Geometry of the location service (SPEC §10): pure functions and the fence index, no I/O.

* :func:`haversine_m` — great-circle distance in metres (circles are measured on the sphere,
  never in degrees);
* :func:`polygon_of` — a GeoJSON Polygon/MultiPolygon (holes allowed) as a valid shapely geometry,
  or :class:`GeoError` naming the problem (shapely's ``explain_validity``);
* :class:`FenceIndex` — every fence of the account in one shapely 2 ``STRtree`` over their
  bounding boxes (degrees, widened by each fence's largest usable margin), queried with many
  fixes at once; each candidate (fix, fence) pair is then decided exactly:

  - circles: haversine distance to the centre minus the radius;
  - polygons and districts: point-in-polygon on the prepared geometry and the distance to its
    boundary in metres, in a local plane around the fence (x = Δlon·cos(lat0)·111 320 m,
    y = Δlat·110 540 m; an affine map of lon/lat, so containment is exact and distances are off
    by the change of cos(lat) across the fence — a few per cent over hundreds of kilometres);

  A fix decides a fence only when it is **definitely** on one side: further than its margin from
  the boundary, margin = max(:data:`MIN_MARGIN_M`, the fix's accuracy).  Fixes in the band leave
  the fence's state as it was (hysteresis: a device jittering on the boundary raises nothing), and
  a fix less accurate than the fence's tolerance is not used for it.  A fence the tree does not
  return for a fix is definitely outside (the fix is further than any usable margin).

Heavy libraries (shapely, numpy) are imported inside the functions that use them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

EARTH_RADIUS_M = 6_371_008.8
M_PER_DEG_LAT = 110_540.0
M_PER_DEG_LON = 111_320.0
#: the smallest hysteresis margin: a fix exactly on a boundary never decides it
MIN_MARGIN_M = 0.5
MAX_VERTICES = 10_000

IN, OUT = "in", "out"


class GeoError(ValueError):
    """A geometry a user gave is not usable; the message says why."""


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def margin_m(accuracy: float) -> float:
    return max(MIN_MARGIN_M, accuracy)


def deg_lon_per_m(lat: float) -> float:
    return 1.0 / (M_PER_DEG_LON * max(math.cos(math.radians(min(abs(lat), 89.9))), 1e-6))


# ===================================================================== GeoJSON


def _ring(coords: Any, where: str) -> list[tuple[float, float]]:
    if not isinstance(coords, list) or len(coords) < 4:
        raise GeoError(f"{where} must be a closed ring of at least 4 positions")
    ring = []
    for i, pos in enumerate(coords):
        if (
            not isinstance(pos, list)
            or len(pos) < 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pos[:2])
        ):
            raise GeoError(f"{where}[{i}] must be a [longitude, latitude] position")
        lon, lat = float(pos[0]), float(pos[1])
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise GeoError(f"{where}[{i}] is outside longitude -180..180, latitude -90..90")
        ring.append((lon, lat))
    if ring[0] != ring[-1]:
        raise GeoError(f"{where} is not closed: its first and last positions differ")
    return ring


def polygon_of(doc: Any) -> Any:
    """A valid shapely Polygon/MultiPolygon (lon, lat) from a GeoJSON geometry, a Feature holding
    one, or raise :class:`GeoError` saying what is wrong."""
    from shapely import MultiPolygon, Polygon
    from shapely.validation import explain_validity

    if isinstance(doc, dict) and doc.get("type") == "Feature":
        doc = doc.get("geometry")
    if not isinstance(doc, dict) or doc.get("type") not in ("Polygon", "MultiPolygon"):
        raise GeoError("must be a GeoJSON Polygon or MultiPolygon geometry")
    coords = doc.get("coordinates")
    polys = [coords] if doc["type"] == "Polygon" else coords
    if not isinstance(polys, list) or not polys:
        raise GeoError("coordinates must be a non-empty list")
    shapes = []
    vertices = 0
    for p, rings in enumerate(polys):
        where = "coordinates" if doc["type"] == "Polygon" else f"coordinates[{p}]"
        if not isinstance(rings, list) or not rings:
            raise GeoError(f"{where} must list an exterior ring, then any holes")
        parsed = [_ring(r, f"{where}[{i}]") for i, r in enumerate(rings)]
        vertices += sum(len(r) for r in parsed)
        shapes.append(Polygon(parsed[0], parsed[1:]))
    if vertices > MAX_VERTICES:
        raise GeoError(f"has {vertices} positions; at most {MAX_VERTICES}")
    geom = shapes[0] if doc["type"] == "Polygon" else MultiPolygon(shapes)
    if not geom.is_valid:
        raise GeoError(f"is not a valid polygon: {explain_validity(geom)}")
    if geom.area == 0:
        raise GeoError("has no area")
    return geom


def to_geojson(geom: Any) -> dict[str, Any]:
    from shapely.geometry import mapping

    doc = mapping(geom)
    return _lists(doc)  # type: ignore[no-any-return]


def _lists(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    return value


# ===================================================================== fences


@dataclass
class Fence:
    """One fence as the engine sees it: ``circle`` (centre lat/lon + radius m) or an area
    (``polygon``/``district``: a shapely geometry in lon/lat)."""

    fence_id: str
    kind: str
    tolerance_m: float
    center: tuple[float, float] | None = None  # (lat, lon)
    radius_m: float = 0.0
    geom: Any = None
    # filled by prepare(): the local plane and the projected geometry
    lat0: float = 0.0
    lon0: float = 0.0
    kx: float = M_PER_DEG_LON
    local: Any = None
    boundary: Any = None

    @property
    def max_margin(self) -> float:
        return margin_m(self.tolerance_m)

    def bbox(self) -> tuple[float, float, float, float]:
        """(min lon, min lat, max lon, max lat), widened by the largest usable margin."""
        reach = self.max_margin + (self.radius_m if self.kind == "circle" else 0.0)
        if self.kind == "circle" and self.center is not None:
            lat, lon = self.center
            dlat = reach / M_PER_DEG_LAT * 1.01
            top = min(89.9, abs(lat) + dlat)
            dlon = min(180.0, reach * deg_lon_per_m(top) * 1.01)
            return lon - dlon, lat - dlat, lon + dlon, lat + dlat
        x0, y0, x1, y1 = self.geom.bounds
        dlat = reach / M_PER_DEG_LAT * 1.01
        dlon = reach * deg_lon_per_m(max(abs(y0), abs(y1)) + dlat) * 1.01
        return x0 - dlon, y0 - dlat, x1 + dlon, y1 + dlat

    def prepare(self) -> None:
        if self.kind == "circle":
            return
        import shapely
        from shapely import affinity

        c = self.geom.centroid
        self.lon0, self.lat0 = c.x, c.y
        self.kx = M_PER_DEG_LON * math.cos(math.radians(self.lat0))
        self.local = affinity.affine_transform(
            self.geom, [self.kx, 0, 0, M_PER_DEG_LAT, -self.kx * self.lon0, -M_PER_DEG_LAT * self.lat0]
        )
        self.boundary = self.local.boundary
        shapely.prepare(self.local)
        shapely.prepare(self.boundary)

    def signed_distances(self, lats: Any, lons: Any) -> Any:
        """Metres from the boundary for each point: negative inside, positive outside."""
        import numpy as np
        import shapely

        lats, lons = np.asarray(lats, dtype=float), np.asarray(lons, dtype=float)
        if self.kind == "circle" and self.center is not None:
            return _haversine_pairs(self.center[0], self.center[1], lats, lons) - self.radius_m
        xs, ys = (lons - self.lon0) * self.kx, (lats - self.lat0) * M_PER_DEG_LAT
        dist = shapely.distance(self.boundary, shapely.points(xs, ys))
        inside = shapely.contains_xy(self.local, xs, ys)
        return np.where(inside, -dist, dist)


def decide(distance: float, accuracy: float, tolerance: float) -> str | None:
    """``in``/``out`` when the fix is definitely on one side of the fence, else None."""
    if accuracy > tolerance:
        return None
    m = margin_m(accuracy)
    if distance < -m:
        return IN
    if distance > m:
        return OUT
    return None


@dataclass
class FenceIndex:
    """Every fence in one STRtree; :meth:`classify` answers a whole batch of fixes with array
    operations (no Python loop per fence): the tree's candidate pairs, then haversine for the
    circle pairs and point-in-polygon + boundary distance for the area pairs, elementwise."""

    fences: list[Fence] = field(default_factory=list)
    tree: Any = None
    arrays: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, fences: Iterable[Fence]) -> FenceIndex:
        import numpy as np
        import shapely

        items = list(fences)
        for f in items:
            f.prepare()
        index = cls(items)
        if items:
            boxes = shapely.box(*zip(*(f.bbox() for f in items), strict=True))
            index.tree = shapely.STRtree(boxes)
            circle = np.array([f.kind == "circle" for f in items])
            index.arrays = {
                "circle": circle,
                "clat": np.array([f.center[0] if f.center else 0.0 for f in items]),
                "clon": np.array([f.center[1] if f.center else 0.0 for f in items]),
                "radius": np.array([f.radius_m for f in items]),
                "lat0": np.array([f.lat0 for f in items]),
                "lon0": np.array([f.lon0 for f in items]),
                "kx": np.array([f.kx for f in items]),
                "tol": np.array([f.tolerance_m for f in items]),
                "local": np.array([f.local for f in items], dtype=object),
                "boundary": np.array([f.boundary for f in items], dtype=object),
            }
        return index

    def near(self, lats: Sequence[float], lons: Sequence[float]) -> tuple[Any, Any]:
        """(fix indexes, fence indexes) of every fix inside a fence's widened box (vectorised)."""
        import numpy as np
        import shapely

        if self.tree is None or not len(lats):
            empty = np.empty(0, dtype=np.intp)
            return empty, empty
        pairs = self.tree.query(shapely.points(np.asarray(lons, dtype=float), np.asarray(lats, dtype=float)))
        return pairs[0], pairs[1]

    def classify(
        self, lats: Sequence[float], lons: Sequence[float], accuracies: Sequence[float]
    ) -> tuple[list[dict[str, str]], list[set[str]]]:
        """Per fix: ({fence_id: in|out} for the near fences it definitely decides, the ids of every
        near fence).  A fence not near a fix is definitely outside it (for a fix accurate enough
        for that fence); near fences missing from the answer are undecided (band, poor accuracy)."""
        import numpy as np
        import shapely

        decided: list[dict[str, str]] = [{} for _ in lats]
        near: list[set[str]] = [set() for _ in lats]
        fix_idx, fence_idx = self.near(lats, lons)
        if not len(fix_idx):
            return decided, near
        a = self.arrays
        lat_a = np.asarray(lats, dtype=float)[fix_idx]
        lon_a = np.asarray(lons, dtype=float)[fix_idx]
        acc = np.asarray(accuracies, dtype=float)[fix_idx]
        dist = np.empty(len(fix_idx))
        circle = a["circle"][fence_idx]
        c = np.flatnonzero(circle)
        if c.size:
            f = fence_idx[c]
            dist[c] = _haversine_pairs(a["clat"][f], a["clon"][f], lat_a[c], lon_a[c]) - a["radius"][f]
        p = np.flatnonzero(~circle)
        if p.size:
            f = fence_idx[p]
            xs = (lon_a[p] - a["lon0"][f]) * a["kx"][f]
            ys = (lat_a[p] - a["lat0"][f]) * M_PER_DEG_LAT
            d = shapely.distance(a["boundary"][f], shapely.points(xs, ys))
            dist[p] = np.where(shapely.contains_xy(a["local"][f], xs, ys), -d, d)
        margin = np.maximum(MIN_MARGIN_M, acc)
        usable = acc <= a["tol"][fence_idx]
        verdict = np.where(usable & (dist < -margin), 1, np.where(usable & (dist > margin), 2, 0))
        ids = [f.fence_id for f in self.fences]
        for i, j, v in zip(fix_idx.tolist(), fence_idx.tolist(), verdict.tolist(), strict=True):
            near[i].add(ids[j])
            if v:
                decided[i][ids[j]] = IN if v == 1 else OUT
        return decided, near

    def decide_many(
        self, lats: Sequence[float], lons: Sequence[float], accuracies: Sequence[float]
    ) -> list[dict[str, str]]:
        return self.classify(lats, lons, accuracies)[0]

    def near_ids(self, lats: Sequence[float], lons: Sequence[float]) -> list[set[str]]:
        return self.classify(lats, lons, [0.0] * len(lats))[1]


def _haversine_pairs(lat1: Any, lon1: Any, lat2: Any, lon2: Any) -> Any:
    import numpy as np

    p1, p2 = np.radians(lat1), np.radians(lat2)
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.minimum(1.0, np.sqrt(a)))


def naive_decide(fences: Sequence[Fence], lat: float, lon: float, accuracy: float) -> dict[str, str]:
    """The reference: every fence, one by one (benchmarks and the equivalence test)."""
    out: dict[str, str] = {}
    for f in fences:
        d = decide(float(f.signed_distances([lat], [lon])[0]), accuracy, f.tolerance_m)
        if d is not None:
            out[f.fence_id] = d
    return out


# ===================================================================== cells and access points


def parse_lbs(text: str) -> dict[str, int]:
    """The ``LBS_BS`` string form of a cell (``mcc:460;mnc:0;lac:4301;cid:20986;rss:-60``)."""
    out: dict[str, int] = {}
    for part in text.replace(",", ";").split(";"):
        if not part.strip():
            continue
        key, sep, value = part.partition(":")
        if not sep:
            raise GeoError(f"LBS_BS part {part.strip()[:20]!r} is not key:value")
        key = key.strip().lower()
        try:
            out[key] = int(value.strip(), 0) if value.strip().lower().startswith("0x") else int(value.strip())
        except ValueError:
            raise GeoError(f"LBS_BS {key} must be an integer") from None
    missing = [k for k in ("mcc", "mnc", "lac", "cid") if k not in out]
    if missing:
        raise GeoError("LBS_BS lacks " + ", ".join(missing))
    return out


def cell_key(mcc: int, mnc: int, lac: int, cid: int) -> str:
    return f"cell:{mcc}-{mnc}-{lac}-{cid}"


def mac_key(mac: str) -> str | None:
    digits = "".join(ch for ch in mac.lower() if ch in "0123456789abcdef")
    if len(digits) != 12:
        return None
    return "wifi:" + ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def rssi_weight(rssi: float | None) -> float:
    """Linear power of an RSSI in dBm (−50 dBm weighs 10× more than −60 dBm); 1 if unknown."""
    if rssi is None:
        return 1.0
    return float(10 ** (max(-120.0, min(0.0, rssi)) / 10.0 + 12))


def weighted_centroid(points: Sequence[tuple[float, float, float, float]]) -> tuple[float, float, float]:
    """(lat, lon, accuracy) of access points (lat, lon, accuracy m, weight): the weighted mean
    position; accuracy = the weighted mean of each point's accuracy plus its distance from the
    centroid (a spread of APs widens the estimate)."""
    total = sum(w for *_, w in points)
    if total <= 0:
        raise GeoError("no weight")
    lat = sum(p[0] * p[3] for p in points) / total
    lon = sum(p[1] * p[3] for p in points) / total
    acc = sum((p[2] + haversine_m(lat, lon, p[0], p[1])) * p[3] for p in points) / total
    return lat, lon, acc
