"""Cloud-API product actions (SPEC §3, §4, §6.3) onto the /v1/products routes, with Tencent's fields.

Field translation (Tencent ↔ Fleetbox):

* ``ProductType`` 0 ↔ device (a ``NetType`` of ``sub_*`` makes it a subdevice), 5 ↔ gateway;
* ``NetType`` wifi, cellular, 5g, ble, lorawan, ethernet ↔ the same comm method, ``else`` ↔ other,
  ``sub_zigbee``/``sub_ble``/``sub_433mhz``/``sub_else`` ↔ subdevice over zigbee/ble/433/custom
  (``wifi-ble`` and ``wifi-ethernet`` have no Fleetbox method and are refused);
* ``EncryptionType`` "1" ↔ certificate, "2" ↔ key (TID modes are refused);
* ``DataProtocol`` 1 ↔ thing_model, 2 ↔ custom; ``DevStatus`` dev ↔ developing, released;
* ``BindStrategy`` 1 ↔ preemptive (the newer binding wins), 2 ↔ exclusive;
* ``CategoryId`` 1 ↔ the ``custom`` category; Fleetbox categories are paths (smart-life/…), not
  Tencent's numeric templates, so another id is refused and a path category answers no CategoryId;
* ``ProjectId``: a deployment is one project; accepted on input, never stored.
"""

from __future__ import annotations

import json
from typing import Any

from ...core import errors
from ...core.config import settings
from ...core.schema import Integer, IntEnum, String
from .. import products as product_routes
from .registry import Invoker, Req, action

#: the route module these actions call (imported first so its routes are registered)
ROUTES_FROM = product_routes

PRODUCT_ID = String(required=True, pattern=r"[A-Z0-9]{10}", code=errors.PRODUCT_ID_INVALID, rule="must be a ProductId")
PROJECT_ID = String(max_len=64, code=errors.INVALID_PARAMETER, description="accepted; a deployment is one project")
OFFSET = Integer(minimum=0, default=0, code=errors.INVALID_PARAMETER)


def limit_field(default: int, maximum: int) -> Integer:
    return Integer(minimum=1, maximum=maximum, default=default, code=errors.LIMIT_INVALID)


_NET_TYPES = {
    "wifi": ("wifi", None),
    "cellular": ("cellular", None),
    "5g": ("5g", None),
    "ble": ("ble", None),
    "lorawan": ("lorawan", None),
    "ethernet": ("ethernet", None),
    "else": ("other", None),
    "sub_zigbee": ("other", "zigbee"),
    "sub_ble": ("ble", "ble"),
    "sub_433mhz": ("other", "433"),
    "sub_else": ("other", "custom"),
}
_SUB_NET = {proto: net for net, (_, proto) in _NET_TYPES.items() if proto}
_COMM_NET = {comm: net for net, (comm, proto) in _NET_TYPES.items() if proto is None}
_AUTH = {"1": "certificate", "2": "key"}
_PROTOCOL = {1: "thing_model", 2: "custom"}
_STATUS = {"dev": "developing", "released": "released"}
_BIND = {1: "preemptive", 2: "exclusive"}
_BIND_BACK = {v: k for k, v in _BIND.items()}

#: route fields under Tencent's names (errors name the parameter the caller sent)
PRODUCT_FIELDS = {
    "name": "ProductName",
    "description": "ProductDesc",
    "category": "CategoryId",
    "device_type": "ProductType",
    "subdevice_protocol": "NetType",
    "comm_method": "NetType",
    "auth_type": "EncryptionType",
    "data_protocol": "DataProtocol",
    "binding_strategy": "BindStrategy",
    "status": "DevStatus",
}


def product_entry(p: dict[str, Any]) -> dict[str, Any]:
    """A Fleetbox product as Tencent's ``ProductEntry``."""
    if p["device_type"] == "subdevice":
        net_type = _SUB_NET.get(p.get("subdevice_protocol") or "custom", "sub_else")
    else:
        net_type = _COMM_NET.get(p["comm_method"], "else")
    return {
        "ProductId": p["product_id"],
        "ProductName": p["name"],
        "CategoryId": 1 if p["category"] == "custom" else None,
        "EncryptionType": "1" if p["auth_type"] == "certificate" else "2",
        "NetType": net_type,
        "DataProtocol": 1 if p["data_protocol"] == "thing_model" else 2,
        "ProductDesc": p.get("description") or "",
        "DevStatus": "released" if p["status"] == "released" else "dev",
        "CreateTime": p["created_at"],
        "UpdateTime": p["updated_at"],
        "Region": settings().region,
        "ProductType": 5 if p["device_type"] == "gateway" else 0,
        "BindStrategy": _BIND_BACK.get(p.get("binding_strategy") or "preemptive", 1),
        "DeviceCount": p.get("device_count", 0),
    }


