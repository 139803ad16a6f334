"""Event shapes shared by AWS and the local stack.

IoT Core invokes Fleetbox with three shapes, and the local broker produces the very
same ones so the same handlers run in both places:

* **uplink** — a topic rule writes each device message to the uplink Kinesis stream
  (partition key ``{pid}/{dn}``) as JSON ``{"topic","payload"(base64),"clientid",
  "timestamp"(ms),"qos","sourceip"}``; the ``uplink`` handler receives Lambda Kinesis
  batches of those records.
* **presence** — IoT Core lifecycle events (``$aws/events/presence/connected|disconnected/
  {clientId}``) routed by a topic rule to the ``presence`` Lambda.
* **authorizer** — the IoT Core custom-authorizer request (MQTT username, base64 password,
  client id) answered with ``isAuthenticated`` and policy documents.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class UplinkMessage:
    """One device → cloud message, as the topic rule saw it."""

    topic: str  # exactly as published: "$thing/up/property/P/D" or "thing/up/property/P/D"
    payload: bytes
    client_id: str
    timestamp_ms: int
    qos: int = 0
    source_ip: str | None = None

    def record(self) -> dict[str, Any]:
        """The JSON document the topic rule puts on the stream."""
        return {
            "topic": self.topic,
            "payload": base64.b64encode(self.payload).decode(),
            "clientid": self.client_id,
            "timestamp": self.timestamp_ms,
            "qos": self.qos,
            "sourceip": self.source_ip,
        }

    @classmethod
    def from_record(cls, data: bytes | str | dict[str, Any]) -> UplinkMessage:
        doc = data if isinstance(data, dict) else json.loads(data)
        return cls(
            topic=doc["topic"],
            payload=base64.b64decode(doc.get("payload") or ""),
            client_id=doc.get("clientid") or "",
            timestamp_ms=int(doc.get("timestamp") or 0),
            qos=int(doc.get("qos") or 0),
            source_ip=doc.get("sourceip"),
        )


def partition_key(topic: str) -> str:
    """``{pid}/{dn}`` of a device topic (keeps one device's messages in order on one shard)."""
    levels = topic.lstrip("$").split("/")
    if len(levels) >= 5 and levels[0] in ("thing", "resource"):
        return f"{levels[3]}/{levels[4]}"
    if len(levels) >= 4 and levels[0] in ("ota", "sys", "gateway"):
        return f"{levels[-2]}/{levels[-1]}"
    return "/".join(levels[:2])


def kinesis_event(messages: Iterable[UplinkMessage], stream_arn: str, region: str = "us-east-1") -> dict[str, Any]:
    """A Lambda Kinesis event carrying ``messages`` (what the local bridge hands the uplink handler)."""
    records = []
    for i, msg in enumerate(messages):
        data = base64.b64encode(json.dumps(msg.record(), separators=(",", ":")).encode()).decode()
        records.append(
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": partition_key(msg.topic),
                    "sequenceNumber": f"{msg.timestamp_ms:020d}{i:06d}",
                    "data": data,
                    "approximateArrivalTimestamp": msg.timestamp_ms / 1000,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"shardId-000000000000:{msg.timestamp_ms:020d}{i:06d}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::123456789012:role/fleetbox",
                "awsRegion": region,
                "eventSourceARN": stream_arn,
            }
        )
    return {"Records": records}


def presence_event(
    client_id: str,
    connected: bool,
    *,
    timestamp_ms: int,
    ip: str | None = None,
    reason: str | None = None,
    client_initiated: bool = False,
    session_id: str | None = None,
    keepalive: int | None = None,
) -> dict[str, Any]:
    """An IoT Core lifecycle event.  ``reason`` (disconnects) as IoT Core spells it, e.g.
    ``CLIENT_INITIATED_DISCONNECT``, ``MQTT_KEEP_ALIVE_TIMEOUT``, ``DUPLICATE_CLIENTID``."""
    event: dict[str, Any] = {
        "clientId": client_id,
        "timestamp": timestamp_ms,
        "eventType": "connected" if connected else "disconnected",
        "sessionIdentifier": session_id or str(uuid.uuid4()),
        "principalIdentifier": client_id,
        "versionNumber": 0,
    }
    if connected:
        event["ipAddress"] = ip
        if keepalive is not None:
            event["keepAlive"] = keepalive  # not sent by IoT Core; the local broker adds it for the log line
    else:
        event["clientInitiatedDisconnect"] = client_initiated
        event["disconnectReason"] = reason or ("CLIENT_INITIATED_DISCONNECT" if client_initiated else "CONNECTION_LOST")
    return event


def authorizer_event(client_id: str, username: str, password: bytes, *, source_ip: str | None = None) -> dict[str, Any]:
    """The IoT Core custom-authorizer request for an MQTT CONNECT."""
    return {
        "token": None,
        "signatureVerified": False,
        "protocols": ["mqtt"],
        "protocolData": {
            "mqtt": {"username": username, "password": base64.b64encode(password).decode(), "clientId": client_id}
        },
        "connectionMetadata": {"id": str(uuid.uuid4()), **({"sourceIp": source_ip} if source_ip else {})},
    }
