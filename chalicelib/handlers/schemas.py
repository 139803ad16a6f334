"""Request and response models of the HTTP API (SPEC §16).

These objects validate every request body and query and generate ``/openapi.json``.
Rules that also apply off the HTTP path (device names in batch CSVs, product
names) live in the services and are referenced here, so each rule is written once.
"""

from __future__ import annotations

from ..core import errors
from ..core.schema import Array, Boolean, Enum, Integer, IntEnum, Json, Map, Model, String, page_of
from ..services import devices as device_rules
from ..services import products as product_rules

# ------------------------------------------------------------------ common

LIMIT = Integer(minimum=1, maximum=100, default=20, description="page size (≤ 100)", code=errors.LIMIT_INVALID)
NEXT = String(
    min_len=1, max_len=2048, description="opaque token from the previous page's `next`", code=errors.NEXT_TOKEN_INVALID
)
PAGING = {"limit": LIMIT, "next": NEXT}
#: a ProductId in a body, and as a list filter
PRODUCT_ID = String(required=True, pattern=r"[A-Z0-9]{10}", code=errors.PRODUCT_ID_INVALID, rule="must be a ProductId")
PRODUCT_FILTER = String(pattern=r"[A-Z0-9]{10}", code=errors.PRODUCT_ID_INVALID)

ErrorDetail = Model(
    "ErrorDetail",
    {
        "code": String(required=True, example=errors.DEVICE_NAME_INVALID.code),
        "message": String(required=True),
        "field": String(),
        "details": Json(object_only=True),
    },
    allow_extra=True,
)
ErrorBody = Model("Error", {"error": ErrorDetail, "request_id": String(required=True)}, allow_extra=True)

# ----------------------------------------------------------------- products


def product_name(required: bool = False) -> String:
    return String(
        required=required,
        min_len=1,
        max_len=40,
        check=product_rules.product_name_ok,
        code=errors.PRODUCT_NAME_INVALID,
        schema_pattern=False,
        rule="must be 1-40 characters: letters, digits, _, space (not first or last) and ()（）-@\\/",
        description="1-40 chars: letters (any script), digits, _, space (not first/last), ()（）-@\\/",
    )


def category(required: bool = False) -> String:
    return String(
        required=required,
        min_len=1,
        max_len=198,
        pattern=product_rules.CATEGORY_RE.pattern,
        code=errors.CATEGORY_INVALID,
        rule="must be `custom` or a path like smart-life/lighting/lamp",
        description="`custom` or a path such as smart-life/lighting/lamp",
    )


DESCRIPTION = String(max_len=80, code=errors.DESCRIPTION_INVALID, rule="must be at most 80 characters")

ProductCreate = Model(
    "ProductCreate",
    {
        "name": product_name(required=True),
        "category": category(required=True),
        "device_type": Enum(product_rules.DEVICE_TYPES, required=True, code=errors.DEVICE_TYPE_INVALID),
        "subdevice_protocol": Enum(
            product_rules.SUBDEVICE_PROTOCOLS,
            code=errors.SUBDEVICE_PROTOCOL_INVALID,
            description="required when device_type is subdevice",
        ),
        "comm_method": Enum(product_rules.COMM_METHODS, required=True, code=errors.COMM_METHOD_INVALID),
        "auth_type": Enum(product_rules.AUTH_TYPES, required=True, code=errors.AUTH_TYPE_INVALID),
        "data_protocol": Enum(product_rules.DATA_PROTOCOLS, required=True, code=errors.DATA_PROTOCOL_INVALID),
        "description": DESCRIPTION,
        "binding_strategy": Enum(
            product_rules.BINDING_STRATEGIES, default="preemptive", code=errors.BINDING_STRATEGY_INVALID
        ),
    },
)

ProductPatch = Model(
    "ProductPatch",
    {
        "name": product_name(),
        "category": category(),
        "device_type": Enum(product_rules.DEVICE_TYPES, code=errors.DEVICE_TYPE_INVALID),
        "subdevice_protocol": Enum(product_rules.SUBDEVICE_PROTOCOLS, code=errors.SUBDEVICE_PROTOCOL_INVALID),
        "comm_method": Enum(product_rules.COMM_METHODS, code=errors.COMM_METHOD_INVALID),
        "auth_type": Enum(product_rules.AUTH_TYPES, code=errors.AUTH_TYPE_INVALID),
        "data_protocol": Enum(product_rules.DATA_PROTOCOLS, code=errors.DATA_PROTOCOL_INVALID),
        "description": DESCRIPTION,
        "binding_strategy": Enum(product_rules.BINDING_STRATEGIES, code=errors.BINDING_STRATEGY_INVALID),
        "ai_video_enabled": Boolean(
            code=errors.ENABLED_INVALID,
            description="the AI video analysis function (SPEC §11): video summary tasks may be created only "
            "while it is on; switchable whatever the product's state",
        ),
    },
)