def _create_body(req: Req) -> dict[str, Any]:
    net = _NET_TYPES.get(req["NetType"])
    if net is None:
        raise errors.COMM_METHOD_INVALID(
            f"NetType {req['NetType']} has no Fleetbox connection method; use one of {', '.join(_NET_TYPES)}", "NetType"
        )
    comm, sub_protocol = net
    product_type = req.get("ProductType", 0)
    if sub_protocol is not None and product_type != 0:
        raise errors.DEVICE_TYPE_INVALID("a sub_* NetType is a subdevice product: ProductType must be 0", "ProductType")
    auth = _AUTH.get(req["EncryptionType"])
    if auth is None:
        raise errors.AUTH_TYPE_INVALID("EncryptionType must be 1 (certificate) or 2 (key)", "EncryptionType")
    if req["CategoryId"] != 1:
        raise errors.CATEGORY_INVALID(
            "CategoryId must be 1 (custom): Fleetbox categories are paths set through the HTTP API", "CategoryId"
        )
    body: dict[str, Any] = {
        "name": req["ProductName"],
        "category": "custom",
        "device_type": "subdevice" if sub_protocol else ("gateway" if product_type == 5 else "device"),
        "comm_method": comm,
        "auth_type": auth,
        "data_protocol": _PROTOCOL[req["DataProtocol"]],
    }
    if sub_protocol:
        body["subdevice_protocol"] = sub_protocol
    if req.get("ProductDesc"):
        body["description"] = req["ProductDesc"]
    return body


@action(
    "CreateStudioProduct",
    {
        "ProductName": String(required=True),
        "CategoryId": Integer(required=True, code=errors.CATEGORY_INVALID),
        "ProductType": IntEnum((0, 5), required=True, code=errors.DEVICE_TYPE_INVALID),
        "EncryptionType": String(required=True, code=errors.AUTH_TYPE_INVALID),
        "NetType": String(required=True, code=errors.COMM_METHOD_INVALID),
        "DataProtocol": IntEnum((1, 2), required=True, code=errors.DATA_PROTOCOL_INVALID),
        "ProductDesc": String(),
        "ProjectId": PROJECT_ID,
    },
    routes=["POST /v1/products"],
    summary="Create a product",
    fields=PRODUCT_FIELDS,
)
def create_studio_product(req: Req, call: Invoker) -> dict[str, Any]:
    return {"Product": product_entry(call("POST /v1/products", body=_create_body(req)))}


@action(
    "DescribeStudioProduct",
    {"ProductId": PRODUCT_ID},
    routes=["GET /v1/products/{product_id}"],
    summary="One product",
    fields=PRODUCT_FIELDS,
)
def describe_studio_product(req: Req, call: Invoker) -> dict[str, Any]:
    return {"Product": product_entry(call("GET /v1/products/{product_id}", params={"product_id": req["ProductId"]}))}


@action(
    "GetStudioProductList",
    {
        "ProjectId": PROJECT_ID,
        "DevStatus": String(code=errors.STATUS_INVALID),
        "Offset": OFFSET,
        "Limit": limit_field(10, 100),
    },
    routes=["GET /v1/products"],
    summary="The products the caller may see, newest first (Offset/Limit over the route's pages)",
    fields=PRODUCT_FIELDS,
)
def get_studio_product_list(req: Req, call: Invoker) -> dict[str, Any]:
    query: dict[str, Any] = {}
    status = req.get("DevStatus")
    if status and status != "all":
        if status not in _STATUS:
            raise errors.STATUS_INVALID("DevStatus must be all, dev or released", "DevStatus")
        query["status"] = _STATUS[status]
    items, total = call.page("GET /v1/products", query=query, offset=req["Offset"], limit=req["Limit"])
    return {"Products": [product_entry(p) for p in items], "Total": total}


@action(
    "ModifyStudioProduct",
    {
        "ProductId": PRODUCT_ID,
        "ProductName": String(),
        "ProductDesc": String(),
        "BindStrategy": Integer(code=errors.BINDING_STRATEGY_INVALID),
    },
    routes=["PATCH /v1/products/{product_id}"],
    summary="Rename, describe, or change the binding strategy of a product",
    fields=PRODUCT_FIELDS,
)
def modify_studio_product(req: Req, call: Invoker) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if "ProductName" in req:
        body["name"] = req["ProductName"]
    if "ProductDesc" in req:
        body["description"] = req["ProductDesc"]
    # Tencent: "1 or 2; any other value changes nothing"
    if req.get("BindStrategy") in _BIND:
        body["binding_strategy"] = _BIND[req["BindStrategy"]]
    made = call("PATCH /v1/products/{product_id}", params={"product_id": req["ProductId"]}, body=body)
    return {"Product": product_entry(made)}


