"""Files in the files bucket: the product's one S3 client, presigned uploads, measured objects, links.

* :func:`put_object` / :func:`get_object` / :func:`delete_object` — what services store (batch
  inputs, parts and outputs; SPEC §7);
* :func:`attachment_url` — a time-limited link for a person to download an output (CSV, ZIP)
  under a file name of our choosing;

* :func:`upload_url` — a presigned ``PUT`` for the app to upload the bytes itself (no file
  ever passes through a Lambda);
* :func:`measure` — size (``HeadObject``) and lowercase-hex MD5 of the stored object, streamed
  in 1 MB chunks (an S3 ETag is the MD5 only for single-part uploads without SSE-KMS, so it is
  never trusted);
* :func:`download_url` — the time-limited link a device downloads from.  Tencent's SDK derives
  its ``Host`` header from everything between ``://`` and the **last** ``/`` of the URL
  (SPEC §6.6), so links are root-level: ``scheme://host[:port]/<key>?<query without '/'>``, which
  is why downloadable objects have keys without ``/`` (``firmware-{id}-{file}``, ``resource-…``).
  Locally they point at the local stack's download endpoint (``infra/local/downloads.py``),
  which checks the signature and expiry made here and serves HTTP ``Range``; on AWS they are
  presigned virtual-hosted S3 URLs (``https://{bucket}.s3.{region}.amazonaws.com/{key}?X-Amz-…``,
  the credential's slashes percent-encoded in the query), which S3 serves with ``Range``.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any
from urllib.parse import quote

from botocore.config import Config
from botocore.exceptions import ClientError

from ..core import clock
from ..core.config import settings

_clients: dict[str, Any] = {}
CHUNK = 1024 * 1024


def s3() -> Any:
    client = _clients.get("s3")
    if client is None:
        import boto3

        client = _clients["s3"] = boto3.client(
            "s3", region_name=settings().region, config=Config(signature_version="s3v4")
        )
    return client


def forget() -> None:
    """Drop cached clients (tests that swap the AWS backend call this)."""
    _clients.clear()


def put_object(key: str, body: bytes | Any, content_type: str) -> None:
    s3().put_object(Bucket=settings().bucket, Key=key, Body=body, ContentType=content_type)


def get_object(key: str) -> bytes:
    return s3().get_object(Bucket=settings().bucket, Key=key)["Body"].read()


def delete_object(key: str) -> None:
    s3().delete_object(Bucket=settings().bucket, Key=key)


#: locally, people's download links are served by the stack under this path (infra/local/downloads.py)
ATTACHMENT_PATH = "/files/"


def attachment_url(key: str, file_name: str, ttl_s: int | None = None) -> str:
    """A time-limited GET that downloads as ``file_name``: on AWS a SigV4 presigned S3 URL; on the
    local stack a link to its own download endpoint, signed and checked there (moto's S3 would
    serve an expired or unsigned link)."""
    base = settings().download_base_url
    if base:
        expires = int(clock.now()) + (ttl_s or settings().download_ttl_s)
        sig = link_signature(f"{key}\n{file_name}", expires, settings().download_key or "")
        return (
            f"{base.rstrip('/')}{ATTACHMENT_PATH}{quote(key, safe='/')}"
            f"?e={expires}&n={quote(file_name, safe='')}&s={sig}"
        )
    return s3().generate_presigned_url(
        "get_object",
        ExpiresIn=ttl_s or settings().download_ttl_s,
        Params={
            "Bucket": settings().bucket,
            "Key": key,
            "ResponseContentDisposition": f'attachment; filename="{file_name}"',
        },
    )


def upload_url(key: str, expires_s: int = 3600) -> str:
    return s3().generate_presigned_url(
        "put_object", Params={"Bucket": settings().bucket, "Key": key}, ExpiresIn=expires_s
    )


def head(key: str) -> int | None:
    """The object's size, or None when it does not exist."""
    found = describe(key)
    return found[0] if found else None


def describe(key: str) -> tuple[int, str] | None:
    """(size, content type as stored) of the object, or None when it does not exist."""
    try:
        meta = s3().head_object(Bucket=settings().bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    return int(meta["ContentLength"]), str(meta.get("ContentType") or "application/octet-stream")


def md5_of(key: str) -> tuple[str, int]:
    """(lowercase hex MD5, bytes read), streamed."""
    body = s3().get_object(Bucket=settings().bucket, Key=key)["Body"]
    digest, size = hashlib.md5(usedforsecurity=False), 0
    for chunk in body.iter_chunks(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def put_text(key: str, text: str) -> None:
    s3().put_object(Bucket=settings().bucket, Key=key, Body=text.encode("utf-8"))


def get_text(key: str) -> str:
    return s3().get_object(Bucket=settings().bucket, Key=key)["Body"].read().decode("utf-8")


def delete(key: str) -> None:
    s3().delete_object(Bucket=settings().bucket, Key=key)


# ------------------------------------------------------------------ download links


def _root_level(key: str) -> str:
    if "/" in key or not key:
        raise ValueError(f"download keys are root-level (no '/'): {key!r}")
    return key


def link_signature(key: str, expires: int, secret: str) -> str:
    return hmac.new(secret.encode(), f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()


def check_link(name: str, expires: str, signature: str, now: float | None = None) -> str | None:
    """The key a local download link names when its signature is right and it has not expired."""
    secret = settings().download_key
    if not secret or not expires.isdigit():
        return None
    key = name
    if "/" in key or not hmac.compare_digest(link_signature(key, int(expires), secret), signature):
        return None
    if int(expires) < (now if now is not None else clock.now()):
        return None
    return key


def check_attachment(key: str, file_name: str, expires: str, signature: str) -> bool:
    """Whether a local attachment link is the one :func:`attachment_url` made and has not expired."""
    secret = settings().download_key
    if not secret or not expires.isdigit():
        return False
    if not hmac.compare_digest(link_signature(f"{key}\n{file_name}", int(expires), secret), signature):
        return False
    return int(expires) >= clock.now()


def download_url(key: str, ttl_s: int | None = None) -> str:
    ttl = ttl_s or settings().download_ttl_s
    _root_level(key)
    base = settings().download_base_url
    if base:
        expires = int(clock.now()) + ttl
        sig = link_signature(key, expires, settings().download_key or "")
        return f"{base.rstrip('/')}/{quote(key, safe='')}?e={expires}&s={sig}"
    import boto3

    client = _clients.get("s3v")
    if client is None:
        client = _clients["s3v"] = boto3.client(
            "s3",
            region_name=settings().region,
            config=Config(signature_version="s3v4", s3={"addressing_style": "virtual"}),
        )
    return client.generate_presigned_url("get_object", Params={"Bucket": settings().bucket, "Key": key}, ExpiresIn=ttl)
