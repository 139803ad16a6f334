"""Geofence engine throughput: fixes per second against 100, 1,000 and 10,000 fences.

Runs the alarm engine the uplink uses (``media/geo.FenceIndex``: one STRtree over every fence,
queried with a batch of fixes at once, exact decisions on the candidates) **with the state
lookups** the uplink makes in memory (each device's bound fences, its previous inside-set, the
crossings) beside a naive loop over the same prepared geometries (every fence, one by one), in
the same run, and prints the medians of ``--repeats`` runs.

Fences: half circles (20-800 m), half polygons with a hole (squares of 50-800 m), scattered
over a 1° × 1° area at latitude 60; every device is bound to 10 fences.  Fixes: random points
of that area, accuracy 5-30 m.

    .venv/bin/python -m bench.geofence [--fixes 20000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time

from chalicelib.media import geo

LAT0, LON0 = 60.0, 10.0


def square(lat: float, lon: float, half_m: float) -> list[list[float]]:
    dlat, dlon = half_m / geo.M_PER_DEG_LAT, half_m / (geo.M_PER_DEG_LON * math.cos(math.radians(lat)))
    return [
        [lon - dlon, lat - dlat],
        [lon + dlon, lat - dlat],
        [lon + dlon, lat + dlat],
        [lon - dlon, lat + dlat],
        [lon - dlon, lat - dlat],
    ]


def make_fences(n: int, rng: random.Random) -> list[geo.Fence]:
    fences = []
    for i in range(n):
        lat, lon = LAT0 + rng.random(), LON0 + rng.random() * 2
        if i % 2:
            fences.append(geo.Fence(f"c{i}", "circle", 100, center=(lat, lon), radius_m=rng.uniform(20, 800)))
        else:
            half = rng.uniform(50, 800)
            doc = {"type": "Polygon", "coordinates": [square(lat, lon, half), square(lat, lon, half / 4)]}
            fences.append(geo.Fence(f"p{i}", "polygon", 100, geom=geo.polygon_of(doc)))
    return fences


def engine_run(index: geo.FenceIndex, fixes: list, bound: dict, inside: dict) -> int:
    """The uplink's path: one vectorised query for the batch, then per fix the device's bound
    fences decided (far ones definitely outside) against its stored inside-set."""
    lats, lons, accs = zip(*[(f[1], f[2], f[3]) for f in fixes], strict=True)
    decided, near = index.classify(lats, lons, accs)
    crossings = 0
    for (dev, _lat, _lon, _acc), answer, close in zip(fixes, decided, near, strict=True):
        state = inside[dev]
        for fid in bound[dev]:
            d = answer.get(fid) or (None if fid in close else geo.OUT)
            if d == geo.IN and fid not in state:
                state.add(fid)
                crossings += 1
            elif d == geo.OUT and fid in state:
                state.discard(fid)
                crossings += 1
    return crossings


def naive_run(fences: list[geo.Fence], fixes: list, bound: dict, inside: dict) -> int:
    crossings = 0
    for dev, lat, lon, acc in fixes:
        answer = geo.naive_decide(fences, lat, lon, acc)
        state = inside[dev]
        for fid in bound[dev]:
            d = answer.get(fid)
            if d == geo.IN and fid not in state:
                state.add(fid)
                crossings += 1
            elif d == geo.OUT and fid in state:
                state.discard(fid)
                crossings += 1
    return crossings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixes", type=int, default=20_000)
    ap.add_argument("--naive-fixes", type=int, default=200, help="the naive loop is slow: fewer fixes, same rate")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=500, help="fixes per engine call (the uplink's batch)")
    args = ap.parse_args()
    rng = random.Random(13)
    devices = [f"d{i}" for i in range(1000)]
    print(f"{'fences':>7} | {'engine fixes/s':>15} | {'naive fixes/s':>14} | {'speed-up':>8} | crossings/fix")
    print("-" * 70)
    for n in (100, 1_000, 10_000):
        fences = make_fences(n, rng)
        t0 = time.perf_counter()
        index = geo.FenceIndex.build(fences)
        build_s = time.perf_counter() - t0
        ids = [f.fence_id for f in fences]
        bound = {d: set(rng.sample(ids, 10)) for d in devices}
        fixes = [
            (rng.choice(devices), LAT0 + rng.random(), LON0 + rng.random() * 2, rng.uniform(5, 30))
            for _ in range(args.fixes)
        ]
        fast, slow, crossed = [], [], 0
        for _ in range(args.repeats):
            inside: dict[str, set[str]] = {d: set() for d in devices}
            t0 = time.perf_counter()
            for start in range(0, len(fixes), args.batch):
                crossed += engine_run(index, fixes[start : start + args.batch], bound, inside)
            fast.append(len(fixes) / (time.perf_counter() - t0))
            inside = {d: set() for d in devices}
            sample = fixes[: args.naive_fixes]
            t0 = time.perf_counter()
            naive_run(fences, sample, bound, inside)
            slow.append(len(sample) / (time.perf_counter() - t0))
        f, s = statistics.median(fast), statistics.median(slow)
        per_fix = crossed / (args.repeats * len(fixes))
        print(
            f"{n:>7} | {f:>15,.0f} | {s:>14,.0f} | {f / s:>7,.0f}× | {per_fix:.3f}   (index built in {build_s:.2f} s)"
        )


if __name__ == "__main__":
    main()
