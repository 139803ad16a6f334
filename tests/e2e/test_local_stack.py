"""The local stack, started for real (``python -m infra.local``), driven over HTTP."""

from __future__ import annotations

import re
import socket
import uuid
from pathlib import Path
from urllib.parse import urlparse

import boto3
import pytest
import requests

from tests.e2e.fleet import Api, Device
from tests.e2e.stack import StackProcess, process_gone
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e

LAMP = {
    "name": "Lamp",
    "category": "custom",
    "device_type": "device",
    "comm_method": "wifi",
    "auth_type": "key",
    "data_protocol": "thing_model",
}


def bearer(info: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {info['admin_api_key']}"}


def accepts_connections(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_log_line(stack: StackProcess, pattern: str, timeout: float = 5.0) -> list[str]:
    """Lines of the stack's output matching ``pattern`` (waits for at least one)."""
    return wait_until(lambda: [line for line in stack.log_text().splitlines() if re.search(pattern, line)], timeout)


def test_local_json_describes_the_running_stack(local_stack):
    assert set(local_stack) >= {"api_url", "mqtt_host", "mqtt_port", "admin_api_key", "s3_endpoint"}
    assert local_stack["api_url"].startswith("http://127.0.0.1:")
    assert local_stack["mqtt_host"] == "127.0.0.1"
    assert isinstance(local_stack["mqtt_port"], int)
    assert accepts_connections(local_stack["api_url"])
    # s3_endpoint is moto: S3 answers there, to requests signed with the stack's own key only
    s3 = boto3.client(
        "s3",
        endpoint_url=local_stack["s3_endpoint"],
        region_name="us-east-1",
        aws_access_key_id=local_stack["aws_access_key_id"],
        aws_secret_access_key=local_stack["aws_secret_access_key"],
    )
    assert s3.list_buckets()["Buckets"]
    assert requests.get(local_stack["s3_endpoint"], timeout=10).status_code == 403


def test_openapi_document_is_served(local_stack):
    response = requests.get(f"{local_stack['api_url']}/openapi.json", timeout=10)
    assert response.status_code == 200
    assert response.json()["openapi"].startswith("3.")


def test_v1_routes_need_the_admin_key(local_stack):
    url = f"{local_stack['api_url']}/v1/quota"
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(url, headers={"Authorization": "Bearer fbk_nope.nope"}, timeout=10).status_code == 401
    assert requests.get(url, headers=bearer(local_stack), timeout=10).status_code == 200


def test_every_response_carries_a_request_id(local_stack):
    api = local_stack["api_url"]
    responses = [
        requests.get(f"{api}/openapi.json", timeout=10),
        requests.get(f"{api}/v1/quota", timeout=10),
        requests.get(f"{api}/v1/quota", headers=bearer(local_stack), timeout=10),
        requests.get(f"{api}/v1/products/{uuid.uuid4().hex[:10].upper()}", headers=bearer(local_stack), timeout=10),
        requests.post(f"{api}/v1/products", json={"name": ""}, headers=bearer(local_stack), timeout=10),
    ]
    assert [r.status_code for r in responses][:3] == [200, 401, 200]
    assert responses[3].status_code == 404
    assert responses[4].status_code in (400, 422)
    ids = [r.headers.get("x-request-id") for r in responses]
    assert all(ids), ids
    assert len(set(ids)) == len(ids)


def test_the_stack_logs_one_line_per_request(local_stack_process):
    # Given a request to a path no other request uses
    info = local_stack_process.info
    product_id = "LOG" + uuid.uuid4().hex[:7].upper()
    response = requests.get(
        f"{info['api_url']}/v1/products/{product_id}?limit=5&secret=dont-log-me", headers=bearer(info), timeout=10
    )
    request_id = response.headers["x-request-id"]

    # Then exactly one readable line says method, path, status, duration and request id
    lines = wait_for_log_line(local_stack_process, rf"GET /v1/products/{product_id} ")
    assert len(lines) == 1, lines
    line = lines[0]
    assert re.search(rf"GET /v1/products/{product_id} {response.status_code} \d+(\.\d+)?ms", line), line
    assert f"x-request-id={request_id}" in line
    # and neither the query string nor the credential is logged (the key appears only in the banner)
    log = local_stack_process.log_text()
    assert "dont-log-me" not in log
    assert [ln for ln in log.splitlines() if info["admin_api_key"] in ln] == [
        ln for ln in log.splitlines() if "Admin key" in ln
    ]
    # and BaseHTTPRequestHandler's access log ("GET /… HTTP/1.1" 200 -) is gone
    assert not re.search(r'"GET /\S* HTTP/1\.1" \d{3}', log)


def test_sigterm_stops_everything_and_leaves_no_child_process(stack_factory):
    # Given a running stack and its children (moto server, DynamoDB Local)
    stack = stack_factory()
    children = stack.children()
    assert children, "the stack should run moto server and DynamoDB Local as child processes"
    moto_url = stack.info["s3_endpoint"]
    assert accepts_connections(moto_url)

    # When it gets SIGTERM
    code = stack.terminate()

    # Then it exits 0, its children are gone, nothing listens, and local.json is removed
    assert code == 0, stack.log_text()[-4000:]
    assert wait_until(lambda: all(process_gone(pid) for pid in children), 5, 0.1), children
    assert not accepts_connections(moto_url)
    assert not accepts_connections(stack.info["api_url"])
    assert not stack.info_path.exists()


def test_state_dir_keeps_data_across_a_restart(stack_factory, tmp_path: Path):
    # Given a stack with a state directory, and a product created in it
    state = tmp_path / "state"
    first = stack_factory(home=tmp_path / "home", FLEETBOX_STATE_DIR=str(state))
    created = requests.post(f"{first.info['api_url']}/v1/products", json=LAMP, headers=bearer(first.info), timeout=10)
    assert created.status_code == 201, created.text
    product_id = created.json()["product_id"]

    # When the stack is stopped and started again on the same state
    assert first.terminate() == 0, first.log_text()[-4000:]
    second = stack_factory(home=tmp_path / "home", FLEETBOX_STATE_DIR=str(state))

    # Then the product is still there (and the admin key is the same one)
    fetched = requests.get(
        f"{second.info['api_url']}/v1/products/{product_id}", headers=bearer(second.info), timeout=10
    )
    assert fetched.status_code == 200, fetched.text
    assert fetched.json()["name"] == "Lamp"
    assert second.info["admin_api_key"] == first.info["admin_api_key"]

    # and what the restarted stack writes survives the next restart too
    desk = requests.post(
        f"{second.info['api_url']}/v1/products", json=dict(LAMP, name="Desk"), headers=bearer(second.info), timeout=10
    )
    assert desk.status_code == 201, desk.text
    assert second.terminate() == 0, second.log_text()[-4000:]
    third = stack_factory(home=tmp_path / "home", FLEETBOX_STATE_DIR=str(state))
    for pid, name in ((product_id, "Lamp"), (desk.json()["product_id"], "Desk")):
        fetched = requests.get(f"{third.info['api_url']}/v1/products/{pid}", headers=bearer(third.info), timeout=10)
        assert fetched.status_code == 200, fetched.text
        assert fetched.json()["name"] == name
    assert third.terminate() == 0, third.log_text()[-4000:]


def test_without_state_dir_a_restart_starts_empty(stack_factory, tmp_path: Path):
    first = stack_factory(home=tmp_path / "home")
    created = requests.post(f"{first.info['api_url']}/v1/products", json=LAMP, headers=bearer(first.info), timeout=10)
    assert created.status_code == 201, created.text
    assert first.terminate() == 0

    second = stack_factory(home=tmp_path / "home")
    fetched = requests.get(
        f"{second.info['api_url']}/v1/products/{created.json()['product_id']}", headers=bearer(second.info), timeout=10
    )
    assert fetched.status_code == 404
    assert second.terminate() == 0


def test_kill_9_keeps_every_product_device_and_report(stack_factory, tmp_path: Path):
    # Given a stack with a state directory: a product, a device and a value it reported over MQTT
    state, home = tmp_path / "state", tmp_path / "home"
    first = stack_factory(home=home, FLEETBOX_STATE_DIR=str(state))
    api = Api(first.info)
    pid = api.product()
    dn, secret = api.device(pid)
    device = Device(first.info, pid, dn, secret).connect()
    device.subscribe(device.topic("thing/down/property"))
    device.publish(
        device.topic("thing/up/property"), {"method": "report", "clientToken": "k9", "params": {"brightness": 61}}
    )
    assert device.reply_to("k9"), "no report_reply"
    device.close()
    children = first.children()

    # When the stack is killed with SIGKILL (no chance to flush or stop anything)
    first.kill()

    # Then DynamoDB Local and moto die with it (they watch their parent)
    assert wait_until(lambda: all(process_gone(p) for p in children), 10, 0.1), children
    # And a stack restarted on the same state has the product, the device, its value and its history
    second = stack_factory(home=home, FLEETBOX_STATE_DIR=str(state))
    api = Api(second.info)
    assert api.call("GET", f"/v1/products/{pid}", 200).json()["product_id"] == pid
    assert api.describe(pid, dn)["device_name"] == dn
    assert api.reported(pid, dn)["brightness"]["value"] == 61
    history = api.call("GET", f"/v1/products/{pid}/devices/{dn}/properties/brightness/history", 200).json()
    assert [h["value"] for h in history["items"]] == [61]
    assert [e["direction"] for e in api.logs(pid, dn, "content")] == ["down", "up"]
    # And the device's secret still works: it connects and reports again
    device = Device(second.info, pid, dn, secret).connect()
    device.subscribe(device.topic("thing/down/property"))
    device.publish(
        device.topic("thing/up/property"), {"method": "report", "clientToken": "k9b", "params": {"brightness": 62}}
    )
    assert device.reply_to("k9b")
    device.close()
    assert wait_until(lambda: api.reported(pid, dn)["brightness"]["value"] == 62, 10, 0.1)
    assert second.terminate() == 0, second.log_text()[-4000:]
