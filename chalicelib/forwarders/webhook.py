"""Signed webhooks (SPEC §9.2): the one way Fleetbox makes an outgoing HTTP call.

Entry points (features reach them through the delivery facade, ``services/delivery.py``, whose
``deliver`` queues a signed POST with guaranteed delivery on the engine):

* :func:`verify_callback(url, token)` — the Echostr check a target must pass before it is
  enabled (raises ``InvalidParameterValue.InvalidCallbackUrl`` with the reason).
* :func:`check_url(url)` — the SSRF guard (raises ``InvalidParameterValue.InvalidUrl``), run
  when a target is saved and again before every attempt (DNS may change).
* :func:`attempt(target, body, webhook_id)` — one synchronous attempt (the engine's primitive).
* :func:`download(url, path, …)` — a guarded GET of a user-supplied URL into a local file (the
  video analyser's media): same guard, no redirects, bounded time and size.

Every request carries, when the target has a token, ``Timestamp``, ``Nonce`` and
``Signature`` = hex SHA1 of the sorted concatenation of token, timestamp and nonce; and, when
it has a secret (``whsec_`` + base64, :func:`new_secret`), the Standard Webhooks headers
``webhook-id``, ``webhook-timestamp`` and ``webhook-signature: v1,<base64 HMAC-SHA256(secret,
"{id}.{timestamp}.{body}")>``.

The SSRF guard runs on the URL's resolved addresses before each attempt and again on the peer
of every new connection (before the request is sent), so DNS rebinding cannot reach a private
address.  Connections come from one pooled ``requests.Session`` per process; every attempt is bounded by
(connect, read) timeouts from the settings plus an overall guard on reading the response, so an
attempt never outlives :data:`MAX_ATTEMPT_S` — far under the forward queue's visibility timeout.
Redirects are not followed (a redirect could point anywhere, SSRF).
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..core import errors
from ..core.config import settings
from ..core.observability import logger
from ..protocol import diagnostics

USER_AGENT = "Fleetbox-Webhook/1.0"
SNIPPET = 256
_NONCE_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_METADATA = {
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("fd00:ec2::254"),
    ipaddress.ip_address("100.100.100.200"),
}


def max_attempt_s() -> float:
    """The longest one attempt can take (connect + read timeouts + the response-read guard)."""
    s = settings()
    return s.webhook_connect_timeout_s + s.webhook_read_timeout_s + 2.0


@dataclass(frozen=True)
class Target:
    url: str
    token: str | None = None
    secret: str | None = None
    user_agent: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, value: Target | Mapping[str, Any]) -> Target:
        if isinstance(value, Target):
            return value
        return cls(
            url=value["url"],
            token=value.get("token") or None,
            secret=value.get("secret") or None,
            user_agent=value.get("user_agent") or None,
            headers=dict(value.get("headers") or {}),
        )

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"url": self.url}
        for name in ("token", "secret", "user_agent"):
            if getattr(self, name):
                out[name] = getattr(self, name)
        if self.headers:
            out["headers"] = dict(self.headers)
        return out


@dataclass
class Outcome:
    """One attempt.  ``permanent``: retrying cannot help (blocked URL, 410 Gone, bad target)."""

    ok: bool
    status: int | None = None
    latency_ms: int = 0
    snippet: str | None = None
    error: str | None = None
    code: str | None = None  # the SPEC §5 diagnostic code of a failure
    retry_after_s: float | None = None
    permanent: bool = False
    gone: bool = False


# ===================================================================== secrets shown once

#: target settings that are secrets: shown when made, then only as ``token_set``/``secret_set``
SECRET_FIELDS = ("token", "secret")


def masked(settings_: Mapping[str, Any], reveal: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    """A target's settings as responses show them (SPEC §2, secrets are write-only): each secret
    field becomes ``<field>_set: true``, except the values in ``reveal`` (made by this request)."""
    out: dict[str, Any] = {}
    for key, value in settings_.items():
        if key in SECRET_FIELDS:
            if value:
                out[f"{key}_set"] = True
                if value in reveal:
                    out[key] = value
            continue
        out[key] = value
    return out


def kept_secret(new: Mapping[str, Any], previous: Sequence[Mapping[str, Any]] | None, field_: str) -> Any:
    """On an edit, a secret field the request leaves out keeps its value for the same URL (the
    caller only ever saw ``<field>_set``); an explicit null or "" removes it."""
    if field_ in new:
        return new.get(field_)
    for old in previous or []:
        if old.get("url") == new.get("url") and old.get(field_):
            return old.get(field_)
    return None


# ===================================================================== signatures


def nonce(n: int = 16) -> str:
    return "".join(secrets.choice(_NONCE_CHARS) for _ in range(n))


def sha1_signature(token: str, timestamp: str, nonce_: str) -> str:
    """SPEC §9.2: lowercase hex SHA1 of token, timestamp and nonce sorted and concatenated."""
    return hashlib.sha1("".join(sorted([token, str(timestamp), nonce_])).encode()).hexdigest()


def new_secret() -> str:
    """A Standard Webhooks signing secret: ``whsec_`` + base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def _secret_bytes(secret: str) -> bytes:
    return base64.b64decode(secret[6:] if secret.startswith("whsec_") else secret)


