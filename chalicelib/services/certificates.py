"""The account's device CA, created on first use, and device certificates."""

from __future__ import annotations

from pynamodb.exceptions import DoesNotExist, PutError

from ..core import clock
from ..models.certificates import CertificateRecord
from ..protocol import certs


def device_ca() -> CertificateRecord:
    """The CA that signs device certificates; two first callers racing agree on one."""
    try:
        return CertificateRecord.get("ca", "device", consistent_read=True)
    except DoesNotExist:
        pass
    cert_pem, key_pem = certs.new_ca()
    rec = CertificateRecord(pk="ca", sk="device", cert_pem=cert_pem, key_pem=key_pem, created_at=clock.now_s())
    try:
        rec.save(condition=CertificateRecord.pk.does_not_exist())
        return rec
    except PutError:
        return CertificateRecord.get("ca", "device", consistent_read=True)


def issue_for_device(product_id: str, device_name: str) -> tuple[str, str]:
    ca = device_ca()
    return certs.issue_device_certificate(ca.cert_pem, ca.key_pem, f"{product_id}{device_name}")
