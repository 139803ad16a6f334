"""Operational analytics (SPEC §13): atomic counters kept as messages flow, and their read side.

Layout (counters table, pk/sk), all per product — the all-products figures are the sum over
the products the caller may see, computed when read:

* ``stats/{pid}/day`` · ``YYYYMMDD`` (UTC): the day's totals ``uplink``, ``downlink``,
  ``uplink_fail``, ``downlink_fail``, ``rule_hits``, ``rule_forwards``, ``activations``,
  ``active`` (devices with any activity that day), ``online_peak``; and the same message
  metrics per hour as ``hHH_<metric>`` (``h07_uplink``).  Keeping the hours inside the day
  item means the message path pays **one** ``UpdateItem`` per product per batch for every
  counter of that batch (ADD is atomic), and a day or an hour series is one key read.
* ``stats/{pid}/totals`` · ``-``: gauges ``online`` (ADD ±1 on presence changes),
  ``activated`` (ADD 1 on a device's first connect) and ``region:<name>`` (devices per
  region, moved when a device's derived region changes).

"First activity of the day" needs no extra request on the message path: the shadow update the
uplink makes anyway sets the device's ``active_day`` and returns the old value (a connect sets
it with one small shadow update of its own).

Region derivation (distribution): a ``device_label`` entry ``region`` reported with
``report_info`` wins; otherwise the device's latest position — ``lat``/``lon`` of
``report_info`` or a ``GPS_Info``/``GPS_ExtInfo`` report — is mapped to a continent with
coarse bounding boxes (:func:`region_of`); ``(0, 0)`` and out-of-range positions count as
unlocated.

Counters are at-least-once: a batch the stream re-delivers after a failure counts again.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..core import clock, errors
from ..core.observability import logger
from ..models.counters import CounterRecord
from ..models.products import ACCOUNT, ProductRecord
from ..models.txn import connection

MESSAGE_METRICS = ("uplink", "downlink", "uplink_fail", "downlink_fail", "rule_hits", "rule_forwards")
DAY_METRICS = ("activations", "active")
REGION_PREFIX = "region:"
TOTALS_SK = "-"
MAX_HOUR_RANGE_S = 31 * 86400
MAX_DAY_RANGE_DAYS = 366


def day_pk(pid: str) -> str:
    return f"stats/{pid}/day"


def totals_pk(pid: str) -> str:
    return f"stats/{pid}/totals"


def _utc(ts_ms: int | None) -> dt.datetime:
    ms = clock.now_ms() if ts_ms is None else int(ts_ms)
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def day_of(ts_ms: int | None = None) -> str:
    """``YYYYMMDD`` (UTC) of a time in ms (now when None)."""
    return _utc(ts_ms).strftime("%Y%m%d")


def _table() -> str:
    return CounterRecord.Meta.table_name


# --------------------------------------------------------------- writing


class Tally:
    """Counts gathered over a batch, written with one ``UpdateItem`` per product and day."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def add(self, pid: str, metric: str, n: int = 1, ts_ms: int | None = None) -> None:
        if not n:
            return
        when = _utc(ts_ms)
        bucket = self._counts[(pid, when.strftime("%Y%m%d"))]
        bucket[metric] += n
        if metric in MESSAGE_METRICS:
            bucket[f"h{when.hour:02d}_{metric}"] += n

    def __bool__(self) -> bool:
        return any(any(v for v in b.values()) for b in self._counts.values())

    def flush(self) -> int:
        """Write and forget the counts; returns the number of requests.  Never raises: a lost
        increment is logged (the messages it counted were processed)."""
        requests = 0
        counts, self._counts = self._counts, defaultdict(lambda: defaultdict(int))
        for (pid, day), bucket in counts.items():
            adds = {k: v for k, v in bucket.items() if v}
            if not adds:
                continue
            names, values, parts = {}, {}, []
            for i, (attr, n) in enumerate(sorted(adds.items())):
                names[f"#a{i}"] = attr
                values[f":a{i}"] = {"N": str(n)}
                parts.append(f"#a{i} :a{i}")
            try:
                requests += 1
                connection().dispatch(
                    "UpdateItem",
                    {
                        "TableName": _table(),
                        "Key": {"pk": {"S": day_pk(pid)}, "sk": {"S": day}},
                        "UpdateExpression": "ADD " + ", ".join(parts),
                        "ExpressionAttributeNames": names,
                        "ExpressionAttributeValues": values,
                    },
                )
            except Exception:  # noqa: BLE001 - counters never fail the traffic they count
                logger.exception("analytics counters lost", extra={"product_id": pid, "day": day, "counts": adds})
        return requests


