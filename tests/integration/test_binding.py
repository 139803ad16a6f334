"""Binding by QR (SPEC §7.3), the product QR code (§3), serial numbers and IMEIs (§7.2)."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import pytest

from tests.helpers import scan, sign_qr
from tests.integration.helpers import expect_error, fetch, finished, make_device, released

pytestmark = pytest.mark.usefixtures("small_chunks")


def device_code(pid: str, name: str, secret: str) -> str:
    return json.dumps(
        {"ProductId": pid, "DeviceName": name, "Signature": sign_qr(secret, pid, name)}, separators=(",", ":")
    )


def bind(api: Any, code: str, user: str, **extra: Any) -> Any:
    return api.post("/v1/bindings", {"code": code, "user_id": user, **extra})


def user_devices(api: Any, user: str) -> list[tuple[str, str]]:
    resp = api.get(f"/v1/users/{user}/devices")
    assert resp.status_code == 200, resp.body
    return [(d["product_id"], d["device_name"]) for d in resp.json["items"]]


def raw_get(api: Any, path: str, accept: str = "*/*") -> Any:
    return api.client.http.get(path, headers={"Authorization": f"Bearer {api.key}", "Accept": accept})


def test_a_scanned_device_code_binds_once_and_a_forged_one_is_refused(api):
    pid = released(api)
    code = device_code(pid, "lamp-1", make_device(api, pid, "lamp-1")["secret"])
    first = bind(api, code, "alice", family_id="home-1")
    assert first.status_code == 201, first.body
    assert first.json["user_id"] == "alice" and first.json["via"] == "device" and first.json["family_id"] == "home-1"
    again = bind(api, code, "alice")
    assert again.status_code == 201 and again.json["id"] == first.json["id"]
    assert user_devices(api, "alice") == [(pid, "lamp-1")]
    forged = device_code(pid, "lamp-1", "AAAAAAAAAAAAAAAAAAAAAA==")
    expect_error(bind(api, forged, "mallory"), 400, "InvalidParameterValue.QRCodeSignatureInvalid", "code")
    # a forged code for a name that does not exist says the same (no name probing)
    expect_error(
        bind(api, device_code(pid, "ghost", "x"), "mallory"),
        400,
        "InvalidParameterValue.QRCodeSignatureInvalid",
        "code",
    )
    expect_error(bind(api, "hello", "mallory"), 400, "InvalidParameterValue.CodeInvalid", "code")
    assert user_devices(api, "mallory") == []
    expect_error(api.get("/v1/users/" + "u" * 65 + "/devices"), 400, "InvalidParameterValue.UserIdInvalid", "user_id")


def test_exclusive_refuses_a_second_user_until_the_owner_unbinds(api):
    pid = released(api, binding_strategy="exclusive")
    code = device_code(pid, "lock-1", make_device(api, pid, "lock-1")["secret"])
    owner = bind(api, code, "alice").json
    expect_error(bind(api, code, "bob"), 409, "FailedOperation.DeviceAlreadyBound", "code")
    assert user_devices(api, "bob") == []
    assert api.delete(f"/v1/bindings/{owner['id']}").status_code == 204
    assert user_devices(api, "alice") == []
    expect_error(api.delete(f"/v1/bindings/{owner['id']}"), 404, "ResourceNotFound.BindingNotExist", "binding_id")
    assert bind(api, code, "bob").status_code == 201
    assert user_devices(api, "bob") == [(pid, "lock-1")]


def test_preemptive_moves_the_device_to_the_new_scanner(api):
    pid = released(api)  # preemptive is the default
    code = device_code(pid, "cam-1", make_device(api, pid, "cam-1")["secret"])
    old = bind(api, code, "alice").json
    new = bind(api, code, "bob")
    assert new.status_code == 201 and new.json["user_id"] == "bob"
    assert user_devices(api, "alice") == [] and user_devices(api, "bob") == [(pid, "cam-1")]
    # the old binding id no longer unbinds anything
    expect_error(api.delete(f"/v1/bindings/{old['id']}"), 404, "ResourceNotFound.BindingNotExist", "binding_id")
    assert user_devices(api, "bob") == [(pid, "cam-1")]


def test_unreleased_products_bind_only_with_developer_credentials(api):
    pid = released(api, developing=True)
    code = device_code(pid, "dev-1", make_device(api, pid, "dev-1")["secret"])
    app_key = api.post(
        "/v1/principals",
        {
            "name": "app",
            "policy": {
                "version": "2.0",
                "statement": [
                    {
                        "effect": "allow",
                        "action": ["iotexplorer:BindDevice", "iotexplorer:DescribeUserDevices"],
                        "resource": ["*"],
                    }
                ],
            },
        },
    ).json
    key = api.post("/v1/keys", {"principal_id": app_key["principal_id"]}).json["api_key"]
    expect_error(
        api.as_key(key).post("/v1/bindings", {"code": code, "user_id": "u1"}), 403, "UnauthorizedOperation", None
    )
    assert bind(api, code, "u1").status_code == 201  # the root is a developer
    api.post(f"/v1/products/{pid}/publish")
    assert api.as_key(key).post("/v1/bindings", {"code": code, "user_id": "u2"}).status_code == 201


def test_the_product_code_scans_and_binds_with_the_paired_device_name(api):
    pid = released(api)
    make_device(api, pid, "plug-1")
    png = raw_get(api, f"/v1/products/{pid}/qrcode", accept="image/png")  # binary: API Gateway needs the Accept
    assert png.status_code == 200 and png.headers["Content-Type"] == "image/png"
    content = scan(png.body)
    assert api.get(f"/v1/products/{pid}/qrcode?format=json").json["content"] == content
    svg = raw_get(api, f"/v1/products/{pid}/qrcode?format=svg")
    assert svg.status_code == 200 and svg.body.startswith(b"<svg")
    assert json.loads(content)["ProductId"] == pid
    expect_error(bind(api, content, "carol"), 400, "MissingParameter", "device_name")
    bound = bind(api, content, "carol", device_name="plug-1")
    assert bound.status_code == 201 and bound.json["via"] == "product"
    forged = json.dumps({"ProductId": pid, "Signature": "0" * 64})
    expect_error(
        bind(api, forged, "carol", device_name="plug-1"), 400, "InvalidParameterValue.QRCodeSignatureInvalid", "code"
    )
    expect_error(bind(api, content, "carol", device_name="nope"), 404, "ResourceNotFound.DeviceNotExist", "device_name")


def test_serial_numbers_imei_import_and_binding_by_sn(api):
    wifi = released(api)
    expect_error(
        api.post(f"/v1/products/{wifi}/serial-numbers", {"quantity": 3}),
        409,
        "UnsupportedOperation.ProductNotCellular",
        "product_id",
    )
    pid = released(api, name="Tracker", comm_method="cellular")
    job = api.post(f"/v1/products/{pid}/serial-numbers", {"quantity": 12})
    assert job.status_code == 202, job.body
    done = finished(api, job.json["id"])
    assert (done["kind"], done["status"], done["success_count"]) == ("serial_numbers", "done", 12)
    archive = zipfile.ZipFile(io.BytesIO(fetch(done["download_url"])))
    csv_rows = archive.read("serial_numbers.csv").decode().splitlines()
    assert csv_rows[0] == "ProductId,SN,Status,QRCode"
    sns = [r.split(",")[1] for r in csv_rows[1:]]
    assert len(set(sns)) == 12 and sorted(archive.namelist()) == sorted(
        [f"{s}.png" for s in sns] + ["serial_numbers.csv"]
    )
    assert scan(archive.read(f"{sns[0]}.png")) == pid + sns[0]

    template = raw_get(api, f"/v1/products/{pid}/serial-numbers/template")
    assert template.status_code == 200 and template.body.decode().strip() == "SN,IMEI"
    imeis = ["490154203237518", "356938035643809", "490154203237517"]  # the last fails its check digit
    api.post(f"/v1/products/{pid}/devices", {"device_name": imeis[1]})  # an existing device gets linked
    text = (
        "SN,IMEI\n"
        + "\n".join(
            [
                f"{sns[0]},{imeis[0]}",
                f"{sns[1]},{imeis[1]}",
                f"{sns[2]},{imeis[2]}",
                f"NOSUCHSN,{imeis[0]}",
                f"{sns[0]},{imeis[1]}",
            ]
        )
        + "\n"
    )
    report = api.post(f"/v1/products/{pid}/serial-numbers/bindings", {"csv": text})
    assert report.status_code == 200, report.body
    assert (report.json["total"], report.json["succeeded"], report.json["failed"]) == (5, 2, 3)
    assert [f["row"] for f in report.json["failures"]] == [4, 5, 6]
    assert api.get(f"/v1/products/{pid}/devices/{imeis[0]}").status_code == 200
    bound = bind(api, pid + sns[0], "dave")
    assert bound.status_code == 201 and bound.json["via"] == "sn" and bound.json["device_name"] == imeis[0]
    expect_error(bind(api, pid + sns[5], "dave"), 409, "FailedOperation.SerialNumberNotLinked", "code")
    expect_error(bind(api, pid + "ZZZZZZZZZZZZZZZZ", "dave"), 404, "ResourceNotFound.SerialNumberNotExist", "code")
    # importing the same good rows again changes nothing and succeeds
    again = api.post(
        f"/v1/products/{pid}/serial-numbers/bindings", {"csv": f"{sns[0]},{imeis[0]}\n{sns[1]},{imeis[1]}\n"}
    ).json
    assert (again["succeeded"], again["failed"]) == (2, 0)


@pytest.mark.parametrize(
    "imei,ok",
    [
        ("490154203237518", True),
        ("356938035643809", True),
        ("490154203237517", False),
        ("49015420323751", False),
        ("49015420323751x", False),
    ],
)
def test_imei_check_digit(imei: str, ok: bool) -> None:
    from chalicelib.services.serials import imei_ok

    assert imei_ok(imei) is ok
