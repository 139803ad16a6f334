"""The one observability module: Powertools Logger, Metrics and Tracer.

Everything logs through :data:`logger` (structured JSON; the route kit attaches
the request id and action).  Metrics are EMF lines flushed once per request;
tracing opens an X-Ray subsegment per request when the stage enables it.  The
Metrics and Tracer objects (and aws_xray_sdk behind the tracer) are created on
first use, so a stage that disables them never pays their import on cold start.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger  # noqa: TID253 - every entry point logs from its first line

from .config import settings

logger = Logger(service="fleetbox", level=settings().log_level)


@lru_cache(maxsize=1)
def metrics() -> Any:
    from aws_lambda_powertools import Metrics

    return Metrics(namespace="Fleetbox", service="fleetbox")


@lru_cache(maxsize=1)
def tracer() -> Any:
    from aws_lambda_powertools import Tracer

    return Tracer(service="fleetbox", auto_patch=True)


@contextlib.contextmanager
def segment(name: str, **annotations: str) -> Iterator[None]:
    """An X-Ray subsegment around a unit of work (no-op when tracing is off)."""
    if not settings().tracing:
        yield
        return
    with tracer().provider.in_subsegment(f"## {name}") as sub:
        for key, value in annotations.items():
            sub.put_annotation(key, value)
        yield


def request_done(action: str, status: int) -> None:
    """Count one API request by outcome and flush (EMF to the function's log)."""
    if not settings().metrics:
        return
    from aws_lambda_powertools.metrics import MetricUnit

    m = metrics()
    try:
        m.add_metadata(key="action", value=action)
        m.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
        if status >= 500:
            m.add_metric(name="ServerErrors", unit=MetricUnit.Count, value=1)
        elif status >= 400:
            m.add_metric(name="ClientErrors", unit=MetricUnit.Count, value=1)
        m.flush_metrics()
    except Exception:  # metrics must never break a request
        logger.exception("metrics flush failed")