def count(pid: str, metric: str, n: int = 1, ts_ms: int | None = None) -> None:
    """Count right away (API and presence paths, where there is no batch)."""
    tally = Tally()
    tally.add(pid, metric, n, ts_ms)
    tally.flush()


def adjust_totals(pid: str, changes: dict[str, int]) -> dict[str, int]:
    """ADD to the product's gauges (online, activated, region:*); returns their new values."""
    changes = {k: v for k, v in changes.items() if v}
    if not changes:
        return {}
    names, values, parts = {}, {}, []
    for i, (attr, n) in enumerate(sorted(changes.items())):
        names[f"#a{i}"] = attr
        values[f":a{i}"] = {"N": str(n)}
        parts.append(f"#a{i} :a{i}")
    try:
        out = connection().dispatch(
            "UpdateItem",
            {
                "TableName": _table(),
                "Key": {"pk": {"S": totals_pk(pid)}, "sk": {"S": TOTALS_SK}},
                "UpdateExpression": "ADD " + ", ".join(parts),
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
                "ReturnValues": "UPDATED_NEW",
            },
        )
    except Exception:  # noqa: BLE001 - gauges never fail the change they measure
        logger.exception("analytics gauges lost", extra={"product_id": pid, "changes": changes})
        return {}
    return {k: int(v["N"]) for k, v in (out.get("Attributes") or {}).items() if "N" in v}


def note_online_peak(pid: str, online: int, ts_ms: int | None = None) -> None:
    """Raise the day's ``online_peak`` to ``online`` if it is higher (presence path only)."""
    try:
        connection().dispatch(
            "UpdateItem",
            {
                "TableName": _table(),
                "Key": {"pk": {"S": day_pk(pid)}, "sk": {"S": day_of(ts_ms)}},
                "UpdateExpression": "SET #p = :v",
                "ConditionExpression": "attribute_not_exists(#p) OR #p < :v",
                "ExpressionAttributeNames": {"#p": "online_peak"},
                "ExpressionAttributeValues": {":v": {"N": str(online)}},
            },
        )
    except Exception as exc:  # noqa: BLE001 - the usual outcome: the peak is already higher
        if getattr(exc, "response", {}).get("Error", {}).get("Code") != "ConditionalCheckFailedException":
            logger.exception("online peak lost", extra={"product_id": pid})


# --------------------------------------------------------------- regions

# (name, lat_min, lat_max, lon_min, lon_max), first match wins; continent-level on purpose
_REGION_BOXES: tuple[tuple[str, float, float, float, float], ...] = (
    ("Antarctica", -90, -60, -180, 180),
    ("Oceania", -60, -11, 110, 180),
    ("Oceania", -11, 0, 141, 180),
    ("Oceania", -60, 30, -180, -130),  # Pacific islands east of the date line
    ("South America", -60, 8, -92, -30),
    ("North America", 8, 84, -170, -50),
    ("North America", 60, 84, -75, -10),  # Greenland
    ("Europe", 36, 72, -25, 45),
    ("Europe", 45, 72, 45, 60),
    ("Asia", 12, 45, 35, 60),  # Middle East before Africa's box
    ("Africa", -36, 37, -20, 52),
    ("Asia", -11, 82, 25, 180),
    ("Asia", 60, 72, -180, -169),  # Chukotka
)


