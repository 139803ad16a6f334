"""Credentials and the policy engine (SPEC §2).

Pure logic only: parsing API keys, hashing them for storage, and deciding a
(principal policy, action, resource) question.  Looking keys up lives in
``services/access``.

Policy semantics, in the style of a cloud IAM policy:

* a statement matches when one of its actions and one of its resources match
  (``*`` and ``?`` wildcards; actions compare case-insensitively, resources
  case-sensitively);
* an explicit ``deny`` wins over any ``allow``;
* nothing allowed means denied.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from . import errors

API_KEY_PREFIX = "fbk"
#: actions whose routes return a secret after its creation (SPEC §2: secrets are write-only).
#: Application credentials ship inside apps and never hold one of these, whatever a policy says.
SECRET_ACTIONS = (
    "DescribeDeviceSecret",
    "DescribeProductSecret",
    "DescribeTopicRuleSecret",
    "DescribeDataStreamSecret",
    "DescribeCloudStorageAIServiceCallbackSecret",
)
_KEY_RE = re.compile(r"fbk_([a-z0-9]{16})\.([A-Za-z0-9_-]{43})")
POLICY_VERSION = "2.0"
SERVICE = "iotexplorer"


def new_api_key() -> tuple[str, str, str]:
    """Return (key_id, full key text shown once, hash stored at rest)."""
    key_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(16))
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    return key_id, f"{API_KEY_PREFIX}_{key_id}.{secret}", hash_secret(key_id, secret)


def parse_api_key(text: str) -> tuple[str, str] | None:
    """Split ``fbk_<id>.<secret>``; None when the text is not shaped like a key."""
    m = _KEY_RE.fullmatch(text.strip())
    if not m:
        return None
    return m.group(1), m.group(2)


def hash_secret(key_id: str, secret: str) -> str:
    # 256-bit random secrets need no slow KDF; binding the id stops hash reuse across keys.
    return hashlib.sha256(f"{key_id}:{secret}".encode()).hexdigest()


def secret_matches(key_id: str, secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(key_id, secret), stored_hash)


# ---------------------------------------------------------------- policies


@lru_cache(maxsize=4096)
def _glob(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    parts = []
    for ch in pattern:
        if ch == "*":
            parts.append(".*")
        elif ch == "?":
            parts.append(".")
        else:
            parts.append(re.escape(ch))
    return re.compile("".join(parts), re.IGNORECASE if ignore_case else 0)


def _matches(patterns: Iterable[str], value: str, ignore_case: bool) -> bool:
    return any(_glob(p, ignore_case).fullmatch(value) for p in patterns)


def qualify(action: str) -> str:
    return action if ":" in action else f"{SERVICE}:{action}"


_SECRET_ACTIONS = frozenset(qualify(a).lower() for a in SECRET_ACTIONS)


def is_secret_action(action: str) -> bool:
    return qualify(action).lower() in _SECRET_ACTIONS


@dataclass(frozen=True)
class Statement:
    effect: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]

    def covers(self, action: str, resource: str) -> bool:
        return _matches(self.actions, action, True) and _matches(self.resources, resource, False)


@dataclass(frozen=True)
class Policy:
    statements: tuple[Statement, ...] = field(default_factory=tuple)

    def allows(self, action: str, resource: str) -> bool:
        action = qualify(action)
        allowed = False
        for st in self.statements:
            if st.covers(action, resource):
                if st.effect == "deny":
                    return False
                allowed = True
        return allowed

    def may_list(self, action: str) -> bool:
        """Whether the action is allowed on *some* resource (list endpoints then filter items)."""
        action = qualify(action)
        allowed = False
        for st in self.statements:
            if _matches(st.actions, action, True):
                if st.effect == "deny" and "*" in st.resources:
                    return False
                if st.effect == "allow":
                    allowed = True
        return allowed


def _as_list(value: Any, path: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise errors.POLICY_INVALID(f"{path} must be a non-empty list of strings", path)
    for i, v in enumerate(value):
        if not isinstance(v, str) or not v or len(v) > 256:
            raise errors.POLICY_INVALID(f"{path}[{i}] must be a string of 1-256 characters", f"{path}[{i}]")
    return value


_ACTION_RE = re.compile(r"\*|[A-Za-z0-9*?]+:[A-Za-z0-9*?]+")
_RESOURCE_RE = re.compile(r"[A-Za-z0-9_*?:/.\-]+")


def parse_policy(doc: Any, path: str = "policy") -> tuple[dict[str, Any], Policy]:
    """Validate a policy document; return (normalised document, compiled policy).

    ``path`` is where the document sits in the request ("policy" inside a principal,
    "" when the body is the policy), so errors name the field as the caller sent it.
    """

    def at(key: str) -> str:
        return f"{path}.{key}" if path else key

    if not isinstance(doc, dict):
        raise errors.POLICY_INVALID(f"{path or 'policy'} must be an object", path or "body")
    unknown = set(doc) - {"version", "statement"}
    if unknown:
        key = sorted(unknown)[0]
        raise errors.POLICY_INVALID(f"{at(key)} is not a policy field", at(key))
    if doc.get("version") != POLICY_VERSION:
        raise errors.POLICY_INVALID(f'{at("version")} must be "{POLICY_VERSION}"', at("version"))
    stmts = doc.get("statement")
    if not isinstance(stmts, list) or len(stmts) > 50:
        raise errors.POLICY_INVALID(f"{at('statement')} must be a list of at most 50 statements", at("statement"))
    norm, compiled = [], []
    for i, st in enumerate(stmts):
        sp = f"{at('statement')}[{i}]"
        if not isinstance(st, dict):
            raise errors.POLICY_INVALID(f"{sp} must be an object", sp)
        extra = set(st) - {"effect", "action", "resource"}
        if extra:
            key = sorted(extra)[0]
            raise errors.POLICY_INVALID(f"{sp}.{key} is not a statement field", f"{sp}.{key}")
        effect = st.get("effect")
        if effect not in ("allow", "deny"):
            raise errors.POLICY_INVALID(f'{sp}.effect must be "allow" or "deny"', f"{sp}.effect")
        actions = _as_list(st.get("action"), f"{sp}.action")
        for j, a in enumerate(actions):
            if not _ACTION_RE.fullmatch(a):
                raise errors.POLICY_INVALID(
                    f'{sp}.action[{j}] must look like "iotexplorer:CreateDevice", "iotexplorer:*" or "*"',
                    f"{sp}.action[{j}]",
                )
        resources = _as_list(st.get("resource"), f"{sp}.resource")
        for j, r in enumerate(resources):
            if not _RESOURCE_RE.fullmatch(r):
                raise errors.POLICY_INVALID(
                    f'{sp}.resource[{j}] must look like "product/ABCDEFGHIJ", "product/ABCDEFGHIJ/*" or "*"',
                    f"{sp}.resource[{j}]",
                )
        norm.append({"effect": effect, "action": list(actions), "resource": list(resources)})
        compiled.append(Statement(effect, tuple(actions), tuple(resources)))
    return {"version": POLICY_VERSION, "statement": norm}, Policy(tuple(compiled))


def compile_policy(doc: dict[str, Any]) -> Policy:
    """Compile a stored (already validated) policy document."""
    return Policy(
        tuple(Statement(s["effect"], tuple(s["action"]), tuple(s["resource"])) for s in doc.get("statement", []))
    )


ADMIN_POLICY: dict[str, Any] = {
    "version": POLICY_VERSION,
    "statement": [{"effect": "allow", "action": ["*"], "resource": ["*"]}],
}


@dataclass(frozen=True)
class Principal:
    """Who is calling.  ``products`` narrows an application principal to its products."""

    principal_id: str
    name: str
    kind: str
    policy: Policy
    key_id: str | None = None
    products: frozenset[str] | None = None

    def allows(self, action: str, resource: str) -> bool:
        if self.kind == "application" and is_secret_action(action):
            return False
        if self.products is not None and resource.startswith("product/"):
            pid = resource.split("/", 2)[1]
            if pid not in self.products:
                return False
        return self.policy.allows(action, resource)

    def may_list(self, action: str) -> bool:
        return self.policy.may_list(action)