Product = Model(
    "Product",
    {
        "product_id": String(required=True, example="ABCDEFGHIJ"),
        "name": String(required=True),
        "category": String(required=True),
        "device_type": Enum(product_rules.DEVICE_TYPES, required=True),
        "subdevice_protocol": Enum(product_rules.SUBDEVICE_PROTOCOLS, nullable=True, required=True),
        "comm_method": Enum(product_rules.COMM_METHODS, required=True),
        "auth_type": Enum(product_rules.AUTH_TYPES, required=True),
        "data_protocol": Enum(product_rules.DATA_PROTOCOLS, required=True),
        "description": String(required=True),
        "binding_strategy": Enum(product_rules.BINDING_STRATEGIES, required=True),
        "status": Enum(product_rules.STATUSES, required=True),
        "device_count": Integer(required=True),
        "dynamic_registration": Boolean(required=True),
        "ai_video_enabled": Boolean(required=True, description="the AI video analysis function (SPEC §11)"),
        "created_at": Integer(required=True),
        "updated_at": Integer(required=True),
        "created_by": String(nullable=True),
    },
    allow_extra=True,
)
ProductPage = page_of(Product)

ThingModel = Json(object_only=True, description="the thing-model JSON of SPEC §4")

RegistrationPut = Model(
    "DynamicRegistrationSettings",
    {
        "register_type": IntEnum(
            product_rules.REGISTER_TYPES,
            required=True,
            code=errors.REGISTER_TYPE_INVALID,
            description="0 off · 1 pre-created devices only · 2 also create unknown names",
        ),
        "register_limit": Integer(
            minimum=0,
            maximum=1_000_000,
            code=errors.REGISTER_LIMIT_INVALID,
            description="how many devices dynamic registration may create (type 2)",
        ),
    },
)
Registration = Model(
    "DynamicRegistration",
    {
        "product_id": String(required=True),
        "register_type": IntEnum(product_rules.REGISTER_TYPES, required=True),
        "register_limit": Integer(required=True),
        "registered_count": Integer(required=True),
        "secret_set": Boolean(required=True, description="whether the product has a secret"),
        "product_secret": String(
            nullable=True,
            description="only when this request made or rotated it, or with "
            "include_secret=true (needs iotexplorer:DescribeProductSecret)",
        ),
    },
    allow_extra=True,
)

TopicCreate = Model(
    "TopicCreate",
    {
        "name": String(
            required=True,
            min_len=1,
            max_len=64,
            check=product_rules.topic_name_ok,
            code=errors.TOPIC_NAME_INVALID,
            rule="must be 1-64 characters: letters, digits, _ in levels separated by /, + as a whole level",
        ),
        "permission": Enum(("pub", "sub", "pubsub"), required=True, code=errors.TOPIC_PERMISSION_INVALID),
    },
)
Topic = Model(
    "Topic",
    {"name": String(required=True), "permission": String(required=True), "topic": String(required=True)},
    allow_extra=True,
)
TopicList = Model("TopicList", {"items": Array(Topic, required=True)}, allow_extra=True)

# ------------------------------------------------------------------ devices

DEVICE_NAME = String(
    required=True,
    min_len=1,
    max_len=48,
    pattern=device_rules.DEVICE_NAME_RE.pattern,
    code=errors.DEVICE_NAME_INVALID,
    rule="must be 1-48 characters of A-Z a-z 0-9 _ : -",
)
DeviceCreate = Model(
    "DeviceCreate",
    {
        "device_name": DEVICE_NAME,
        "secret": String(
            min_len=24,
            max_len=24,
            check=device_rules.secret_ok,
            code=errors.DEVICE_SECRET_INVALID,
            rule="must be base64 of 16 bytes (24 characters)",
            schema_pattern=False,
            description="optional PSK; generated when absent",
        ),
    },
)
TAGS = Map(
    String(min_len=1, max_len=64, code=errors.TAG_VALUE_INVALID, rule="must be 1-64 characters"),
    keys=String(
        min_len=1,
        max_len=32,
        pattern=device_rules.TAG_KEY_RE.pattern,
        code=errors.TAG_KEY_INVALID,
        rule="must be 1-32 characters of A-Z a-z 0-9 _ - .",
    ),
    max_items=device_rules.MAX_TAGS,
    code=errors.TAGS_INVALID,
)
DevicePatch = Model(
    "DevicePatch",
    {
        "enabled": Boolean(code=errors.ENABLED_INVALID),
        "tags": TAGS,
    },
)
Device = Model(
    "Device",
    {
        "product_id": String(required=True),
        "device_name": String(required=True),
        "status": Enum(device_rules.STATUSES, required=True),
        "enabled": Boolean(required=True),
        "tags": Map(String(), required=True),
        "firmware_version": String(nullable=True, required=True),
        "created_at": Integer(required=True),
        "updated_at": Integer(required=True),
        "activated_at": Integer(nullable=True, required=True),
        "last_online_at": Integer(nullable=True, required=True),
        "secret": String(description="key products: the PSK, on creation and with include_secret=true"),
        "secret_set": Boolean(description="whether the device has its secret (or key) yet"),
        "certificate": String(description="certificate products: the device's X.509 certificate (PEM)"),
        "private_key": String(
            description="certificate products: its private key, on creation and with include_secret=true"
        ),
    },
    allow_extra=True,
)
DevicePage = page_of(Device)

