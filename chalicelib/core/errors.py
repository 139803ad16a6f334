"""The one error registry.

Every failure a user can see is a :class:`FleetboxError` carrying a stable
machine code (``InvalidParameterValue.DeviceNameInvalid``), a human message
that names the field and the rule, and the field at fault.  The HTTP status
and the cloud-API (Tencent-style) code are looked up here, from the code's
family, so no handler ever chooses a status and nothing matches on message
text.
"""
from __future__ import annotations

from typing import Any

#: HTTP status per code family (the part before the first dot)
_FAMILY_STATUS = {
    "InvalidParameterValue": 400,
    "InvalidParameter": 400,
    "MissingParameter": 400,
    "UnknownParameter": 400,
    "UnsupportedMediaType": 415,
    "AuthFailure": 401,
    "UnauthorizedOperation": 403,
    "ResourceNotFound": 404,
    "ResourceInUse": 409,
    "UnsupportedOperation": 409,
    "FailedOperation": 409,
    "RequestTooLarge": 413,
    "LimitExceeded": 409,
    "RequestLimitExceeded": 429,
    "MethodNotAllowed": 405,
    "InternalError": 500,
}

#: exact codes whose status differs from their family's
_CODE_STATUS = {
    "LimitExceeded.RequestRate": 429,
    # a sync action the device did not answer in time (SPEC §6.4): the gateway-timeout status
    "FailedOperation.ActionTimeout": 504,
}


class FleetboxError(Exception):
    """A domain error a user may see.  ``code`` is stable; ``message`` is for people."""

    def __init__(self, code: str, message: str, field: str | None = None,
                 status: int | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.details = details
        self._status = status

    @property
    def status(self) -> int:
        if self._status is not None:
            return self._status
        if self.code in _CODE_STATUS:
            return _CODE_STATUS[self.code]
        return _FAMILY_STATUS.get(self.code.split(".", 1)[0], 400)

    @property
    def cloud_api_code(self) -> str:
        """The code the Tencent-compatible endpoint answers (§14): same names by design."""
        if self.code == "UnauthorizedOperation":
            return "UnauthorizedOperation.PermissionDenied"
        return self.code

    def body(self, request_id: str) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            err["field"] = self.field
        if self.details:
            err["details"] = self.details
        return {"error": err, "request_id": request_id}

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"FleetboxError({self.code!r}, {self.message!r}, field={self.field!r})"


# ---- constructors for the common shapes; they keep codes spelled once ----

def invalid(code_suffix: str, message: str, field: str | None = None) -> FleetboxError:
    return FleetboxError(f"InvalidParameterValue.{code_suffix}", message, field)


def missing(field: str) -> FleetboxError:
    return FleetboxError("MissingParameter", f"{field} is required", field)


def not_found(what: str, message: str, field: str | None = None) -> FleetboxError:
    return FleetboxError(f"ResourceNotFound.{what}", message, field)


def conflict(code: str, message: str, field: str | None = None) -> FleetboxError:
    return FleetboxError(code, message, field)


def unauthenticated(message: str = "a valid credential is required") -> FleetboxError:
    return FleetboxError("AuthFailure.InvalidCredential", message)


def forbidden(action: str, resource: str) -> FleetboxError:
    return FleetboxError(
        "UnauthorizedOperation",
        f"the principal's policy does not allow {action} on {resource}",
    )


def internal() -> FleetboxError:
    return FleetboxError("InternalError", "an internal error occurred; quote the request id")


# Codes used across services, named once here so callers and tests agree.
DEVICE_NAME_INVALID = "DeviceNameInvalid"
PRODUCT_NAME_INVALID = "ProductNameInvalid"
MODEL_DEFINE_INVALID = "ModelDefineInvalid"
PRODUCT_NOT_EXIST = "ProductNotExist"
DEVICE_NOT_EXIST = "DeviceNotExist"
DEVICE_LIMIT = "LimitExceeded.DeviceExceedLimit"
DEVICES_EXIST = "UnsupportedOperation.DevicesExistUnderProduct"
PRODUCT_RELEASED = "UnsupportedOperation.ProductReleased"

# Dynamic registration refusals (SPEC §6.3): kind -> (v2 code, legacy numeric code, default message).
# Both endpoints answer them with HTTP 200 in their protocol's error envelope (§6.6).
REGISTRATION = {
    "internal": ("InternalError", 1000, "internal error; retry later"),
    "invalid": ("InvalidParameterValue", 1001, "invalid request"),
    "missing": ("MissingParameter", 1001, "a required parameter is missing"),
    "signature": ("AuthFailure.SignatureFailure", 1010, "Check signature failed"),
    "expired": ("AuthFailure.SignatureExpire", 1011, "timestamp is more than 5 minutes away from server time"),
    "replayed": ("AuthFailure.NonceReused", 1012, "nonce already used within the last 5 minutes (replay)"),
    "product": ("ResourceNotFound.ProductNotExist", 1020, "product does not exist"),
    "disabled": ("UnsupportedOperation.DynamicRegisterDisabled", 1021,
                 "Not support dynamic device register: dynamic registration is off for this product"),
    "not_exist": ("ResourceNotFound.DeviceNotExist", 1022, "Pre create mode: device not exists"),
    "activated": ("UnsupportedOperation.DeviceAlreadyActivated", 1023,
                  "device has already connected; delete it before registering it again"),
    "device_disabled": ("UnsupportedOperation.DeviceDisabled", 1024, "device is disabled"),
    "limit": ("LimitExceeded.DynamicRegisterLimit", 1025, "the product's dynamic registration limit is reached"),
    "quota": (DEVICE_LIMIT, 1026, "the account's device quota is exhausted"),
    "name": ("InvalidParameterValue.DeviceNameInvalid", 1001,
             "DeviceName must be 1-48 characters of A-Z a-z 0-9 _ : -"),
}
