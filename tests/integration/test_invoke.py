"""``api.invoke``: the chat commands and the cloud-API endpoint call routes in process; the same
decisions, validation and audit as the HTTP route must hold (SPEC §2: one policy engine)."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.core import errors
from chalicelib.handlers import api as kit
from chalicelib.services import access
from tests.helpers import partner_policy
from tests.integration.helpers import PRODUCT, Api


def _principal(policy: dict[str, Any]) -> Any:
    made = access.create_principal("operator", "chat", policy)
    principal = access.principal_by_id(made["principal_id"], via="test")
    assert principal is not None
    return principal


def test_invoke_decides_validates_and_audits_like_http(api: Api, product: dict[str, Any]) -> None:
    pid = product["product_id"]
    other = api.post("/v1/products", {**PRODUCT, "name": "other product"}).json["product_id"]
    partner = _principal(partner_policy(pid))

    # allowed on its own product: the handler's result, as HTTP would render it
    made = kit.invoke(
        "POST",
        "/v1/products/{product_id}/devices",
        partner,
        params={"product_id": pid},
        body={"device_name": "d1"},
        channel="chat:t",
    )
    assert made.status == 201 and made.body["device_name"] == "d1" and made.resource == f"product/{pid}"
    assert api.get(f"/v1/products/{pid}/devices/d1").status_code == 200

    # refused on another product, with the route's own code
    with pytest.raises(errors.FleetboxError) as denied:
        kit.invoke(
            "POST",
            "/v1/products/{product_id}/devices",
            partner,
            params={"product_id": other},
            body={"device_name": "d1"},
            channel="chat:t",
        )
    assert denied.value.status == 403 and denied.value.code == "UnauthorizedOperation"

    # validated by the route's models: the field at fault is named
    with pytest.raises(errors.FleetboxError) as bad:
        kit.invoke(
            "POST",
            "/v1/products/{product_id}/devices",
            partner,
            params={"product_id": pid},
            body={"device_name": "no spaces"},
            channel="chat:t",
        )
    assert bad.value.status == 400 and bad.value.field == "device_name"

    # lists decide per item: the partner's product list shows its product only
    listed = kit.invoke("GET", "/v1/products", partner, query={"limit": 100}, channel="chat:t")
    assert [p["product_id"] for p in listed.body["items"]] == [pid]

    # typed query values are validated like their HTTP text
    with pytest.raises(errors.FleetboxError) as limit:
        kit.invoke("GET", "/v1/products", partner, query={"limit": 1000}, channel="chat:t")
    assert limit.value.field == "limit"

    # every mutating call is audited with where it came from, allowed or refused
    entries = api.get("/v1/audit?action=iotexplorer:CreateDevice").json["items"]
    seen = {(e["principal_id"], e["result"], e["channel"]) for e in entries}
    assert (partner.principal_id, "Success", "chat:t") in seen
    assert (partner.principal_id, "UnauthorizedOperation", "chat:t") in seen


def test_invoke_owner_routes_decide_on_the_stored_item(api: Api, product: dict[str, Any]) -> None:
    pid = product["product_id"]
    other = api.post("/v1/products", {**PRODUCT, "name": "other product"}).json["product_id"]
    rule = {"name": "r_other", "sql": f"SELECT * FROM '$thing/up/property/{other}/+'", "actions": []}
    assert api.post("/v1/rules", rule).status_code == 201
    partner = _principal(partner_policy(pid))
    with pytest.raises(errors.FleetboxError) as denied:
        kit.invoke("GET", "/v1/rules/{name}", partner, params={"name": "r_other"}, channel="chat:t")
    assert denied.value.status == 403
    listed = kit.invoke("GET", "/v1/rules", partner, channel="chat:t")
    assert listed.body["items"] == []


def test_invoke_knows_only_registered_routes(aws: None) -> None:
    root = access.principal_by_id(access.ROOT_ID)
    with pytest.raises(LookupError):
        kit.invoke("GET", "/v1/nothing", root, channel="chat:t")  # type: ignore[arg-type]


def test_check_decides_validates_and_prechecks_without_changing_or_auditing(api: Api, product: dict[str, Any]) -> None:
    pid = product["product_id"]  # not released: a batch of it is refused by the service
    other = api.post("/v1/products", {**PRODUCT, "name": "other product"}).json["product_id"]
    api.post(f"/v1/products/{other}/publish")
    partner = _principal(partner_policy(pid))
    root = access.principal_by_id("root", via="test")
    assert root is not None
    batch = {"product_id": other, "burn_method": "per_device_secret", "generation": "auto", "quantity": 3}

    def refusal(principal: Any, body: dict[str, Any]) -> tuple[int, str, str | None]:
        with pytest.raises(errors.FleetboxError) as err:
            kit.check("POST", "/v1/batches", principal, params={}, body=body)
        return err.value.status, err.value.code, err.value.field

    assert refusal(partner, batch)[:2] == (403, "UnauthorizedOperation")  # the policy, first
    assert refusal(root, {**batch, "quantity": 0})[2] == "quantity"  # the route's model
    assert refusal(root, {**batch, "product_id": pid}) == (
        409,
        "UnsupportedOperation.ProductNotReleased",
        "product_id",
    )  # the service's precheck
    kit.check("POST", "/v1/batches", root, params={}, body=batch)  # would be taken
    # owner routes decide on the stored item; a route without a precheck still validates
    with pytest.raises(errors.FleetboxError) as missing:
        kit.check("DELETE", "/v1/products/{product_id}/devices/{device_name}", root,
                  params={"product_id": pid, "device_name": "ghost"})  # fmt: skip
    assert missing.value.code == "ResourceNotFound.DeviceNotExist"
    # nothing ran and nothing was audited
    assert api.get(f"/v1/products/{other}/batches").json["items"] == []
    assert api.get("/v1/audit?action=iotexplorer:CreateBatchProduction").json["items"] == []
