"""Reading our QR PNGs with an independent decoder (zxing-cpp), as a phone's scanner would."""
from __future__ import annotations

import io


def scan(png: bytes) -> str:
    """The text of the one QR code in ``png``.

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
