"""The HTTP route kit every blueprint uses.

``route(bp, "POST", "/v1/products", action=..., resource=...)`` registers a
Chalice view that always does, in this order: give the request an id →
authenticate the bearer API key (401) → parse the JSON body (400) → authorise
``action`` on ``resource`` with the caller's policy (403) → validate query and
body against their models (400) → call the handler → render JSON with
``x-request-id`` → write an audit record for mutating calls.  Because the
action is a required argument, no ``/v1`` route can exist without a policy
check, and because the registry keeps every route's models, ``/openapi.json``
is generated from the very models that validate requests.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from chalice import Blueprint, Response

from ..core import errors, ids, observability
from ..core.auth import Principal, qualify
from ..core.observability import logger
from ..core.schema import MISSING, Field, Model
from ..services import access, audit

Resource = Callable[[Mapping[str, str], Mapping[str, Any]], str]
Owner = Callable[[Mapping[str, str], Mapping[str, Any]], "tuple[str, Any]"]

_JSON = "application/json"


@dataclass
class RouteSpec:
    method: str
    path: str
    action: str | None
    resource: Resource | str | None
    summary: str
    tag: str
    body: Model | None = None
    query: Mapping[str, Field] = field(default_factory=dict)
    response: Field | None = None
    status: int = 200
    listing: bool = False
    #: (lists) the action of the item route: an item is listed only if it passes both decisions
    item_action: str | None = None
    #: (item routes on stored items) reads the item and returns (its resource, the item); the kit
    #: runs it after authentication and authorises ``action`` on that resource
    owner: Owner | None = None
    public: bool = False
    produces: str = _JSON
    errors: tuple[int, ...] = ()
    #: the request body's media type (the chat platforms post forms)
    consumes: str = _JSON
    #: (mutating routes) the service's checks of the request without the change — what
    #: :func:`check` runs after the kit's decision and validation (a chat confirmation is offered
    #: only for a request the route would take)
    precheck: Callable[[Ctx], None] | None = None

    @property
    def mutating(self) -> bool:
        return self.method in ("POST", "PUT", "PATCH", "DELETE")

    def resource_for(self, params: Mapping[str, str], body: Mapping[str, Any]) -> str:
        if callable(self.resource):
            return self.resource(params, body)
        return self.resource or "*"


#: every route registered through :func:`route`, in registration order
ROUTES: list[RouteSpec] = []


@dataclass
class Ctx:
    """What a handler receives."""

    request_id: str
    principal: Principal | None
    params: dict[str, str]
    query: dict[str, Any]
    body: dict[str, Any]
    request: Any
    spec: RouteSpec
    #: the stored item an ``owner`` route was authorised on
    item: Any = None
    #: the resource the route's action was authorised on
    resource: str = "*"

    def allowed(self, action: str, resource: str) -> bool:
        return self.principal is not None and self.principal.allows(action, resource)

    def require(self, action: str, resource: str) -> None:
        if not self.allowed(action, resource):
            raise errors.forbidden(action, resource)

    @property
    def caller(self) -> Principal:
        """The authenticated principal (every non-public route has one)."""
        if self.principal is None:
            raise errors.unauthenticated()
        return self.principal

    def visible(self, resource: str) -> bool:
        """Whether a list may show the item at ``resource``: the list's own action and the item
        route's action must both allow it, so a list never shows what the item route refuses."""
        if not self.allowed(self.spec.action or "", resource):
            return False
        return self.spec.item_action is None or self.allowed(self.spec.item_action, resource)


def _header(request: Any, name: str) -> str | None:
    value = request.headers.get(name)
    return value if value is None else str(value)


def json_response(status: int, body: Any, request_id: str, extra: Mapping[str, str] | None = None) -> Response:
    headers = {"Content-Type": _JSON, "x-request-id": request_id}
    if extra:
        headers.update(extra)
    return Response(
        body=json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=str),
        status_code=status,
        headers=headers,
    )


