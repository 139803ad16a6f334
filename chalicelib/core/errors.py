"""The one error registry.

Every failure a user can see is a :class:`FleetboxError` carrying a stable
machine code (``InvalidParameterValue.DeviceNameInvalid``), a human message
that names the field and the rule, and the field at fault.  Every code is
declared once, below, as an :class:`ErrorCode` constant with its HTTP status
(from the code's family unless declared otherwise) and its cloud-API
(Tencent-style) code; code raises it by name::

    raise errors.DEVICE_NAME_INVALID(f"device_name {rule}", "device_name")

so no handler ever chooses a status, nothing matches on message text, and a
misspelt code is an ``AttributeError`` at import rather than a new wire code.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    # cloud-API endpoint only (SPEC §14; answered inside its HTTP 200 envelope)
    "InvalidAction": 400,
    "NoSuchVersion": 400,
}


def family_status(code: str) -> int:
    """The status a code's family gives it (400 for an unknown family)."""
    return _FAMILY_STATUS.get(code.split(".", 1)[0], 400)


class FleetboxError(Exception):
    """A domain error a user may see.  ``code`` is stable; ``message`` is for people.

    ``code`` must be a registered code (an :class:`ErrorCode` or its string); anything else is a
    programming error and raises :class:`ValueError`.  An explicit ``status`` overrides the
    registry's (the unmatched-route fallbacks answer the status API Gateway would)."""

    def __init__(
        self,
        code: str | ErrorCode,
        message: str,
        field: str | None = None,
        status: int | None = None,
        details: dict[str, Any] | None = None,
    ):
        spec = code if isinstance(code, ErrorCode) else REGISTRY.get(code)
        if spec is None or REGISTRY.get(spec.code) is not spec:
            raise ValueError(f"{code!r} is not a registered error code (declare it in chalicelib/core/errors.py)")
        super().__init__(message)
        self.code = spec.code
        self.message = message
        self.field = field
        self.details = details
        self._spec = spec
        self._status = status

    @property
    def status(self) -> int:
        return self._status if self._status is not None else self._spec.status

    @property
    def cloud_api_code(self) -> str:
        """The code the Tencent-compatible endpoint answers (§14): same names by design."""
        return self._spec.cloud

    def body(self, request_id: str) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            err["field"] = self.field
        if self.details:
            err["details"] = self.details
        return {"error": err, "request_id": request_id}

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"FleetboxError({self.code!r}, {self.message!r}, field={self.field!r})"


@dataclass(frozen=True)
class ErrorCode:
    """One declared code: ``code`` on the wire, its HTTP ``status``, and the ``cloud`` code the
    Tencent-compatible endpoint answers.  Calling it builds the error to raise."""

    code: str
    status: int
    cloud: str

    def __call__(
        self, message: str, field: str | None = None, *, details: dict[str, Any] | None = None
    ) -> FleetboxError:
        return FleetboxError(self, message, field, details=details)


#: every code a user can see, by its wire spelling
REGISTRY: dict[str, ErrorCode] = {}


def _declare(code: str, status: int | None = None, *, cloud: str | None = None) -> ErrorCode:
    """Register ``code``; its status defaults to its family's (:data:`_FAMILY_STATUS`)."""
    if code in REGISTRY:
        raise ValueError(f"error code {code} is declared twice")
    spec = ErrorCode(code, family_status(code) if status is None else status, cloud or code)
    REGISTRY[code] = spec
    return spec


