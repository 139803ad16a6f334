"""Helpers shared by every test level (unit, integration, e2e): waiting, scanning QR codes,
what a device signs and decrypts, and reading what the platform writes (batch CSVs, queues).

Everything here is written from the spec (SPEC §6.2, §6.3, §6.5, §7.1), never from the
product's code, so a test that checks the product with it stays an independent check.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import json
import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# ------------------------------------------------------------------ waiting


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05) -> T:
    """Call ``predicate`` until it returns something truthy or ``timeout`` seconds have passed;
    returns its last answer (so ``assert wait_until(...)`` fails with what it last saw).

    The one polling helper of the suite: for a condition the system will make true.  To show
    that something did *not* happen, wait for a marker that proves the system got past the
    point where it would have (never a fixed pause).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


# ------------------------------------------------------------------ QR codes


def scan(png: bytes) -> str:
    """The text of the one QR code in ``png``, read with an independent decoder (zxing-cpp), as a
    phone's scanner would.

    Only QR codes are looked for, as a QR scanner app does: with every format enabled, zxing-cpp
    sometimes also reports a spurious 4-digit ITF (1D) code inside the QR pattern (about 1 image
    in 500 here), which says nothing about the QR code itself.
    """
    import zxingcpp
    from PIL import Image

    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    found = zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)
    assert len(found) == 1, f"{len(found)} QR codes found"
    return found[0].text


def sign_qr(secret: str, pid: str, dn: str) -> str:
    """The ``Signature`` of a device's QR code (SPEC §7.2): hex HMAC-SHA256 of ``{pid}{dn}``
    keyed with the secret's text."""
    return hmac.new(secret.encode(), (pid + dn).encode(), hashlib.sha256).hexdigest()


# ------------------------------------------------------------------ MQTT credentials (SPEC §6.2)


def mqtt_password(username: str, secret: str, algorithm: str) -> str:
    """``{hex hmac};{algorithm}``, the HMAC keyed with the DECODED (base64) device secret."""
    digest = {"hmacsha256": hashlib.sha256, "hmacsha1": hashlib.sha1}[algorithm]
    return hmac.new(base64.b64decode(secret), username.encode(), digest).hexdigest() + ";" + algorithm


# ------------------------------------------------------------------ dynamic registration (SPEC §6.3)


def sign_register_v2(secret: str, host: str, uri: str, algorithm: str, ts: str, nonce: str, body: bytes) -> str:
    """The v2 endpoint's X-TC-Signature: base64 HMAC-SHA256 of the eight-line text, over the raw body."""
    text = "\n".join(["POST", host, uri, "", algorithm, ts, nonce, hashlib.sha256(body).hexdigest()])
    return base64.b64encode(hmac.new(secret.encode(), text.encode(), hashlib.sha256).digest()).decode()


def sign_register_legacy(secret: str, dn: str, nonce: str, pid: str, ts: str) -> str:
    """The legacy endpoint's signature: base64 of the HMAC-SHA1's hex text."""
    text = f"deviceName={dn}&nonce={nonce}&productId={pid}&timestamp={ts}"
    return base64.b64encode(hmac.new(secret.encode(), text.encode(), hashlib.sha1).hexdigest().encode()).decode()


def aes_decrypt(product_secret: str, payload: str) -> bytes:
    """A registration payload decrypted with pycryptodome (not the product's `cryptography`):
    AES-128-CBC, key = the secret's first 16 characters, IV = sixteen "0" characters; the
    zero-byte padding is left in place."""
    from Crypto.Cipher import AES

    return AES.new(product_secret[:16].encode(), AES.MODE_CBC, iv=b"0" * 16).decrypt(base64.b64decode(payload))


def decrypt(product_secret: str, payload: str, length: int) -> dict[str, Any]:
    """The JSON a registration answer carries (its first ``length`` bytes); the rest must be
    zero-byte padding."""
    raw = aes_decrypt(product_secret, payload)
    assert set(raw[length:]) <= {0}, "zero-byte padding"
    return json.loads(raw[:length])


# ------------------------------------------------------------------ gateways (SPEC §6.5)


def sign_gateway_bind(
    sub_pid: str, sub_dn: str, sub_secret: str, nonce: int | str, ts: int | str, algorithm: str = "hmacsha256"
) -> str:
    """A gateway's bind signature for its subdevice: base64 HMAC of ``{pid}{dn};{random};{ts}``
    keyed with the subdevice secret's text."""
    digest = {"hmacsha256": hashlib.sha256, "hmacsha1": hashlib.sha1}[algorithm.lower()]
    text = f"{sub_pid}{sub_dn};{nonce};{ts}".encode()
    return base64.b64encode(hmac.new(sub_secret.encode("ascii"), text, digest).digest()).decode()