def error_response(err: errors.FleetboxError, request_id: str) -> Response:
    return json_response(err.status, err.body(request_id), request_id)


def _parse_body(request: Any) -> Any:
    raw = request.raw_body
    if not raw:
        return None
    ctype = (_header(request, "content-type") or _JSON).lower()
    if "json" not in ctype:
        raise errors.UNSUPPORTED_MEDIA_TYPE(f"request bodies must be application/json, got {ctype}", "Content-Type")
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        value = json.loads(text)
        # JSON may escape lone surrogates ("\ud800") that no store can hold: refuse them here
        json.dumps(value, ensure_ascii=False).encode("utf-8")
        return value
    except (UnicodeDecodeError, UnicodeEncodeError, ValueError) as exc:
        raise errors.INVALID_JSON(f"request body is not valid UTF-8 JSON: {str(exc)[:120]}", "body") from None
    except RecursionError:
        raise errors.INVALID_JSON("request body is nested too deeply", "body") from None


def _parse_query(spec: RouteSpec, raw: Mapping[str, str] | None) -> dict[str, Any]:
    raw = dict(raw or {})
    out: dict[str, Any] = {}
    for name in raw:
        if name not in spec.query:
            raise errors.UNKNOWN_PARAMETER(f"query parameter {name} is not supported", name)
    for name, fld in spec.query.items():
        if name not in raw:
            if fld.required:
                raise errors.missing(name)
            if fld.default is not MISSING:
                out[name] = fld.default
            continue
        text = raw[name]
        value: Any = text
        if fld.json_type == "integer":
            try:
                value = int(text)
            except ValueError:
                raise fld.fail(name, "must be an integer") from None
        elif fld.json_type == "boolean":
            if text.lower() not in ("true", "false"):
                raise fld.fail(name, "must be true or false")
            value = text.lower() == "true"
        out[name] = fld.validate(value, name)
    return out


def _authenticate(request: Any) -> Principal:
    header = _header(request, "authorization")
    if not header:
        raise errors.unauthenticated("missing Authorization: Bearer <api key>")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise errors.unauthenticated("the Authorization header must be 'Bearer <api key>'")
    return access.authenticate(token.strip())


def _audit(
    spec: RouteSpec,
    ctx_principal: Principal | None,
    resource: str,
    status: int,
    code: str | None,
    request_id: str,
    source_ip: str | None,
    channel: str | None = None,
) -> None:
    if ctx_principal is None or not spec.mutating:
        return
    try:
        audit.record(
            principal_id=ctx_principal.principal_id,
            key_id=ctx_principal.key_id,
            action=qualify(spec.action or ""),
            resource=resource,
            status=status,
            result=code or "Success",
            request_id=request_id,
            source_ip=source_ip,
            channel=channel,
        )
    except Exception:  # noqa: BLE001 - the audit must not turn a done change into a failure; log loudly
        logger.exception("audit write failed", extra={"request_id": request_id, "action": spec.action})


@dataclass
class _Call:
    """One call of a route, however it arrived (HTTP, or :func:`invoke` from chat / cloud API)."""

    spec: RouteSpec
    handler: Callable[[Ctx], Any]
    params: dict[str, str]
    request_id: str
    request: Any = None
    #: the caller when already known (in-process calls); HTTP calls authenticate the bearer key
    principal: Principal | None = None
    #: the JSON body: parsed by the caller (in-process) or read from the request (HTTP)
    raw_body: Any = None
    body_present: bool = False
    raw_query: Mapping[str, str] | None = None
    source_ip: str | None = None
    #: where the call came from, for the audit ("chat:slack:T1/C1", "cloudapi"); None for HTTP
    channel: str | None = None
    #: decide and validate only: run the route's precheck, not its handler (:func:`check`)
    dry: bool = False
    #: what the pipeline decided, readable afterwards (the audit, the chat's decision log)
    resource: str = "*"
    status: int = 500
    code: str | None = None


