"""QR codes, CSV escaping and the deterministic names of batch jobs (SPEC §7.1, §7.2, §15)."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from chalicelib.media import csvout, qr
from chalicelib.services.batches import auto_name, device_code, qr_signature
from chalicelib.services.devices import device_name_ok
from tests.helpers import scan, sign_qr


@pytest.mark.parametrize(
    "content",
    [
        device_code("ABCDEFGHIJ", "a" * 48, "lDZ6Uqt+I9E0wW7rvDUs7Q=="),
        device_code("ABCDEFGHIJ", "x", "k"),
        "ABCDEFGHIJ0123456789ABCDEF",
        '{"ProductId":"ABCDEFGHIJ","Signature":"' + "f" * 64 + '"}',
    ],
)
def test_every_code_scans_back_to_its_content(content: str) -> None:
    png = qr.png(content)
    assert Image.open(io.BytesIO(png)).mode == "1"  # the 1-bit PNG writer, not a PIL drawing
    assert scan(png) == content


def test_svg_draws_the_same_modules() -> None:
    svg = qr.svg("hello")
    assert svg.startswith("<svg") and svg.count("h4v4h-4z") == sum(map(sum, qr.matrix("hello")))


def test_device_code_is_compact_json_with_the_hmac_signature() -> None:
    expected = sign_qr("secret", "ABCDEFGHIJ", "lamp-1")
    assert qr_signature("secret", "ABCDEFGHIJ", "lamp-1") == expected
    assert device_code("ABCDEFGHIJ", "lamp-1", "secret") == (
        '{"ProductId":"ABCDEFGHIJ","DeviceName":"lamp-1","Signature":"' + expected + '"}'
    )


def test_auto_names_are_valid_deterministic_and_distinct() -> None:
    names = [auto_name("seed", i) for i in range(2000)]
    assert names == [auto_name("seed", i) for i in range(2000)]
    assert len(set(names)) == 2000 and all(device_name_ok(n) and len(n) == 16 for n in names)
    assert auto_name("other", 0) != names[0]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.text(max_size=12), min_size=1, max_size=5), min_size=1, max_size=5))
def test_no_cell_can_start_a_formula_and_every_cell_reads_back(rows: list[list[str]]) -> None:
    text = csvout.render(rows)
    back = list(csv.reader(io.StringIO(text, newline="")))
    assert len(back) == len(rows)
    for original, parsed in zip(rows, back, strict=True):
        assert [csvout.unescape_cell(c) for c in parsed] == original
        assert not any(c[:1] in ("=", "+", "-", "@", "\t", "\r") for c in parsed)


@pytest.mark.parametrize("cell", ["'=x", "''+1", "'plain", "-1", "="])
def test_quoted_triggers_round_trip(cell: str) -> None:
    parsed = next(csv.reader(io.StringIO(csvout.render([[cell]]))))
    assert csvout.unescape_cell(parsed[0]) == cell and parsed[0][:1] not in ("=", "+", "-", "@")