def standard_signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(_secret_bytes(secret), f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed_headers(target: Target, body: bytes, webhook_id: str, now_s: int | None = None) -> dict[str, str]:
    now_s = int(time.time()) if now_s is None else now_s
    headers = {"Content-Type": "application/json", "User-Agent": target.user_agent or USER_AGENT}
    headers.update(target.headers)
    if target.token:
        n = nonce()
        headers.update({"Timestamp": str(now_s), "Nonce": n, "Signature": sha1_signature(target.token, str(now_s), n)})
    if target.secret:
        headers.update(
            {
                "webhook-id": webhook_id,
                "webhook-timestamp": str(now_s),
                "webhook-signature": standard_signature(target.secret, webhook_id, now_s, body),
            }
        )
    return headers


# ===================================================================== SSRF guard


class Blocked(ValueError):
    """The URL may not be called (scheme, port or an address that is not public)."""


def _address_allowed(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, loopback_ok: bool) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in _METADATA:
        return "a cloud metadata address"
    if ip.is_loopback:
        return None if loopback_ok else "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_unspecified or ip.is_reserved:
        return "a reserved address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "a reserved address"
    return None


def resolve(url: str) -> tuple[str, int, list[str]]:
    """(host, port, addresses) of an allowed URL; raises :class:`Blocked` with the reason."""
    loopback_ok = settings().allow_loopback_targets
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise Blocked(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise Blocked("the URL must start with http:// or https://")
    host = parts.hostname
    if not host:
        raise Blocked("the URL has no host")
    if parts.username or parts.password:
        raise Blocked("credentials in the URL are not allowed")
    port = port or (443 if parts.scheme == "https" else 80)
    if not loopback_ok and port not in (80, 443):
        raise Blocked(f"port {port} is not allowed: use 80 or 443")
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [str(literal)]
    else:
        try:
            infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
        except (socket.gaierror, UnicodeError) as exc:
            raise Blocked(f"the host {host} cannot be resolved ({exc})") from None
        addresses = sorted({info[4][0] for info in infos})
    for address in addresses:
        why = _address_allowed(ipaddress.ip_address(address.split("%", 1)[0]), loopback_ok)
        if why is not None:
            raise Blocked(f"{host} resolves to {address}, {why}")
    return host, port, addresses


def check_url(url: Any, field: str = "url") -> str:
    """Validate a target URL at save time; raises ``InvalidParameterValue.InvalidUrl``."""
    if not isinstance(url, str) or not 1 <= len(url) <= 1024:
        raise errors.INVALID_URL(f"{field} must be an http(s) URL of at most 1024 characters", field)
    try:
        resolve(url)
    except Blocked as exc:
        raise errors.INVALID_URL(f"{field} is not allowed: {exc}", field) from None
    return url


# ===================================================================== the pooled session

_session_lock = threading.Lock()
_session: Any = None


def session() -> Any:
    """The process's pooled ``requests.Session`` (connections kept alive across deliveries)."""
    global _session
    if _session is None:
        with _session_lock:
            if _session is None:
                import requests
                from requests.adapters import HTTPAdapter

                s = requests.Session()
                adapter = HTTPAdapter(pool_connections=32, pool_maxsize=32, max_retries=0)
                _guard_pools(adapter)
                s.mount("http://", adapter)
                s.mount("https://", adapter)
                s.trust_env = False  # no proxy from the environment: the SSRF guard checked the real host
                _session = s
    return _session


def _check_peer(sock: Any) -> None:
    """The address actually connected to must pass the guard too: a name that resolved to a
    public address at the check and to a private one at connect time (DNS rebinding) is cut
    off before a byte of the request is sent."""
    try:
        peer = sock.getpeername()[0]
    except OSError:
        return
    why = _address_allowed(ipaddress.ip_address(str(peer).split("%", 1)[0]), settings().allow_loopback_targets)
    if why is not None:
        sock.close()
        raise Blocked(f"the connection went to {peer}, {why}")


def _guard_pools(adapter: Any) -> None:
    """Give this adapter (only) connection classes that check the peer right after connecting."""
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class GuardedHTTP(HTTPConnection):
        def _new_conn(self) -> Any:
            sock = super()._new_conn()
            _check_peer(sock)
            return sock

    class GuardedHTTPS(HTTPSConnection):
        def _new_conn(self) -> Any:
            sock = super()._new_conn()
            _check_peer(sock)
            return sock

    class GuardedHTTPPool(HTTPConnectionPool):
        ConnectionCls = GuardedHTTP

    class GuardedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = GuardedHTTPS

    adapter.poolmanager.pool_classes_by_scheme = {"http": GuardedHTTPPool, "https": GuardedHTTPSPool}


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _read_limited(resp: Any, limit: int, deadline: float) -> bytes:
    out = b""
    for chunk in resp.iter_content(chunk_size=1024):
        out += chunk
        if len(out) >= limit or time.monotonic() > deadline:
            break
    return out[:limit]


def _drain(resp: Any, deadline: float) -> bytes:
    """The start of the response body.  A small body with a length is read to its end so the
    connection goes back to the pool (keep-alive); anything else is cut and the connection closed."""
    length = resp.headers.get("Content-Length")
    try:
        if length is not None and length.isdigit() and int(length) <= 65536:
            out = b""
            for chunk in resp.iter_content(chunk_size=16384):
                out += chunk
                if time.monotonic() > deadline:
                    resp.close()
                    break
            return out
        out = _read_limited(resp, SNIPPET, deadline)
        resp.close()
        return out
    finally:
        resp.raw.release_conn() if not resp.raw.closed else None


def body_bytes(body: Any) -> bytes:
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def attempt(target: Target | Mapping[str, Any], body: Any, webhook_id: str) -> Outcome:
    """One signed POST of ``body``; never raises for the target's faults."""
    import requests

    target = Target.of(target)
    data = body_bytes(body)
    started = time.monotonic()
    try:
        resolve(target.url)
    except Blocked as exc:
        return Outcome(False, error=f"blocked: {exc}", code=diagnostics.FORWARD_THIRD_SYSTEM_ERR, permanent=True)
    s = settings()
    try:
        resp = session().post(
            target.url,
            data=data,
            headers=signed_headers(target, data, webhook_id),
            timeout=(s.webhook_connect_timeout_s, s.webhook_read_timeout_s),
            allow_redirects=False,
            stream=True,
        )
    except Blocked as exc:
        return Outcome(
            False,
            latency_ms=_ms(started),
            error=f"blocked: {exc}",
            code=diagnostics.FORWARD_THIRD_SYSTEM_ERR,
            permanent=True,
        )
    except requests.exceptions.ConnectTimeout:
        return Outcome(
            False, latency_ms=_ms(started), error="connect timeout", code=diagnostics.FORWARD_THIRD_NOT_RESPONDING
        )
    except requests.exceptions.ReadTimeout:
        return Outcome(
            False, latency_ms=_ms(started), error="read timeout", code=diagnostics.FORWARD_THIRD_NOT_RESPONDING
        )
    except requests.exceptions.ConnectionError as exc:
        return Outcome(
            False, latency_ms=_ms(started), error=_failure_kind(exc), code=diagnostics.FORWARD_THIRD_NOT_RESPONDING
        )
    except requests.exceptions.RequestException as exc:
        return Outcome(
            False,
            latency_ms=_ms(started),
            error=_failure_kind(exc),
            code=diagnostics.FORWARD_THIRD_SYSTEM_ERR,
            permanent=isinstance(exc, ValueError),
        )
    status = resp.status_code
    try:
        raw = _drain(resp, started + max_attempt_s())
    except requests.exceptions.RequestException:
        raw = b""
    snippet = raw[:SNIPPET].decode("utf-8", errors="replace")
    latency = _ms(started)
    if 200 <= status < 300:
        return Outcome(True, status, latency, snippet)
    if status == 410:
        return Outcome(
            False,
            status,
            latency,
            snippet,
            error="410 Gone: the receiver asked to stop",
            code=diagnostics.FORWARD_THIRD_SYSTEM_ERR,
            permanent=True,
            gone=True,
        )
    retry_after = _retry_after(resp.headers.get("Retry-After")) if status in (429, 503) else None
    return Outcome(
        False,
        status,
        latency,
        snippet,
        error=f"HTTP {status}",
        code=diagnostics.FORWARD_THIRD_SYSTEM_ERR,
        retry_after_s=retry_after,
    )


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _failure_kind(exc: BaseException) -> str:
    """What went wrong with a request, in our words only (refused, timed out, blocked …)."""
    import requests

    if isinstance(exc, Blocked):
        return f"blocked: {exc}"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "the connection timed out"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return "the response timed out"
    if isinstance(exc, requests.exceptions.SSLError):
        return "the TLS handshake failed"
    if isinstance(exc, requests.exceptions.ConnectionError):
        text = str(exc)
        if "Name or service not known" in text or "getaddrinfo" in text or "NameResolution" in text:
            return "the host name cannot be resolved"
        if "Connection refused" in text or "ECONNREFUSED" in text:
            return "the connection was refused"
        if "reset" in text.lower() or "aborted" in text.lower():
            return "the connection was closed by the other side"
        return "the connection failed"
    if isinstance(exc, requests.exceptions.TooManyRedirects):
        return "redirects are not followed"
    return "the request could not be made"


# ===================================================================== fetching user-supplied URLs


class FetchError(Exception):
    """A download that did not succeed; ``transient`` when trying again later may help
    (timeouts, refused connections, 5xx), not for a blocked URL, a 404 or a file too large."""

    def __init__(self, reason: str, transient: bool = False):
        super().__init__(reason)
        self.transient = transient


def download(url: str, path: str, *, max_bytes: int, deadline: float) -> int:
    """GET ``url`` into the file ``path`` through the SSRF guard (checked before the request and
    on the connected peer), without following redirects, with the webhook connect/read timeouts,
    stopping at ``max_bytes`` or at ``deadline`` (``time.monotonic()``).  Returns the size.
    Raises :class:`FetchError` with a reason in our words (never the remote body)."""
    import requests

    try:
        resolve(url)
    except Blocked as exc:
        raise FetchError(f"the URL is not allowed: {exc}") from None
    s = settings()
    try:
        resp = session().get(
            url,
            timeout=(s.webhook_connect_timeout_s, s.webhook_read_timeout_s),
            allow_redirects=False,
            stream=True,
            headers={"User-Agent": "Fleetbox-Media/1.0"},
        )
    except Blocked as exc:
        raise FetchError(f"the URL is not allowed: {exc}") from None
    except requests.exceptions.RequestException as exc:
        raise FetchError(f"the download failed: {_failure_kind(exc)}", transient=True) from None
    try:
        if resp.status_code != 200:
            moved = " (redirects are not followed)" if 300 <= resp.status_code < 400 else ""
            raise FetchError(
                f"the download answered HTTP {resp.status_code}{moved}",
                transient=resp.status_code >= 500 or resp.status_code == 429,
            )
        length = resp.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > max_bytes:
            raise FetchError(f"the file is {int(length)} bytes; at most {max_bytes} can be fetched")
        size = 0
        with open(path, "wb") as out:
            for chunk in resp.iter_content(chunk_size=65536):
                size += len(chunk)
                if size > max_bytes:
                    raise FetchError(f"the file is larger than {max_bytes} bytes, the most that can be fetched")
                if time.monotonic() > deadline:
                    raise FetchError("the download took longer than allowed", transient=True)
                out.write(chunk)
        return size
    except requests.exceptions.RequestException as exc:
        raise FetchError(f"the download failed: {_failure_kind(exc)}", transient=True) from None
    finally:
        resp.close()


# ===================================================================== Echostr verification


def verify_callback(url: str, token: str | None = None, field: str = "url", user_agent: str | None = None) -> None:
    """GET ``url`` with ``Echostr`` (+ signature headers when a token is set); the receiver must
    answer 200 with the echostr as its body.  Raises ``InvalidParameterValue.InvalidCallbackUrl``."""
    import requests

    check_url(url, field)
    echostr = nonce(16)
    now_s = int(time.time())
    headers = {"Echostr": echostr, "User-Agent": user_agent or USER_AGENT}
    if token:
        n = nonce()
        headers.update({"Nonce": n, "Timestamp": str(now_s), "Signature": sha1_signature(token, str(now_s), n)})
    s = settings()
    started = time.monotonic()
    try:
        resp = session().get(
            url,
            headers=headers,
            timeout=(s.webhook_connect_timeout_s, s.webhook_read_timeout_s),
            allow_redirects=False,
            stream=True,
        )
    except (requests.exceptions.RequestException, Blocked) as exc:
        raise errors.INVALID_CALLBACK_URL(
            f"{field}: the verification request failed: {_failure_kind(exc)}", field
        ) from None
    try:
        raw = _read_limited(resp, 1024, started + max_attempt_s())
        status = resp.status_code
    except requests.exceptions.RequestException as exc:
        raise errors.INVALID_CALLBACK_URL(
            f"{field}: the verification response failed: {_failure_kind(exc)}", field
        ) from None
    finally:
        resp.close()
    # what failed, never what the other side said: quoting its body would make this check a way
    # to read (or port-scan) services the caller cannot reach
    if status != 200:
        raise errors.INVALID_CALLBACK_URL(f"{field}: the verification GET answered HTTP {status}, not 200", field)
    if raw.decode("utf-8", errors="replace").strip() != echostr:
        raise errors.INVALID_CALLBACK_URL(
            f"{field}: the verification GET must answer the Echostr header's "
            "value as its body; it answered something else",
            field,
        )
    logger.info("callback URL verified", extra={"host": urlsplit(url).hostname})
