"""QR codes as PNG and SVG (SPEC §3, §7.1, §7.2).

``qrcode`` is imported lazily (every Lambda shares the bundle).  Two things make a code cheap,
which matters when a batch prints 10,000 of them on a shared CPU:

* a fixed mask pattern: qrcode otherwise builds the symbol eight times to score each mask
  (``mask_pattern=`` skips that search, ~3× faster; every mask decodes equally well);
* our own 1-bit PNG writer straight from the module matrix instead of drawing a PIL image.

The output is a plain greyscale PNG (bit depth 1), ``box`` pixels per module, a quiet zone of
``border`` modules, as scanners expect.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

BOX = 4
BORDER = 4
MASK = 2


def matrix(content: str, *, mask: int | None = MASK) -> list[list[bool]]:
    """The module matrix (True = dark) of ``content`` at error-correction level M."""
    import qrcode
    from qrcode.constants import ERROR_CORRECT_M

    code = qrcode.QRCode(error_correction=ERROR_CORRECT_M, box_size=BOX, border=0, mask_pattern=mask)
    code.add_data(content.encode("utf-8"))
    code.make(fit=True)
    return code.modules  # type: ignore[no-any-return]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_from_matrix(modules: list[list[Any]], box: int = BOX, border: int = BORDER) -> bytes:
    """A 1-bit greyscale PNG of the matrix: dark modules black, light ones white."""
    n = len(modules)
    side = (n + 2 * border) * box
    row_bytes = (side + 7) // 8
    quiet = b"\x00" + b"\xff" * row_bytes  # filter byte 0 + an all-white row
    rows: list[bytes] = [quiet] * (border * box)
    pad = row_bytes * 8 - side
    for line in modules:
        bits = "1" * (border * box)
        bits += "".join("0" * box if dark else "1" * box for dark in line)
        bits += "1" * (border * box + pad)
        row = b"\x00" + int(bits, 2).to_bytes(row_bytes, "big")
        rows.extend([row] * box)
    rows.extend([quiet] * (border * box))
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"".join(rows), 6))
        + _chunk(b"IEND", b"")
    )


def png(content: str) -> bytes:
    """The PNG of a QR code holding ``content``."""
    return png_from_matrix(matrix(content))


def svg(content: str, box: int = BOX, border: int = BORDER) -> str:
    """The same code as an SVG document (one path; crisp at any print size)."""
    modules = matrix(content)
    side = (len(modules) + 2 * border) * box
    parts = []
    for y, line in enumerate(modules):
        for x, dark in enumerate(line):
            if dark:
                parts.append(f"M{(x + border) * box},{(y + border) * box}h{box}v{box}h-{box}z")
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{side}" height="{side}" '
        f'viewBox="0 0 {side} {side}" shape-rendering="crispEdges">'
        f'<rect width="{side}" height="{side}" fill="#fff"/><path fill="#000" d="{"".join(parts)}"/></svg>'
    )
