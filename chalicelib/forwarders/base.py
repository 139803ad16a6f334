"""What every forwarder receives (:class:`Delivery`) and the envelopes of SPEC §9.1.

A forwarder module (one per action kind) exposes:

* ``validate(action: dict, path: str) -> dict`` — the action's settings checked at save time
  (raises a ``FleetboxError`` naming ``path.<field>``); may add generated fields (secrets);
* ``send(d: Delivery) -> Outcome`` — one attempt; returns a failed Outcome (or raises
  :class:`MissingField`) instead of raising for the target's faults;
* ``RETRY_S`` — attempt offsets in seconds from the first attempt (default 1, 3, 10; plain
  webhooks pick theirs from :data:`HOOK_RETRY_S` by the job's schedule name);
* ``CODE`` — the diagnostic code of its failures (SPEC §5).
"""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from ..core import errors
from ..core.config import settings
from .webhook import Outcome

RETRY_S: tuple[float, ...] = (1.0, 3.0, 10.0)
#: plain webhooks (``delivery.deliver``) by retry schedule: the default, and the video result
#: callback of SPEC §11 ("a non-200 or timeout is retried after 5 s, at most twice")
HOOK_RETRY_S: dict[str, tuple[float, ...]] = {"webhook": RETRY_S, "video": (5.0, 10.0)}
_VAR = re.compile(r"\$\{([^}]*)\}")
_AWS_CLIENTS: dict[str, Any] = {}


class MissingField(Exception):
    """A ``${field}`` the rule's output does not have (``Payload_No_Field``)."""


def aws(service: str) -> Any:
    """A cached boto3 client (one per service per process; endpoints from the environment)."""
    client = _AWS_CLIENTS.get(service)
    if client is None:
        import boto3

        client = _AWS_CLIENTS[service] = boto3.client(service, region_name=settings().region)
    return client


def forget_clients() -> None:
    _AWS_CLIENTS.clear()


def aws_failure(exc: BaseException, code: str) -> Outcome:
    """A failed Outcome from a boto3 error: access/validation faults will not heal by retrying."""
    response = getattr(exc, "response", None) or {}
    err = response.get("Error", {}) if isinstance(response, dict) else {}
    name = str(err.get("Code") or type(exc).__name__)
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode") if isinstance(response, dict) else None
    permanent = name in (
        "AccessDenied",
        "AccessDeniedException",
        "ValidationException",
        "InvalidParameter",
        "InvalidParameterValue",
        "ResourceNotFoundException",
        "NoSuchBucket",
        "NotFound",
        "NonExistentQueue",
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
    )
    text = str(err.get("Message") or exc)[:200]
    return Outcome(False, status=status, error=f"{name}: {text}", code=code, permanent=permanent)


def text_field(
    action: dict,
    name: str,
    path: str,
    *,
    required: bool = True,
    max_len: int = 1024,
    pattern: str | None = None,
    rule: str | None = None,
) -> str | None:
    value = action.get(name)
    if value is None or value == "":
        if required:
            raise errors.missing(f"{path}.{name}")
        return None
    if not isinstance(value, str) or len(value) > max_len or (pattern and not re.fullmatch(pattern, value)):
        raise errors.ACTION_INVALID(
            f"{path}.{name} {rule or f'must be a string of at most {max_len} characters'}", f"{path}.{name}"
        )
    return value


def not_own(name: str, path: str) -> None:
    """Fleetbox's own tables, queues and buckets are never rule targets (a rule could otherwise
    overwrite API keys).  On AWS the function role may only write targets named
    ``fleetbox-{stage}-sink-*`` (.chalice/policy-*.json), so name them that way."""
    prefix = settings().resource_prefix
    if name.startswith(prefix) and not name.startswith(prefix + "sink-"):
        raise errors.ACTION_INVALID(
            f"{path}: Fleetbox's own resources cannot be rule targets; name targets {prefix}sink-…", path
        )