# ------------------------------------------------------------------ what the platform writes

BATCH_CSV_HEADER = ["ProductId", "DeviceName", "ProductSecret", "DevicePsk", "Status", "QRCode"]


def _unescape(cell: str) -> str:
    return cell[1:] if cell.startswith("'") and cell[1:2] in ("=", "+", "-", "@", "\t", "\r") else cell


def read_batch_csv(data: bytes) -> list[dict[str, str]]:
    """The rows of a batch job's CSV (SPEC §7.1), cells un-escaped as a spreadsheet shows them."""
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    assert rows[0] == BATCH_CSV_HEADER
    return [dict(zip(BATCH_CSV_HEADER, [_unescape(c) for c in r], strict=True)) for r in rows[1:]]


def queue_counts(sqs: Any, url: str) -> tuple[int, int]:
    """(visible, in flight) messages of an SQS queue."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


# ------------------------------------------------------------------ video samples

#: the shared test media (``../shared/media-samples`` beside the repo; never copied into it)
MEDIA_SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "media-samples"
#: when a person is in view in people-walking.mp4, in whole seconds (its SOURCES.md)
PEOPLE_WALKING_PERSON_S = ((7, 19), (23, 44), (51, 69), (75, 86), (93, 119), (124, 135))
#: the fields of a video result callback's POST body (SPEC §11)
VIDEO_CALLBACK_KEYS = frozenset(
    ("MsgType", "ProductId", "DeviceName", "ServiceType", "TaskId", "Status", "Result", "Files", "Time")
    + ("StartTime", "EndTime")
)


def summary_spans(summary: str, subject: str = "A person is visible") -> list[tuple[int, int]]:
    """The ``from m:ss to m:ss`` / ``at m:ss`` intervals of one clause of a template summary."""
    clause = next((c for c in summary.rstrip(".").split("; ") if c.startswith(subject)), "")

    def secs(text: str) -> int:
        parts = [int(p) for p in text.split(":")]
        return sum(v * 60**i for i, v in enumerate(reversed(parts)))

    spans = []
    for a, b, at in re.findall(r"from ([\d:]+) to ([\d:]+)|at ([\d:]+)", clause):
        spans.append((secs(at), secs(at)) if at else (secs(a), secs(b)))
    return spans


def covered_share(truth: tuple[tuple[int, int], ...], found: list[tuple[int, int]], margin: int = 1) -> float:
    """The share of the true whole seconds that ``found`` covers (each span widened by ``margin``)."""
    seconds = [s for a, b in truth for s in range(a, b + 1)]
    return sum(any(x - margin <= s <= y + margin for x, y in found) for s in seconds) / len(seconds)


# ------------------------------------------------------------------ geometry (location tests)


def point_at(lat: float, lon: float, metres: float, bearing_deg: float) -> tuple[float, float]:
    """The point ``metres`` from (lat, lon) on a bearing (the spherical destination formula, an
    independent check of the product's haversine)."""
    d = metres / 6_371_008.8
    b = math.radians(bearing_deg)
    p1, l1 = math.radians(lat), math.radians(lon)
    p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(b))
    l2 = l1 + math.atan2(math.sin(b) * math.sin(d) * math.cos(p1), math.cos(d) - math.sin(p1) * math.sin(p2))
    return math.degrees(p2), math.degrees(l2)


def square(lat: float, lon: float, half_m: float) -> list[list[float]]:
    """A closed GeoJSON ring: the square of half-side ``half_m`` metres around (lat, lon)."""
    dlat, dlon = half_m / 110_540, half_m / (111_320 * math.cos(math.radians(lat)))
    return [
        [lon - dlon, lat - dlat],
        [lon + dlon, lat - dlat],
        [lon + dlon, lat + dlat],
        [lon - dlon, lat + dlat],
        [lon - dlon, lat - dlat],
    ]


def partner_policy(pid: str) -> dict[str, Any]:
    """A policy allowing everything on one product and nothing else."""
    return {
        "version": "2.0",
        "statement": [
            {"effect": "allow", "action": ["iotexplorer:*"], "resource": [f"product/{pid}", f"product/{pid}/*"]}
        ],
    }


def gps_property(accuracy: bool = False) -> dict[str, Any]:
    """The standard ``GPS_Info`` property (SPEC §10) for a thing model, optionally with an
    ``accuracy`` member (metres) the location service uses when a device reports one."""
    from chalicelib.services.thing_model import standard_feature

    feat = standard_feature("GPS_Info")
    assert feat is not None
    feat.pop("kind")
    if accuracy:
        feat["define"]["specs"].append(
            {"id": "accuracy", "name": "Accuracy", "dataType": {"type": "float", "min": "0", "max": "100000"}}
        )
    return feat