# -- InvalidParameterValue: 400 — a parameter's value breaks its rule (schema fields and domain validators)
ABORT_INVALID = _declare("InvalidParameterValue.AbortInvalid")
CHAT_PAYLOAD_INVALID = _declare("InvalidParameterValue.ChatPayloadInvalid")
CHAT_TEAM_ID_INVALID = _declare("InvalidParameterValue.ChatTeamIdInvalid")
CHAT_USER_ID_INVALID = _declare("InvalidParameterValue.ChatUserIdInvalid")
CHAT_IDENTITY_NAME_INVALID = _declare("InvalidParameterValue.ChatIdentityNameInvalid")
ACTION_INVALID = _declare("InvalidParameterValue.ActionInvalid")
ACCURACY_INVALID = _declare("InvalidParameterValue.AccuracyInvalid")
APPLICATION_NAME_INVALID = _declare("InvalidParameterValue.ApplicationNameInvalid")
APPLICATION_REMARK_INVALID = _declare("InvalidParameterValue.ApplicationRemarkInvalid")
AUTH_TYPE_INVALID = _declare("InvalidParameterValue.AuthTypeInvalid")
BINDING_STRATEGY_INVALID = _declare("InvalidParameterValue.BindingStrategyInvalid")
BURN_METHOD_INVALID = _declare("InvalidParameterValue.BurnMethodInvalid")
CATEGORY_INVALID = _declare("InvalidParameterValue.CategoryInvalid")
CALLBACK_TOKEN_INVALID = _declare("InvalidParameterValue.CallbackTokenInvalid")
CHANNEL_ID_INVALID = _declare("InvalidParameterValue.ChannelIdInvalid")
# chat alerts (SPEC §12): a channel ref, an alert kind, a registered channel's fields
CHAT_ALERT_KIND_INVALID = _declare("InvalidParameterValue.ChatAlertKindInvalid")
CHAT_CHANNEL_INVALID = _declare("InvalidParameterValue.ChatChannelInvalid")
CHAT_CHANNEL_NAME_INVALID = _declare("InvalidParameterValue.ChatChannelNameInvalid")
CHAT_PLATFORM_INVALID = _declare("InvalidParameterValue.ChatPlatformInvalid")
CHAT_SECRET_INVALID = _declare("InvalidParameterValue.ChatSecretInvalid")
CELL_KEY_INVALID = _declare("InvalidParameterValue.CellKeyInvalid")
CIRCLE_INVALID = _declare("InvalidParameterValue.CircleInvalid")
CODE_INVALID = _declare("InvalidParameterValue.CodeInvalid")
COMM_METHOD_INVALID = _declare("InvalidParameterValue.CommMethodInvalid")
CONDITION_INVALID = _declare("InvalidParameterValue.ConditionInvalid")
CONFIRM_INVALID = _declare("InvalidParameterValue.ConfirmInvalid")
CONFIG_INVALID = _declare("InvalidParameterValue.ConfigInvalid")
CSV_INVALID = _declare("InvalidParameterValue.CsvInvalid")
CUSTOM_INFO_INVALID = _declare("InvalidParameterValue.CustomInfoInvalid")
CUSTOM_INFO_TOO_LONG = _declare("InvalidParameterValue.CustomInfoTooLong")
CUSTOM_ID_INVALID = _declare("InvalidParameterValue.CustomIdInvalid")
DATA_PROTOCOL_INVALID = _declare("InvalidParameterValue.DataProtocolInvalid")
DESCRIPTION_INVALID = _declare("InvalidParameterValue.DescriptionInvalid")
DEVICES_CSV_INVALID = _declare("InvalidParameterValue.DevicesCsvInvalid")
DEVICE_NAMES_INVALID = _declare("InvalidParameterValue.DeviceNamesInvalid")
DEVICE_NAME_INVALID = _declare("InvalidParameterValue.DeviceNameInvalid")
DEVICE_SECRET_INVALID = _declare("InvalidParameterValue.DeviceSecretInvalid")
DEVICE_TYPE_INVALID = _declare("InvalidParameterValue.DeviceTypeInvalid")
DEVICES_INVALID = _declare("InvalidParameterValue.DevicesInvalid")
DISTRICT_NAME_INVALID = _declare("InvalidParameterValue.DistrictNameInvalid")
ENABLED_INVALID = _declare("InvalidParameterValue.EnabledInvalid")
END_INVALID = _declare("InvalidParameterValue.EndInvalid")
EVENT_ID_INVALID = _declare("InvalidParameterValue.EventIdInvalid")
EVENT_TYPE_INVALID = _declare("InvalidParameterValue.EventTypeInvalid")
FAMILY_ID_INVALID = _declare("InvalidParameterValue.FamilyIdInvalid")
FENCE_NAME_INVALID = _declare("InvalidParameterValue.FenceNameInvalid")
FENCE_TYPE_INVALID = _declare("InvalidParameterValue.FenceTypeInvalid")
FILE_NAME_INVALID = _declare("InvalidParameterValue.FileNameInvalid")
FILE_SIZE_INVALID = _declare("InvalidParameterValue.FileSizeInvalid")
FILE_TYPE_INVALID = _declare("InvalidParameterValue.FileTypeInvalid")
FIRMWARE_ID_INVALID = _declare("InvalidParameterValue.FirmwareIdInvalid")
FIRMWARE_NAME_INVALID = _declare("InvalidParameterValue.FirmwareNameInvalid")
FIRMWARE_TYPE_INVALID = _declare("InvalidParameterValue.FirmwareTypeInvalid")
FIRMWARE_VERSION_INVALID = _declare("InvalidParameterValue.FirmwareVersionInvalid")
FORMAT_INVALID = _declare("InvalidParameterValue.FormatInvalid")
GENERATION_INVALID = _declare("InvalidParameterValue.GenerationInvalid")
GEOMETRY_INVALID = _declare("InvalidParameterValue.GeometryInvalid")
GRANULARITY_INVALID = _declare("InvalidParameterValue.GranularityInvalid")
INCLUDE_SECRET_INVALID = _declare("InvalidParameterValue.IncludeSecretInvalid")
INVALID_BODY = _declare("InvalidParameterValue.InvalidBody")
INVALID_CALLBACK_URL = _declare("InvalidParameterValue.InvalidCallbackUrl")
INVALID_JSON = _declare("InvalidParameterValue.InvalidJson")
INVALID_PARAMETER = _declare("InvalidParameterValue.InvalidParameter")  # a schema field without its own code
INVALID_PARAMETER_VALUE = _declare("InvalidParameterValue")  # bare: dynamic-registration refusals (§6.6)
INVALID_REQUEST = _declare("InvalidParameterValue.InvalidRequest")
INVALID_URL = _declare("InvalidParameterValue.InvalidUrl")
KEY_NAME_INVALID = _declare("InvalidParameterValue.KeyNameInvalid")
LEVEL_INVALID = _declare("InvalidParameterValue.LevelInvalid")
LIMIT_INVALID = _declare("InvalidParameterValue.LimitInvalid")
LOG_KIND_INVALID = _declare("InvalidParameterValue.LogKindInvalid")
MATCH_INVALID = _declare("InvalidParameterValue.MatchInvalid")
MAX_RETRIES_INVALID = _declare("InvalidParameterValue.MaxRetriesInvalid")
MD5_MISMATCH = _declare("InvalidParameterValue.Md5Mismatch")  # cloud-API UploadFirmware: not the file uploaded
METHOD_INVALID = _declare("InvalidParameterValue.MethodInvalid")
MODEL_DEFINE_INVALID = _declare("InvalidParameterValue.ModelDefineInvalid")
MODE_INVALID = _declare("InvalidParameterValue.ModeInvalid")
MULTI_CAMERA_LAYOUT_INVALID = _declare("InvalidParameterValue.MultiCameraLayoutInvalid")
NAMES_CSV_INVALID = _declare("InvalidParameterValue.NamesCsvInvalid")
NEXT_TOKEN_INVALID = _declare("InvalidParameterValue.NextTokenInvalid")
OUTPUT_INVALID = _declare("InvalidParameterValue.OutputInvalid")
PARAMS_INVALID = _declare("InvalidParameterValue.ParamsInvalid")
PARAM_NOT_DEFINED = _declare("InvalidParameterValue.ParamNotDefined")
PARAM_VALUE_INVALID = _declare("InvalidParameterValue.ParamValueInvalid")
PAYLOAD_INVALID = _declare("InvalidParameterValue.PayloadInvalid")
POLICY_INVALID = _declare("InvalidParameterValue.PolicyInvalid")
PRINCIPAL_ID_INVALID = _declare("InvalidParameterValue.PrincipalIdInvalid")
PRINCIPAL_KIND_INVALID = _declare("InvalidParameterValue.PrincipalKindInvalid")
PRINCIPAL_NAME_INVALID = _declare("InvalidParameterValue.PrincipalNameInvalid")
PRODUCTS_INVALID = _declare("InvalidParameterValue.ProductsInvalid")
PRODUCT_ID_INVALID = _declare("InvalidParameterValue.ProductIdInvalid")
PRODUCT_NAME_INVALID = _declare("InvalidParameterValue.ProductNameInvalid")
PROPERTIES_INVALID = _declare("InvalidParameterValue.PropertiesInvalid")
PROPERTY_NOT_DEFINED = _declare("InvalidParameterValue.PropertyNotDefined")
PROPERTY_READ_ONLY = _declare("InvalidParameterValue.PropertyReadOnly")
QR_CODE_INVALID = _declare("InvalidParameterValue.QrCodeInvalid")
QR_CODE_SIGNATURE_INVALID = _declare("InvalidParameterValue.QRCodeSignatureInvalid")
QOS_INVALID = _declare("InvalidParameterValue.QosInvalid")
QUANTITY_INVALID = _declare("InvalidParameterValue.QuantityInvalid")
QUERY_INVALID = _declare("InvalidParameterValue.QueryInvalid")
RATE_INVALID = _declare("InvalidParameterValue.RateInvalid")
REGISTER_LIMIT_INVALID = _declare("InvalidParameterValue.RegisterLimitInvalid")
REGISTER_TYPE_INVALID = _declare("InvalidParameterValue.RegisterTypeInvalid")
RESOURCE_ID_INVALID = _declare("InvalidParameterValue.ResourceIdInvalid")
RESOURCE_NAME_INVALID = _declare("InvalidParameterValue.ResourceNameInvalid")
RULE_NAME_INVALID = _declare("InvalidParameterValue.RuleNameInvalid")
SCOPE_INVALID = _declare("InvalidParameterValue.ScopeInvalid")
SERVICE_TYPE_INVALID = _declare("InvalidParameterValue.ServiceTypeInvalid")
SOURCE_VERSION_INVALID = _declare("InvalidParameterValue.SourceVersionInvalid")
SPACE_NAME_INVALID = _declare("InvalidParameterValue.SpaceNameInvalid")
SPACE_REMARK_INVALID = _declare("InvalidParameterValue.SpaceRemarkInvalid")
SQL_INVALID = _declare("InvalidParameterValue.SqlInvalid")
START_INVALID = _declare("InvalidParameterValue.StartInvalid")
STATE_INVALID = _declare("InvalidParameterValue.StateInvalid")
STATUS_INVALID = _declare("InvalidParameterValue.StatusInvalid")
STREAM_NAME_INVALID = _declare("InvalidParameterValue.StreamNameInvalid")
SUBDEVICE_PROTOCOL_INVALID = _declare("InvalidParameterValue.SubdeviceProtocolInvalid")
TAGS_INVALID = _declare("InvalidParameterValue.TagsInvalid")
TAG_INVALID = _declare("InvalidParameterValue.TagInvalid")
TAG_KEY_INVALID = _declare("InvalidParameterValue.TagKeyInvalid")
TAG_VALUE_INVALID = _declare("InvalidParameterValue.TagValueInvalid")
TARGET_INVALID = _declare("InvalidParameterValue.TargetInvalid")
TASK_ID_INVALID = _declare("InvalidParameterValue.TaskIdInvalid")
THUMBNAIL_INVALID = _declare("InvalidParameterValue.ThumbnailInvalid")
TIMEOUT_INVALID = _declare("InvalidParameterValue.TimeoutInvalid")
TIME_RANGE_INVALID = _declare("InvalidParameterValue.TimeRangeInvalid")
TOPIC_INVALID = _declare("InvalidParameterValue.TopicInvalid")
TOPIC_NAME_INVALID = _declare("InvalidParameterValue.TopicNameInvalid")
TOPIC_PERMISSION_INVALID = _declare("InvalidParameterValue.TopicPermissionInvalid")
TOLERANCE_INVALID = _declare("InvalidParameterValue.ToleranceInvalid")
TRIGGER_INVALID = _declare("InvalidParameterValue.TriggerInvalid")
USER_ID_INVALID = _declare("InvalidParameterValue.UserIdInvalid")
VIDEO_URLS_INVALID = _declare("InvalidParameterValue.VideoURLsInvalid")
WAIT_INVALID = _declare("InvalidParameterValue.WaitInvalid")

