"""Pure OTA rules: firmware names and custom information, device-list CSVs, HTTP Range."""

from __future__ import annotations

import json

import pytest

from chalicelib.core.errors import FleetboxError
from chalicelib.services import firmware
from chalicelib.services.ota import tasks as ota_tasks
from infra.local.downloads import _byte_range, is_download


@pytest.mark.parametrize(
    "name,ok",
    [
        ("lamp-fw", True),
        ("固件_1(beta)", True),
        ("9lives", True),
        ("_x", False),
        ("-x", False),
        ("a b", False),
        ("a" * 32, True),
        ("a" * 33, False),
        ("", False),
        ("fw.bin", False),
    ],
)
def test_firmware_names_follow_spec_1(name, ok):
    assert firmware.name_ok(name) is ok


def test_custom_info_is_measured_in_utf8_bytes_of_its_serialised_json():
    assert firmware.custom_info_text(None) == "" and firmware.custom_info_text("") == ""
    assert firmware.custom_info_text({"a": "é"}) == '{"a":"é"}'
    at_limit = json.dumps({"k": "é" * 763}, ensure_ascii=False)  # 1535 bytes
    assert firmware.custom_info_text(at_limit) == at_limit
    with pytest.raises(FleetboxError) as err:
        firmware.custom_info_text(json.dumps({"k": "é" * 764}, ensure_ascii=False))  # 1537 bytes
    assert err.value.code == "InvalidParameterValue.CustomInfoTooLong" and err.value.field == "custom_info"
    with pytest.raises(FleetboxError) as err:
        firmware.custom_info_text("{not json")
    assert err.value.code == "InvalidParameterValue.CustomInfoInvalid"


def test_device_csv_first_column_header_optional_duplicates_dropped():
    names = ota_tasks._parse_names({"devices_csv": "\ufeffDeviceName,Note\ndev1,x\n\ndev2\ndev1\n"})
    assert names == ["dev1", "dev2"]
    assert ota_tasks._parse_names({"device_names": ["a"], "devices_csv": "DeviceName\nb"}) == ["a", "b"]
    with pytest.raises(FleetboxError) as err:
        ota_tasks._parse_names({"devices_csv": "\n".join(f"d{i}" for i in range(10_001))})
    assert err.value.code == "LimitExceeded.DeviceListExceedLimit"


@pytest.mark.parametrize(
    "header,expected",
    [
        (None, None),
        ("bytes=0-99", (0, 99)),
        ("bytes=0-1000", (0, 999)),  # the SDK's end == size
        ("bytes=900-", (900, 999)),
        ("bytes=-100", (900, 999)),
        ("bytes=1000-", False),
        ("bytes=5-2", False),
        ("bytes=0-1,5-6", None),
        ("items=0-1", None),
    ],
)
def test_range_requests_as_devices_send_them(header, expected):
    assert _byte_range(header, 1000) == expected


def test_only_root_level_file_links_are_downloads():
    assert is_download("/firmware-fw1-a.bin?e=1&s=2") and is_download("/resource-r-x.wav")
    assert not is_download("/v1/firmware") and not is_download("/firmware-a/b") and not is_download("/openapi.json")
