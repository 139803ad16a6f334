"""The local stack's download endpoint for firmware and resources (SPEC §6.6, §8.4).

Devices get root-level links ``http://host:port/<name>?e=<expiry>&s=<signature>`` made by
``chalicelib.services.files.download_url``: Tencent's SDK derives its ``Host`` header from
everything up to the **last** ``/`` of the URL, so only a root-level name keeps that header
sane — and this endpoint never looks at ``Host`` anyway.  It checks the signature and expiry,
then streams the object from the files bucket (moto) with its stored Content-Type, honouring ``Range`` — including the SDK's
``bytes=0-{file_size}`` whose end is one past the last byte — and never compresses.

Served by the same HTTP server as the API (``infra/local/web.py`` hands these paths here), so
a device on the machine reaches it wherever it reaches the API.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

PREFIXES = ("firmware-", "resource-")
_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)$")
CHUNK = 256 * 1024


ATTACHMENTS = "/files/"


def is_download(path: str) -> bool:
    """Root-level device links, and people's attachment links (``/files/<key>?e=&n=&s=``)."""
    raw = urlsplit(path).path
    if raw.startswith(ATTACHMENTS):
        return True
    name = raw.lstrip("/")
    return "/" not in name and name.startswith(PREFIXES)


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None | bool:
    """(start, end inclusive); None for the whole file; False when unsatisfiable."""
    if not header:
        return None
    match = _RANGE_RE.match(header.strip())
    if not match or (not match.group(1) and not match.group(2)):
        return None  # malformed or multi-range: answer the whole file, as RFC 9110 allows
    if not match.group(1):
        length = int(match.group(2))
        return (max(0, size - length), size - 1) if length else False
    start = int(match.group(1))
    end = int(match.group(2)) if match.group(2) else size - 1
    if start >= size or end < start:
        return False
    return start, min(end, size - 1)


def serve(handler: Any) -> None:
    """Answer one GET/HEAD on a BaseHTTPRequestHandler."""
    from botocore.exceptions import ClientError

    from chalicelib.core.config import settings
    from chalicelib.services import files

    parts = urlsplit(handler.path)
    query = parse_qs(parts.query)
    attachment = None
    if parts.path.startswith(ATTACHMENTS):
        key = unquote(parts.path[len(ATTACHMENTS) :])
        attachment = (query.get("n") or [""])[0]
        if not files.check_attachment(key, attachment, (query.get("e") or [""])[0], (query.get("s") or [""])[0]):
            return _plain(handler, 403, "the link is invalid or has expired")
    else:
        name = unquote(parts.path.lstrip("/"))
        key = files.check_link(name, (query.get("e") or [""])[0], (query.get("s") or [""])[0])
        if key is None:
            return _plain(handler, 403, "the link is invalid or has expired")
    try:
        found = files.describe(key)
    except ClientError:
        found = None
    if found is None:
        return _plain(handler, 404, "no such file")
    size, content_type = found
    wanted = _byte_range(handler.headers.get("Range"), size)
    if wanted is False:
        handler.send_response(416)
        handler.send_header("Content-Range", f"bytes */{size}")
        handler.send_header("Content-Length", "0")
        handler.end_headers()
        return None
    start, end = wanted if wanted else (0, size - 1)
    handler.send_response(206 if wanted else 200)
    handler.send_header("Content-Type", content_type)  # as stored, as S3 answers (a map picture is image/png)
    if attachment:
        safe = "".join(c for c in attachment if c.isalnum() or c in "._-") or "download"
        handler.send_header("Content-Disposition", f'attachment; filename="{safe}"')
    handler.send_header("Accept-Ranges", "bytes")
    handler.send_header("Content-Length", str(end - start + 1))
    if wanted:
        handler.send_header("Content-Range", f"bytes {start}-{end}/{size}")
    handler.end_headers()
    if handler.command == "HEAD" or size == 0:
        return None
    body = files.s3().get_object(Bucket=settings().bucket, Key=key, Range=f"bytes={start}-{end}")["Body"]
    for chunk in body.iter_chunks(CHUNK):
        handler.wfile.write(chunk)
    return None


def _plain(handler: Any, status: int, text: str) -> None:
    data = text.encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "text/plain")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(data)
