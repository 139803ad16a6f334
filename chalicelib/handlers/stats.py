"""HTTP routes for operational analytics (SPEC §13): overview, message counters, distribution.

Each route covers one product (``product_id``) or, without it, every product the caller's
policy lets it read with that action.  Days and hours are UTC.  Times: Unix seconds or
milliseconds (≥ 10^11 means ms).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from chalice import Blueprint

from ..core import clock, errors
from ..core.schema import Array, Enum, Integer, Model, Number, String
from ..services import analytics, device_data
from ..services.products import PRODUCT_ID_RE, get_product
from .api import Ctx, route

bp = Blueprint(__name__)
#: 2100-01-01 in milliseconds: the latest time a range may name
MAX_TIME = 4_102_444_800_000
TAG = "analytics"

PRODUCT = {
    "product_id": String(
        pattern=PRODUCT_ID_RE.pattern,
        code=errors.PRODUCT_ID_INVALID,
        rule="must be a 10-character ProductId",
        description="one product; default: every product the caller may read",
    )
}
RANGE = {
    "start": Integer(
        minimum=0,
        maximum=MAX_TIME,
        code=errors.START_INVALID,
        description="Unix seconds or milliseconds (≥ 10^11 means ms)",
    ),
    "end": Integer(
        minimum=0, maximum=MAX_TIME, code=errors.END_INVALID, description="Unix seconds or milliseconds; default: now"
    ),
}

Period = Model(
    "StatsPeriod",
    {
        "start": String(required=True, description="first day (UTC, YYYY-MM-DD)"),
        "end": String(required=True, description="last day (UTC, YYYY-MM-DD)"),
        "activations": Integer(required=True),
        "active_device_days": Integer(required=True, description="sum over the days of the devices active that day"),
        "uplink": Integer(required=True),
        "downlink": Integer(required=True),
        "online_peak": Integer(required=True, description="highest daily online peak in the period"),
    },
    allow_extra=True,
)
Day = Model(
    "StatsDay",
    {
        "date": String(required=True),
        "activations": Integer(required=True),
        "active": Integer(required=True),
        "online_peak": Integer(required=True),
    },
    allow_extra=True,
)
Overview = Model(
    "StatsOverview",
    {
        "products": Integer(required=True, description="how many products the figures cover"),
        "activated": Integer(required=True, description="devices that have connected at least once"),
        "online": Integer(required=True, description="devices online now"),
        "yesterday": Model(
            "StatsYesterday",
            {"date": String(required=True), "activations": Integer(required=True), "active": Integer(required=True)},
            allow_extra=True,
        ),
        "last_7_days": Period,
        "previous_7_days": Period,
        "daily": Array(Day, required=True, description="one entry per day of start..end (default the last 7 days)"),
    },
    allow_extra=True,
)

_COUNTS = {m: Integer(required=True) for m in analytics.MESSAGE_METRICS}
Bucket = Model(
    "StatsMessageBucket",
    {"time": Integer(required=True, description="bucket start, Unix seconds"), "iso": String(required=True), **_COUNTS},
    allow_extra=True,
)
Messages = Model(
    "StatsMessages",
    {
        "granularity": Enum(("hour", "day"), required=True),
        "start": Integer(required=True),
        "end": Integer(required=True),
        "items": Array(Bucket, required=True),
        "total": Model("StatsMessageTotal", dict(_COUNTS), allow_extra=True),
    },
    allow_extra=True,
)

Region = Model(
    "StatsRegion",
    {
        "region": String(required=True),
        "count": Integer(required=True),
        "percent": Number(required=True, description="share of the located devices"),
    },
    allow_extra=True,
)
Distribution = Model(
    "StatsDistribution",
    {
        "devices": Integer(required=True),
        "located": Integer(required=True),
        "unlocated": Integer(required=True, description="devices without a reported region or position"),
        "items": Array(Region, required=True),
    },
    allow_extra=True,
)


def _products(ctx: Ctx) -> list[tuple[str, int]]:
    """(pid, device count) of the products the request covers, authorised one by one."""
    action = ctx.spec.action or ""
    pid = ctx.query.get("product_id")
    if pid:
        ctx.require(action, f"product/{pid}")
        return [(pid, int(get_product(pid).device_count or 0))]
    return list(analytics.product_ids(lambda p: ctx.allowed(action, f"product/{p}")))


def _seconds(value: int | None, default_s: int) -> int:
    return default_s if value is None else device_data.to_ms(value, 0) // 1000


@route(
    bp,
    "GET",
    "/v1/stats/overview",
    action="DescribeDeviceStatistics",
    resource="product/*",
    listing=True,
    tag=TAG,
    summary="Activated and online devices, yesterday, last 7 days vs the 7 before, and a daily series",
    query={**PRODUCT, **RANGE},
    response=Overview,
)
def overview(ctx: Ctx) -> dict[str, Any]:
    pids = [p for p, _ in _products(ctx)]
    start, end = ctx.query.get("start"), ctx.query.get("end")
    end_day = dt.datetime.fromtimestamp(_seconds(end, 0), tz=dt.UTC).date() if end is not None else None
    start_day = dt.datetime.fromtimestamp(_seconds(start, 0), tz=dt.UTC).date() if start is not None else None
    if start_day is not None and end_day is None:
        end_day = dt.datetime.now(tz=dt.UTC).date()
    return analytics.overview(pids, start_day, end_day)


@route(
    bp,
    "GET",
    "/v1/stats/messages",
    action="DescribeMessageStatistics",
    resource="product/*",
    listing=True,
    tag=TAG,
    summary="Uplink, downlink, their failures, rule hits and forwards per hour or per day",
    query={**PRODUCT, **RANGE, "granularity": Enum(("hour", "day"), default="hour", code=errors.GRANULARITY_INVALID)},
    response=Messages,
)
def messages(ctx: Ctx) -> dict[str, Any]:
    pids = [p for p, _ in _products(ctx)]
    granularity = ctx.query["granularity"]
    end = _seconds(ctx.query.get("end"), clock.now_s())
    span = 86400 if granularity == "hour" else 30 * 86400
    start = _seconds(ctx.query.get("start"), end - span + 1)
    return analytics.messages(pids, granularity, start, end)


@route(
    bp,
    "GET",
    "/v1/stats/distribution",
    action="DescribeDeviceDistribution",
    resource="product/*",
    listing=True,
    tag=TAG,
    summary="Devices per region (a reported device_label region, else the continent of their position)",
    query=PRODUCT,
    response=Distribution,
)
def distribution(ctx: Ctx) -> dict[str, Any]:
    products = _products(ctx)
    return analytics.distribution([p for p, _ in products], dict(products))
