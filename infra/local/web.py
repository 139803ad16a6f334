"""chalice local, served in-process, with one readable log line per request.

``chalice.local.create_local_server`` does not take a handler class, so :func:`create_server`
does the same two steps itself (make the app's ``current_request`` thread-local, build a
``LocalDevServer``) with :class:`RequestHandler`, which replaces BaseHTTPRequestHandler's
access log with one line: method, path (no query string), status, duration, request id.
Headers and bodies are never logged.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import uuid
from typing import Any

from chalice.app import Chalice
from chalice.config import Config
from chalice.local import ChaliceRequestHandler, CustomLocalChalice, LocalChalice, LocalDevServer

from chalicelib.core import errors
from infra.local import downloads

log = logging.getLogger("infra.local.http")

REQUEST_ID_HEADER = "x-request-id"
#: API Gateway refuses payloads over 10 MB; the local server does the same before reading a byte
MAX_BODY_BYTES = 10 * 1024 * 1024
#: a client that stops sending is cut off after this many seconds (a thread is never held forever)
READ_TIMEOUT_S = 30.0
#: errors of a client that went away; never worth a traceback
_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


def _route_matches(route: str, path: str) -> bool:
    """chalice local's matching (same level count, ``{param}`` matches one level)."""
    want, have = route.split("/"), path.split("/")
    return len(want) == len(have) and all(
        w == h or (w.startswith("{") and w.endswith("}")) for w, h in zip(want, have, strict=True)
    )


class RequestHandler(ChaliceRequestHandler):
    """ChaliceRequestHandler that logs ``METHOD /path STATUS 12.3ms x-request-id=…``, answers
    unmatched paths with the API's 404 envelope (API Gateway's catch-all resource; chalice local
    cannot match a greedy path and would quote the caller's Authorization header back), refuses
    bodies over 10 MB with 413 before reading them, and drops clients that stall or leave
    without a traceback."""

    _status: int | None = None
    _request_id: str = "-"
    timeout = READ_TIMEOUT_S

    def send_response(self, code: int, message: str | None = None) -> None:
        self._status = code
        super().send_response(code, message)

    def send_header(self, keyword: str, value: str) -> None:
        if keyword.lower() == REQUEST_ID_HEADER:
            self._request_id = str(value)
        super().send_header(keyword, value)

    def _generic_handle(self) -> None:
        self._status, self._request_id = None, "-"
        started = time.perf_counter()
        try:
            if self.command in ("GET", "HEAD") and downloads.is_download(self.path):
                downloads.serve(self)  # root-level firmware/resource links (SPEC §6.6)
            elif not self._has_route():
                self._envelope(errors.ROUTE_NOT_FOUND, f"no route serves {self._path_only()[:200]}")
            elif self._body_refused():
                pass
            else:
                super()._generic_handle()
        except _GONE:
            self.close_connection = True  # the client went away mid-response; nothing to answer
        except Exception:
            log.exception("local gateway failed on %s %s", self.command, self._path_only())
            if self._status is None:
                self._send_http_response(500, {}, '{"message": "Internal server error"}')
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            log.info(
                "%s %s %s %.1fms x-request-id=%s",
                self.command,
                self._path_only(),
                self._status if self._status is not None else "-",
                elapsed_ms,
                self._request_id,
            )

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = _generic_handle

    def _has_route(self) -> bool:
        from chalicelib.handlers.api import CATCH_ALL

        path = self._path_only()
        if path != "/" and path.endswith("/"):
            path = path[:-1]  # as API Gateway does
        routes = self.local_gateway._app_object.routes  # noqa: SLF001 - chalice local's own app
        return any(_route_matches(r, path) for r in routes if r != CATCH_ALL)

    def _body_refused(self) -> bool:
        """413 for a declared body over the limit, 400 for a length that is not a number; the
        connection is closed without reading the body either way."""
        raw = self.headers.get("Content-Length")
        if raw is None:
            return False
        try:
            length = int(raw)
            if length < 0:
                raise ValueError
        except ValueError:
            self._envelope(errors.INVALID_REQUEST, "Content-Length is not a byte count")
            return True
        if length > MAX_BODY_BYTES:
            self._envelope(
                errors.BODY_TOO_LARGE, f"the request body is {length} bytes; at most {MAX_BODY_BYTES} are accepted"
            )
            return True
        return False

    def _envelope(self, code: errors.ErrorCode, message: str, status: int | None = None) -> None:
        """Answer the API's error envelope directly and close the connection (any request body is
        left unread).  The status is the code's unless the protocol refusal carries its own."""
        self.close_connection = True
        self._request_id = str(uuid.uuid4())
        err = errors.FleetboxError(code, message, status=status)
        body = json.dumps(err.body(self._request_id)).encode()
        self.send_response(err.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header(REQUEST_ID_HEADER, self._request_id)
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and err.status >= 200:
            self.wfile.write(body)

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except _GONE:
            self.close_connection = True  # the client left while we read its request

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol-level refusals (unknown methods such as TRACE, malformed request lines) in the
        API's JSON error envelope instead of BaseHTTPRequestHandler's HTML page.  An unknown
        method is a 405, as API Gateway never routes one (the stdlib would say 501)."""
        status = 405 if code == 501 else code
        error = errors.METHOD_NOT_ALLOWED if status == 405 else errors.INVALID_REQUEST
        self._status = None
        try:
            self._envelope(error, message or explain or "request refused", status)
        except OSError:
            return
        log.info(
            "%s %s %s 0.0ms x-request-id=%s",
            self.command or "-",
            self._path_only() if self.path else "-",
            status,
            self._request_id,
        )

    def _path_only(self) -> str:
        # the query string may carry tokens (presigned-style links, pagination cursors)
        return self.path.split("?", 1)[0]

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        """Replaced by the line _generic_handle writes."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        # Only protocol-level errors reach here (bad request line, timeouts).
        log.warning("%s: %s", self.client_address[0], format % args)


def create_server(app: Chalice, config: Config, host: str, port: int) -> LocalDevServer:
    """The same server ``chalice local --no-autoreload`` builds, with :class:`RequestHandler`."""
    if not isinstance(app, LocalChalice):
        CustomLocalChalice.__bases__ = (LocalChalice, app.__class__)
        app.__class__ = CustomLocalChalice
    server = LocalDevServer(app, config, host, port, handler_cls=RequestHandler)
    default_handle_error = server.server.handle_error

    def handle_error(request: Any, client_address: Any) -> None:
        # socketserver prints a traceback for any error of a request: a client that left or
        # stalled is not one worth printing
        import sys

        if isinstance(sys.exc_info()[1], _GONE + (socket.timeout,)):
            log.info("client %s went away", client_address[0] if client_address else "-")
            return
        default_handle_error(request, client_address)

    server.server.handle_error = handle_error  # type: ignore[method-assign]
    return server


class ServerThread:
    """Runs a LocalDevServer's serve_forever in a thread; :meth:`stop` ends it."""

    def __init__(self, server: LocalDevServer) -> None:
        self.server = server
        self._thread = threading.Thread(
            target=server.server.serve_forever, kwargs={"poll_interval": 0.2}, name="http", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def wait_accepting(self, timeout: float = 10.0) -> None:
        """Return once a TCP connection to the server succeeds."""
        host, port = self.server.server.server_address[:2]
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((host, port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline or not self._thread.is_alive():
                    raise RuntimeError(f"the HTTP server on {host}:{port} does not accept connections")
                time.sleep(0.05)

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive():
            self.server.shutdown()
            self._thread.join(timeout)
        self.server.server.server_close()
