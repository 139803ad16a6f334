"""Principals, API keys and applications (SPEC §2)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pynamodb.exceptions import DoesNotExist, PutError

from ..core import auth, clock, errors, ids
from ..core.auth import Principal
from ..models.access import ApiKeyRecord, ApplicationRecord, CloudKeyRecord, PrincipalRecord
from .paging import checked_start, expect_key
from .products import get_product

ROOT_ID = "root"
PRINCIPAL_KINDS = ("user", "application", "chat")
APP_PLATFORMS = ("android", "ios", "miniprogram")

#: what an application's keys may do, on its own products only
APPLICATION_ACTIONS = [
    "iotexplorer:Describe*",
    "iotexplorer:List*",
    "iotexplorer:Get*",
    "iotexplorer:ControlDeviceData",
    "iotexplorer:CallDeviceAction",
    "iotexplorer:CreateBinding",
    "iotexplorer:DeleteBinding",
]


# ------------------------------------------------------------ authentication


def authenticate(token: str) -> Principal:
    """Resolve a bearer API key to its principal, or raise 401.  Constant-time compare."""
    parsed = auth.parse_api_key(token)
    if parsed is None:
        raise errors.unauthenticated("the API key is malformed")
    key_id, secret = parsed
    try:
        key = ApiKeyRecord.get(key_id, consistent_read=True)
    except DoesNotExist:
        # hash anyway so unknown and wrong keys take the same time
        auth.secret_matches(key_id, secret, "0" * 64)
        raise errors.unauthenticated("the API key is not valid") from None
    if not auth.secret_matches(key_id, secret, key.secret_hash):
        raise errors.unauthenticated("the API key is not valid")
    try:
        principal = PrincipalRecord.get(key.principal_id, consistent_read=True)
    except DoesNotExist:
        raise errors.unauthenticated("the API key's principal no longer exists") from None
    return _to_principal(principal, key_id)


def principal_by_id(principal_id: str, via: str | None = None) -> Principal | None:
    """The principal with this id as a policy holder (chat identities and cloud-API SecretIds map
    to one), or None when it no longer exists.  ``via`` names the credential for the audit."""
    try:
        rec = PrincipalRecord.get(principal_id, consistent_read=True)
    except DoesNotExist:
        return None
    return _to_principal(rec, via)


def _to_principal(rec: PrincipalRecord, key_id: str | None) -> Principal:
    products: frozenset[str] | None = None
    policy = rec.policy
    if rec.kind == "application":
        # an application's access is defined here, not by what was stored when it was made: a
        # narrower rule reaches every existing application at once
        policy = _application_policy()
        products = frozenset()
        if rec.application_id:
            try:
                products = frozenset(ApplicationRecord.get(rec.application_id, consistent_read=True).products or [])
            except DoesNotExist:
                products = frozenset()
    return Principal(
        principal_id=rec.principal_id,
        name=rec.name,
        kind=rec.kind,
        policy=auth.compile_policy(policy),
        key_id=key_id,
        products=products,
    )


# ------------------------------------------------------------------- seeding


def seed_root(api_key: str | None = None) -> str:
    """Create the root principal (allow everything) if missing and issue an admin key.

    With ``api_key`` (e.g. FLEETBOX_ADMIN_API_KEY in the local stack) that exact key is
    registered, so scripts can keep one key across restarts; otherwise a new one is made.
    """
    now = clock.now_s()
    try:
        PrincipalRecord.get(ROOT_ID)
    except DoesNotExist:
        PrincipalRecord(
            principal_id=ROOT_ID, name="root", kind="root", policy=auth.ADMIN_POLICY, created_at=now, updated_at=now
        ).save()
    if api_key:
        parsed = auth.parse_api_key(api_key)
        if parsed is None:
            raise ValueError("FLEETBOX_ADMIN_API_KEY must look like fbk_<16 chars>.<43 chars>")
        key_id, secret = parsed
        ApiKeyRecord(
            key_id=key_id,
            principal_id=ROOT_ID,
            secret_hash=auth.hash_secret(key_id, secret),
            name="admin (seeded)",
            created_at=now,
        ).save()
        return api_key
    key_id, text, digest = auth.new_api_key()
    ApiKeyRecord(key_id=key_id, principal_id=ROOT_ID, secret_hash=digest, name="admin (seeded)", created_at=now).save()
    return text


# ---------------------------------------------------------------- principals


def principal_view(rec: PrincipalRecord) -> dict[str, Any]:
    return {
        "principal_id": rec.principal_id,
        "name": rec.name,
        "kind": rec.kind,
        "policy": rec.policy,
        "application_id": rec.application_id,
        "created_at": int(rec.created_at),
        "updated_at": int(rec.updated_at),
    }


def create_principal(name: str, kind: str, policy: dict[str, Any] | None) -> dict[str, Any]:
    doc, _ = auth.parse_policy(policy if policy is not None else {"version": auth.POLICY_VERSION, "statement": []})
    now = clock.now_s()
    rec = PrincipalRecord(
        principal_id=ids.short_id("p-"), name=name, kind=kind, policy=doc, created_at=now, updated_at=now
    )
    rec.save(condition=PrincipalRecord.principal_id.does_not_exist())
    return principal_view(rec)


PRINCIPAL_ID_RE = re.compile(r"root|p-[a-z0-9]{12}")
APPLICATION_ID_RE = re.compile(r"app-[a-z0-9]{12}")
KEY_ID_RE = re.compile(r"[a-z0-9]{16}")


def get_principal(principal_id: str) -> PrincipalRecord:
    if not PRINCIPAL_ID_RE.fullmatch(principal_id or ""):
        raise errors.PRINCIPAL_NOT_EXIST(f"principal {principal_id} does not exist", "principal_id")
    try:
        return PrincipalRecord.get(principal_id)
    except DoesNotExist:
        raise errors.PRINCIPAL_NOT_EXIST(f"principal {principal_id} does not exist", "principal_id") from None


def delete_principal(principal_id: str) -> None:
    """Delete a principal and revoke its keys (they stop working on the next request: a key
    whose principal is gone is refused).  The root cannot be deleted; an application's principal
    goes with its application."""
    rec = get_principal(principal_id)
    if rec.kind == "root":
        raise errors.ROOT_PRINCIPAL("the root principal cannot be deleted", "principal_id")
    if rec.kind == "application":
        raise errors.APPLICATION_PRINCIPAL(
            "an application's principal is deleted with its application: DELETE /v1/applications/{id}", "principal_id"
        )
    rec.delete()
    _revoke_keys(principal_id)


def _revoke_keys(principal_id: str) -> None:
    """Delete the principal's API keys and cloud-API keys (SPEC §2, §14)."""
    last = None
    while True:
        res = ApiKeyRecord.by_principal.query(principal_id, last_evaluated_key=last, limit=100)
        for key in res:
            ApiKeyRecord(key_id=key.key_id).delete()
        last = res.last_evaluated_key
        if not last:
            break
    while True:
        pairs = CloudKeyRecord.by_principal.query(principal_id, last_evaluated_key=last, limit=100)
        for pair in pairs:
            CloudKeyRecord(secret_id=pair.secret_id).delete()
        last = pairs.last_evaluated_key
        if not last:
            return


