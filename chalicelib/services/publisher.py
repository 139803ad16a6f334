"""The device publisher port: how the cloud sends a message to a device.

On AWS it is IoT Core's data-plane ``Publish``; in the local stack the embedded
broker installs its own publisher at start-up (:func:`use`).  Domain code calls
:func:`publish` and never knows which host it runs on.
"""
from __future__ import annotations

import json
import threading
from functools import lru_cache
from typing import Any, Protocol

from ..core.config import settings


class DevicePublisher(Protocol):
    def publish(self, topic: str, payload: bytes, qos: int = 0) -> bool:
        """Send ``payload`` to ``topic``.  Returns False when it is known that no
        subscriber received it (``Pub_To_Dev_No_Subscriber``); True otherwise."""


class IotDataPublisher:
    """AWS IoT Core data plane (``iot-data`` ``Publish``)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            import boto3

            kwargs = {"region_name": settings().region}
            if settings().iot_data_endpoint:
                kwargs["endpoint_url"] = settings().iot_data_endpoint
            client = self._local.client = boto3.client("iot-data", **kwargs)
        return client

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> bool:
        self._client().publish(topic=topic, qos=qos, payload=payload)
        return True


_installed: DevicePublisher | None = None


def use(publisher: DevicePublisher | None) -> None:
    """Install the publisher (the local broker at start-up; tests install a recorder)."""
    global _installed
    _installed = publisher
    _default.cache_clear()


@lru_cache(maxsize=1)
def _default() -> DevicePublisher:
    return IotDataPublisher()


def current() -> DevicePublisher:
    return _installed if _installed is not None else _default()


def publish(topic: str, message: Any, qos: int = 0) -> bool:
    """Publish a JSON-serialisable message (or raw bytes) to a device topic."""
    if isinstance(message, (bytes, bytearray)):
        payload = bytes(message)
    else:
        payload = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    return current().publish(topic, payload, qos)
