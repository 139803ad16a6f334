"""CSV output that no spreadsheet turns into a formula (SPEC §7.1, §15).

Machine fields (ProductId, DeviceName, secrets, the QR JSON) are written exactly — a factory tool
reads them back, and a secret must still decode — so the product never makes one that starts
with a formula character (``ids.device_secret`` redraws, batch names may not start with ``-``).
Free text (failure reasons, a rejected name as uploaded) is escaped: OWASP "CSV injection": a
cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading
single quote, then normal CSV quoting applies.  Readers that want the
raw value back strip one leading ``'`` from cells where it precedes one of those characters
(:func:`unescape_cell`); a cell that already starts with quotes before such a character gets one
more, so the round trip is exact.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def escape_cell(value: object) -> str:
    text = "" if value is None else str(value)
    # quotes already in front of a trigger get one more, so unescaping is exact
    return "'" + text if text.lstrip("'").startswith(_TRIGGERS) else text


def unescape_cell(text: str) -> str:
    return text[1:] if text.startswith("'") and text.lstrip("'").startswith(_TRIGGERS) else text


def render(rows: Iterable[Sequence[object]], header: Sequence[str] | None = None) -> str:
    """CSV text (CRLF line ends, minimal quoting) of ``rows``, every cell escaped."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    if header is not None:
        writer.writerow(header)
    for row in rows:
        writer.writerow([escape_cell(v) for v in row])
    return buf.getvalue()