def region_of(lat: Any, lon: Any) -> str | None:
    """A continent for a WGS-84 position, or None when it is missing, (0, 0) or out of range."""
    try:
        la, lo = float(lat), float(lon)
    except (TypeError, ValueError):
        return None
    if not (-90 <= la <= 90 and -180 <= lo <= 180) or (la == 0 and lo == 0) or la != la or lo != lo:
        return None
    for name, la0, la1, lo0, lo1 in _REGION_BOXES:
        if la0 <= la <= la1 and lo0 <= lo <= lo1:
            return name
    return "Other"


def region_label(label: Any) -> str | None:
    """A reported region label (``device_label.region``), trimmed; None when unusable."""
    if isinstance(label, str):
        text = label.strip()
        if 0 < len(text) <= 64:
            return text
    return None


def move_region(pid: str, old: str | None, new: str | None) -> None:
    if old == new:
        return
    changes = {}
    if old:
        changes[REGION_PREFIX + old] = -1
    if new:
        changes[REGION_PREFIX + new] = 1
    adjust_totals(pid, changes)


# --------------------------------------------------------------- reading


def _batch_get(keys: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Counter items by (pk, sk), 100 keys per request, unprocessed keys retried."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for start in range(0, len(keys), 100):
        pending: dict[str, Any] = {
            _table(): {"Keys": [{"pk": {"S": pk}, "sk": {"S": sk}} for pk, sk in keys[start : start + 100]]}
        }
        for _ in range(8):
            out = connection().dispatch("BatchGetItem", {"RequestItems": pending})
            for item in (out.get("Responses") or {}).get(_table(), []):
                found[(item["pk"]["S"], item["sk"]["S"])] = {k: int(float(v["N"])) for k, v in item.items() if "N" in v}
            pending = out.get("UnprocessedKeys") or {}
            if not pending:
                break
    return found


def _days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def _ymd(d: dt.date) -> str:
    return d.strftime("%Y%m%d")


def _sum(rows: Iterable[dict[str, int]], attrs: Iterable[str]) -> dict[str, int]:
    attrs = tuple(attrs)
    total = {a: 0 for a in attrs}
    for row in rows:
        for a in attrs:
            total[a] += int(row.get(a, 0))
    return total


def overview(pids: list[str], start_day: dt.date | None = None, end_day: dt.date | None = None) -> dict[str, Any]:
    """Activated, online now, yesterday, the last 7 days vs the 7 before, and a daily series."""
    today = _utc(None).date()
    end_day = end_day or today
    start_day = start_day or (end_day - dt.timedelta(days=6))
    if start_day > end_day:
        raise errors.TIME_RANGE_INVALID("start must not be after end", "start")
    if (end_day - start_day).days + 1 > MAX_DAY_RANGE_DAYS:
        raise errors.TIME_RANGE_INVALID(f"the range may span at most {MAX_DAY_RANGE_DAYS} days", "start")
    window = _days(today - dt.timedelta(days=13), today)
    series = _days(start_day, end_day)
    wanted = {_ymd(d) for d in window} | {_ymd(d) for d in series}
    keys = [(totals_pk(p), TOTALS_SK) for p in pids] + [(day_pk(p), d) for p in pids for d in sorted(wanted)]
    items = _batch_get(keys)

    def day_rows(days: Iterable[dt.date]) -> list[dict[str, int]]:
        return [items.get((day_pk(p), _ymd(d)), {}) for p in pids for d in days]

    totals = _sum((items.get((totals_pk(p), TOTALS_SK), {}) for p in pids), ("activated", "online"))

    def period(days: list[dt.date]) -> dict[str, Any]:
        rows = day_rows(days)
        summed = _sum(rows, ("activations", "active", "uplink", "downlink"))
        return {
            "start": days[0].isoformat(),
            "end": days[-1].isoformat(),
            "activations": summed["activations"],
            "active_device_days": summed["active"],
            "uplink": summed["uplink"],
            "downlink": summed["downlink"],
            "online_peak": max(
                (sum(items.get((day_pk(p), _ymd(d)), {}).get("online_peak", 0) for p in pids) for d in days), default=0
            ),
        }

    yesterday = today - dt.timedelta(days=1)
    y = _sum(day_rows([yesterday]), ("activations", "active"))
    daily = []
    for d in series:
        row = _sum(day_rows([d]), ("activations", "active", "online_peak"))
        daily.append(
            {
                "date": d.isoformat(),
                "activations": row["activations"],
                "active": row["active"],
                "online_peak": row["online_peak"],
            }
        )
    return {
        "products": len(pids),
        "activated": max(totals["activated"], 0),
        "online": max(totals["online"], 0),
        "yesterday": {"date": yesterday.isoformat(), "activations": y["activations"], "active": y["active"]},
        "last_7_days": period(window[7:]),
        "previous_7_days": period(window[:7]),
        "daily": daily,
    }


def messages(pids: list[str], granularity: str, start_s: int, end_s: int) -> dict[str, Any]:
    """Message counters per hour or per day between two Unix times (UTC buckets, oldest first)."""
    if start_s > end_s:
        raise errors.TIME_RANGE_INVALID("start must not be after end", "start")
    start = dt.datetime.fromtimestamp(start_s, tz=dt.UTC)
    end = dt.datetime.fromtimestamp(end_s, tz=dt.UTC)
    if granularity == "hour":
        if end_s - start_s > MAX_HOUR_RANGE_S:
            raise errors.TIME_RANGE_INVALID("an hourly range may span at most 31 days", "start")
        first = start.replace(minute=0, second=0, microsecond=0)
        buckets = []
        t = first
        while t <= end:
            buckets.append(t)
            t += dt.timedelta(hours=1)
    else:
        first_day, last_day = start.date(), end.date()
        if (last_day - first_day).days + 1 > MAX_DAY_RANGE_DAYS:
            raise errors.TIME_RANGE_INVALID(f"a daily range may span at most {MAX_DAY_RANGE_DAYS} days", "start")
        buckets = [dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC) for d in _days(first_day, last_day)]
    days = sorted({b.strftime("%Y%m%d") for b in buckets})
    items = _batch_get([(day_pk(p), d) for p in pids for d in days])
    out = []
    for b in buckets:
        ymd = b.strftime("%Y%m%d")
        row: dict[str, Any] = {"time": int(b.timestamp()), "iso": b.strftime("%Y-%m-%dT%H:%M:%SZ")}
        for m in MESSAGE_METRICS:
            attr = f"h{b.hour:02d}_{m}" if granularity == "hour" else m
            row[m] = sum(items.get((day_pk(p), ymd), {}).get(attr, 0) for p in pids)
        out.append(row)
    total = {m: sum(r[m] for r in out) for m in MESSAGE_METRICS}
    return {"granularity": granularity, "start": start_s, "end": end_s, "items": out, "total": total}


def distribution(pids: list[str], device_counts: dict[str, int]) -> dict[str, Any]:
    """Devices per region (counts and percentages of the located devices)."""
    items = _batch_get([(totals_pk(p), TOTALS_SK) for p in pids])
    regions: dict[str, int] = defaultdict(int)
    for p in pids:
        for attr, n in items.get((totals_pk(p), TOTALS_SK), {}).items():
            if attr.startswith(REGION_PREFIX) and n > 0:
                regions[attr[len(REGION_PREFIX) :]] += n
    located = sum(regions.values())
    devices = sum(device_counts.get(p, 0) for p in pids)
    rows = [
        {"region": name, "count": n, "percent": round(100.0 * n / located, 2) if located else 0.0}
        for name, n in sorted(regions.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    return {"devices": devices, "located": located, "unlocated": max(devices - located, 0), "items": rows}


def product_ids(allowed: Callable[[str], bool]) -> Iterator[tuple[str, int]]:
    """(ProductId, device count) of every product ``allowed`` admits (key query on the account index)."""
    for rec in ProductRecord.by_account.query(ACCOUNT):
        if allowed(rec.product_id):
            yield rec.product_id, int(rec.device_count or 0)
