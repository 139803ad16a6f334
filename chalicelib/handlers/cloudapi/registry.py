"""The cloud-API action table (SPEC §14): Tencent action → request model → route call(s) → answer.

An action is a function registered with :func:`action`::

    @action(
        "DescribeDevice",
        {"ProductId": PRODUCT_ID, "DeviceName": DEVICE_NAME},
        routes=["GET /v1/products/{product_id}/devices/{device_name}"],
        summary="One device",
    )
    def describe_device(req: Req, call: Invoker) -> dict[str, Any]:
        dev = call("GET /v1/products/{product_id}/devices/{device_name}",
                   params={"product_id": req["ProductId"], "device_name": req["DeviceName"]})
        return {"Device": {...Tencent field names...}}

* the request model (``core.schema`` fields under Tencent's names) validates the parameters:
  a missing one is ``MissingParameter``, an unknown one ``UnknownParameter``, a wrong one the
  field's code — each naming the Tencent field;
* the :class:`Invoker` runs only the routes the action declared, through ``api.invoke`` with
  the SecretId's principal and ``channel="cloudapi"``: the route's policy action (that is the
  permission, ``iotexplorer:<route action>``), per-item list decisions, validation, handler and
  audit are exactly the HTTP route's;
* the function translates fields both ways and returns the ``Response`` members (the endpoint
  adds ``RequestId``).  A route error keeps its code (its Tencent spelling: ``errors.ErrorCode.cloud``)
  and its field is renamed to the Tencent parameter (``fields=`` for names camel-casing misses).

An action not in :data:`ACTIONS` answers ``InvalidAction``: nothing is stubbed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ...core import errors
from ...core.auth import Principal
from ...core.config import settings
from ...core.schema import Array, Boolean, Field, Integer, Map, Model, Number
from .. import api

CHANNEL = "cloudapi"


class Req(Mapping[str, Any]):
    """The validated request parameters of one action, under Tencent's names (``req["ProductId"]``;
    ``req.get("Offset", 0)`` for optional ones)."""

    def __init__(self, action: str, values: Mapping[str, Any]):
        self.action = action
        self._values = dict(values)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Any:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


@dataclass
class Invoker:
    """Calls the routes one action declared, as the SecretId's principal (``api.invoke``)."""

    principal: Principal
    request_id: str
    routes: frozenset[str]
    #: the client's address (the audit records it)
    source_ip: str | None = None
    #: the route calls made, in order (the endpoint's log line; tests)
    made: list[str] = field(default_factory=list)

    def __call__(
        self,
        route: str,
        *,
        params: Mapping[str, str] | None = None,
        query: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        """Run ``route`` ("METHOD /v1/path/{template}") and return its JSON body (None for 204)."""
        out = self.outcome(route, params=params, query=query, body=body)
        if isinstance(out.body, str) and out.headers.get("Content-Type", "").startswith("application/json"):
            return json.loads(out.body)  # a route that built its own JSON Response (a status of its choice)
        return out.body

    def outcome(
        self,
        route: str,
        *,
        params: Mapping[str, str] | None = None,
        query: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> api.Outcome:
        if route not in self.routes:
            raise LookupError(f"the action did not declare {route}")  # a programming error
        method, _, path = route.partition(" ")
        self.made.append(route)
        return api.invoke(
            method,
            path,
            self.principal,
            params=params,
            query=query,
            body=body,
            channel=CHANNEL,
            request_id=self.request_id,
            source_ip=self.source_ip,
        )

    def page(
        self,
        route: str,
        *,
        offset: int,
        limit: int,
        params: Mapping[str, str] | None = None,
        query: Mapping[str, Any] | None = None,
    ) -> tuple[list[Any], int | None]:
        """Tencent's ``Offset``/``Limit`` over a route that pages with ``next`` tokens: walk the
        route's pages (100 items a call) until ``offset + limit`` items are seen, and on to the
        end to count them when the route gives no total — at most ``cloudapi_max_walk`` items
        (beyond that the count is unknown: ``None``).  Returns (the window, TotalCount)."""
        cap = settings().cloudapi_max_walk
        if offset + limit > cap:
            raise errors.LIMIT_INVALID(
                f"Offset + Limit must be at most {cap}: narrow the list with its filters", "Offset"
            )
        seen: list[Any] = []
        total: int | None = None
        token: str | None = None
        while True:
            page = self(route, params=params, query={**(query or {}), "limit": 100, "next": token})
            seen.extend(page["items"])
            if isinstance(page.get("total"), int):
                total = page["total"]
            token = page.get("next")
            if not token:
                if total is None:
                    total = len(seen)
                break
            if len(seen) >= offset + limit and total is not None:
                break
            if len(seen) >= cap:
                break  # counted as far as allowed: the total stays unknown
        return seen[offset : offset + limit], total


Run = Callable[[Req, Invoker], Mapping[str, Any]]


@dataclass(frozen=True)
class ActionSpec:
    name: str
    request: Model
    run: Run
    #: the routes the action calls ("METHOD /v1/…"), each with its own policy action
    routes: tuple[str, ...]
    summary: str
    #: route field → Tencent parameter, where camel-casing the route's name does not give it
    fields: Mapping[str, str]

    @property
    def permissions(self) -> tuple[str, ...]:
        """The policy actions the routes check (``iotexplorer:…``): what a policy must allow."""
        out: list[str] = []
        for route in self.routes:
            method, _, path = route.partition(" ")
            spec, _ = api.HANDLERS[(method, path)]
            name = f"iotexplorer:{spec.action}"
            if name not in out:
                out.append(name)
        return tuple(out)


#: every mapped action, by Tencent name
ACTIONS: dict[str, ActionSpec] = {}


def action(
    name: str,
    request: Mapping[str, Field],
    *,
    routes: Iterable[str],
    summary: str,
    fields: Mapping[str, str] | None = None,
) -> Callable[[Run], Run]:
    """Register the Tencent action ``name``; see the module docstring."""
    if name in ACTIONS:
        raise ValueError(f"cloud-API action {name} is mapped twice")
    declared = tuple(routes)
    for route in declared:
        method, _, path = route.partition(" ")
        if (method, path) not in api.HANDLERS:
            raise ValueError(f"{name}: no route {route} (register the route module first)")

    def decorate(run: Run) -> Run:
        ACTIONS[name] = ActionSpec(
            name=name,
            request=Model(f"{name}Request", request),
            run=run,
            routes=declared,
            summary=summary,
            fields=dict(fields or {}),
        )
        return run

    return decorate


# ------------------------------------------------------------------ running one action


def run(
    name: str,
    params: Mapping[str, Any],
    principal: Principal,
    request_id: str,
    *,
    form: bool = False,
    source_ip: str | None = None,
) -> dict[str, Any]:
    """Validate ``params`` for ``name`` (``form``: text values from a form body, typed first by
    :func:`coerce`), run it, return its ``Response`` members; a :class:`errors.FleetboxError`
    with Tencent field names on refusal."""
    spec = ACTIONS.get(name)
    if spec is None:
        raise errors.INVALID_ACTION(f"the action {name} is not supported by iotexplorer 2019-04-23 here", "Action")
    values = spec.request.validate(coerce(spec.request, dict(params)) if form else dict(params), "")
    invoker = Invoker(principal, request_id, frozenset(spec.routes), source_ip)
    try:
        return dict(spec.run(Req(name, values), invoker))
    except errors.FleetboxError as err:
        raise _renamed(err, spec) from None


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def tencent_field(route_field: str, renames: Mapping[str, str]) -> str:
    """``device_name`` → ``DeviceName``; ``params.color`` → ``Data.color`` via ``renames``; with a
    ``"*"`` entry every other route field is a part of that one parameter (``ModelSchema.events[0]``)."""
    if route_field in renames:
        return renames[route_field]
    if "*" in renames:
        return f"{renames['*']}.{route_field}"
    head, sep, rest = route_field.partition(".")
    head_name = re.sub(r"\[\d+\]$", "", head)
    mapped = renames.get(head_name, _camel(head_name))
    return mapped + head[len(head_name) :] + (sep + rest if sep else "")


def _renamed(err: errors.FleetboxError, spec: ActionSpec) -> errors.FleetboxError:
    if err.field is None or err.field == "body":
        return err
    renamed = errors.FleetboxError(err.code, err.message, tencent_field(err.field, spec.fields), status=err.status)
    renamed.details = err.details
    return renamed


# ------------------------------------------------------------------ form-encoded parameters


def unflatten(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The SDK's flattened form (``Filters.0.Name=x``) back into objects and lists (strings)."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = key.split(".")
        node: Any = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            nxt: Any = value if last else ({} if not parts[i + 1].isdigit() else [])
            if isinstance(node, list):
                if not part.isdigit():
                    raise errors.INVALID_PARAMETER(f"{key}: a list index must be a number", key)
                idx = int(part)
                if idx > 1000:
                    raise errors.INVALID_PARAMETER(f"{key}: list index too large", key)
                while len(node) <= idx:
                    node.append(None)
                if node[idx] is None or last:
                    node[idx] = nxt
                node = node[idx]
            else:
                if last or part not in node:
                    node[part] = nxt
                node = node[part]
            if not last and not isinstance(node, dict | list):
                raise errors.INVALID_PARAMETER(f"{key} conflicts with another parameter", key)
    return root


def coerce(model: Field, value: Any) -> Any:
    """Form values are text: turn them into the types ``model`` declares (``"10"`` → 10,
    ``"True"`` → True) so the same model validates JSON and form requests; anything that does
    not convert is left for validation to refuse with the field's own code."""
    if isinstance(model, Model) and isinstance(value, dict):
        return {k: coerce(model.fields[k], v) if k in model.fields else v for k, v in value.items()}
    if isinstance(model, Array) and isinstance(value, list):
        return [coerce(model.items, v) for v in value]
    if isinstance(model, Map) and isinstance(value, dict):
        return {k: coerce(model.values, v) for k, v in value.items()}
    if not isinstance(value, str):
        return value
    if isinstance(model, Boolean) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if isinstance(model, Number):
        try:
            return float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            return value
    if isinstance(model, Integer) and re.fullmatch(r"-?\d{1,19}", value):
        return int(value)
    return value