def put_policy(principal_id: str, policy: Any) -> dict[str, Any]:
    rec = get_principal(principal_id)
    if rec.kind == "root":
        raise errors.ROOT_POLICY("the root principal's policy cannot change", "principal_id")
    if rec.kind == "application":
        raise errors.APPLICATION_POLICY(
            "an application's access follows its products; use PUT /v1/applications/{id}/products", "principal_id"
        )
    doc, _ = auth.parse_policy(policy, path="")
    rec.update(actions=[PrincipalRecord.policy.set(doc), PrincipalRecord.updated_at.set(clock.now_s())])
    return principal_view(rec)


# ------------------------------------------------------------------- API keys


def key_view(rec: ApiKeyRecord) -> dict[str, Any]:
    return {
        "key_id": rec.key_id,
        "principal_id": rec.principal_id,
        "name": rec.name,
        "platform": rec.platform,
        "created_at": int(rec.created_at),
    }


def create_key(principal_id: str, name: str, platform: str | None = None) -> dict[str, Any]:
    get_principal(principal_id)
    key_id, text, digest = auth.new_api_key()
    rec = ApiKeyRecord(
        key_id=key_id,
        principal_id=principal_id,
        secret_hash=digest,
        name=name,
        platform=platform,
        created_at=clock.now_s(),
    )
    try:
        rec.save(condition=ApiKeyRecord.key_id.does_not_exist())
    except PutError:  # 16 random chars colliding: astronomically unlikely; answer honestly
        raise errors.KEY_COLLISION("try again", None) from None
    view = key_view(rec)
    view["api_key"] = text
    return view