# -- MissingParameter: 400 — a required parameter is absent
MISSING_PARAMETER = _declare("MissingParameter")

# -- UnknownParameter: 400 — a field or query parameter the operation does not take
UNKNOWN_PARAMETER = _declare("UnknownParameter")

# -- UnsupportedMediaType: 415 — a request body that is not JSON
UNSUPPORTED_MEDIA_TYPE = _declare("UnsupportedMediaType")

# -- RequestTooLarge: 413 — a body, file or CSV over its size limit
BODY_TOO_LARGE = _declare("RequestTooLarge.Body")
CSV_TOO_LARGE = _declare("RequestTooLarge.CsvTooLarge")
FILE_TOO_LARGE = _declare("RequestTooLarge.FileTooLarge")
NAMES_CSV_TOO_LARGE = _declare("RequestTooLarge.NamesCsvTooLarge")

# -- AuthFailure: 401 — no valid credential or signature
INVALID_CREDENTIAL = _declare("AuthFailure.InvalidCredential")
# cloud-API signatures (SPEC §14): a malformed Authorization or scope, an unknown SecretId
INVALID_AUTHORIZATION = _declare("AuthFailure.InvalidAuthorization")
SECRET_ID_NOT_FOUND = _declare("AuthFailure.SecretIdNotFound")
NONCE_REUSED = _declare("AuthFailure.NonceReused")
SIGNATURE_EXPIRE = _declare("AuthFailure.SignatureExpire")
SIGNATURE_FAILURE = _declare("AuthFailure.SignatureFailure")

