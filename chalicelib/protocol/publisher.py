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
from ..core.observability import logger


class DevicePublisher(Protocol):
    def publish(self, topic: str, payload: bytes, qos: int = 0) -> bool:
        """Send ``payload`` to ``topic``.  Returns False when it is known that no
        subscriber received it (``Pub_To_Dev_No_Subscriber``); True otherwise."""

    def disconnect(self, client_id: str) -> bool:
        """Close the device's live MQTT session now; False when it had none."""


class IotDataPublisher:
    """AWS IoT Core data plane (``iot-data`` ``Publish``)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            import boto3

            kwargs: dict[str, Any] = {"region_name": settings().region}
            if settings().iot_data_endpoint:
                kwargs["endpoint_url"] = settings().iot_data_endpoint
            client = self._local.client = boto3.client("iot-data", **kwargs)
        return client

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> bool:
        self._client().publish(topic=topic, qos=qos, payload=payload)
        return True

    def disconnect(self, client_id: str) -> bool:
        client = self._client()
        try:
            client.delete_connection(clientId=client_id, cleanSession=True, preventWillMessage=True)
        except client.exceptions.ResourceNotFoundException:
            return False
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


def disconnect(client_id: str) -> bool:
    """Cut a device off at once (it was disabled or deleted); never raises: the re-authorisation
    of live sessions (refreshAfterInSeconds) is the backstop if the host cannot do it now."""
    cut = getattr(current(), "disconnect", None)
    if cut is None:  # a publisher that cannot (a test recorder)
        return False
    try:
        return bool(cut(client_id))
    except Exception as exc:  # noqa: BLE001 - the change that asked for it has already been made
        logger.warning(
            "could not disconnect the device's session now; re-authorisation will",
            extra={"client_id": client_id, "error": type(exc).__name__},
        )
        return False


def publish(topic: str, message: Any, qos: int = 0) -> bool:
    """Publish a JSON-serialisable message (or raw bytes) to a device topic."""
    if isinstance(message, (bytes, bytearray)):
        payload = bytes(message)
    else:
        payload = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    return current().publish(topic, payload, qos)
