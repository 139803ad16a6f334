"""Batch jobs (SPEC §7.1) over HTTP, their queue steps run by the real `jobs` handler code.

Chunks of 10 rows (FLEETBOX_BATCH_CHUNK_SIZE) so a few dozen devices cross several chunks.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from typing import Any

import pytest

from tests.helpers import decrypt, read_batch_csv, scan, sign_qr
from tests.integration.helpers import (
    CHUNK,
    PRODUCT,
    drain_jobs,
    expect_error,
    fetch,
    finished,
    mqtt_connects,
    queued,
    released,
    v2_request,
)

pytestmark = pytest.mark.usefixtures("small_chunks")


# ------------------------------------------------------------------ helpers


def start(api: Any, body: dict[str, Any]) -> dict[str, Any]:
    resp = api.post("/v1/batches", body)
    assert resp.status_code == 202, resp.body
    assert resp.json["status"] == "created" and resp.json["progress"] == 0
    return resp.json


def secret_of(api: Any, pid: str, name: str) -> str:
    resp = api.get(f"/v1/products/{pid}/devices/{name}?include_secret=true")
    assert resp.status_code == 200, resp.body
    return resp.json.get("secret")


def authenticates(pid: str, name: str, psk: str) -> bool:
    from chalicelib.protocol import mqtt_auth

    client, user, password = mqtt_auth.credentials(pid, name, psk)
    try:
        mqtt_auth.authenticate(client, user, password, psk, now_s=0)
        return True
    except mqtt_auth.Refused:
        return False


# ------------------------------------------------------------------ acceptance


def test_auto_batch_with_qr_codes_makes_every_device_its_row_and_png(api):
    # Given a released product
    pid = released(api)
    # When a 25-device auto batch with QR codes runs to the end
    job = start(
        api,
        {"product_id": pid, "burn_method": "per_device_secret", "generation": "auto", "quantity": 25, "qr_code": True},
    )
    done = finished(api, job["id"])
    # Then it is done with every row a success, and its outputs are behind time-limited URLs
    assert (done["status"], done["progress"], done["success_count"], done["failure_count"]) == ("done", 100, 25, 0)
    assert done["download_url"] != done["csv_url"] and done["download_expires_at"] > done["created_at"]
    rows = read_batch_csv(fetch(done["csv_url"]))
    assert len(rows) == 25 and len({r["DeviceName"] for r in rows}) == 25
    archive = zipfile.ZipFile(io.BytesIO(fetch(done["download_url"])))
    pngs = sorted(n for n in archive.namelist() if n.endswith(".png"))
    assert pngs == sorted(f"{r['DeviceName']}.png" for r in rows)
    assert read_batch_csv(archive.read("devices.csv")) == rows
    for r in rows:
        # every DevicePsk is the device's secret and passes the MQTT password check
        assert r["ProductId"] == pid and r["Status"] == "success" and r["ProductSecret"] == ""
        assert r["DevicePsk"] == secret_of(api, pid, r["DeviceName"])
        assert authenticates(pid, r["DeviceName"], r["DevicePsk"])
    for r in rows[::6]:
        # the PNG scans to the CSV's QR content, whose signature is HMAC(DevicePsk, pid + name)
        content = scan(archive.read(f"{r['DeviceName']}.png"))
        assert content == r["QRCode"]
        doc = json.loads(content)
        assert list(doc) == ["ProductId", "DeviceName", "Signature"] and " " not in content
        assert doc["Signature"] == sign_qr(r["DevicePsk"], pid, r["DeviceName"])
    assert api.get("/v1/quota").json["registered"] == 25
    assert api.get(f"/v1/products/{pid}").json["device_count"] == 25
    listed = api.get(f"/v1/products/{pid}/batches").json
    assert [b["id"] for b in listed["items"]] == [job["id"]] and listed["items"][0]["created_by"]


def test_upload_reports_existing_invalid_and_duplicate_rows_and_never_overwrites(api):
    pid = released(api)
    existing = api.post(f"/v1/products/{pid}/devices", {"device_name": "lamp-3"}).json
    names = ["DeviceName", "lamp-1", "lamp-2", "lamp-3", "bad name!", "lamp-1", "=cmd|'/c calc'!A1", "lamp-4"]
    job = start(
        api,
        {
            "product_id": pid,
            "burn_method": "per_device_secret",
            "generation": "upload",
            "names_csv": "\n".join(names) + "\n",
            "qr_code": False,
        },
    )
    done = finished(api, job["id"])
    assert (done["status"], done["success_count"], done["failure_count"]) == ("done", 3, 4)
    reasons = {f["row"]: f["reason"] for f in done["failures"]}
    assert set(reasons) == {4, 5, 6, 7}
    assert reasons[4] == "device already exists"
    assert reasons[5].startswith("device name invalid") and reasons[7].startswith("device name invalid")
    assert reasons[6] == "duplicate device name in the file (first on row 2)"
    assert done["last_failure_reason"]
    raw = fetch(done["download_url"])
    assert b"'=cmd" in raw  # the formula cell is neutralised in the file itself
    rows = read_batch_csv(raw)
    assert [r["DeviceName"] for r in rows] == names[1:]
    assert [r["Status"] == "success" for r in rows] == [True, True, False, False, False, False, True]
    # the existing device kept its secret; quota counts exactly the devices that exist
    assert secret_of(api, pid, "lamp-3") == existing["secret"]
    assert api.get("/v1/quota").json["registered"] == 4
    assert api.get(f"/v1/products/{pid}").json["device_count"] == 4


def test_a_batch_over_the_quota_fails_before_anything_is_written(api):
    pid = released(api)
    api.post(f"/v1/products/{pid}/devices", {"device_name": "one"})
    before = api.get("/v1/quota").json
    resp = api.post(
        "/v1/batches",
        {
            "product_id": pid,
            "burn_method": "per_device_secret",
            "generation": "auto",
            "quantity": before["remaining"] + 1,
        },
    )
    expect_error(resp, 409, "LimitExceeded.DeviceExceedLimit", "quantity")
    assert "license limit" in resp.json["error"]["message"]
    assert api.get("/v1/quota").json == before
    assert api.get(f"/v1/products/{pid}/batches").json["items"] == []
    assert drain_jobs() == 0
    assert api.get(f"/v1/products/{pid}").json["device_count"] == 1


def test_unreleased_products_and_bad_requests_are_refused(api):
    resp = api.post("/v1/products", PRODUCT)
    pid = resp.json["product_id"]
    body = {"product_id": pid, "burn_method": "per_device_secret", "generation": "auto", "quantity": 2}
    expect_error(api.post("/v1/batches", body), 409, "UnsupportedOperation.ProductNotReleased", "product_id")
    api.post(f"/v1/products/{pid}/publish")
    expect_error(
        api.post("/v1/batches", {**body, "quantity": 10001}), 400, "InvalidParameterValue.QuantityInvalid", "quantity"
    )
    expect_error(
        api.post("/v1/batches", {**body, "quantity": 0}), 400, "InvalidParameterValue.QuantityInvalid", "quantity"
    )
    expect_error(
        api.post("/v1/batches", {**body, "generation": "upload", "quantity": None}),
        400,
        "InvalidParameterValue.QuantityInvalid",
        "quantity",
    )
    expect_error(
        api.post("/v1/batches", {k: v for k, v in body.items() if k != "quantity"}), 400, "MissingParameter", "quantity"
    )
    up = {"product_id": pid, "burn_method": "per_device_secret", "generation": "upload"}
    expect_error(api.post("/v1/batches", up), 400, "MissingParameter", "names_csv")
    expect_error(
        api.post("/v1/batches", {**up, "names_csv": "a\x00b"}),
        400,
        "InvalidParameterValue.NamesCsvInvalid",
        "names_csv",
    )
    expect_error(
        api.post("/v1/batches", {**up, "names_csv": "x" * 1_100_000}),
        413,
        "RequestTooLarge.NamesCsvTooLarge",
        "names_csv",
    )
    expect_error(
        api.post("/v1/batches", {**up, "names_csv": "\n".join(f"d{i}" for i in range(10001))}),
        400,
        "InvalidParameterValue.QuantityInvalid",
        "names_csv",
    )
    # one type one secret needs dynamic registration, and uploaded names
    expect_error(
        api.post("/v1/batches", {**up, "burn_method": "per_product_secret", "names_csv": "a"}),
        409,
        "UnsupportedOperation.DynamicRegisterDisabled",
        "burn_method",
    )
    expect_error(
        api.post("/v1/batches", {**body, "burn_method": "per_product_secret"}),
        400,
        "InvalidParameterValue.GenerationInvalid",
        "generation",
    )
    expect_error(api.get("/v1/batches/batnosuchbatch000"), 404, "ResourceNotFound.BatchNotExist", "batch_id")
    expect_error(api.get("/v1/batches/batnosuchbatch0000001"), 404, "ResourceNotFound.BatchNotExist", "batch_id")
    assert drain_jobs() == 0


def test_one_type_one_secret_batch_carries_the_product_secret(api):
    pid = released(api, developing=True)
    reg = api.put(f"/v1/products/{pid}/dynamic-registration", {"register_type": 1}).json
    api.post(f"/v1/products/{pid}/publish")
    job = start(
        api,
        {
            "product_id": pid,
            "burn_method": "per_product_secret",
            "generation": "upload",
            "names_csv": "s-1\ns-2\n",
            "qr_code": True,
        },
    )
    done = finished(api, job["id"])
    rows = read_batch_csv(fetch(done["csv_url"]))
    assert [(r["ProductSecret"], r["DevicePsk"], r["Status"]) for r in rows] == [
        (reg["product_secret"], "", "success")
    ] * 2
    sig = json.loads(rows[0]["QRCode"])["Signature"]
    assert sig == sign_qr(reg["product_secret"], pid, "s-1")
    assert secret_of(api, pid, "s-1") is None  # it fetches its secret at first boot (§6.3)
    answer = v2_request(api, pid, "s-1", reg["product_secret"]).json["Response"]
    psk = decrypt(reg["product_secret"], answer["Payload"], answer["Len"])["psk"]
    assert mqtt_connects(pid, "s-1", psk) and secret_of(api, pid, "s-1") == psk


# ------------------------------------------------------------------ resilience


def test_the_same_chunk_delivered_twice_creates_nothing_twice(api):
    from chalicelib.services import jobs

    pid = released(api)
    job = start(
        api,
        {"product_id": pid, "burn_method": "per_device_secret", "generation": "auto", "quantity": 15, "qr_code": True},
    )
    first = queued()
    assert len(first) == 1
    jobs.run(first[0]["Body"])
    jobs.run(first[0]["Body"])  # re-delivered
    done = finished(api, job["id"])
    assert (done["success_count"], done["failure_count"], done["processed"]) == (15, 0, 15)
    assert len(read_batch_csv(fetch(done["csv_url"]))) == 15
    assert api.get(f"/v1/products/{pid}").json["device_count"] == 15
    assert api.get("/v1/quota").json["registered"] == 15


def test_a_chunk_that_crashed_after_writing_devices_resumes_to_the_same_result(api, monkeypatch):
    from chalicelib.services import jobs, production

    pid = released(api)
    job = start(
        api,
        {"product_id": pid, "burn_method": "per_device_secret", "generation": "auto", "quantity": 20, "qr_code": False},
    )
    real = production._write_part

    def crash(*a: Any) -> None:
        raise RuntimeError("worker killed")

    monkeypatch.setattr(production, "_write_part", crash)
    message = queued()[0]
    with pytest.raises(RuntimeError):
        jobs.run(message["Body"])  # the devices of chunk 0 are written, the checkpoint is not
    assert api.get(f"/v1/products/{pid}").json["device_count"] == CHUNK
    monkeypatch.setattr(production, "_write_part", real)
    jobs.run(message["Body"])  # the message comes back
    done = finished(api, job["id"])
    assert (done["status"], done["success_count"], done["failure_count"]) == ("done", 20, 0)
    rows = read_batch_csv(fetch(done["csv_url"]))
    for r in rows:  # the re-run reused the secrets it had stored: still the devices' own
        assert authenticates(pid, r["DeviceName"], r["DevicePsk"]) and r["DevicePsk"] == secret_of(
            api, pid, r["DeviceName"]
        )
    assert api.get(f"/v1/products/{pid}").json["device_count"] == 20
    assert api.get("/v1/quota").json["registered"] == 20


def test_a_batch_whose_message_was_lost_is_resumed_by_the_sweep(api, monkeypatch):
    from chalicelib.core.config import reload_settings
    from chalicelib.services import production

    pid = released(api)
    job = start(api, {"product_id": pid, "burn_method": "per_device_secret", "generation": "auto", "quantity": 12})
    assert len(queued()) == 1  # lost: e.g. the host died holding it
    assert production.resume_stalled() == 0  # not stale yet
    monkeypatch.setenv("FLEETBOX_BATCH_STALE_S", "0")
    reload_settings()
    assert production.resume_stalled() == 1
    done = finished(api, job["id"])
    assert (done["status"], done["success_count"]) == ("done", 12)
    assert production.resume_stalled() == 0  # finished batches leave the sweep


def test_deleting_the_product_midway_fails_the_batch_and_releases_its_quota(api):
    from chalicelib.services import jobs

    pid = released(api)
    job = start(api, {"product_id": pid, "burn_method": "per_device_secret", "generation": "auto", "quantity": 20})
    assert api.get("/v1/quota").json["registered"] == 20  # reserved up front
    message = queued()[0]
    from chalicelib.models.products import ProductRecord

    ProductRecord.get(pid).delete()
    jobs.run(message["Body"])
    rec = api.get(f"/v1/batches/{job['id']}").json
    assert rec["status"] == "failed" and "does not exist" in rec["last_failure_reason"]
    assert api.get("/v1/quota").json["registered"] == 0


def test_csv_cells_are_escaped_against_formulas():
    from chalicelib.media import csvout

    text = csvout.render([["=1+1", "+x", "-y", "@z", "\tt", "\rr", "ok", 'say "hi", bye']], header=["a"])
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[1] == ["'=1+1", "'+x", "'-y", "'@z", "'\tt", "'\rr", "ok", 'say "hi", bye']
    assert [csvout.unescape_cell(c) for c in rows[1]][:6] == ["=1+1", "+x", "-y", "@z", "\tt", "\rr"]


def test_audio_video_products_count_on_their_own_quota(api, monkeypatch):
    from chalicelib.core.config import reload_settings

    monkeypatch.setenv("FLEETBOX_AV_DEVICE_QUOTA", "3")
    reload_settings()
    cam = released(api, name="Camera", category="video/camera/ipc")
    lamp = released(api, name="Lamp2")
    for name in ("c1", "c2"):
        assert api.post(f"/v1/products/{cam}/devices", {"device_name": name}).status_code == 201
    q = api.get("/v1/quota").json
    assert (q["av_device_quota"], q["av_registered"], q["av_remaining"], q["registered"]) == (3, 2, 1, 0)
    # a batch over the audio/video quota fails first; the normal quota does not help it
    resp = api.post(
        "/v1/batches", {"product_id": cam, "burn_method": "per_device_secret", "generation": "auto", "quantity": 2}
    )
    err = expect_error(resp, 409, "LimitExceeded.DeviceExceedLimit", "quantity")
    assert "audio/video device license limit" in err["message"]
    job = start(
        api, {"product_id": cam, "burn_method": "per_device_secret", "generation": "upload", "names_csv": "c3\n"}
    )
    assert api.get("/v1/quota").json["av_remaining"] == 0  # reserved while it runs
    done = finished(api, job["id"])
    assert (done["success_count"], done["failure_count"]) == (1, 0)
    q = api.get("/v1/quota").json
    assert (q["av_registered"], q["registered"]) == (3, 0)
    expect_error(
        api.post(f"/v1/products/{cam}/devices", {"device_name": "c4"}),
        409,
        "LimitExceeded.DeviceExceedLimit",
        "device_name",
    )
    assert api.post(f"/v1/products/{lamp}/devices", {"device_name": "l1"}).status_code == 201
    assert api.delete(f"/v1/products/{cam}/devices/c1").status_code == 204
    q = api.get("/v1/quota").json
    assert (q["av_registered"], q["registered"]) == (2, 1)


def test_platform_errors_retry_then_report_hub_timeout_rows_and_a_done_event(api, monkeypatch):
    from pynamodb.exceptions import PutError

    from chalicelib.services import batches, devices, events, jobs

    seen: list[Any] = []
    hook = seen.append
    events.subscribe("batch.*", hook)
    pid = released(api)
    job = start(api, {"product_id": pid, "burn_method": "per_device_secret", "generation": "auto", "quantity": 3})
    real = devices.insert_many

    def throttled(*a: Any, **k: Any) -> Any:
        raise PutError("ProvisionedThroughputExceededException")

    monkeypatch.setattr(devices, "insert_many", throttled)
    message = queued()[0]["Body"]
    for _ in range(batches.MAX_ATTEMPTS - 1):  # each delivery fails and asks for re-delivery
        with pytest.raises(jobs.Retry):
            jobs.run(message)
    assert api.get(f"/v1/batches/{job['id']}").json["status"] == "processing"
    jobs.run(message)  # the last attempt reports the rows instead of failing again
    monkeypatch.setattr(devices, "insert_many", real)
    done = finished(api, job["id"])
    assert (done["status"], done["success_count"], done["failure_count"]) == ("failed", 0, 3)
    assert done["last_failure_reason"] == "hub create device timeout"
    assert {r["Status"] for r in read_batch_csv(fetch(done["csv_url"]))} == {"hub create device timeout"}
    assert api.get("/v1/quota").json["registered"] == 0
    events.unsubscribe(hook)
    assert [(e.kind, e.data["batch_id"], e.data["failure_count"]) for e in seen] == [("batch.failed", job["id"], 3)]


def test_a_chunk_that_never_succeeds_stops_the_batch_and_releases_its_quota(api, monkeypatch):
    from chalicelib.services import jobs, production

    pid = released(api)
    job = start(api, {"product_id": pid, "burn_method": "per_device_secret", "generation": "auto", "quantity": 4})

    def broken(*a: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(production, "chunk_rows", broken)
    message = queued()[0]["Body"]
    for _ in range(2 * production.MAX_ATTEMPTS):
        with pytest.raises(RuntimeError):
            jobs.run(message)
    jobs.run(message)
    rec = api.get(f"/v1/batches/{job['id']}").json
    assert rec["status"] == "failed" and "stopped" in rec["last_failure_reason"]
    assert api.get("/v1/quota").json["registered"] == 0


def test_a_principal_limited_to_one_product_sees_only_its_batches(api):
    a, b = released(api, name="Mine"), released(api, name="Theirs")
    body = {"burn_method": "per_device_secret", "generation": "auto", "quantity": 1}
    job_a, job_b = start(api, {**body, "product_id": a}), start(api, {**body, "product_id": b})
    who = api.post(
        "/v1/principals",
        {
            "name": "partner",
            "policy": {
                "version": "2.0",
                "statement": [
                    {"effect": "allow", "action": ["iotexplorer:*"], "resource": [f"product/{a}", f"product/{a}/*"]}
                ],
            },
        },
    ).json
    partner = api.as_key(api.post("/v1/keys", {"principal_id": who["principal_id"]}).json["api_key"])
    assert partner.get(f"/v1/batches/{job_a['id']}").status_code == 200
    expect_error(partner.get(f"/v1/batches/{job_b['id']}"), 403, "UnauthorizedOperation", None)
    expect_error(partner.post("/v1/batches", {**body, "product_id": b}), 403, "UnauthorizedOperation", None)
    drain_jobs()