# -- UnauthorizedOperation: 403 — the principal's policy refuses the action (cloud API: .PermissionDenied)
UNAUTHORIZED_OPERATION = _declare("UnauthorizedOperation", cloud="UnauthorizedOperation.PermissionDenied")

# -- ResourceNotFound: 404 — the named item does not exist (or is not visible to the caller)
ACTION_NOT_EXIST = _declare("ResourceNotFound.ActionNotExist")
API_KEY_NOT_EXIST = _declare("ResourceNotFound.ApiKeyNotExist")
APPLICATION_NOT_EXIST = _declare("ResourceNotFound.ApplicationNotExist")
BATCH_NOT_EXIST = _declare("ResourceNotFound.BatchNotExist")
BINDING_NOT_EXIST = _declare("ResourceNotFound.BindingNotExist")
CHAT_IDENTITY_NOT_EXIST = _declare("ResourceNotFound.ChatIdentityNotExist")
CHAT_CHANNEL_NOT_EXIST = _declare("ResourceNotFound.ChatChannelNotExist")
CHAT_SUBSCRIPTION_NOT_EXIST = _declare("ResourceNotFound.ChatSubscriptionNotExist")
CALL_NOT_EXIST = _declare("ResourceNotFound.CallNotExist")
CLOUD_KEY_NOT_EXIST = _declare("ResourceNotFound.CloudApiKeyNotExist")
DEAD_LETTER_NOT_EXIST = _declare("ResourceNotFound.DeadLetterNotExist")
DEVICE_NOT_EXIST = _declare("ResourceNotFound.DeviceNotExist")
DISTRICT_NOT_EXIST = _declare("ResourceNotFound.DistrictNotExist")
FIRMWARE_NOT_EXIST = _declare("ResourceNotFound.FirmwareNotExist")
FENCE_NOT_EXIST = _declare("ResourceNotFound.FenceNotExist")
OTA_TASK_NOT_EXIST = _declare("ResourceNotFound.OtaTaskNotExist")
PRINCIPAL_NOT_EXIST = _declare("ResourceNotFound.PrincipalNotExist")
PRODUCT_NOT_EXIST = _declare("ResourceNotFound.ProductNotExist")
PROPERTY_NOT_EXIST = _declare("ResourceNotFound.PropertyNotExist")
RESOURCE_NOT_EXIST = _declare("ResourceNotFound.ResourceNotExist")
RESOURCE_TASK_NOT_EXIST = _declare("ResourceNotFound.ResourceTaskNotExist")
ROUTE_NOT_FOUND = _declare("ResourceNotFound.Route")
RULE_NOT_EXIST = _declare("ResourceNotFound.RuleNotExist")
SERIAL_NUMBER_NOT_EXIST = _declare("ResourceNotFound.SerialNumberNotExist")
SPACE_NOT_EXIST = _declare("ResourceNotFound.SpaceNotExist")
STREAM_NOT_EXIST = _declare("ResourceNotFound.StreamNotExist")
TOPIC_NOT_EXIST = _declare("ResourceNotFound.TopicNotExist")
VIDEO_TASK_NOT_EXIST = _declare("ResourceNotFound.VideoTaskNotExist")