def _pipeline(call: _Call) -> Any:
    """Authenticate (HTTP only), authorise, validate, run: the handler's result or a FleetboxError."""
    spec, params = call.spec, call.params
    call.resource = spec.resource_for(params, {})  # known even when the body is malformed (audit)
    principal = call.principal
    if principal is None and not spec.public:
        principal = call.principal = _authenticate(call.request)
    raw_body = call.raw_body
    if isinstance(raw_body, dict):
        call.resource = spec.resource_for(params, raw_body)
    item = None
    if principal is not None and spec.action:
        if spec.listing or spec.owner is not None:
            # allowed somewhere first: nobody without the action learns which items exist
            if not principal.may_list(spec.action):
                raise errors.forbidden(spec.action, call.resource)
        elif not principal.allows(spec.action, call.resource):
            raise errors.forbidden(spec.action, call.resource)
    query = _parse_query(spec, call.raw_query)
    body: dict[str, Any] = {}
    if spec.body is not None:
        if raw_body is None and not call.body_present:
            raw_body = {}  # no body at all: every field takes its default (or is missing)
        if not isinstance(raw_body, dict):
            raise errors.INVALID_BODY("the request body must be a JSON object", "body")
        body = spec.body.validate(raw_body, "")
    if principal is not None and spec.action and spec.owner is not None:
        # the item's own resource, read once the request is known to be well formed
        call.resource, item = spec.owner(params, body)
        if not principal.allows(spec.action, call.resource):
            raise errors.forbidden(spec.action, call.resource)
    ctx = Ctx(call.request_id, principal, params, query, body, call.request, spec, item, call.resource)
    if call.dry:
        if spec.precheck is not None:
            spec.precheck(ctx)
        return None
    with observability.segment(spec.action or spec.path, request_id=call.request_id):
        return call.handler(ctx)


def _finish(call: _Call, started: float) -> None:
    elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    _audit(
        call.spec, call.principal, call.resource, call.status, call.code, call.request_id, call.source_ip, call.channel
    )
    observability.request_done(qualify(call.spec.action or call.spec.path), call.status)
    logger.info(
        "request",
        extra={
            "method": call.spec.method,
            "path": call.spec.path,
            "status": call.status,
            "code": call.code,
            "duration_ms": elapsed_ms,
            "principal": call.principal.principal_id if call.principal else None,
            "channel": call.channel,
        },
    )


def source_ip_of(request: Any) -> str | None:
    """The caller's address as API Gateway (or chalice local) saw it."""
    try:
        ip = (request.context or {}).get("identity", {}).get("sourceIp")
    except AttributeError:
        return None
    return ip if isinstance(ip, str) else None


def dispatch(bp: Blueprint, spec: RouteSpec, handler: Callable[[Ctx], Any], params: dict[str, str]) -> Response:
    request = bp.current_request
    request_id = ids.request_id()
    logger.thread_safe_append_keys(request_id=request_id, action=spec.action or spec.path)
    started = time.perf_counter()
    call = _Call(spec, handler, params, request_id, request=request, raw_query=request.query_params)
    call.source_ip = source_ip_of(request)
    call.status, call.code = errors.INTERNAL_ERROR.status, errors.INTERNAL_ERROR.code
    try:
        # bodies on body-less operations are ignored, as documented; the bearer key is checked
        # before the body is read (a malformed body from a stranger answers 401)
        if not spec.public:
            call.resource = spec.resource_for(params, {})
            call.principal = _authenticate(request)
        call.body_present = bool(request.raw_body)
        call.raw_body = _parse_body(request) if spec.body is not None else None
        result = _pipeline(call)
        if isinstance(result, Response):
            result.headers.setdefault("x-request-id", request_id)
            call.status, call.code = result.status_code, None
            return result
        call.status, call.code = spec.status, None
        if call.status == 204:
            return Response(body="", status_code=204, headers={"x-request-id": request_id})
        return json_response(call.status, result, request_id)
    except errors.FleetboxError as err:
        call.status, call.code = err.status, err.code
        if err.status >= 500:
            logger.error("request failed", extra={"code": err.code})
        return error_response(err, request_id)
    except Exception:  # noqa: BLE001 - the last line: a stable INTERNAL_ERROR, never a stack trace
        logger.exception("unhandled error")
        err = errors.internal()
        call.status, call.code = err.status, err.code
        return error_response(err, request_id)
    finally:
        _finish(call, started)
        logger.thread_safe_clear_keys()


