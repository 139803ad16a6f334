def test_create_and_get_product(api, product):
    got = api.get(f"/v1/products/{product['product_id']}")
    assert got.status_code == 200
    assert got.json["name"] == "Lamp"
    assert got.headers["x-request-id"]
