"""Gateway bind signatures (SPEC §6.5): key = the subdevice secret text, both hashes."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from chalicelib.protocol import gateway_sig

P, D, SECRET = "SUBPROD001", "sensor_1", "lDZ6Uqt+I9E0wW7rvDUs7Q=="


@pytest.mark.parametrize(
    "method,digest", [("hmacsha256", hashlib.sha256), ("hmacsha1", hashlib.sha1), ("HMACSHA1", hashlib.sha1)]
)
def test_a_gateway_signature_verifies(method, digest):
    # Given what a gateway computes, written from the spec
    text = f"{P}{D};12345;1700000000".encode()
    sig = base64.b64encode(hmac.new(SECRET.encode("ascii"), text, digest).digest()).decode()
    # Then it verifies, and the module computes the same
    assert gateway_sig.verify(P, D, SECRET, 12345, 1700000000, sig, method)
    assert gateway_sig.sign(P, D, SECRET, "12345", "1700000000", method) == sig


def test_the_key_is_the_secret_text_not_its_decoded_bytes():
    text = f"{P}{D};1;2".encode()
    wrong = base64.b64encode(hmac.new(base64.b64decode(SECRET), text, hashlib.sha256).digest()).decode()
    assert not gateway_sig.verify(P, D, SECRET, 1, 2, wrong, "hmacsha256")


def test_absent_method_means_sha256():
    sig = gateway_sig.sign(P, D, SECRET, 1, 2)
    assert gateway_sig.verify(P, D, SECRET, 1, 2, sig, None)


@pytest.mark.parametrize("change", ["random", "timestamp", "device", "secret", "method", "junk"])
def test_anything_else_fails(change):
    sig = gateway_sig.sign(P, D, SECRET, 1, 2)
    args = dict(product_id=P, device_name=D, secret=SECRET, random=1, timestamp=2, signature=sig, method="hmacsha256")
    if change == "random":
        args["random"] = 3
    elif change == "timestamp":
        args["timestamp"] = 3
    elif change == "device":
        args["device_name"] = "other"
    elif change == "secret":
        args["secret"] = None
    elif change == "method":
        args["method"] = "md5"
    else:
        args["signature"] = "\u00e9\u0000"
    assert not gateway_sig.verify(**args)