# -- MethodNotAllowed: 405 — the path exists, the method does not
METHOD_NOT_ALLOWED = _declare("MethodNotAllowed")

# -- ResourceInUse: 409 — the name or item is already taken
CHAT_IDENTITY_EXISTS = _declare("ResourceInUse.ChatIdentityExists")
DEVICE_ALREADY_EXISTS = _declare("ResourceInUse.DeviceAlreadyExists")
FENCE_NAME_EXISTS = _declare("ResourceInUse.FenceNameExists")
FIRMWARE_VERSION_EXISTS = _declare("ResourceInUse.FirmwareVersionExists")
PRODUCT_NAME_EXISTS = _declare("ResourceInUse.ProductNameExists")
RULE_ALREADY_EXISTS = _declare("ResourceInUse.RuleAlreadyExists")
SPACE_NAME_EXISTS = _declare("ResourceInUse.SpaceNameExists")
TOPIC_EXISTS = _declare("ResourceInUse.TopicExists")
# a registered chat channel still has alert subscriptions
CHAT_CHANNEL_IN_USE = _declare("ResourceInUse.ChatChannelInUse")

# -- UnsupportedOperation: 409 — the item's state or kind does not allow the operation
APPLICATION_POLICY = _declare("UnsupportedOperation.ApplicationPolicy")
APPLICATION_PRINCIPAL = _declare("UnsupportedOperation.ApplicationPrincipal")
# the product has not enabled the AI video analysis function (SPEC §11)
AI_VIDEO_NOT_ENABLED = _declare("UnsupportedOperation.AIVideoNotEnabled")
CERTIFICATE_PRODUCT_BATCH = _declare("UnsupportedOperation.CertificateProductBatch")
# a send-only chat platform (a Feishu custom bot) was asked to verify or parse an inbound request
CHAT_INBOUND_UNSUPPORTED = _declare("UnsupportedOperation.ChatInboundUnsupported")
CUSTOM_PROTOCOL_PRODUCT = _declare("UnsupportedOperation.CustomProtocolProduct")
DELETE_SELF = _declare("UnsupportedOperation.DeleteSelf")
DEVICES_EXIST_UNDER_PRODUCT = _declare("UnsupportedOperation.DevicesExistUnderProduct")
DEVICE_ALREADY_ACTIVATED = _declare("UnsupportedOperation.DeviceAlreadyActivated")
DYNAMIC_REGISTER_DISABLED = _declare("UnsupportedOperation.DynamicRegisterDisabled")
NOT_CUSTOM_PROTOCOL = _declare("UnsupportedOperation.NotCustomProtocol")
PRODUCT_NOT_CELLULAR = _declare("UnsupportedOperation.ProductNotCellular")
PRODUCT_NOT_RELEASED = _declare("UnsupportedOperation.ProductNotReleased")
PRODUCT_RELEASED = _declare("UnsupportedOperation.ProductReleased")
REGISTER_DEVICE_DISABLED = _declare("UnsupportedOperation.DeviceDisabled")
ROOT_POLICY = _declare("UnsupportedOperation.RootPolicy")
ROOT_PRINCIPAL = _declare("UnsupportedOperation.RootPrincipal")
# the configured video analyser cannot detect what the service type asks for (SPEC §11)
SERVICE_TYPE_UNSUPPORTED = _declare("UnsupportedOperation.ServiceTypeUnsupported")
# the deployment lacks what the configured video analyser needs (OpenCV is not in the Lambda bundle)
VIDEO_ANALYSER_UNAVAILABLE = _declare("UnsupportedOperation.VideoAnalyserUnavailable")
# without a decoder (AWS) a video must be an MP4/MOV file Rekognition Video can read from S3
VIDEO_FORMAT_UNSUPPORTED = _declare("UnsupportedOperation.VideoFormatUnsupported")
# without a decoder (AWS) a video is analysed whole: one view of a stacked video cannot be cropped
MULTI_CAMERA_LAYOUT_UNSUPPORTED = _declare("UnsupportedOperation.MultiCameraLayoutUnsupported")
SPACE_HAS_FENCES = _declare("UnsupportedOperation.SpaceHasFences")
TASK_RUNNING = _declare("UnsupportedOperation.TaskRunning")

