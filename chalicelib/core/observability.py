"""The one observability module: Powertools Logger, Metrics and Tracer.

Everything logs through :data:`logger` (structured JSON, request id attached by
the HTTP middleware).  Metrics are EMF lines flushed per invocation; the tracer
patches nothing until X-Ray is enabled for the stage.  Powertools reads its
switches from the environment (POWERTOOLS_*), set per stage in
``.chalice/config.json``.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger

from .config import settings

logger = Logger(service="fleetbox", level=settings().log_level)


@lru_cache(maxsize=1)
def metrics() -> Any:
    from aws_lambda_powertools import Metrics

    return Metrics(namespace="Fleetbox", service="fleetbox")


@lru_cache(maxsize=1)
def tracer() -> Any:
    from aws_lambda_powertools import Tracer

    return Tracer(service="fleetbox", auto_patch=False)


def count(name: str, value: float = 1, **dimensions: str) -> None:
    """Add one metric value (flushed at the end of the invocation)."""
    from aws_lambda_powertools.metrics import MetricUnit

    m = metrics()
    m.add_metric(name=name, unit=MetricUnit.Count, value=value)


def flush_metrics() -> None:
    m = metrics()
    try:
        m.flush_metrics(raise_on_empty_metrics=False)
    except Exception:  # metrics must never break a request
        logger.exception("metrics flush failed")
