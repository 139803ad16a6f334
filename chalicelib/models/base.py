"""Shared PynamoDB plumbing: table names and region come from the typed settings.

Endpoints are never configured here: botocore honours ``AWS_ENDPOINT_URL``
(the local stack points it at moto) and ``mock_aws`` intercepts in tests.
"""

from __future__ import annotations

import json
from typing import Any

from pynamodb.attributes import Attribute
from pynamodb.constants import STRING

from ..core.config import settings


def meta(logical: str) -> Any:
    """A PynamoDB ``Meta`` class for the stage's table ``logical``."""

    class Meta:
        table_name = settings().table(logical)
        region = settings().region
        max_retry_attempts = 3
        connect_timeout_seconds = 5
        read_timeout_seconds = 10

    return Meta


class JSONText(Attribute[Any]):
    """A JSON document stored as a string (schemaless parts: thing model, policies, topics)."""

    attr_type = STRING

    def serialize(self, value: Any) -> str:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)

    def deserialize(self, value: str) -> Any:
        return json.loads(value)