# -- FailedOperation: 409 — the operation could not complete now (state changed, device offline…)
# a sync action the device did not answer in time (SPEC §6.4): the gateway-timeout status
ACTION_TIMEOUT = _declare("FailedOperation.ActionTimeout", 504)
CONCURRENT_CHANGE = _declare("FailedOperation.ConcurrentChange")
DEAD_LETTER_NOT_REPLAYABLE = _declare("FailedOperation.DeadLetterNotReplayable")
DEVICE_ALREADY_BOUND = _declare("FailedOperation.DeviceAlreadyBound")
DEVICE_DISABLED = _declare("FailedOperation.DeviceDisabled")
DEVICE_NOT_AWAITING_CONFIRMATION = _declare("FailedOperation.DeviceNotAwaitingConfirmation")
DEVICE_NOT_FAILED = _declare("FailedOperation.DeviceNotFailed")
DEVICE_OFFLINE = _declare("FailedOperation.DeviceOffline")
DEVICE_UPGRADE_FINISHED = _declare("FailedOperation.DeviceUpgradeFinished")
DEVICE_NOT_IN_SPACE = _declare("FailedOperation.DeviceNotInSpace")
FILE_NOT_UPLOADED = _declare("FailedOperation.FileNotUploaded")
FIRMWARE_NOT_READY = _declare("FailedOperation.FirmwareNotReady")
KEY_COLLISION = _declare("FailedOperation.KeyCollision")
RESOURCE_NOT_READY = _declare("FailedOperation.ResourceNotReady")
SERIAL_NUMBER_NOT_LINKED = _declare("FailedOperation.SerialNumberNotLinked")
TASK_NOT_RUNNING = _declare("FailedOperation.TaskNotRunning")
TRANSACTION_CONFLICT = _declare("FailedOperation.TransactionConflict")

