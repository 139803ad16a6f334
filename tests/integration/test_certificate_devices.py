"""Certificate-authenticated products: each device gets an X.509 certificate and key (SPEC §6.2)."""

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from chalicelib.services import certificates


def test_a_certificate_device_gets_a_key_and_a_certificate_signed_by_the_account_ca(api):
    # Given a certificate product
    pid = api.post(
        "/v1/products",
        {
            "name": "Cam",
            "category": "custom",
            "device_type": "device",
            "comm_method": "wifi",
            "auth_type": "certificate",
            "data_protocol": "thing_model",
        },
    ).json["product_id"]
    # When a device is created
    created = api.post(f"/v1/products/{pid}/devices", {"device_name": "cam-1"})
    assert created.status_code == 201, created.body
    body = created.json
    # Then it has a certificate whose subject is its ClientId, signed by the account CA, and its key
    assert "secret" not in body
    cert = x509.load_pem_x509_certificate(body["certificate"].encode())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == f"{pid}cam-1"
    ca = x509.load_pem_x509_certificate(certificates.device_ca().cert_pem.encode())
    cert.verify_directly_issued_by(ca)
    key = serialization.load_pem_private_key(body["private_key"].encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()
    # and the key is only shown again on request
    plain = api.get(f"/v1/products/{pid}/devices/cam-1").json
    assert "private_key" not in plain and plain["certificate"] == body["certificate"]
    again = api.get(f"/v1/products/{pid}/devices/cam-1?include_secret=true").json
    assert again["private_key"] == body["private_key"]
    # and a second device is signed by the same CA
    other = api.post(f"/v1/products/{pid}/devices", {"device_name": "cam-2"}).json
    x509.load_pem_x509_certificate(other["certificate"].encode()).verify_directly_issued_by(ca)


def test_a_certificate_product_refuses_a_supplied_secret(api):
    pid = api.post(
        "/v1/products",
        {
            "name": "Cam",
            "category": "custom",
            "device_type": "device",
            "comm_method": "wifi",
            "auth_type": "certificate",
            "data_protocol": "thing_model",
        },
    ).json["product_id"]
    resp = api.post(f"/v1/products/{pid}/devices", {"device_name": "cam-1", "secret": "iSfPAe3bXNYsOKzv9/8Qmw=="})
    assert resp.status_code == 400
    assert resp.json["error"]["code"] == "InvalidParameterValue.DeviceSecretInvalid"
    assert resp.json["error"]["field"] == "secret"
    assert api.get(f"/v1/products/{pid}/devices/cam-1").status_code == 404