Quota = Model(
    "Quota",
    {
        "device_quota": Integer(required=True),
        "registered": Integer(required=True),
        "remaining": Integer(required=True),
        # audio/video products (category video/…, audio/…, av/…) count on their own quota
        "av_device_quota": Integer(),
        "av_registered": Integer(),
        "av_remaining": Integer(),
    },
    allow_extra=True,
)

# ------------------------------------------------------------------- access

POLICY = Json(
    object_only=True,
    code=errors.POLICY_INVALID,
    description='{"version":"2.0","statement":[{"effect","action":[…],"resource":[…]}]}',
)
PrincipalCreate = Model(
    "PrincipalCreate",
    {
        "name": String(required=True, min_len=1, max_len=64, code=errors.PRINCIPAL_NAME_INVALID),
        "kind": Enum(("user", "chat"), default="user", code=errors.PRINCIPAL_KIND_INVALID),
        "policy": POLICY,
    },
)
Principal = Model(
    "Principal",
    {
        "principal_id": String(required=True),
        "name": String(required=True),
        "kind": String(required=True),
        "policy": Json(object_only=True, required=True),
        "application_id": String(nullable=True),
        "created_at": Integer(required=True),
        "updated_at": Integer(required=True),
    },
    allow_extra=True,
)
PolicyPut = Model(
    "PolicyPut",
    {
        "version": String(required=True),
        "statement": Array(Json(object_only=True), required=True),
    },
    allow_extra=False,
)

KeyCreate = Model(
    "ApiKeyCreate",
    {
        "principal_id": String(
            min_len=1, max_len=64, code=errors.PRINCIPAL_ID_INVALID, description="whose key; default: the caller"
        ),
        "name": String(max_len=64, default="", code=errors.KEY_NAME_INVALID),
    },
)
ApiKey = Model(
    "ApiKey",
    {
        "key_id": String(required=True),
        "principal_id": String(required=True),
        "name": String(required=True),
        "platform": String(nullable=True),
        "created_at": Integer(required=True),
        "api_key": String(description="the full key: returned once, at creation"),
    },
    allow_extra=True,
)
ApiKeyPage = page_of(ApiKey)

#: a pair is made for a principal exactly as an API key is
CloudKeyCreate = Model("CloudApiKeyCreate", KeyCreate.fields)
CloudKey = Model(
    "CloudApiKey",
    {
        "secret_id": String(required=True, description="SecretId (AKID…): the Credential of TC3 signatures"),
        "principal_id": String(required=True, description="whose policy decides the pair's calls"),
        "name": String(required=True),
        "secret_set": Boolean(required=True),
        "created_at": Integer(required=True),
        "secret_key": String(description="the SecretKey: returned once, at creation"),
    },
)
CloudKeyPage = page_of(CloudKey)

ApplicationCreate = Model(
    "ApplicationCreate",
    {
        "name": String(
            required=True, min_len=1, max_len=50, code=errors.APPLICATION_NAME_INVALID, rule="must be 1-50 characters"
        ),
        "remark": String(
            max_len=1024, default="", code=errors.APPLICATION_REMARK_INVALID, rule="must be at most 1024 characters"
        ),
        "products": Array(
            String(
                pattern=product_rules.PRODUCT_ID_RE.pattern,
                code=errors.PRODUCT_ID_INVALID,
                rule="must be a 10-character ProductId",
            ),
            max_items=200,
            default=list,
            unique=True,
            code=errors.PRODUCTS_INVALID,
        ),
    },
)
ApplicationProducts = Model(
    "ApplicationProducts",
    {
        "products": Array(
            String(
                pattern=product_rules.PRODUCT_ID_RE.pattern,
                code=errors.PRODUCT_ID_INVALID,
                rule="must be a 10-character ProductId",
            ),
            required=True,
            max_items=200,
            unique=True,
            code=errors.PRODUCTS_INVALID,
        ),
    },
)
Application = Model(
    "Application",
    {
        "application_id": String(required=True),
        "name": String(required=True),
        "remark": String(required=True),
        "products": Array(String(), required=True),
        "principal_id": String(required=True),
        "created_at": Integer(required=True),
        "updated_at": Integer(required=True),
        "keys": Array(ApiKey),
    },
    allow_extra=True,
)

AuditEntry = Model(
    "AuditEntry",
    {
        "time": Integer(required=True),
        "time_ms": Integer(required=True),
        "principal_id": String(required=True),
        "key_id": String(nullable=True),
        "action": String(required=True),
        "resource": String(required=True),
        "status": Integer(required=True),
        "result": String(required=True),
        "request_id": String(required=True),
        "source_ip": String(nullable=True),
        "channel": String(nullable=True),
        "detail": String(nullable=True),
    },
    allow_extra=True,
)
AuditPage = page_of(AuditEntry)

StandardFeatures = Model("StandardFeatures", {"items": Array(Json(object_only=True), required=True)}, allow_extra=True)
