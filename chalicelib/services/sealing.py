"""The one seal/unseal port for secrets that must be kept recoverable (SPEC §15: encrypted at rest).

Most secrets are stored hashed; a cloud-API SecretKey cannot be (TC3 signs with the raw key), so
it is sealed with envelope encryption: every seal draws a fresh AES-256 data key, encrypts the
secret with AES-GCM under it (the record's ``context`` — e.g. the SecretId — is the associated
data, so a sealed value moved to another record does not open), and stores the data key wrapped:

* on AWS by the KMS key ``FLEETBOX_SEAL_KMS_KEY_ID`` (``GenerateDataKey``/``Decrypt`` with the
  same context as KMS encryption context; infra/aws/resources.yaml declares the key);
* locally by the master key ``FLEETBOX_SEAL_KEY`` (base64, 32 bytes; the local stack keeps it in
  its state dir), AES-GCM-wrapped.

The stored text is ``fbs1.<kms|local>.<wrapped key>.<nonce>.<ciphertext>`` (URL-safe base64
parts).  With neither key configured sealing refuses (an InternalError naming the setting), so
a secret is never stored in the clear.
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import Any

from botocore.exceptions import ClientError

from ..core import errors
from ..core.config import settings
from ..core.observability import logger

PREFIX = "fbs1"
_clients: dict[str, Any] = {}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _kms() -> Any:
    client = _clients.get("kms")
    if client is None:
        import boto3

        client = _clients["kms"] = boto3.client("kms", region_name=settings().region)
    return client


def forget() -> None:
    """Drop the cached KMS client (tests that switch accounts or settings)."""
    _clients.clear()


def _master_key() -> bytes:
    text = settings().seal_key
    if not text:
        logger.error("no seal key: set FLEETBOX_SEAL_KMS_KEY_ID (AWS) or FLEETBOX_SEAL_KEY (local)")
        raise errors.internal()
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        logger.error("FLEETBOX_SEAL_KEY must be 32 bytes, base64")
        raise errors.internal()
    return key


def seal(plaintext: str, context: str) -> str:
    """Encrypt ``plaintext`` for storage in the record named by ``context``."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    kms_key = settings().seal_kms_key_id
    if kms_key:
        made = _kms().generate_data_key(KeyId=kms_key, KeySpec="AES_256", EncryptionContext={"record": context})
        data_key, wrapped, kind = made["Plaintext"], made["CiphertextBlob"], "kms"
    else:
        data_key = AESGCM.generate_key(bit_length=256)
        wrap_nonce = os.urandom(12)
        wrapped = wrap_nonce + AESGCM(_master_key()).encrypt(wrap_nonce, data_key, b"fleetbox-seal:" + context.encode())
        kind = "local"
    nonce = os.urandom(12)
    sealed = AESGCM(data_key).encrypt(nonce, plaintext.encode("utf-8"), context.encode("utf-8"))
    return ".".join([PREFIX, kind, _b64(wrapped), _b64(nonce), _b64(sealed)])


def unseal(stored: str, context: str) -> str:
    """The plaintext :func:`seal` stored for ``context``; InternalError if it does not open."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        prefix, kind, wrapped_t, nonce_t, sealed_t = stored.split(".")
        if prefix != PREFIX or kind not in ("kms", "local"):
            raise ValueError("not a sealed value")
        wrapped, nonce, sealed = _unb64(wrapped_t), _unb64(nonce_t), _unb64(sealed_t)
        if kind == "kms":
            data_key = _kms().decrypt(CiphertextBlob=wrapped, EncryptionContext={"record": context})["Plaintext"]
        else:
            data_key = AESGCM(_master_key()).decrypt(wrapped[:12], wrapped[12:], b"fleetbox-seal:" + context.encode())
        return AESGCM(data_key).decrypt(nonce, sealed, context.encode("utf-8")).decode("utf-8")
    except (ValueError, InvalidTag, binascii.Error, UnicodeDecodeError, ClientError) as exc:
        # the wrong master key, a value copied between records, a damaged one, or KMS refusing
        # (wrong context, no permission, the key disabled): never the text, only what failed
        logger.error("a sealed secret did not open", extra={"context": context, "error": type(exc).__name__})
        raise errors.internal() from None