@action(
    "DeleteStudioProduct",
    {"ProductId": PRODUCT_ID},
    routes=["DELETE /v1/products/{product_id}"],
    summary="Delete a product without devices",
    fields=PRODUCT_FIELDS,
)
def delete_studio_product(req: Req, call: Invoker) -> dict[str, Any]:
    call("DELETE /v1/products/{product_id}", params={"product_id": req["ProductId"]})
    return {}


@action(
    "ReleaseStudioProduct",
    {"ProductId": PRODUCT_ID, "DevStatus": String(default="released", code=errors.STATUS_INVALID)},
    routes=["POST /v1/products/{product_id}/publish", "POST /v1/products/{product_id}/unpublish"],
    summary="Release a product (DevStatus released), or take it back to development (dev)",
    fields=PRODUCT_FIELDS,
)
def release_studio_product(req: Req, call: Invoker) -> dict[str, Any]:
    status = req["DevStatus"]
    if status not in _STATUS:
        raise errors.STATUS_INVALID("DevStatus must be released or dev", "DevStatus")
    verb = "publish" if status == "released" else "unpublish"
    call(f"POST /v1/products/{{product_id}}/{verb}", params={"product_id": req["ProductId"]})
    return {}


@action(
    "DescribeModelDefinition",
    {"ProductId": PRODUCT_ID},
    routes=["GET /v1/products/{product_id}", "GET /v1/products/{product_id}/thing-model"],
    summary="The product's thing model as Tencent's ModelDefine JSON text",
    fields=PRODUCT_FIELDS,
)
def describe_model_definition(req: Req, call: Invoker) -> dict[str, Any]:
    params = {"product_id": req["ProductId"]}
    model = call("GET /v1/products/{product_id}/thing-model", params=params)
    product = call("GET /v1/products/{product_id}", params=params)
    return {
        "Model": {
            "ProductId": req["ProductId"],
            "ModelDefine": json.dumps(model, ensure_ascii=False, separators=(",", ":")),
            "CreateTime": product["created_at"],
            "UpdateTime": product["updated_at"],
        }
    }


@action(
    "ModifyModelDefinition",
    {"ProductId": PRODUCT_ID, "ModelSchema": String(required=True, code=errors.MODEL_DEFINE_INVALID)},
    routes=["PUT /v1/products/{product_id}/thing-model"],
    summary="Import a thing model (ModelSchema: the thing-model JSON text)",
    fields={"product_id": "ProductId", "data_protocol": "ProductId", "status": "ProductId", "*": "ModelSchema"},
)
def modify_model_definition(req: Req, call: Invoker) -> dict[str, Any]:
    try:
        doc = json.loads(req["ModelSchema"])
    except ValueError:
        raise errors.MODEL_DEFINE_INVALID("ModelSchema must be the thing-model JSON text", "ModelSchema") from None
    if not isinstance(doc, dict):
        raise errors.MODEL_DEFINE_INVALID("ModelSchema must be a JSON object", "ModelSchema")
    call("PUT /v1/products/{product_id}/thing-model", params={"product_id": req["ProductId"]}, body=doc)
    return {}


def _registration(view: dict[str, Any]) -> dict[str, Any]:
    return {
        "RegisterType": view["register_type"],
        "ProductSecret": view.get("product_secret"),
        "RegisterLimit": view["register_limit"],
    }


@action(
    "DescribeProductDynamicRegister",
    {"ProductId": PRODUCT_ID},
    routes=["GET /v1/products/{product_id}/dynamic-registration"],
    summary="Dynamic-registration settings; ProductSecret only for callers allowed DescribeProductSecret",
    fields=PRODUCT_FIELDS,
)
def describe_dynamic_register(req: Req, call: Invoker) -> dict[str, Any]:
    pid = req["ProductId"]
    # the secret is asked for only by callers the route would give it to (SPEC §2)
    include = call.principal.allows("DescribeProductSecret", f"product/{pid}")
    view = call(
        "GET /v1/products/{product_id}/dynamic-registration",
        params={"product_id": pid},
        query={"include_secret": include},
    )
    return _registration(view)


@action(
    "ModifyProductDynamicRegister",
    {
        "ProductId": PRODUCT_ID,
        "RegisterType": IntEnum((0, 1, 2), required=True, code=errors.REGISTER_TYPE_INVALID),
        "RegisterLimit": Integer(code=errors.REGISTER_LIMIT_INVALID),
    },
    routes=["PUT /v1/products/{product_id}/dynamic-registration"],
    summary="Set dynamic registration; the ProductSecret is answered when this call made it",
    fields=PRODUCT_FIELDS,
)
def modify_dynamic_register(req: Req, call: Invoker) -> dict[str, Any]:
    body: dict[str, Any] = {"register_type": req["RegisterType"]}
    if "RegisterLimit" in req:
        body["register_limit"] = req["RegisterLimit"]
    view = call(
        "PUT /v1/products/{product_id}/dynamic-registration", params={"product_id": req["ProductId"]}, body=body
    )
    return _registration(view)