# ----------------------------------------------------------------- in-process calls


#: (method, path template) → (spec, handler) of every route registered through :func:`route`
HANDLERS: dict[tuple[str, str], tuple[RouteSpec, Callable[[Ctx], Any]]] = {}


@dataclass
class Outcome:
    """What an in-process call of a route produced."""

    status: int
    #: the handler's JSON-able result, or the body of the Response it built (bytes for pictures)
    body: Any
    headers: dict[str, str]
    request_id: str
    #: the resource the action was authorised on
    resource: str


def invoke(
    method: str,
    path: str,
    principal: Principal,
    *,
    params: Mapping[str, str] | None = None,
    query: Mapping[str, Any] | None = None,
    body: Mapping[str, Any] | None = None,
    channel: str,
    request_id: str | None = None,
    source_ip: str | None = None,
) -> Outcome:
    """Run the route ``method path`` (its template, e.g. ``/v1/products/{pid}``) for ``principal``
    in process — the chat commands and the cloud-API endpoint call the product through this, so
    every decision (the action on its resource, lists item by item, owner routes on the stored
    item), every validation and the audit are exactly the HTTP route's.

    ``query`` values may be typed (int, bool): they are turned into the strings HTTP would carry
    and validated by the route's own models.  Raises :class:`errors.FleetboxError` as the route
    would answer it (403 ``UnauthorizedOperation``, 400 with the field, 404, …); ``source_ip``:
    the address the outer request came from, when it names the caller (the cloud API), for the
    audit.  An unexpected
    failure is logged and raised as ``InternalError`` (never a stack trace to the caller).
    """
    found = HANDLERS.get((method.upper(), path))
    if found is None:
        raise LookupError(f"no route {method} {path}")  # a programming error, not a user's
    spec, handler = found
    request_id = request_id or ids.request_id()
    started = time.perf_counter()
    raw_query = {k: _query_text(v) for k, v in (query or {}).items() if v is not None}
    call = _Call(
        spec,
        handler,
        dict(params or {}),
        request_id,
        principal=principal,
        raw_body=dict(body) if body is not None else None,
        body_present=body is not None,
        raw_query=raw_query,
        source_ip=source_ip,
        channel=channel,
    )
    call.status, call.code = errors.INTERNAL_ERROR.status, errors.INTERNAL_ERROR.code
    try:
        result = _pipeline(call)
        if isinstance(result, Response):
            call.status, call.code = result.status_code, None
            return Outcome(result.status_code, result.body, dict(result.headers or {}), request_id, call.resource)
        call.status, call.code = spec.status, None
        return Outcome(spec.status, None if spec.status == 204 else result, {}, request_id, call.resource)
    except errors.FleetboxError as err:
        call.status, call.code = err.status, err.code
        if err.status >= 500:
            logger.error("in-process call failed", extra={"code": err.code, "path": path})
        raise
    except Exception:  # noqa: BLE001 - same last line as HTTP: a stable INTERNAL_ERROR
        logger.exception("unhandled error (in-process call)", extra={"path": path})
        err = errors.internal()
        call.status, call.code = err.status, err.code
        raise err from None
    finally:
        _finish(call, started)