def list_keys(
    principal_id: str, limit: int, start: dict[str, Any] | None
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Keys of one principal, newest first (a GSI query)."""
    return page_by_principal(ApiKeyRecord.by_principal, "key_id", key_view, principal_id, limit, start)


def page_by_principal(
    index: Any, id_attr: str, view: Callable[[Any], dict[str, Any]], principal_id: str, limit: int, start: Any
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """One page of a principal's credentials through a ``principal-index`` (principal_id,
    created_at) GSI whose table is keyed by ``id_attr``, newest first."""
    expect_key(start, {id_attr: "S", "principal_id": "S", "created_at": "N"}, {"principal_id": principal_id})
    with checked_start(start):
        res = index.query(principal_id, limit=limit, last_evaluated_key=start, scan_index_forward=False)
        items = [view(r) for r in res]
    return items, res.last_evaluated_key


def get_key(key_id: str) -> ApiKeyRecord:
    if not KEY_ID_RE.fullmatch(key_id or ""):
        raise errors.API_KEY_NOT_EXIST(f"API key {key_id} does not exist", "key_id")
    try:
        rec = ApiKeyRecord.get(key_id)
    except DoesNotExist:
        rec = None
    if rec is None:
        raise errors.API_KEY_NOT_EXIST(f"API key {key_id} does not exist", "key_id")
    return rec


def delete_key(key_id: str) -> None:
    """Revocation is a delete: the key stops working on the next request."""
    get_key(key_id).delete()


# --------------------------------------------------------------- applications


#: what an application may name: its products and their devices — never the rules, streams,
#: dead letters or delivery logs under a product (``product/{pid}/rule/…``), which hold targets
APPLICATION_RESOURCES = ["product/??????????", "product/??????????/device/*"]


def _application_policy() -> dict[str, Any]:
    # the product restriction is applied by Principal.products; the policy says *what*.  App keys
    # ship inside mobile apps: secret-reading actions are refused to them by Principal.allows too.
    return {
        "version": auth.POLICY_VERSION,
        "statement": [
            {"effect": "allow", "action": list(APPLICATION_ACTIONS), "resource": APPLICATION_RESOURCES},
            {"effect": "deny", "action": [auth.qualify(a) for a in auth.SECRET_ACTIONS], "resource": ["*"]},
        ],
    }


def application_view(rec: ApplicationRecord, keys: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    view = {
        "application_id": rec.application_id,
        "name": rec.name,
        "remark": rec.remark,
        "products": list(rec.products or []),
        "principal_id": rec.principal_id,
        "created_at": int(rec.created_at),
        "updated_at": int(rec.updated_at),
    }
    if keys is not None:
        view["keys"] = keys
    return view


def _check_products(products: list[str]) -> None:
    for i, pid in enumerate(products):
        try:
            get_product(pid)
        except errors.FleetboxError:
            raise errors.PRODUCT_NOT_EXIST(f"products[{i}]: product {pid} does not exist", f"products[{i}]") from None


def create_application(name: str, remark: str, products: list[str]) -> dict[str, Any]:
    _check_products(products)
    now = clock.now_s()
    app_id = ids.short_id("app-")
    principal = PrincipalRecord(
        principal_id=ids.short_id("p-"),
        name=f"application {name}",
        kind="application",
        policy=_application_policy(),
        application_id=app_id,
        created_at=now,
        updated_at=now,
    )
    principal.save()
    rec = ApplicationRecord(
        application_id=app_id,
        name=name,
        remark=remark,
        products=products,
        principal_id=principal.principal_id,
        created_at=now,
        updated_at=now,
    )
    rec.save()
    keys = [create_key(principal.principal_id, f"{name} {platform}", platform) for platform in APP_PLATFORMS]
    return application_view(rec, keys)


def get_application(app_id: str) -> ApplicationRecord:
    if not APPLICATION_ID_RE.fullmatch(app_id or ""):
        raise errors.APPLICATION_NOT_EXIST(f"application {app_id} does not exist", "application_id")
    try:
        return ApplicationRecord.get(app_id)
    except DoesNotExist:
        raise errors.APPLICATION_NOT_EXIST(f"application {app_id} does not exist", "application_id") from None


def describe_application(app_id: str) -> dict[str, Any]:
    rec = get_application(app_id)
    keys, _ = list_keys(rec.principal_id, 100, None)
    return application_view(rec, keys)


def delete_application(app_id: str) -> None:
    """Delete an application, its principal and its keys."""
    rec = get_application(app_id)
    rec.delete()
    try:
        PrincipalRecord.get(rec.principal_id).delete()
    except DoesNotExist:
        pass
    _revoke_keys(rec.principal_id)


def set_application_products(app_id: str, products: list[str]) -> dict[str, Any]:
    rec = get_application(app_id)
    _check_products(products)
    rec.update(actions=[ApplicationRecord.products.set(products), ApplicationRecord.updated_at.set(clock.now_s())])
    return describe_application(app_id)
