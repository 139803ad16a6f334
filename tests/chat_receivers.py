"""Loopback stand-ins for the chat platforms the alerts post to (real HTTP servers in threads):

* :class:`SlackStandIn` — Slack's Web API ``chat.postMessage`` (what ``FLEETBOX_SLACK_API_URL``
  points at instead of https://slack.com/api/): checks the bearer bot token, answers
  ``{"ok": true, "ts": …}``, or ``{"ok": false, "error": …}`` / HTTP 5xx when told to fail;
* :class:`FeishuStandIn` — a Feishu/Lark custom bot webhook that verifies the signature with
  its own code, written from Feishu's documentation (``base64(HMAC-SHA256(key =
  f"{timestamp}\\n{secret}", msg = b""))``), and answers Feishu's ``{"code": 0}`` or
  ``{"code": 19021, "msg": "sign match fail …"}``.

Both keep every message they received (:attr:`messages`), so a test can look at what a person
would read — and grep it for secrets.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def feishu_sign_ok(secret: str, timestamp: str, sign: str, now: float | None = None) -> bool:
    """Feishu's check of a custom bot request (timestamp within one hour)."""
    if not timestamp.isdigit() or abs((now or time.time()) - int(timestamp)) > 3600:
        return False
    key = f"{timestamp}\n{secret}".encode()
    expected = base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
    return hmac.compare_digest(expected, sign)


@dataclass
class _Server(ABC):
    port: int = 0
    #: every accepted message body (parsed JSON), in arrival order
    messages: list[dict[str, Any]] = field(default_factory=list)
    #: every request (accepted or not): (path, headers, body)
    requests: list[tuple[str, dict[str, str], Any]] = field(default_factory=list)
    #: answer this many requests with a failure first (then succeed)
    fail_next: int = 0
    fail_always: bool = False

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @abstractmethod
    def handle(self, path: str, headers: dict[str, str], body: Any) -> tuple[int, dict[str, Any]]:
        """(status, JSON answer) for one request, as the platform answers it."""

    def _failing(self) -> bool:
        with self._lock:
            if self.fail_always:
                return True
            if self.fail_next > 0:
                self.fail_next -= 1
                return True
            return False

    def start(self) -> _Server:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    body = {"_raw": raw.decode("utf-8", "replace")}
                with outer._lock:
                    outer.requests.append((self.path, headers, body))
                status, answer = outer.handle(self.path, headers, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def texts(self) -> list[str]:
        """Everything a person could read in the accepted messages, one string per message."""
        with self._lock:
            return [json.dumps(m, ensure_ascii=False) for m in self.messages]


@dataclass
class SlackStandIn(_Server):
    token: str = "xoxb-test-token"
    #: the Slack error a failure answers (``ok: false``); None: HTTP 500
    error: str | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    def handle(self, path: str, headers: dict[str, str], body: Any) -> tuple[int, dict[str, Any]]:
        if path != "/api/chat.postMessage":
            return 404, {"ok": False, "error": "unknown_method"}
        if headers.get("authorization") != f"Bearer {self.token}":
            return 200, {"ok": False, "error": "invalid_auth"}
        if not isinstance(body, dict) or not body.get("channel") or not (body.get("text") or body.get("blocks")):
            return 200, {"ok": False, "error": "no_text"}
        if self._failing():
            return (200, {"ok": False, "error": self.error}) if self.error else (500, {"ok": False})
        with self._lock:
            self.messages.append(body)
        return 200, {"ok": True, "channel": body["channel"], "ts": f"{time.time():.6f}"}


@dataclass
class FeishuStandIn(_Server):
    secret: str = "feishuTestSecret123"
    #: requests whose signature did not verify
    bad_signatures: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/open-apis/bot/v2/hook/test-hook"

    def handle(self, path: str, headers: dict[str, str], body: Any) -> tuple[int, dict[str, Any]]:
        ts, sign = str(body.get("timestamp") or ""), str(body.get("sign") or "")
        if not feishu_sign_ok(self.secret, ts, sign):
            with self._lock:
                self.bad_signatures += 1
            return 200, {"code": 19021, "msg": "sign match fail or timestamp is not within one hour from current time"}
        if body.get("msg_type") not in ("text", "interactive", "post"):
            return 200, {"code": 9499, "msg": "Bad Request"}
        if self._failing():
            return 500, {"code": 9499, "msg": "try later"}
        with self._lock:
            self.messages.append(body)
        return 200, {"code": 0, "msg": "success", "data": {}}