def check(
    method: str,
    path: str,
    principal: Principal,
    *,
    params: Mapping[str, str],
    query: Mapping[str, Any] | None = None,
    body: Mapping[str, Any] | None = None,
) -> None:
    """Whether the route ``method path`` would take this request from ``principal``, without
    running it: the route's own decision (owner routes on the stored item), its models, and the
    service checks it declared as ``precheck`` (a batch needs a released product, an OTA task a
    ready firmware, …).  Raises the :class:`errors.FleetboxError` the route would answer; nothing
    changes and nothing is audited.  The chat runs this before offering a confirmation button —
    the click still runs :func:`invoke`, which decides everything again."""
    found = HANDLERS.get((method.upper(), path))
    if found is None:
        raise LookupError(f"no route {method} {path}")  # a programming error, not a user's
    spec, handler = found
    call = _Call(
        spec,
        handler,
        dict(params),
        ids.request_id(),
        principal=principal,
        raw_body=dict(body) if body is not None else None,
        body_present=body is not None,
        raw_query={k: _query_text(v) for k, v in (query or {}).items() if v is not None},
        dry=True,
    )
    _pipeline(call)


def _query_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def route(
    bp: Blueprint,
    method: str,
    path: str,
    *,
    action: str | None,
    resource: Resource | str | None,
    summary: str,
    tag: str,
    body: Model | None = None,
    query: Mapping[str, Field] | None = None,
    response: Field | None = None,
    status: int = 200,
    listing: bool = False,
    item_action: str | None = None,
    owner: Owner | None = None,
    public: bool = False,
    produces: str = _JSON,
    errors_: tuple[int, ...] = (),
    precheck: Callable[[Ctx], None] | None = None,
) -> Callable[[Callable[[Ctx], Any]], Callable[[Ctx], Any]]:
    """Register a route.  ``action``/``resource`` are mandatory unless ``public``.

    ``listing`` marks a list: the kit checks the action is allowed somewhere and the handler
    keeps only the items :meth:`Ctx.visible` passes (``item_action`` names the item route's
    action).  ``owner`` marks a route on a stored item whose resource is only known once it is
    read (a firmware's or a rule's product).  ``precheck`` (mutating routes): the service's own
    checks of a request without making the change, for :func:`check`."""
    if not public and not action:
        raise ValueError(f"{method} {path}: a non-public route needs an action")
    if listing and owner is not None:
        raise ValueError(f"{method} {path}: a route is a list or an item route, not both")
    spec = RouteSpec(
        method=method,
        path=path,
        action=action,
        resource=resource,
        summary=summary,
        tag=tag,
        body=body,
        query=dict(query or {}),
        response=response,
        status=status,
        listing=listing,
        item_action=item_action,
        owner=owner,
        public=public,
        produces=produces,
        errors=errors_,
        precheck=precheck,
    )

    def decorate(handler: Callable[[Ctx], Any]) -> Callable[[Ctx], Any]:
        def view(**params: str) -> Response:
            # API Gateway and chalice local differ on decoding path parameters; ids never contain '%'
            return dispatch(bp, spec, handler, {k: unquote(v) for k, v in params.items()})

        view.__name__ = f"{handler.__name__}_{method.lower()}"
        bp.route(path, methods=[method], content_types=["*/*"])(view)
        ROUTES.append(spec)
        HANDLERS[(method.upper(), path)] = (spec, handler)
        return handler

    return decorate


def document(
    method: str,
    path: str,
    *,
    summary: str,
    tag: str,
    body: Model | None,
    response: Field,
    produces: str = _JSON,
    consumes: str = _JSON,
    errors_: tuple[int, ...] = (),
) -> None:
    """List a public route that answers outside the kit (e.g. device registration, which signs with
    the ProductSecret and always answers 200) in /openapi.json, from its own models."""
    ROUTES.append(
        RouteSpec(
            method=method,
            path=path,
            action=None,
            resource=None,
            summary=summary,
            tag=tag,
            body=body,
            response=response,
            status=200,
            public=True,
            produces=produces,
            consumes=consumes,
            errors=errors_,
        )
    )


# ----------------------------------------------------------------- paging


