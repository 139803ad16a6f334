"""The adversarial probe's findings (issue 10), each reproduced and shown fixed.

The list-scoping and secret findings (1 and most of 2) are proven across every route in
``test_list_security.py``; the local stack's own findings (unmatched paths, body limits, the
object store, a killed batch, MQTT payload limits) in ``tests/e2e/test_probe_e2e.py``.
"""

from __future__ import annotations

import ast
import base64
import csv
import io
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers import decrypt
from tests.integration.helpers import PRODUCT, Api, FakeQueue, expect_error, ok, v2_request

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def drained(monkeypatch: pytest.MonkeyPatch, aws: None) -> Iterator[Any]:
    """Job steps run inline (``drain()``), the files bucket of the test stage."""
    from chalicelib.core.config import reload_settings
    from chalicelib.services import files

    monkeypatch.setenv("FLEETBOX_BUCKET", "fleetbox-test-files-123456789012")
    reload_settings()
    files.forget()
    yield FakeQueue(honour_delays=False).install(monkeypatch).drain
    monkeypatch.undo()
    reload_settings()
    files.forget()


def _released_with_registration(api: Api, name: str = "Factory") -> tuple[str, str]:
    pid = ok(api.post("/v1/products", {**PRODUCT, "name": name}), 201)["product_id"]
    secret = ok(api.put(f"/v1/products/{pid}/dynamic-registration", {"register_type": 1}))["product_secret"]
    ok(api.post(f"/v1/products/{pid}/publish"))
    return pid, secret


# ------------------------------------------------------------------ finding 2


def test_an_application_key_gets_no_batch_link_and_no_product_secret(api, drained):
    # Given a released product with dynamic registration and a finished batch
    pid, _ = _released_with_registration(api)
    job = ok(
        api.post(
            "/v1/batches", {"product_id": pid, "burn_method": "per_device_secret", "generation": "auto", "quantity": 3}
        ),
        202,
    )
    drained()
    app = ok(api.post("/v1/applications", {"name": "App", "products": [pid]}), 201)
    key = api.as_key(app["keys"][0]["api_key"])
    # When the application key reads the batch and the registration settings
    batch = ok(key.get(f"/v1/batches/{job['id']}"))
    # Then it sees the job but no link to the CSV that holds every device secret
    assert batch["status"] == "done" and batch["download_url"] is None and batch["csv_url"] is None
    expect_error(key.get(f"/v1/batches/{job['id']}?include_secret=true"), 403, "UnauthorizedOperation", None)
    reg = ok(key.get(f"/v1/products/{pid}/dynamic-registration"))
    assert reg["secret_set"] is True and "product_secret" not in reg
    expect_error(
        key.get(f"/v1/products/{pid}/dynamic-registration?include_secret=true"), 403, "UnauthorizedOperation", None
    )
    # even a policy edit cannot give an application a secret-reading action
    expect_error(
        api.put(
            f"/v1/principals/{app['principal_id']}/policy",
            {"version": "2.0", "statement": [{"effect": "allow", "action": ["*"], "resource": ["*"]}]},
        ),
        409,
        "UnsupportedOperation.ApplicationPolicy",
        "principal_id",
    )


def test_registration_never_replaces_a_batch_devices_secret(api, drained):
    # Given devices made by a one-device-one-secret batch (secrets burned at the factory)
    pid, psecret = _released_with_registration(api, "Burned")
    job = ok(
        api.post(
            "/v1/batches",
            {
                "product_id": pid,
                "burn_method": "per_device_secret",
                "generation": "upload",
                "names_csv": "DeviceName\nshipped-1\n",
            },
        ),
        202,
    )
    drained()
    link = ok(api.get(f"/v1/batches/{job['id']}?include_secret=true"))["csv_url"]
    burned = list(csv.DictReader(io.StringIO(requests.get(link, timeout=10).text)))[0]["DevicePsk"]
    # When someone holding the product secret registers the device before it first connects
    first = v2_request(api, pid, "shipped-1", psecret).json["Response"]
    # Then the answer is the burned secret, and the device record still holds it
    assert decrypt(psecret, first["Payload"], first["Len"])["psk"] == burned
    assert ok(api.get(f"/v1/products/{pid}/devices/shipped-1?include_secret=true"))["secret"] == burned


