"""MQTT key authentication (SPEC §6.2, §6.6): usernames, passwords, expiry."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from chalicelib.protocol import mqtt_auth
from chalicelib.protocol.mqtt_auth import Refused
from tests.helpers import mqtt_password

P, D = "ABCDEFGHIJ", "lamp_01"
SECRET = base64.b64encode(bytes(range(16))).decode()
NOW = 1_760_000_000


@pytest.mark.parametrize("algo", ["hmacsha256", "hmacsha1"])
def test_both_password_forms_authenticate(algo):
    # Given a device's Tencent-style credentials
    username = f"{P}{D};12010126;AbC12;{NOW + 60}"
    pw = mqtt_password(username, SECRET, algo)
    # When it authenticates, Then the device is identified
    user = mqtt_auth.authenticate(P + D, username, pw, SECRET, NOW)
    assert (user.product_id, user.device_name, user.connid, user.expiry) == (P, D, "AbC12", NOW + 60)
    assert mqtt_auth.verify_password(username, pw, SECRET) == algo
    assert mqtt_auth.password(username, SECRET, algo) == pw


def test_the_key_is_the_decoded_secret_not_its_text():
    username = f"{P}{D};1;abcde;{NOW + 60}"
    wrong = hmac.new(SECRET.encode(), username.encode(), hashlib.sha256).hexdigest() + ";hmacsha256"
    with pytest.raises(Refused) as exc:
        mqtt_auth.authenticate(P + D, username, wrong, SECRET, NOW)
    assert exc.value.reason == mqtt_auth.SIGNATURE_MISMATCH


def test_a_millisecond_expiry_always_passes_and_is_no_replay_check():
    # Tencent's Python SDK sends its start time in ms and re-sends it on every reconnect
    username = f"{P}{D};12010126;xyz12;{(NOW - 86400 * 30) * 1000}"
    pw = mqtt_password(username, SECRET, "hmacsha256")
    for _ in range(3):
        assert mqtt_auth.authenticate(P + D, username, pw, SECRET, NOW).device_name == D


@pytest.mark.parametrize("expiry", [NOW, NOW - 1, 0])
def test_an_expired_username_is_refused(expiry):
    username = f"{P}{D};12010126;xyz12;{expiry}"
    pw = mqtt_password(username, SECRET, "hmacsha256")
    with pytest.raises(Refused) as exc:
        mqtt_auth.authenticate(P + D, username, pw, SECRET, NOW)
    assert exc.value.reason == mqtt_auth.EXPIRED


def test_the_expiry_is_64_bit():
    top = 2**63 - 1
    username = f"{P}{D};1;xyz12;{top}"
    assert (
        mqtt_auth.authenticate(P + D, username, mqtt_password(username, SECRET, "hmacsha1"), SECRET, NOW).expiry == top
    )
    with pytest.raises(Refused) as exc:
        mqtt_auth.parse_username(f"{P}{D};1;xyz12;{top + 1}")
    assert exc.value.reason == mqtt_auth.EXPIRY_INVALID


@pytest.mark.parametrize(
    "given,reason",
    [
        ("0" * 64 + ";hmacsha256", mqtt_auth.SIGNATURE_MISMATCH),
        ("", mqtt_auth.PASSWORD_MALFORMED),
        ("nohash", mqtt_auth.PASSWORD_MALFORMED),
        ("a;b;c", mqtt_auth.PASSWORD_MALFORMED),
        ("abcdef;hmacmd5", mqtt_auth.ALGORITHM_UNSUPPORTED),
        ("ab;", mqtt_auth.ALGORITHM_UNSUPPORTED),
    ],
)
def test_a_wrong_password_is_refused_with_its_reason(given, reason):
    username = f"{P}{D};12010126;xyz12;{NOW + 60}"
    with pytest.raises(Refused) as exc:
        mqtt_auth.authenticate(P + D, username, given, SECRET, NOW)
    assert exc.value.reason == reason
    assert SECRET not in exc.value.message
    assert len(given) < 6 or given not in exc.value.message  # the password is never echoed


def test_a_password_of_another_algorithm_label_is_refused():
    username = f"{P}{D};12010126;xyz12;{NOW + 60}"
    sha1_hex = mqtt_password(username, SECRET, "hmacsha1").split(";")[0]
    with pytest.raises(Refused) as exc:
        mqtt_auth.verify_password(username, sha1_hex + ";hmacsha256", SECRET)
    assert exc.value.reason == mqtt_auth.SIGNATURE_MISMATCH


def test_uppercase_hex_and_label_are_tolerated():
    username = f"{P}{D};12010126;xyz12;{NOW + 60}"
    hexmac, algo = mqtt_password(username, SECRET, "hmacsha256").split(";")
    assert mqtt_auth.verify_password(username, f"{hexmac.upper()};HMACSHA256", SECRET) == "hmacsha256"


@pytest.mark.parametrize(
    "username,reason",
    [
        ("", mqtt_auth.USERNAME_MALFORMED),
        (f"{P}{D}", mqtt_auth.USERNAME_MALFORMED),
        (f"{P}{D};1;abcde", mqtt_auth.USERNAME_MALFORMED),
        (f"{P}{D};1;abcde;{NOW + 9};x", mqtt_auth.USERNAME_MALFORMED),
        (f"{P};1;abcde;{NOW + 9}", mqtt_auth.USERNAME_MALFORMED),  # no device name
        (f"abcdefghij{D};1;abcde;{NOW + 9}", mqtt_auth.USERNAME_MALFORMED),  # lower-case product id
        (f"{P}bad name;1;abcde;{NOW + 9}", mqtt_auth.USERNAME_MALFORMED),
        (f"{P}{D};1;abcd;{NOW + 9}", mqtt_auth.CONNID_INVALID),
        (f"{P}{D};1;abcdef;{NOW + 9}", mqtt_auth.CONNID_INVALID),
        (f"{P}{D};1;ab-de;{NOW + 9}", mqtt_auth.CONNID_INVALID),
        (f"{P}{D};1;abcde;", mqtt_auth.EXPIRY_INVALID),
        (f"{P}{D};1;abcde;-5", mqtt_auth.EXPIRY_INVALID),
        (f"{P}{D};1;abcde;12.5", mqtt_auth.EXPIRY_INVALID),
        (f"{P}{D};1;abcde; 99999999999", mqtt_auth.EXPIRY_INVALID),
        (f"{P}{D};1;abcde;0x10", mqtt_auth.EXPIRY_INVALID),
        (f"{P}{D};1;abcde;{'9' * 20}", mqtt_auth.EXPIRY_INVALID),
    ],
)
def test_malformed_usernames_say_which_part_is_wrong(username, reason):
    with pytest.raises(Refused) as exc:
        mqtt_auth.parse_username(username)
    assert exc.value.reason == reason and exc.value.message


def test_any_sdkappid_is_accepted_even_empty():
    for appid in ("", "12010126", "anything-at-all"):
        assert mqtt_auth.parse_username(f"{P}{D};{appid};abcde;{NOW}").sdkappid == appid


def test_device_names_with_colons_and_dashes_split_after_the_product_id():
    user = mqtt_auth.parse_username(f"{P}a:b-c_d;1;abcde;{NOW}")
    assert (user.product_id, user.device_name) == (P, "a:b-c_d")


@pytest.mark.parametrize("client_id", [None, "", P + "other", P + D + "x"])
def test_the_client_id_must_match_the_username(client_id):
    username = f"{P}{D};12010126;xyz12;{NOW + 60}"
    with pytest.raises(Refused) as exc:
        mqtt_auth.authenticate(client_id, username, mqtt_password(username, SECRET, "hmacsha256"), SECRET, NOW)
    assert exc.value.reason == mqtt_auth.CLIENT_ID_MISMATCH


@pytest.mark.parametrize("secret", ["", "not base64!", None])
def test_an_unusable_secret_never_authenticates(secret):
    username = f"{P}{D};12010126;xyz12;{NOW + 60}"
    with pytest.raises(Refused) as exc:
        mqtt_auth.verify_password(username, "00;hmacsha256", secret)
    assert exc.value.reason == mqtt_auth.SECRET_UNUSABLE


def test_credentials_build_what_an_sdk_device_sends():
    cid, username, pw = mqtt_auth.credentials(P, D, SECRET, algorithm="hmacsha1", now_s=NOW)
    assert cid == P + D
    assert username.startswith(f"{P}{D};12010126;") and username.endswith(f";{NOW + 3600}")
    assert pw == mqtt_password(username, SECRET, "hmacsha1")
    assert mqtt_auth.authenticate(cid, username, pw, SECRET, NOW).client_id == cid