def encode_token(key: Mapping[str, Any] | None) -> str | None:
    if not key:
        return None
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode().rstrip("=")


def page_answer(ctx: Ctx, items: list[Any], nxt: Mapping[str, Any] | None) -> dict[str, Any]:
    """A list route's answer: the items, the next token, and the total when this page is the
    whole list (the first page, nothing after it) — where counting costs nothing."""
    return {
        "items": items,
        "total": len(items) if nxt is None and "next" not in ctx.query else None,
        "next": encode_token(nxt),
    }


def decode_token(token: str | None) -> dict[str, Any] | None:
    if not token:
        return None
    try:
        pad = "=" * (-len(token) % 4)
        value = json.loads(base64.urlsafe_b64decode(token + pad))
        # shape of a DynamoDB key: {"attr": {"S"|"N": "text"}}, nothing else reaches a query
        if not isinstance(value, dict) or not 0 < len(value) <= 4:
            raise ValueError("not a key")
        for attr, typed in value.items():
            if (
                not isinstance(attr, str)
                or not isinstance(typed, dict)
                or len(typed) != 1
                or next(iter(typed)) not in ("S", "N")
                or not isinstance(next(iter(typed.values())), str)
                or not 0 < len(next(iter(typed.values()))) <= 1024
            ):
                raise ValueError("not a key")
        return value
    except (ValueError, UnicodeDecodeError, TypeError):
        raise errors.NEXT_TOKEN_INVALID("next is not a token this API issued", "next") from None


# ----------------------------------------------------------------- unmatched paths and methods

#: methods every resource answers: a method a path does not serve gets 405 with ``Allow``
FALLBACK_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
#: the catch-all resource (API Gateway's greedy path); its parameter is ``proxy``
CATCH_ALL = "/{proxy+}"
#: (path, method) of the views :func:`install_fallbacks` added (not API operations)
FALLBACKS: set[tuple[str, str]] = set()


def not_found_response(path: str) -> Response:
    request_id = ids.request_id()
    err = errors.FleetboxError(errors.ROUTE_NOT_FOUND, f"no route serves {path[:200]}", None, status=404)
    return error_response(err, request_id)


def method_not_allowed_response(method: str, path: str, allowed: list[str]) -> Response:
    request_id = ids.request_id()
    err = errors.FleetboxError(
        errors.METHOD_NOT_ALLOWED, f"{method} is not allowed on {path}; use {', '.join(allowed)}", None, status=405
    )
    response = error_response(err, request_id)
    response.headers["Allow"] = ", ".join(allowed)
    return response


def install_fallbacks(app: Any) -> None:
    """Answer unmatched paths (404) and methods (405) in the error envelope with ``x-request-id``
    instead of API Gateway's ``Missing Authentication Token`` (which quotes the caller's
    ``Authorization`` header back): a greedy catch-all resource, and the missing methods of
    every resource.  Called by app.py after every blueprint is registered."""
    for path, by_method in list(app.routes.items()):
        served = sorted(by_method)
        missing = [m for m in FALLBACK_METHODS if m not in by_method]
        if not missing:
            continue

        def refuse(_path: str = path, _served: list[str] = served, **_params: str) -> Response:
            return method_not_allowed_response(app.current_request.method, _path, _served)

        refuse.__name__ = f"method_not_allowed_{len(FALLBACKS)}"
        app.route(path, methods=missing, content_types=["*/*"])(refuse)
        FALLBACKS.update((path, m) for m in missing)

    def not_found(**_params: str) -> Response:
        return not_found_response(app.current_request.path if app.current_request else "")

    methods = list(FALLBACK_METHODS) + ["HEAD"]
    app.route(CATCH_ALL, methods=methods, content_types=["*/*"])(not_found)
    # API Gateway passes a greedy parameter as "proxy" (chalice would look for "proxy+")
    for entry in app.routes[CATCH_ALL].values():
        entry.view_args = ["proxy"]
    FALLBACKS.update((CATCH_ALL, m) for m in methods)