# -- LimitExceeded: 409 — a quota or count limit is reached
ACTION_LIMIT = _declare("LimitExceeded.ActionLimit")
BINDING_LIMIT = _declare("LimitExceeded.FenceBindingLimit")
DEVICE_EXCEED_LIMIT = _declare("LimitExceeded.DeviceExceedLimit")
DEVICE_LIST_EXCEED_LIMIT = _declare("LimitExceeded.DeviceListExceedLimit")
DYNAMIC_REGISTER_LIMIT = _declare("LimitExceeded.DynamicRegisterLimit")
FIRMWARE_EXCEED_LIMIT = _declare("LimitExceeded.FirmwareExceedLimit")
# throttling answers 429 like RequestLimitExceeded (no caller raises it yet)
REQUEST_RATE = _declare("LimitExceeded.RequestRate", 429)
RESOURCE_STORAGE_EXCEED_LIMIT = _declare("LimitExceeded.ResourceStorageExceedLimit")
TOPIC_LIMIT = _declare("LimitExceeded.TopicLimit")

# -- the cloud-API endpoint's own refusals (SPEC §14): an action it does not map, an API version
# other than iotexplorer's 2019-04-23 (both answered with HTTP 200 in the Tencent envelope)
INVALID_ACTION = _declare("InvalidAction")
NO_SUCH_VERSION = _declare("NoSuchVersion")