def test_a_keyless_device_gets_one_secret_and_keeps_it(api, drained):
    # Given a one-type-one-secret batch device (made without a secret)
    pid, psecret = _released_with_registration(api, "Keyless")
    ok(
        api.post(
            "/v1/batches",
            {
                "product_id": pid,
                "burn_method": "per_product_secret",
                "generation": "upload",
                "names_csv": "DeviceName\nbox-1\n",
            },
        ),
        202,
    )
    drained()
    assert ok(api.get(f"/v1/products/{pid}/devices/box-1"))["secret_set"] is False
    # When it registers twice
    one = v2_request(api, pid, "box-1", psecret).json["Response"]
    two = v2_request(api, pid, "box-1", psecret).json["Response"]
    # Then both answers carry the same, now stored, secret
    psk = decrypt(psecret, one["Payload"], one["Len"])["psk"]
    assert decrypt(psecret, two["Payload"], two["Len"])["psk"] == psk
    assert ok(api.get(f"/v1/products/{pid}/devices/box-1?include_secret=true"))["secret"] == psk


# ------------------------------------------------------------------ finding 3


class _Answer(BaseHTTPRequestHandler):
    body = b"<Error><Code>NoSuchBucket</Code><Message>internal service detail</Message></Error>"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)


@pytest.fixture()
def loopback_service() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/x"
    server.shutdown()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_url_check_says_what_failed_without_quoting_the_other_side(monkeypatch, loopback_service):
    from chalicelib.core import errors
    from chalicelib.core.config import reload_settings
    from chalicelib.forwarders import webhook

    monkeypatch.setenv("FLEETBOX_ALLOW_LOOPBACK", "true")
    reload_settings()
    try:
        with pytest.raises(errors.FleetboxError) as wrong:
            webhook.verify_callback(loopback_service)
        assert "answered something else" in wrong.value.message
        assert "NoSuchBucket" not in wrong.value.message and "internal" not in wrong.value.message
        with pytest.raises(errors.FleetboxError) as refused:
            webhook.verify_callback(f"http://127.0.0.1:{_closed_port()}/x")
        assert refused.value.message.endswith("the connection was refused")
        assert "Errno" not in refused.value.message
    finally:
        monkeypatch.undo()
        reload_settings()


def test_the_loopback_switch_off_refuses_loopback_targets(monkeypatch, loopback_service):
    from chalicelib.core import errors
    from chalicelib.core.config import reload_settings
    from chalicelib.forwarders import webhook

    monkeypatch.setenv("FLEETBOX_STAGE", "local")
    monkeypatch.setenv("FLEETBOX_ALLOW_LOOPBACK", "false")
    reload_settings()
    try:
        with pytest.raises(errors.FleetboxError) as blocked:
            webhook.check_url("http://127.0.0.1/hook")
        assert blocked.value.code == "InvalidParameterValue.InvalidUrl" and "loopback" in blocked.value.message
    finally:
        monkeypatch.undo()
        reload_settings()


def test_the_local_stack_keeps_the_users_loopback_choice(monkeypatch, tmp_path):
    import os

    from infra.local.stack import LocalStack, StackSettings

    saved = dict(os.environ)
    try:
        os.environ["FLEETBOX_ALLOW_LOOPBACK"] = "false"
        stack = LocalStack(StackSettings(home=tmp_path))
        stack.moto = type("Moto", (), {"endpoint": "http://127.0.0.1:1"})()
        stack.dynamodb = type("DynamoDBLocal", (), {"endpoint": "http://127.0.0.1:2"})()
        stack.aws_access_key_id, stack.aws_secret_key = "FBLTEST", "k"
        stack._set_aws_environment()
        assert os.environ["FLEETBOX_ALLOW_LOOPBACK"] == "false"
    finally:
        os.environ.clear()
        os.environ.update(saved)


