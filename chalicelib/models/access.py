"""Principals, API keys and applications."""

from __future__ import annotations

from pynamodb.attributes import ListAttribute, NumberAttribute, UnicodeAttribute
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from .base import JSONText, meta


class PrincipalRecord(Model):
    Meta = meta("principals")

    principal_id = UnicodeAttribute(hash_key=True)
    name = UnicodeAttribute()
    kind = UnicodeAttribute()  # root | user | application | chat
    policy = JSONText()
    application_id = UnicodeAttribute(null=True)
    created_at = NumberAttribute()
    updated_at = NumberAttribute()


class KeysByPrincipal(GlobalSecondaryIndex["ApiKeyRecord"]):
    class Meta:
        index_name = "principal-index"
        projection = AllProjection()

    principal_id = UnicodeAttribute(hash_key=True)
    created_at = NumberAttribute(range_key=True)


class ApiKeyRecord(Model):
    Meta = meta("api_keys")

    key_id = UnicodeAttribute(hash_key=True)
    principal_id = UnicodeAttribute()
    secret_hash = UnicodeAttribute()
    name = UnicodeAttribute(default="")
    platform = UnicodeAttribute(null=True)  # android | ios | miniprogram for application keys
    created_at = NumberAttribute()

    by_principal = KeysByPrincipal()


class ApplicationRecord(Model):
    Meta = meta("applications")

    application_id = UnicodeAttribute(hash_key=True)
    name = UnicodeAttribute()
    remark = UnicodeAttribute(default="")
    products = ListAttribute[str](of=UnicodeAttribute, default=list)
    principal_id = UnicodeAttribute()
    created_at = NumberAttribute()
    updated_at = NumberAttribute()


class CloudKeysByPrincipal(GlobalSecondaryIndex["CloudKeyRecord"]):
    class Meta:
        index_name = "principal-index"
        projection = AllProjection()

    principal_id = UnicodeAttribute(hash_key=True)
    created_at = NumberAttribute(range_key=True)


class CloudKeyRecord(Model):
    """A cloud-API SecretId/SecretKey pair (SPEC §14).  TC3 signs with the raw SecretKey, so it is
    kept sealed (services/sealing.py), never hashed and never in the clear."""

    Meta = meta("cloud_keys")

    secret_id = UnicodeAttribute(hash_key=True)
    principal_id = UnicodeAttribute()
    sealed_key = UnicodeAttribute()
    name = UnicodeAttribute(default="")
    created_at = NumberAttribute()

    by_principal = CloudKeysByPrincipal()