def template_ok(text: str) -> bool:
    """Every ``${…}`` names a key (letters, digits, _ and . for nested keys)."""
    return all(re.fullmatch(r"[A-Za-z0-9_.\-]+", name) for name in _VAR.findall(text)) and text.count("${") == len(
        _VAR.findall(text)
    )


@dataclass
class Delivery:
    """One forward of one message through one action."""

    job: dict[str, Any]
    action: dict[str, Any]
    rule: str | None
    webhook_id: str
    target_id: str

    # -- the message
    @property
    def msg(self) -> dict[str, Any]:
        return self.job.get("msg") or {}

    @property
    def product_id(self) -> str:
        return self.msg.get("pid", "")

    @property
    def device_name(self) -> str:
        return self.msg.get("dn", "")

    @property
    def output(self) -> Any:
        """The rule's output: a dict (JSON) or bytes (``SELECT *`` of a binary payload)."""
        out = self.job.get("out") or {}
        if "b" in out:
            return base64.b64decode(out["b"])
        return out.get("j")

    def output_bytes(self) -> bytes:
        out = self.output
        if isinstance(out, (bytes, bytearray)):
            return bytes(out)
        return json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode()

    # -- envelopes (SPEC §9.1)
    def http_envelope(self) -> dict[str, Any]:
        out = self.output
        ts_ms = int(self.msg.get("ts") or 0)
        return {
            "devicename": self.device_name,
            "productid": self.product_id,
            "payload": base64.b64encode(out).decode() if isinstance(out, (bytes, bytearray)) else out,
            "seq": int(self.msg.get("seq") or 0),
            "timestamp": ts_ms // 1000,
            "timemills": ts_ms,
            "topic": self.msg.get("topic", ""),
        }

    def queue_envelope(self) -> dict[str, Any]:
        data = self.output_bytes()
        ts_ms = int(self.msg.get("ts") or 0)
        env = {
            "MsgType": self.msg.get("mt") or "Publish",
            "Topic": self.msg.get("topic", ""),
            "Seq": int(self.msg.get("seq") or 0),
            "PayloadLen": len(data),
            "Payload": base64.b64encode(data).decode(),
            "ProductId": self.product_id,
            "DeviceName": self.device_name,
            "Time": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts_ms / 1000)),
        }
        if self.msg.get("ev"):
            env["Event"] = self.msg["ev"]
        return env

    def queue_envelope_bytes(self) -> bytes:
        return json.dumps(self.queue_envelope(), separators=(",", ":"), ensure_ascii=False).encode()

    # -- ${field} substitution
    def value_of(self, name: str) -> Any:
        system = {
            "productId": self.product_id,
            "deviceName": self.device_name,
            "topic": self.msg.get("topic", ""),
            "timestamp": self.msg.get("ts"),
            "seq": self.msg.get("seq"),
        }
        out = self.output
        if isinstance(out, dict):
            cur: Any = out
            found = True
            if name in out:
                return out[name]
            for key in name.split("."):
                if isinstance(cur, dict) and key in cur:
                    cur = cur[key]
                else:
                    found = False
                    break
            if found:
                return cur
        if name in system:
            return system[name]
        raise MissingField(name)

    def substitute(self, template: str) -> str:
        def one(m: re.Match) -> str:
            value = self.value_of(m.group(1))
            if isinstance(value, str):
                return value
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False)

        return _VAR.sub(one, template)

    def mapped(self, mapping: dict[str, Any]) -> dict[str, Any]:
        """A field mapping: ``"${x}"`` alone keeps the value's type; other strings are templates;
        non-strings are constants."""
        out: dict[str, Any] = {}
        for column, spec in mapping.items():
            if isinstance(spec, str):
                whole = _VAR.fullmatch(spec)
                out[column] = self.value_of(whole.group(1)) if whole else self.substitute(spec)
            else:
                out[column] = spec
        return out