# ------------------------------------------------------------------ finding 4 (on AWS)


def _gateway_event(method: str, resource: str, path: str, params: dict[str, str] | None) -> dict[str, Any]:
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": {"Authorization": "Bearer fbk_aaaaaaaaaaaaaaaa.secretsecret", "Content-Type": "application/json"},
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": params,
        "stageVariables": None,
        "body": None,
        "isBase64Encoded": False,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": method,
            "path": path,
            "requestId": "r",
            "identity": {"sourceIp": "203.0.113.9"},
        },
    }


def test_on_aws_unmatched_paths_and_methods_answer_the_error_envelope(aws):
    # Given the deployed handler and the catch-all resource API Gateway routes unknown paths to
    from app import app

    class Context:
        aws_request_id = "r"
        function_name = "api_handler"
        memory_limit_in_mb = 512
        invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:api_handler"

    # When a path no route serves arrives
    out = app(_gateway_event("GET", "/{proxy+}", "/v1/nothing/here", {"proxy": "v1/nothing/here"}), Context())
    body = json.loads(out["body"])
    # Then it is a 404 in the error envelope with a request id, and the Authorization header is not quoted
    assert out["statusCode"] == 404 and body["error"]["code"] == "ResourceNotFound.Route"
    assert body["request_id"] == out["headers"]["x-request-id"] and "fbk_" not in out["body"]
    # and a method a resource does not serve is a 405 that says which are
    out = app(_gateway_event("PATCH", "/v1/rules", "/v1/rules", None), Context())
    body = json.loads(out["body"])
    assert out["statusCode"] == 405 and body["error"]["code"] == "MethodNotAllowed"
    assert out["headers"]["Allow"] == "GET, POST" and body["request_id"] == out["headers"]["x-request-id"]


# ------------------------------------------------------------------ finding 5


def test_generated_device_secrets_never_start_with_a_formula_character():
    from chalicelib.core import ids

    made = [ids.device_secret() for _ in range(20_000)]  # 1 in 64 used to start with '+'
    assert not [s for s in made if s.startswith(ids.FORMULA_START)]
    assert all(len(base64.b64decode(s, validate=True)) == 16 for s in made)


def test_every_secret_in_a_batch_csv_decodes(api, drained):
    # Given a batch large enough that the old generator would have made '+…' secrets (~1 in 64)
    from chalicelib.core.config import reload_settings

    pid, _ = _released_with_registration(api, "Big")
    job = ok(
        api.post(
            "/v1/batches", {"product_id": pid, "burn_method": "per_device_secret", "generation": "auto", "quantity": 40}
        ),
        202,
    )
    drained()
    reload_settings()
    link = ok(api.get(f"/v1/batches/{job['id']}?include_secret=true"))["csv_url"]
    rows = list(csv.DictReader(io.StringIO(requests.get(link, timeout=10).text)))
    # Then every DevicePsk cell is the device's secret, exactly, and decodes to 16 bytes
    assert len(rows) == 40
    for row in rows:
        assert len(base64.b64decode(row["DevicePsk"], validate=True)) == 16
        stored = ok(api.get(f"/v1/products/{pid}/devices/{row['DeviceName']}?include_secret=true"))["secret"]
        assert row["DevicePsk"] == stored


def test_a_batch_name_a_spreadsheet_would_run_is_reported_not_written(api, drained):
    pid, _ = _released_with_registration(api, "Names")
    job = ok(
        api.post(
            "/v1/batches",
            {
                "product_id": pid,
                "burn_method": "per_device_secret",
                "generation": "upload",
                "names_csv": "DeviceName\n-12\nok-1\n=cmd|' /C calc'!A0\n",
            },
        ),
        202,
    )
    drained()
    done = ok(api.get(f"/v1/batches/{job['id']}?include_secret=true"))
    assert (done["success_count"], done["failure_count"]) == (1, 2)
    assert "spreadsheet" in done["failures"][0]["reason"]
    text = requests.get(done["csv_url"], timeout=10).text
    assert "'=cmd" in text and "\n-12," not in text and "'-12" in text  # free text escaped


