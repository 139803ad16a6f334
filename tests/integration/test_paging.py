"""Paging tokens: every page is new, and a forged token is a 400, never a 5xx."""

import base64
import json

FORGED = base64.urlsafe_b64encode(json.dumps({"a": {"S": "x"}}).encode()).decode().rstrip("=")


def test_audit_pages_cover_every_record_once(api, product):
    # Given six audited calls (the product creation and five edits)
    for i in range(5):
        assert api.patch(f"/v1/products/{product['product_id']}", {"description": f"d{i}"}).status_code == 200
    # When the audit log is read two records at a time
    seen, resp = [], api.get("/v1/audit?limit=2")
    while True:
        assert resp.status_code == 200, resp.body
        seen += [x["request_id"] for x in resp.json["items"]]
        if not resp.json["next"]:
            break
        resp = api.get(f"/v1/audit?limit=2&next={resp.json['next']}")
    # Then each record appears exactly once
    assert len(seen) == 6 and len(set(seen)) == 6


def test_forged_tokens_are_refused_on_every_listing(api, product):
    pid = product["product_id"]
    for path in (
        "/v1/audit",
        "/v1/products",
        f"/v1/products/{pid}/devices",
        f"/v1/products/{pid}/devices?status=online",
        "/v1/keys",
        "/v1/audit",
    ):
        sep = "&" if "?" in path else "?"
        for token in (FORGED, "not-base64!", "e30"):
            resp = api.get(f"{path}{sep}next={token}")
            assert resp.status_code == 400, (path, token, resp.body)
            assert resp.json["error"]["code"] == "InvalidParameterValue.NextTokenInvalid"
            assert resp.json["error"]["field"] == "next"


def test_a_device_token_of_another_product_is_refused(api, product):
    pid = product["product_id"]
    for i in range(3):
        api.post(f"/v1/products/{pid}/devices", {"device_name": f"d{i}"})
    page = api.get(f"/v1/products/{pid}/devices?limit=1").json
    other = api.post(
        "/v1/products",
        {
            **{k: product[k] for k in ("category", "device_type", "comm_method", "auth_type", "data_protocol")},
            "name": "Other",
        },
    ).json["product_id"]
    resp = api.get(f"/v1/products/{other}/devices?next={page['next']}")
    assert resp.status_code == 400
