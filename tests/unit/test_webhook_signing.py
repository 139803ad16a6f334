"""Webhook signatures and the SSRF guard (SPEC §9.2)."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from chalicelib.core.config import reload_settings
from chalicelib.forwarders import webhook


def test_sha1_signature_matches_the_spec_vector() -> None:
    assert webhook.sha1_signature("aaa", "1604458421", "IkOaKMDalrAzUTxC") == "c259ed29ec13ba7c649fe0893007401a36e70453"


def test_signed_headers_verify_with_the_standardwebhooks_package() -> None:
    secret = webhook.new_secret()
    assert secret.startswith("whsec_")
    body = json.dumps({"devicename": "d", "payload": {"a": 1}}).encode()
    target = webhook.Target(url="https://example.com/x", token="tok", secret=secret)
    headers = webhook.signed_headers(target, body, "msg_1")
    assert Webhook(secret).verify(body, headers) == {"devicename": "d", "payload": {"a": 1}}
    assert headers["webhook-id"] == "msg_1"
    assert headers["Signature"] == webhook.sha1_signature("tok", headers["Timestamp"], headers["Nonce"])
    assert len(headers["Nonce"]) == 16
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", headers)
    assert "Signature" not in webhook.signed_headers(webhook.Target(url="https://e.com"), body, "m")


@pytest.fixture()
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    table: dict[str, list[str]] = {}

    def getaddrinfo(host: str, port: Any, *args: Any, **kw: Any) -> list[Any]:
        if host not in table:
            raise socket.gaierror(-2, "Name or service not known")
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in table[host]
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return table


@pytest.mark.parametrize(
    "addresses,why",
    [
        (["10.1.2.3"], "private"),
        (["172.16.0.1"], "private"),
        (["192.168.0.1"], "private"),
        (["127.0.0.1"], "loopback"),
        (["::1"], "loopback"),
        (["169.254.169.254"], "metadata"),
        (["169.254.1.1"], "link-local"),
        (["fe80::1"], "link-local"),
        (["fd12::1"], "private"),
        (["::ffff:10.0.0.1"], "private"),
        (["224.0.0.5"], "multicast"),
        (["0.0.0.0"], "reserved"),
        (["100.64.0.1"], "reserved"),
        (["93.184.216.34", "10.0.0.1"], "private"),
    ],
)
def test_every_resolved_address_must_be_public(fake_dns: dict[str, list[str]], addresses: list[str], why: str) -> None:
    fake_dns["hook.example.com"] = addresses
    with pytest.raises(webhook.Blocked) as info:
        webhook.resolve("https://hook.example.com/x")
    assert why in str(info.value)


def test_public_addresses_on_80_and_443_pass(fake_dns: dict[str, list[str]]) -> None:
    fake_dns["hook.example.com"] = ["93.184.216.34", "2606:2800:220:1::1"]
    assert webhook.resolve("https://hook.example.com/x")[1] == 443
    assert webhook.resolve("http://hook.example.com/x")[1] == 80
    with pytest.raises(webhook.Blocked, match="port 8080"):
        webhook.resolve("http://hook.example.com:8080/x")
    with pytest.raises(webhook.Blocked, match="cannot be resolved"):
        webhook.resolve("http://nowhere.example.com/x")
    with pytest.raises(webhook.Blocked, match="credentials"):
        webhook.resolve("http://u:p@hook.example.com/x")


def test_loopback_only_when_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETBOX_ALLOW_LOOPBACK", "true")
    reload_settings()
    try:
        assert webhook.resolve("http://127.0.0.1:9999/x")[2] == ["127.0.0.1"]
        with pytest.raises(webhook.Blocked, match="metadata"):
            webhook.resolve("http://169.254.169.254/latest/meta-data")
        with pytest.raises(webhook.Blocked, match="private"):
            webhook.resolve("http://10.0.0.1:9999/x")
    finally:
        monkeypatch.delenv("FLEETBOX_ALLOW_LOOPBACK")
        reload_settings()
    with pytest.raises(webhook.Blocked):
        webhook.resolve("http://127.0.0.1:9999/x")


def test_retry_after_parsing() -> None:
    assert webhook._retry_after("7") == 7.0
    assert webhook._retry_after(None) is None and webhook._retry_after("soon") is None
    assert 0 <= webhook._retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def test_a_connection_to_a_private_peer_is_cut_before_sending(monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: the name passed the check, the connection lands on loopback — refused."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    seen: list[str] = []

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:
            pass

        def do_POST(self) -> None:
            seen.append(self.path)
            self.send_response(200)
            self.end_headers()

    server = HTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=server.handle_request, daemon=True).start()
    port = server.server_address[1]
    # the pre-flight check sees a public address; the connection really goes to 127.0.0.1
    monkeypatch.setattr(webhook, "resolve", lambda url: ("rebind.example", port, ["93.184.216.34"]))
    outcome = webhook.attempt({"url": f"http://127.0.0.1:{port}/x"}, {"a": 1}, "msg_1")
    server.server_close()
    assert not outcome.ok and outcome.permanent and "127.0.0.1" in (outcome.error or "")
    assert seen == []