# -- InternalError: 500 — a bug or an outage; the request id is the lead
INTERNAL_ERROR = _declare("InternalError")


# ---- constructors for shapes whose code never varies ----


def missing(field: str) -> FleetboxError:
    return MISSING_PARAMETER(f"{field} is required", field)


def unauthenticated(message: str = "a valid credential is required") -> FleetboxError:
    return INVALID_CREDENTIAL(message)


def forbidden(action: str, resource: str) -> FleetboxError:
    return UNAUTHORIZED_OPERATION(f"the principal's policy does not allow {action} on {resource}")


def internal() -> FleetboxError:
    return INTERNAL_ERROR("an internal error occurred; quote the request id")


# Dynamic registration refusals (SPEC §6.3): kind -> (code, legacy numeric code, default message).
# Both endpoints answer them with HTTP 200 in their protocol's error envelope (§6.6).
REGISTRATION: dict[str, tuple[ErrorCode, int, str]] = {
    "internal": (INTERNAL_ERROR, 1000, "internal error; retry later"),
    "invalid": (INVALID_PARAMETER_VALUE, 1001, "invalid request"),
    "missing": (MISSING_PARAMETER, 1001, "a required parameter is missing"),
    "signature": (SIGNATURE_FAILURE, 1010, "Check signature failed"),
    "expired": (SIGNATURE_EXPIRE, 1011, "timestamp is more than 5 minutes away from server time"),
    "replayed": (NONCE_REUSED, 1012, "nonce already used within the last 5 minutes (replay)"),
    "product": (PRODUCT_NOT_EXIST, 1020, "product does not exist"),
    "disabled": (
        DYNAMIC_REGISTER_DISABLED,
        1021,
        "Not support dynamic device register: dynamic registration is off for this product",
    ),
    "not_exist": (DEVICE_NOT_EXIST, 1022, "Pre create mode: device not exists"),
    "activated": (
        DEVICE_ALREADY_ACTIVATED,
        1023,
        "device has already connected; delete it before registering it again",
    ),
    "device_disabled": (REGISTER_DEVICE_DISABLED, 1024, "device is disabled"),
    "limit": (DYNAMIC_REGISTER_LIMIT, 1025, "the product's dynamic registration limit is reached"),
    "quota": (DEVICE_EXCEED_LIMIT, 1026, "the account's device quota is exhausted"),
    "name": (DEVICE_NAME_INVALID, 1001, "DeviceName must be 1-48 characters of A-Z a-z 0-9 _ : -"),
}