# ------------------------------------------------------------------ finding 6


def test_no_guard_in_product_code_is_an_assert():
    # `python -O` strips asserts: a guard written as one is no guard
    for path in (REPO / "chalicelib").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        asserts = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Assert)]
        assert not asserts, f"{path.relative_to(REPO)}: assert on lines {asserts}"


def test_an_unreadable_job_is_logged_without_its_body(capsys, caplog):
    from chalicelib.services import jobs

    jobs.run('{"kind": "batch.chunk", "body": {"url": "https://hooks.example/secret-path?token=abc123"')
    out = capsys.readouterr().out + caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert "unrunnable job message dropped" in out
    assert "secret-path" not in out and "abc123" not in out


def test_an_unreadable_forward_job_is_logged_without_its_body(capsys, caplog):
    from chalicelib.services import delivery, rules  # noqa: F401 - rules installs its delivery hooks

    delivery.run_batch([("m1", '{"target": {"url": "https://hooks.example/x", "token": "tok-123"')])
    out = capsys.readouterr().out + caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert "unreadable forward job dropped" in out and "tok-123" not in out and "hooks.example" not in out


# ------------------------------------------------------------------ finding 7


def test_names_are_unicode_normalised(api):
    # "café" typed decomposed (e + combining accent) is the same name as precomposed
    nfd = ok(api.post("/v1/products", {**PRODUCT, "name": "Cafe\u0301 lamp"}), 201)
    assert nfd["name"] == "Caf\u00e9 lamp"
    expect_error(
        api.post("/v1/products", {**PRODUCT, "name": "Caf\u00e9 lamp"}), 409, "ResourceInUse.ProductNameExists", "name"
    )


def test_a_tag_filter_without_a_value_is_refused(api, product):
    pid = product["product_id"]
    expect_error(api.get(f"/v1/products/{pid}/devices?tag=noequals"), 400, "InvalidParameterValue.TagInvalid", "tag")
    assert ok(api.get(f"/v1/products/{pid}/devices?tag=room=kitchen"))["items"] == []


def test_a_principal_can_be_deleted_and_its_keys_stop_working(api):
    p = ok(
        api.post(
            "/v1/principals",
            {
                "name": "staff",
                "policy": {"version": "2.0", "statement": [{"effect": "allow", "action": ["*"], "resource": ["*"]}]},
            },
        ),
        201,
    )
    key = ok(api.post("/v1/keys", {"principal_id": p["principal_id"], "name": "k"}), 201)["api_key"]
    assert api.as_key(key).get("/v1/products").status_code == 200
    assert api.delete(f"/v1/principals/{p['principal_id']}").status_code == 204
    expect_error(api.as_key(key).get("/v1/products"), 401, "AuthFailure.InvalidCredential", None)
    expect_error(
        api.get(f"/v1/principals/{p['principal_id']}"), 404, "ResourceNotFound.PrincipalNotExist", "principal_id"
    )
    expect_error(api.delete("/v1/principals/root"), 409, "UnsupportedOperation.DeleteSelf", "principal_id")


def test_rule_debug_names_the_device_of_a_thing_topic(api, product):
    pid = product["product_id"]
    ok(
        api.post(
            "/v1/rules",
            {"name": "who", "sql": "SELECT deviceName() AS dn, productId() AS pid FROM 'thing/up/property/+/+'"},
        ),
        201,
    )
    out = ok(api.post("/v1/rules/who/debug", {"topic": f"thing/up/property/{pid}/lamp-7", "payload": {}}))
    assert out["output"] == {"dn": "lamp-7", "pid": pid}
    out = ok(api.post("/v1/rules/who/debug", {"topic": f"$thing/up/property/{pid}/lamp-8", "payload": {}}))
    assert out["output"] == {"dn": "lamp-8", "pid": pid}
