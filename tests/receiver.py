"""A webhook receiver on loopback for the rule engine's tests: a real HTTP server in a thread.

It verifies what a third party would: the Tencent-style SHA1 ``Signature`` header with its own
code (sorted token + Timestamp + Nonce), and the Standard Webhooks headers with the
``standardwebhooks`` package.  It answers the Echostr verification GET, and can fail a share
of POSTs (``fail_rate``) or be stopped and restarted on the same port (receiver "down").
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def sha1_ok(token: str, headers: Any) -> bool:
    """The receiver's own check of SPEC §9.2's signature."""
    ts, nonce, sig = headers.get("Timestamp"), headers.get("Nonce"), headers.get("Signature")
    if not (ts and nonce and sig):
        return False
    return hashlib.sha1("".join(sorted([token, ts, nonce])).encode()).hexdigest() == sig


@dataclass
class Hit:
    at: float
    headers: dict[str, str]
    body: Any
    raw: bytes
    status: int
    sha1_valid: bool | None
    standard_valid: bool | None


@dataclass
class Receiver:
    token: str | None = None
    secret: str | None = None
    echo: bool = True
    fail_rate: float = 0.0
    status_on_fail: int = 500
    port: int = 0
    hits: list[Hit] = field(default_factory=list)
    gets: list[dict[str, str]] = field(default_factory=list)
    seed: int = 7

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._random = random.Random(self.seed)
        self._conns: set[Any] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with receiver._lock:
                    receiver._conns.add(self.connection)

            def finish(self) -> None:
                with receiver._lock:
                    receiver._conns.discard(self.connection)
                super().finish()

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                headers = {k: v for k, v in self.headers.items()}
                with receiver._lock:
                    receiver.gets.append(headers)
                echostr = self.headers.get("Echostr", "")
                if receiver.token and not sha1_ok(receiver.token, self.headers):
                    self._answer(403, b"bad signature")
                    return
                self._answer(200, echostr.encode() if receiver.echo else b"hello")

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items()}
                sha1_valid = sha1_ok(receiver.token, self.headers) if receiver.token else None
                standard_valid = None
                if receiver.secret:
                    from standardwebhooks import Webhook

                    try:
                        Webhook(receiver.secret).verify(raw, {k.lower(): v for k, v in headers.items()})
                        standard_valid = True
                    except Exception:  # noqa: BLE001 - recorded as invalid
                        standard_valid = False
                with receiver._lock:
                    fail = receiver.fail_rate > 0 and receiver._random.random() < receiver.fail_rate
                status = receiver.status_on_fail if fail else 200
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                with receiver._lock:
                    receiver.hits.append(Hit(time.time(), headers, body, raw, status, sha1_valid, standard_valid))
                self._answer(status, b"ok" if status == 200 else b"try later")

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
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:  # kept-alive connections too: the receiver is really down
            try:
                conn.shutdown(2)
            except OSError:
                pass

    def ok_hits(self) -> list[Hit]:
        with self._lock:
            return [h for h in self.hits if h.status == 200]

    def delivered_ids(self) -> set[str]:
        return {h.headers.get("webhook-id", "") for h in self.ok_hits()}
