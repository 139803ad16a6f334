"""Cloud-API SecretId/SecretKey pairs (SPEC §2, §14): issued per principal, the SecretKey shown
once and kept sealed (services/sealing.py: TC3 needs the raw key back, so it cannot be hashed)."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

from pynamodb.exceptions import DoesNotExist, PutError

from ..core import clock, errors
from ..models.access import CloudKeyRecord
from . import nonces, sealing
from .access import get_principal, page_by_principal

#: a form-signed (HmacSHA1/256) request's Nonce, claimed per SecretId for the clock window
NONCE_PK = "cloudapi-nonce/{}"
NONCE_RE = re.compile(r"[A-Za-z0-9_\-]{1,64}")
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
#: Tencent's shapes: ``AKID`` + 32 characters, and a 32-character SecretKey
SECRET_ID_RE = re.compile(r"AKID[A-Za-z0-9]{32}")


def _random(n: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


def key_view(rec: CloudKeyRecord) -> dict[str, Any]:
    return {
        "secret_id": rec.secret_id,
        "principal_id": rec.principal_id,
        "name": rec.name,
        "secret_set": True,
        "created_at": int(rec.created_at),
    }


def create_key(principal_id: str, name: str) -> dict[str, Any]:
    """Issue a pair for ``principal_id``; the only answer that ever carries the SecretKey."""
    principal = get_principal(principal_id)
    if principal.kind == "application":
        # application credentials ship inside apps; they get API keys, never a signing secret
        raise errors.APPLICATION_PRINCIPAL(
            "an application's principal cannot hold cloud-API keys; issue them to a user principal", "principal_id"
        )
    secret_id, secret_key = "AKID" + _random(32), _random(32)
    rec = CloudKeyRecord(
        secret_id=secret_id,
        principal_id=principal_id,
        sealed_key=sealing.seal(secret_key, secret_id),
        name=name,
        created_at=clock.now_s(),
    )
    try:
        rec.save(condition=CloudKeyRecord.secret_id.does_not_exist())
    except PutError:  # 190 random bits colliding: astronomically unlikely; answer honestly
        raise errors.KEY_COLLISION("try again", None) from None
    view = key_view(rec)
    view["secret_key"] = secret_key
    return view


def list_keys(
    principal_id: str, limit: int, start: dict[str, Any] | None
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """One principal's pairs, newest first; SecretKeys never shown."""
    return page_by_principal(CloudKeyRecord.by_principal, "secret_id", key_view, principal_id, limit, start)


def _get(secret_id: str) -> CloudKeyRecord | None:
    if not SECRET_ID_RE.fullmatch(secret_id or ""):
        return None
    try:
        return CloudKeyRecord.get(secret_id, consistent_read=True)
    except DoesNotExist:
        return None


def get_key(secret_id: str) -> CloudKeyRecord:
    rec = _get(secret_id)
    if rec is None:
        raise errors.CLOUD_KEY_NOT_EXIST(f"cloud-API key {secret_id} does not exist", "secret_id")
    return rec


def delete_key(secret_id: str) -> None:
    """Revocation is a delete: the SecretId is unknown on the next request."""
    get_key(secret_id).delete()


@dataclass(frozen=True)
class SigningKey:
    """What the endpoint needs to check a signature: whose key it is, and the key itself."""

    secret_id: str
    principal_id: str
    secret_key: str

    def __repr__(self) -> str:  # never print the key
        return f"SigningKey({self.secret_id!r}, principal={self.principal_id!r})"


def signing_key(secret_id: str) -> SigningKey | None:
    """The pair named by ``secret_id``, unsealed; None when there is none."""
    rec = _get(secret_id)
    if rec is None:
        return None
    return SigningKey(rec.secret_id, rec.principal_id, sealing.unseal(rec.sealed_key, rec.secret_id))


def claim_nonce(secret_id: str, nonce: str, now_s: int, window_s: int) -> None:
    """Refuse a form-signed request whose Nonce this SecretId already used inside the window
    (TC3 carries no nonce: its replay window is the timestamp's alone)."""
    if not NONCE_RE.fullmatch(nonce):
        raise errors.INVALID_PARAMETER("Nonce must be 1-64 letters, digits, _ or -", "Nonce")
    if not nonces.claim(NONCE_PK.format(secret_id), nonce, now_s, window_s):
        raise errors.NONCE_REUSED(f"Nonce {nonce} was already used within the last {window_s} seconds", "Nonce")
