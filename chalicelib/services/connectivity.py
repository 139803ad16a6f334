"""MQTT connect authorisation (SPEC §6.2): the IoT Core custom authorizer, also used by the local broker.

:func:`authorize` takes the IoT Core custom-authorizer request (``protocolData.mqtt``
username, base64 password, client id) and answers IoT Core's response shape: whether the
connection is authenticated, and IoT policy documents allowing exactly the device's own
topics.  The local broker calls the same function on CONNECT and enforces the same
policy documents with :func:`policy_allows` (IoT Core does that itself on AWS).

Policies name the bare topic forms only (``thing/up/property/...``): IoT Core reserves
``$``-topics.  :func:`policy_allows` maps a ``$thing/...``-style device topic to its bare
form before checking, so the local broker may pass either.

Refusals carry a ``reason`` (logged, shown by the local broker; never the password) and,
when the device is known, write a ``Dev_Conn_Auth_Failed`` diagnostic to its log.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

from pynamodb.exceptions import DoesNotExist

from ..core import clock
from ..core.config import settings
from ..core.observability import logger
from ..models.devices import DeviceRecord
from ..models.products import ACCOUNT, ProductRecord
from ..protocol import diagnostics, mqtt_auth, topics
from . import device_logs

# reasons beyond the username/password ones of protocol.mqtt_auth
NOT_MQTT = "not_mqtt"
PRODUCT_NOT_FOUND = "product_not_found"
DEVICE_NOT_FOUND = "device_not_found"
DEVICE_DISABLED = "device_disabled"
CERTIFICATE_PRODUCT = "certificate_product"
SYSTEM_ERROR = "system_error"

_MAX_DOC_CHARS = 2048  # IoT Core: each policy document at most 2048 characters ...
_MAX_DOCS = 10  # ... and at most 10 of them
_PRINCIPAL_RE = re.compile(r"[A-Za-z0-9]{1,128}")
_SUBDEVICE_PRODUCTS_TTL_S = 60.0

#: what a gateway may use for each subdevice product (compact: `*` spans the property/event/action
#: level and the device name); subdevices never run gateway operations of their own
_SUBDEVICE_UP = ("thing/up/*/{}/*", "ota/report/{}/*", "sys/operation/{}/*", "resource/up/service/{}/*")
_SUBDEVICE_DOWN = (
    "thing/down/*/{}/*",
    "ota/update/{}/*",
    "sys/operation/result/{}/*",
    "resource/down/service/{}/*",
    "broadcast/rxd/{}/*",
)

PUBLISH, SUBSCRIBE, RECEIVE, CONNECT = "iot:Publish", "iot:Subscribe", "iot:Receive", "iot:Connect"
_RESOURCE_KIND = {PUBLISH: "topic", RECEIVE: "topic", SUBSCRIBE: "topicfilter", CONNECT: "client"}


# ------------------------------------------------------------------ the answer


def _principal(product_id: str, device_name: str) -> str:
    """IoT Core wants ``[A-Za-z0-9]{1,128}``; device names may hold ``_ : -``."""
    candidate = f"{product_id}{device_name}"
    if _PRINCIPAL_RE.fullmatch(candidate):
        return candidate
    return f"{product_id}h{hashlib.sha256(device_name.encode()).hexdigest()[:40]}"


def _refusal(reason: str, principal: str = "refused") -> dict[str, Any]:
    return {
        "isAuthenticated": False,
        "principalId": principal,
        "disconnectAfterInSeconds": settings().mqtt_disconnect_after_s,
        "refreshAfterInSeconds": settings().mqtt_policy_refresh_s,
        "policyDocuments": [],
        "reason": reason,
    }


def _arn(kind: str, name: str) -> str:
    s = settings()
    return f"arn:aws:iot:{s.region}:{s.aws_account_id}:{kind}/{name}"


def _resource_name(topic: str) -> str:
    # `+` (a whole level of a custom topic) has no IoT-policy equivalent: `*` is the nearest
    return "/".join("*" if level == "+" else level for level in topic.split("/"))


def _statements(
    product_id: str,
    device_name: str,
    custom_topics: Iterable[Mapping[str, str]] | None,
    subdevice_products: Iterable[str] = (),
) -> list[dict[str, Any]]:
    own = topics.device_topics(product_id, device_name, custom_topics, dollar_forms=False)
    pub = [_resource_name(t) for t in own.publish]
    sub = [_resource_name(t) for t in own.subscribe]
    # a gateway publishes and receives on behalf of its subdevices (SPEC §6.5); which subdevice
    # it is bound to changes during a session, so the policy scopes by subdevice product and the
    # uplink handler checks the binding
    for sub_pid in subdevice_products:
        pub += [t.format(sub_pid) for t in _SUBDEVICE_UP]
        sub += [t.format(sub_pid) for t in _SUBDEVICE_DOWN]
    return [
        {"Effect": "Allow", "Action": CONNECT, "Resource": [_arn("client", product_id + device_name)]},
        {"Effect": "Allow", "Action": PUBLISH, "Resource": [_arn("topic", t) for t in pub]},
        {"Effect": "Allow", "Action": SUBSCRIBE, "Resource": [_arn("topicfilter", t) for t in sub]},
        {"Effect": "Allow", "Action": RECEIVE, "Resource": [_arn("topic", t) for t in sub]},
    ]


def _doc(statements: list[dict[str, Any]]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": statements}, separators=(",", ":"))


def policy_documents(statements: list[dict[str, Any]]) -> list[str]:
    """Pack statements into IoT policy documents of at most 2048 characters each
    (a statement whose resources do not fit is split across documents)."""
    docs: list[str] = []
    current: list[dict[str, Any]] = []
    for st in statements:
        resources = list(st["Resource"])
        while resources:
            # take as many resources as fit in the current document
            taken: list[str] = []
            while resources:
                trial = current + [{**st, "Resource": taken + [resources[0]]}]
                if len(_doc(trial)) > _MAX_DOC_CHARS:
                    break
                taken.append(resources.pop(0))
            if taken:
                current.append({**st, "Resource": taken})
            if resources:  # the document is full
                if not current:
                    raise ValueError("a single policy resource exceeds the document size")
                docs.append(_doc(current))
                current = []
    if current:
        docs.append(_doc(current))
    if len(docs) > _MAX_DOCS:
        raise ValueError(f"the device's policy needs {len(docs)} documents (IoT Core allows {_MAX_DOCS})")
    return docs


_subdevice_cache: tuple[float, tuple[str, ...]] | None = None


def _subdevice_products() -> tuple[str, ...]:
    """ProductIds of subdevice products (a key query on the account index, cached a minute)."""
    global _subdevice_cache
    now = time.monotonic()
    if _subdevice_cache is not None and now - _subdevice_cache[0] < _SUBDEVICE_PRODUCTS_TTL_S:
        return _subdevice_cache[1]
    pids = tuple(
        sorted(
            rec.product_id
            for rec in ProductRecord.by_account.query(
                ACCOUNT,
                filter_condition=ProductRecord.device_type == "subdevice",
                attributes_to_get=["product_id", "device_type"],
            )
        )
    )
    _subdevice_cache = (now, pids)
    return pids


def allowed_response(product: ProductRecord, device_name: str) -> dict[str, Any]:
    """The authenticated answer for a device of ``product``."""
    custom_topics = product.topics if product.data_protocol == "custom" else None
    subdevices = _subdevice_products() if product.device_type == "gateway" else ()
    try:
        docs = policy_documents(_statements(product.product_id, device_name, custom_topics, subdevices))
    except ValueError:
        # more subdevice products than 10 policy documents can name: keep as many as fit
        kept: list[str] = []
        docs = policy_documents(_statements(product.product_id, device_name, custom_topics, kept))
        for pid in subdevices:
            try:
                docs = policy_documents(_statements(product.product_id, device_name, custom_topics, [*kept, pid]))
                kept.append(pid)
            except ValueError:
                break
        logger.warning(
            "gateway policy truncated",
            extra={
                "gateway": f"{product.product_id}/{device_name}",
                "subdevice_products": len(subdevices),
                "kept": len(kept),
            },
        )
    s = settings()
    return {
        "isAuthenticated": True,
        "principalId": _principal(product.product_id, device_name),
        "disconnectAfterInSeconds": s.mqtt_disconnect_after_s,
        "refreshAfterInSeconds": s.mqtt_policy_refresh_s,
        "policyDocuments": docs,
    }


# ------------------------------------------------------------------ authorising


def _mqtt(event: Mapping[str, Any]) -> tuple[str | None, str, str | None]:
    """(client id, username, password text) of an authorizer request; raises Refused."""
    data = (event.get("protocolData") or {}).get("mqtt") if isinstance(event, Mapping) else None
    if not isinstance(data, Mapping):
        raise mqtt_auth.Refused(NOT_MQTT, "only MQTT username/password connections are accepted")
    username = data.get("username")
    if not isinstance(username, str) or not username:
        raise mqtt_auth.Refused(mqtt_auth.USERNAME_MALFORMED, "the MQTT username is missing")
    raw_pw = data.get("password")
    text: str | None = None
    if isinstance(raw_pw, str):
        try:
            text = base64.b64decode(raw_pw, validate=True).decode("utf-8")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            text = None
    client_id = data.get("clientId")
    return (client_id if isinstance(client_id, str) else None), username, text


def _diagnose(
    product_id: str, device_name: str, reason: str, message: str, client_id: str | None, source_ip: str | None
) -> None:
    detail = f"MQTT connect refused ({reason}): {message}; clientid {client_id}"
    if source_ip:
        detail += f", clientip {source_ip}"
    device_logs.diagnostic(product_id, device_name, diagnostics.DEV_CONN_AUTH_FAILED, detail)


def _exists(product_id: str, device_name: str) -> bool:
    try:
        DeviceRecord.get(product_id, device_name, attributes_to_get=["device_name"])
        return True
    except DoesNotExist:
        return False


def authorize(event: Mapping[str, Any]) -> dict[str, Any]:
    """Answer an IoT Core custom-authorizer request (see protocol.events.authorizer_event).

    Never raises: an unexpected failure answers a refusal with reason ``system_error``.
    """
    started = time.perf_counter()
    meta = event.get("connectionMetadata") or {} if isinstance(event, Mapping) else {}
    source_ip = meta.get("sourceIp") if isinstance(meta, Mapping) else None
    conn_id = meta.get("id") if isinstance(meta, Mapping) else None
    client_id: str | None = None
    device: tuple[str, str] | None = None  # (pid, dn) once the device is known to exist
    reason, message = "ok", ""
    try:
        client_id, username, pw = _mqtt(event)
        try:
            user = mqtt_auth.parse_username(username)
        except mqtt_auth.Refused as refused_username:
            # the device may still be identifiable from the client id, for its diagnostic log
            try:
                pid, dn = topics.split_client_id(client_id or "")
            except ValueError:
                raise refused_username from None
            if _exists(pid, dn):
                device = (pid, dn)
            raise
        try:
            product = ProductRecord.get(
                user.product_id, attributes_to_get=["product_id", "auth_type", "data_protocol", "device_type", "topics"]
            )
        except DoesNotExist:
            raise mqtt_auth.Refused(PRODUCT_NOT_FOUND, f"product {user.product_id} does not exist") from None
        try:
            rec = DeviceRecord.get(
                user.product_id,
                user.device_name,
                consistent_read=True,
                attributes_to_get=["product_id", "device_name", "secret", "enabled"],
            )
        except DoesNotExist:
            raise mqtt_auth.Refused(
                DEVICE_NOT_FOUND, f"device {user.product_id}/{user.device_name} does not exist"
            ) from None
        device = (user.product_id, user.device_name)
        if product.auth_type == "certificate":
            raise mqtt_auth.Refused(CERTIFICATE_PRODUCT, "the product authenticates devices by certificate, not key")
        mqtt_auth.check_client_id(user, client_id)
        mqtt_auth.check_expiry(user, clock.now_s())
        if pw is None:
            raise mqtt_auth.Refused(mqtt_auth.PASSWORD_MALFORMED, "the MQTT password is missing or not UTF-8")
        mqtt_auth.verify_password(username, pw, rec.secret or "")
        if not rec.enabled:
            raise mqtt_auth.Refused(DEVICE_DISABLED, "the device is disabled")
        answer = allowed_response(product, user.device_name)
        return answer
    except mqtt_auth.Refused as refused:
        reason, message = refused.reason, refused.message
        if device is not None:
            _diagnose(device[0], device[1], reason, message, client_id, source_ip)
        return _refusal(reason, _principal(*device) if device else "refused")
    except Exception:  # noqa: BLE001 - the authorizer answers every CONNECT, refusing on its own faults
        reason, message = SYSTEM_ERROR, "internal error"
        logger.exception("mqtt authorizer failed", extra={"client_id": client_id, "connection_id": conn_id})
        if device is not None:
            device_logs.diagnostic(
                device[0],
                device[1],
                diagnostics.DEV_CONN_SYSTEM_ERR,
                "MQTT connect failed: internal error while authorising",
            )
        return _refusal(SYSTEM_ERROR)
    finally:
        logger.info(
            "mqtt authorize",
            extra={
                "client_id": client_id,
                "connection_id": conn_id,
                "source_ip": source_ip,
                "authenticated": reason == "ok",
                "reason": reason,
                "detail": message,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )


# ------------------------------------------------------------------ evaluating


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _glob_re(pattern: str) -> re.Pattern[str]:
    # IoT policy wildcards: `*` any run of characters (including `/`), `?` one character;
    # MQTT wildcards `+`/`#` in a policy resource are literal characters
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), re.DOTALL)


def _resource_of(pattern: str) -> str | None:
    """``arn:aws:iot:region:account:kind/name`` → ``kind/name`` (``*`` stays ``*``)."""
    if pattern == "*":
        return "*"
    parts = pattern.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or parts[2] not in ("iot", "*"):
        return None
    return parts[5]


def _canonical_action(action: str) -> str | None:
    if not isinstance(action, str):
        return None
    full = action if action.lower().startswith("iot:") else "iot:" + action
    return {a.lower(): a for a in _RESOURCE_KIND}.get(full.lower())


class Policy:
    """IoT policy documents compiled once, then asked many times (the local broker keeps one per
    session and asks on every publish, subscribe and delivery).

    ``allows(action, topic)``: ``action`` is ``iot:Publish`` | ``iot:Subscribe`` | ``iot:Receive`` |
    ``iot:Connect`` (or the bare verb, any case); ``topic`` is the topic (Publish/Receive), the
    topic filter as subscribed (Subscribe: ``+``/``#`` match only themselves, as in IoT Core), or
    the client id (Connect).  A ``$``-form device topic (``$thing/...``) is checked as its bare
    form.  Explicit Deny wins; nothing allowed means denied.  The ARNs' region and account are
    not compared (the documents were made for this deployment).
    """

    def __init__(self, policy_documents: Iterable[str | Mapping[str, Any]]):
        self._statements: list[tuple[bool, list[re.Pattern[str]], list[re.Pattern[str]]]] = []
        for doc in policy_documents:
            parsed = json.loads(doc) if isinstance(doc, str) else doc
            for st in _as_list(parsed.get("Statement") or []):
                deny = str(st.get("Effect", "")).lower() == "deny"
                actions = [_glob_re(str(a).lower()) for a in _as_list(st.get("Action") or [])]
                resources = [
                    _glob_re(r)
                    for r in (_resource_of(str(x)) for x in _as_list(st.get("Resource") or []))
                    if r is not None
                ]
                self._statements.append((deny, actions, resources))
        self._cache: dict[tuple[str, str], bool] = {}

    def allows(self, action: str, topic: str) -> bool:
        canonical = _canonical_action(action)
        if canonical is None or not isinstance(topic, str):
            return False
        key = (canonical, topic)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._evaluate(canonical, topic)
            if len(self._cache) >= 1024:
                self._cache.clear()
            self._cache[key] = hit
        return hit

    def _evaluate(self, action: str, topic: str) -> bool:
        kind = _RESOURCE_KIND[action]
        name = topic
        if kind != "client" and topic.startswith("$"):
            parsed = topics.parse(topic)
            if parsed is not None and parsed.dollar:
                name = parsed.canonical
        resource, verb = f"{kind}/{name}", action.lower()
        allowed = False
        for deny, actions, resources in self._statements:
            if not any(a.fullmatch(verb) for a in actions):
                continue
            if not any(r.fullmatch(resource) or r.pattern == ".*" for r in resources):
                continue
            if deny:
                return False
            allowed = True
        return allowed


def policy_allows(policy_documents: Iterable[str | Mapping[str, Any]], action: str, topic: str) -> bool:
    """Whether IoT policy documents (as :func:`authorize` answers them) allow ``action`` on ``topic``
    (see :class:`Policy`, which callers asking repeatedly should keep instead)."""
    return Policy(policy_documents).allows(action, topic)
