"""The adversarial probe's findings on the real local stack (issue 10).

Unmatched paths and methods answer the error envelope; bodies over API Gateway's 10 MB are
refused before they are read; a client that leaves early costs no traceback; the object store
serves nobody but the stack; an oversized MQTT report is answered, not silently dropped; and
``FLEETBOX_ALLOW_LOOPBACK=false`` is obeyed.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.fleet import Api, Device
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e


def _raw_http(info: dict[str, Any], request: bytes, read: bool = True, timeout: float = 10.0) -> bytes:
    host, port = info["api_url"].rsplit("//", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        if not read:
            return b""
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def test_unmatched_paths_and_methods_answer_the_error_envelope(local_stack):
    key = f"Bearer {local_stack['admin_api_key']}"
    for path in ("/v1/nothing/here/at/all", "/nope", "/v1/products/X/devices/Y/nothing"):
        resp = requests.get(local_stack["api_url"] + path, headers={"Authorization": key}, timeout=10)
        assert resp.status_code == 404, (path, resp.text)
        body = resp.json()
        assert body["error"]["code"] == "ResourceNotFound.Route" and body["request_id"] == resp.headers["x-request-id"]
        assert "fbk_" not in resp.text and "Authorization" not in resp.text
    resp = requests.patch(local_stack["api_url"] + "/v1/rules", headers={"Authorization": key}, timeout=10)
    assert resp.status_code == 405 and resp.json()["error"]["code"] == "MethodNotAllowed"
    assert resp.headers["Allow"] == "GET, POST" and resp.json()["request_id"] == resp.headers["x-request-id"]


def test_a_body_over_10_mb_is_refused_before_it_is_read(local_stack):
    host = local_stack["api_url"].rsplit("//", 1)[1]
    for length in (60 * 1024 * 1024, 4 * 1024**3):
        started = time.monotonic()
        answer = _raw_http(
            local_stack,
            (
                f"POST /v1/products HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json"
                f"\r\nContent-Length: {length}\r\n\r\n{{"
            ).encode(),
        )
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"RequestTooLarge.Body" in answer and b"x-request-id" in answer.lower()
        assert time.monotonic() - started < 5  # answered at once, not after reading gigabytes
    answer = _raw_http(
        local_stack, f"POST /v1/products HTTP/1.1\r\nHost: {host}\r\nContent-Length: lots\r\n\r\n".encode()
    )
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]


def _server_socket_inode(server_port: int, client_port: int) -> int:
    """The inode of the server's end of a loopback TCP connection (0 until it is accepted)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
            return int(fields[9])
    return 0


def _open_sockets(pid: int) -> set[int]:
    """Inodes of the sockets process ``pid`` holds open."""
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return found


def test_a_client_that_leaves_early_costs_no_traceback(local_stack, local_stack_process):
    host = local_stack["api_url"].rsplit("//", 1)[1]
    port = int(host.split(":")[1])
    before = local_stack_process.log_text().count("Traceback")
    abandoned: set[int] = set()
    for request in (
        b"POST /v1/products HTTP/1.1\r\nHost: " + host.encode() + b'\r\nContent-Length: 5000\r\n\r\n{"na',
        b"GET /v1/prod",
        b"POST /v1/products HTTP/1.1\r\nHost: x\r\nContent-Le",
    ):
        with socket.create_connection(tuple(host.split(":")[:1]) + (port,), timeout=5) as sock:
            sock.sendall(request)
            client_port = sock.getsockname()[1]
            inode = wait_until(lambda client_port=client_port: _server_socket_inode(port, client_port), 5)
            assert inode, "the stack did not accept the connection"
            abandoned.add(inode)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
    # the stack still answers, and wrote no traceback for any of them
    api = Api(local_stack)
    assert wait_until(lambda: api.call("GET", "/v1/quota").status_code == 200, 10)
    # the abandoned handlers finish on their own threads; closing the connection is the last
    # thing each does (socketserver closes it after any error report), so once none of their
    # sockets is open in the stack, any traceback they would write is written
    assert wait_until(lambda: not abandoned & _open_sockets(local_stack_process.process.pid), 10)
    assert local_stack_process.log_text().count("Traceback") == before, local_stack_process.log_text()[-3000:]


def test_the_object_store_serves_nobody_but_the_stack(local_stack):
    api = Api(local_stack)
    pid = api.call(
        "POST",
        "/v1/products",
        201,
        json={
            "name": f"Store {time.time_ns()}",
            "category": "custom",
            "device_type": "device",
            "comm_method": "wifi",
            "auth_type": "key",
            "data_protocol": "thing_model",
        },
    ).json()["product_id"]
    api.call("POST", f"/v1/products/{pid}/publish", 200)
    job = api.call(
        "POST",
        "/v1/batches",
        202,
        json={"product_id": pid, "burn_method": "per_device_secret", "generation": "auto", "quantity": 2},
    ).json()
    seen: dict[str, Any] = {}
    assert wait_until(
        lambda: (
            seen.update(api.call("GET", f"/v1/batches/{job['id']}?include_secret=true").json())
            or seen.get("status") == "done"
        ),
        60,
        0.2,
    ), seen
    link = seen["csv_url"]
    # the person's link works; the same key straight from moto, unsigned, does not
    assert "DevicePsk" in requests.get(link, timeout=10).text
    key = link.split("/files/", 1)[1].split("?", 1)[0]
    bucket = "fleetbox-local-files"
    direct = requests.get(f"{local_stack['s3_endpoint']}/{bucket}/{key}", timeout=10)
    assert direct.status_code == 403 and b"DevicePsk" not in direct.content
    # nor does a link whose expiry was pushed out, or whose signature is not ours
    expires = link.split("e=", 1)[1].split("&", 1)[0]
    assert requests.get(link.replace(f"e={expires}", f"e={int(expires) + 3600}"), timeout=10).status_code == 403
    assert requests.get(link[:-4] + "0000", timeout=10).status_code == 403


def test_an_oversized_report_is_answered_and_logged(local_stack):
    api = Api(local_stack)
    pid = api.product()
    dn, secret = api.device(pid)
    device = Device(local_stack, pid, dn, secret).connect()
    try:
        device.subscribe(device.topic("thing/down/property"), qos=1)
        big = {"method": "report", "clientToken": "big-1", "params": {"brightness": 5}, "pad": "x" * 20_000}
        device.publish(device.topic("thing/up/property"), big)
        _, reply = device.reply_to("big-1", "report_reply")
        assert reply["code"] == 413 and "16384" in reply["status"]
        assert wait_until(
            lambda: [x for x in api.logs(pid, dn, "diagnostic") if x.get("code") == "Dev_Pub_Payload_TooLong"], 10
        )
        assert "brightness" not in api.reported(pid, dn)  # nothing of it was stored
    finally:
        device.close()


def test_the_loopback_switch_is_obeyed(stack_factory):
    stack = stack_factory(FLEETBOX_ALLOW_LOOPBACK="false")
    api = Api(stack.info)
    resp = api.call(
        "POST",
        "/v1/rules",
        json={
            "name": "loop",
            "sql": "SELECT * FROM 'x/y/z'",
            "actions": [{"type": "http", "url": "http://127.0.0.1/hook"}],
        },
    )
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "InvalidParameterValue.InvalidUrl"
    assert "loopback" in resp.json()["error"]["message"]
