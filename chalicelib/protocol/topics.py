"""Device topics (SPEC §6.1): parse, build, answer on the form the device used.

Fleetbox's canonical topics are Tencent's layout without the leading ``$``
(``thing/up/property/{pid}/{dn}``), because IoT Core reserves ``$``-topics.  Devices
built on Tencent's SDK publish and subscribe to the ``$`` form (SPEC §6.6); the local
broker accepts both, and the cloud answers on the form the device used, so every
parsed topic remembers its ``dollar`` flag and every builder takes one.

Custom topics of custom-protocol products are ``{pid}/{dn}/{name}`` where ``name``
is one or more levels of ``[A-Za-z0-9_]`` or a whole-level ``+`` (declared on the
product with a permission ``pub`` | ``sub`` | ``pubsub``); they never carry ``$``.

Public API (engineers B and C depend on it; keep it stable):

* :func:`normalize` — strip a leading ``$``, say whether there was one
* :func:`parse` → :class:`Topic` | None
* :func:`reply_topic` — the downlink that answers an uplink, in the same form
* :func:`down`, :func:`up`, :func:`custom` — builders
* :func:`device_topics` — what a device may publish / subscribe to
* :func:`custom_topic_matches` — ``+`` whole-level matching of custom topic names
* :func:`split_client_id` — ``{pid}{dn}`` → ``(pid, dn)``
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

PRODUCT_ID_RE = re.compile(r"[A-Z0-9]{10}")
DEVICE_NAME_RE = re.compile(r"[A-Za-z0-9_:\-]{1,48}")
#: a declared custom topic name (may hold whole-level ``+``)
CUSTOM_NAME_RE = re.compile(r"([A-Za-z0-9_]+|\+)(/([A-Za-z0-9_]+|\+))*")
#: a concrete custom topic suffix (what a device actually publishes to)
_CUSTOM_LEVEL_RE = re.compile(r"[A-Za-z0-9_]+")

UP, DOWN = "up", "down"

#: family -> (levels before {pid}/{dn}, direction).  Order matters for nothing: every
#: family is identified by its exact leading levels and a fixed level count.
FAMILIES: dict[str, tuple[tuple[str, ...], str]] = {
    "thing/up/property": (("thing", "up", "property"), UP),
    "thing/down/property": (("thing", "down", "property"), DOWN),
    "thing/up/event": (("thing", "up", "event"), UP),
    "thing/down/event": (("thing", "down", "event"), DOWN),
    "thing/up/action": (("thing", "up", "action"), UP),
    "thing/down/action": (("thing", "down", "action"), DOWN),
    "ota/report": (("ota", "report"), UP),
    "ota/update": (("ota", "update"), DOWN),
    "resource/up/service": (("resource", "up", "service"), UP),
    "resource/down/service": (("resource", "down", "service"), DOWN),
    "sys/operation": (("sys", "operation"), UP),
    "sys/operation/result": (("sys", "operation", "result"), DOWN),
    "gateway/operation": (("gateway", "operation"), UP),
    "gateway/operation/result": (("gateway", "operation", "result"), DOWN),
    "broadcast/rxd": (("broadcast", "rxd"), DOWN),
}
CUSTOM = "custom"

#: uplink family -> the downlink family that answers it
REPLY_FAMILY: dict[str, str] = {
    "thing/up/property": "thing/down/property",
    "thing/up/event": "thing/down/event",
    "thing/up/action": "thing/down/action",
    "ota/report": "ota/update",
    "resource/up/service": "resource/down/service",
    "sys/operation": "sys/operation/result",
    "gateway/operation": "gateway/operation/result",
}

#: short names accepted by :func:`down` / :func:`up`
_DOWN_ALIASES = {
    "property": "thing/down/property",
    "event": "thing/down/event",
    "action": "thing/down/action",
    "ota": "ota/update",
    "resource": "resource/down/service",
    "sys": "sys/operation/result",
    "gateway": "gateway/operation/result",
    "broadcast": "broadcast/rxd",
}
_UP_ALIASES = {
    "property": "thing/up/property",
    "event": "thing/up/event",
    "action": "thing/up/action",
    "ota": "ota/report",
    "resource": "resource/up/service",
    "sys": "sys/operation",
    "gateway": "gateway/operation",
}

UP_FAMILIES = tuple(f for f, (_, d) in FAMILIES.items() if d == UP)
DOWN_FAMILIES = tuple(f for f, (_, d) in FAMILIES.items() if d == DOWN)

#: (leading levels, level count) -> family, for parsing
_BY_PREFIX: dict[tuple[tuple[str, ...], int], str] = {
    (levels, len(levels) + 2): family for family, (levels, _) in FAMILIES.items()
}


@dataclass(frozen=True)
class Topic:
    """A parsed device topic.

    ``family`` is one of :data:`FAMILIES` or ``"custom"``; ``direction`` is ``"up"`` or
    ``"down"`` for the standard families and ``None`` for custom topics (who may
    publish there depends on the product's declared permission); ``name`` is the custom
    topic's name (levels after ``{pid}/{dn}``); ``dollar`` says the device used the
    ``$`` form.
    """

    family: str
    direction: str | None
    product_id: str
    device_name: str
    name: str | None = None
    dollar: bool = False

    @property
    def device(self) -> str:
        """``{pid}/{dn}`` (the partition key and the key of device records)."""
        return f"{self.product_id}/{self.device_name}"

    @property
    def client_id(self) -> str:
        return f"{self.product_id}{self.device_name}"

    @property
    def canonical(self) -> str:
        """The topic without ``$`` (the form IoT Core, the policy and the logs use)."""
        if self.family == CUSTOM:
            return f"{self.product_id}/{self.device_name}/{self.name}"
        return f"{self.family}/{self.product_id}/{self.device_name}"

    def __str__(self) -> str:
        return ("$" if self.dollar else "") + self.canonical

    def reply(self) -> str | None:
        """The downlink answering this uplink, in the same form; None when nothing answers it."""
        family = REPLY_FAMILY.get(self.family)
        if family is None:
            return None
        return down(family, self.product_id, self.device_name, dollar=self.dollar)


def normalize(topic: str) -> tuple[str, bool]:
    """``("$thing/up/property/P/D")`` → ``("thing/up/property/P/D", True)``."""
    if topic.startswith("$"):
        return topic[1:], True
    return topic, False


def _ids_ok(pid: str, dn: str) -> bool:
    return PRODUCT_ID_RE.fullmatch(pid) is not None and DEVICE_NAME_RE.fullmatch(dn) is not None


def parse(topic: str) -> Topic | None:
    """Parse a device topic of SPEC §6.1; None when it is not one (or names an invalid id).

    Custom topics must name a concrete topic (no ``+``/``#``) and never carry ``$``.
    """
    if not isinstance(topic, str) or not topic or len(topic) > 256:
        return None
    bare, dollar = normalize(topic)
    levels = bare.split("/")
    for n in (2, 3):
        family = _BY_PREFIX.get((tuple(levels[:n]), len(levels)))
        if family is not None:
            pid, dn = levels[n], levels[n + 1]
            if not _ids_ok(pid, dn):
                return None
            return Topic(family, FAMILIES[family][1], pid, dn, None, dollar)
    if dollar or len(levels) < 3:
        return None
    pid, dn, rest = levels[0], levels[1], levels[2:]
    if not _ids_ok(pid, dn) or not all(_CUSTOM_LEVEL_RE.fullmatch(x) for x in rest):
        return None
    name = "/".join(rest)
    if len(name) > 64:
        return None
    return Topic(CUSTOM, None, pid, dn, name, False)


def reply_topic(up_topic: str) -> str:
    """The downlink answering ``up_topic``, in the same (``$`` or bare) form.

    ``$thing/up/property/P/D`` → ``$thing/down/property/P/D``; ``sys/operation/P/D`` →
    ``sys/operation/result/P/D``; ``ota/report`` → ``ota/update``; ``gateway/operation``
    → ``gateway/operation/result``; ``resource/up/service`` → ``resource/down/service``.
    Raises ValueError for a topic nothing answers (downlinks, custom topics, garbage).
    """
    parsed = parse(up_topic)
    answer = parsed.reply() if parsed is not None else None
    if answer is None:
        raise ValueError(f"no reply topic for {up_topic!r}")
    return answer


def _family(family: str, aliases: Mapping[str, str], direction: str) -> str:
    family = aliases.get(family, family)
    spec = FAMILIES.get(family)
    if spec is None or spec[1] != direction:
        raise ValueError(f"{family!r} is not a {direction}link topic family")
    return family


def down(family: str, product_id: str, device_name: str, dollar: bool = False) -> str:
    """Build a downlink topic: ``down("thing/down/property", P, D)`` or ``down("property", P, D, dollar=True)``.

    Short names: property, event, action, ota, resource, sys, gateway, broadcast.
    """
    family = _family(family, _DOWN_ALIASES, DOWN)
    return ("$" if dollar else "") + f"{family}/{product_id}/{device_name}"


def up(family: str, product_id: str, device_name: str, dollar: bool = False) -> str:
    """Build an uplink topic (simulator, tests): ``up("property", P, D)``."""
    family = _family(family, _UP_ALIASES, UP)
    return ("$" if dollar else "") + f"{family}/{product_id}/{device_name}"


def custom(product_id: str, device_name: str, name: str) -> str:
    """``{pid}/{dn}/{name}``."""
    return f"{product_id}/{device_name}/{name}"


def custom_topic_matches(pattern: str, topic: str) -> bool:
    """Whether a custom topic name ``topic`` matches a declared name ``pattern``.

    ``+`` in the pattern matches exactly one whole level (never an empty level, never
    several); every other level must be equal.  Works on bare names (``data/+``) and on
    full topics (``P/D/data/+``) alike.
    """
    p_levels, t_levels = pattern.split("/"), topic.split("/")
    if len(p_levels) != len(t_levels):
        return False
    return all(
        (p == "+" and t != "" and t not in ("+", "#")) or p == t for p, t in zip(p_levels, t_levels, strict=True)
    )


def custom_permission(custom_topics: Iterable[Mapping[str, str]] | None, name: str) -> str | None:
    """The permission (pub | sub | pubsub) of the first declared custom topic matching ``name``."""
    for decl in custom_topics or ():
        if custom_topic_matches(decl["name"], name):
            return decl.get("permission")
    return None


@dataclass(frozen=True)
class DeviceTopics:
    """What one device may use.  ``publish``/``subscribe`` hold topic filters in both forms
    (``+`` whole-level where a custom topic declares one); the ``$`` form is omitted for
    custom topics, which never have it."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]


def device_topics(
    product_id: str,
    device_name: str,
    custom_topics: Iterable[Mapping[str, str]] | None = None,
    dollar_forms: bool = True,
) -> DeviceTopics:
    """The topics device ``{pid}{dn}`` may publish to and subscribe to (its own, SPEC §6.1).

    ``custom_topics``: the product's declared ``[{"name", "permission"}]`` (custom products).
    ``dollar_forms=False`` lists only the bare forms (what an IoT Core policy can name).
    """

    def both(topic: str) -> list[str]:
        return [topic, "$" + topic] if dollar_forms else [topic]

    pub: list[str] = []
    sub: list[str] = []
    for family in UP_FAMILIES:
        pub += both(f"{family}/{product_id}/{device_name}")
    for family in DOWN_FAMILIES:
        sub += both(f"{family}/{product_id}/{device_name}")
    for decl in custom_topics or ():
        name, perm = decl.get("name"), decl.get("permission")
        if not name:
            continue
        topic = custom(product_id, device_name, name)
        if perm in ("pub", "pubsub"):
            pub.append(topic)
        if perm in ("sub", "pubsub"):
            sub.append(topic)
    return DeviceTopics(tuple(pub), tuple(sub))


def split_client_id(client_id: str) -> tuple[str, str]:
    """``{pid}{dn}`` → ``(pid, dn)``; the ProductId is always the first 10 characters.

    Raises ValueError when the client id cannot be one (too short, invalid id characters).
    """
    if not isinstance(client_id, str) or len(client_id) < 11:
        raise ValueError("client id must be {ProductId}{DeviceName}")
    pid, dn = client_id[:10], client_id[10:]
    if not _ids_ok(pid, dn):
        raise ValueError("client id must be {ProductId}{DeviceName}")
    return pid, dn


#: the rule engine's virtual topics: device status changes (``$status/{pid}/{dn}``, SPEC §9.1) and
#: domain events (``$events/{pid}/{kind…}``, services/events.py)
STATUS_FAMILY = ("$status",)
EVENTS_FAMILY = ("$events",)


def product_of_filter(levels: Iterable[str]) -> str | None:
    """The one product every topic a filter (MQTT ``+``/``#`` levels) can match belongs to, or None.

    A filter pins a product when the product level of the only topic family it can match is a
    literal ProductId: ``thing/up/property/ABCDEFGHIJ/+``, ``ABCDEFGHIJ/+/data`` (custom topics),
    ``$status/ABCDEFGHIJ/#``.  A wildcard before or at the product level (``+/up/property/…``,
    ``thing/#``) can reach several products, so nothing is pinned.  This is what makes a rule a
    resource of its product (``product/{pid}/rule/{name}``, SPEC §2).
    """
    lv = list(levels)
    if not lv or "+" == lv[0] or "#" == lv[0]:
        return None
    head = lv[0]
    if PRODUCT_ID_RE.fullmatch(head):
        return head  # custom topics: {pid}/{dn}/{name}; no family starts with an upper-case id
    if head not in ("$status", "$events"):
        lv[0] = head.lstrip("$")
    # longest family first: sys/operation/result/{pid} before sys/operation/{pid}
    prefixes = sorted(
        [STATUS_FAMILY, EVENTS_FAMILY] + [levels_ for levels_, _ in FAMILIES.values()], key=len, reverse=True
    )
    for prefix in prefixes:
        n = len(prefix)
        if len(lv) > n and tuple(lv[:n]) == prefix and PRODUCT_ID_RE.fullmatch(lv[n]):
            return lv[n]
    return None
