"""Typed settings, read once from the environment.

This is the only module that reads ``os.environ``: everything else asks
:func:`settings` so that tests can swap the configuration with
:func:`reload_settings` and no setting is spelled twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

#: logical names of the DynamoDB tables (same names as in infra/aws/resources.yaml)
TABLES = (
    "products",
    "devices",
    "shadows",
    "principals",
    "api_keys",
    "applications",
    "audit",
    "counters",
    "certificates",
    "history",
    "device_logs",
    "calls",
    "topology",
    "batches",
    "serial_numbers",
    "bindings",
    "firmware",
    "ota_tasks",
    "ota_jobs",
    "rules",
    "streams",
    "dead_letters",
    "deliveries",
    "events",
    "video_tasks",
    "location",
    "alarms",
    "geo_cells",
    "chat",
    "chat_alerts",
    "cloud_keys",
)
#: logical names of the SQS queues
QUEUES = ("jobs", "forward")
#: logical names of the Kinesis streams
STREAMS = ("uplink",)


def _bool(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


#: the video analysers ``FLEETBOX_VIDEO_ANALYSER`` may name (``chalicelib/media/video``)
VIDEO_ANALYSERS = ("local", "cloud")


class ConfigError(ValueError):
    """A setting the environment spells wrong: the process refuses to start with it."""


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not a valid setting: use one of {', '.join(allowed)}")
    return value


def _int(value: str | None, default: int) -> int:
    if value is None or value.strip() == "":
        return default
    return int(value)


@dataclass(frozen=True)
class Settings:
    stage: str = "local"
    region: str = "us-east-1"
    resource_prefix: str = "fleetbox-local-"
    bucket: str = "fleetbox-local-files"
    device_quota: int = 100_000
    #: audio/video products' separate device quota (SPEC §7.4)
    av_device_quota: int = 10_000
    audit_retention_days: int = 365
    log_level: str = "INFO"
    #: outbound webhooks may target loopback (the local stack only)
    allow_loopback_targets: bool = False
    #: the device publisher port: "iot" (IoT Core data plane) or "local" (the embedded broker)
    iot_data_endpoint: str | None = None
    #: days device logs are kept (SPEC §5) and property/event history is kept
    device_log_days: int = 30
    history_days: int = 365
    #: sync action / control wait (SPEC §6.4 default 5 s)
    action_timeout_s: float = 5.0
    #: the AWS account IoT policy ARNs name (the authorizer's policy documents; SPEC §6.2)
    aws_account_id: str = "123456789012"
    #: custom-authorizer answer: policy refresh interval and maximum connection time (IoT Core: 300..86400)
    mqtt_policy_refresh_s: int = 300
    mqtt_disconnect_after_s: int = 86400
    #: dynamic registration: accepted clock skew, also the nonce replay window (SPEC §6.3)
    registration_window_s: int = 300
    #: mass production (SPEC §7): devices per batch step, seconds without progress before the
    #: resume sweep re-queues a running batch, largest names upload
    batch_chunk_size: int = 500
    batch_stale_s: int = 900
    batch_upload_max_bytes: int = 1_048_576
    #: OTA (SPEC §8): seconds in one task "minute" (timeouts, rollout rate; tests shorten it),
    #: devices per dispatch step, firmware and resource limits; download_ttl_s is the lifetime of
    #: every download link (batch outputs, serial-number files, firmware, resources)
    ota_minute_s: float = 60.0
    ota_chunk: int = 500
    firmware_max_bytes: int = 1024 * 1024 * 1024
    firmware_limit: int = 100
    resource_account_bytes: int = 1024 * 1024 * 1024
    download_ttl_s: int = 3600
    #: root-level download links (SPEC §6.6): base URL of the local stack's download endpoint and
    #: the key that signs its links; unset on AWS, where links are presigned S3 URLs
    download_base_url: str | None = None
    download_key: str | None = field(default=None, repr=False)
    #: Powertools switches, mirrored here so code asks one config object
    tracing: bool = False
    metrics: bool = False
    #: outgoing webhooks (SPEC §9.2): bounded connect/read timeouts, log/dead-letter retention
    webhook_connect_timeout_s: float = 3.0
    webhook_read_timeout_s: float = 10.0
    delivery_log_days: int = 7
    dead_letter_days: int = 30
    #: chat alerts (SPEC §12): the Slack bot token that posts them, the Slack Web API base URL
    #: (tests and the local stack point it at a loopback stand-in), and the rate-limit window:
    #: at most one message per (channel, event kind, device) per window, the rest counted
    slack_bot_token: str | None = field(default=None, repr=False)
    slack_api_url: str = "https://slack.com/api/"
    chat_alert_window_s: int = 60
    #: how long the uplink path reuses its compiled rules before re-reading the rules table
    rules_cache_s: float = 5.0
    #: video summary tasks (SPEC §11): the analyser ("local": offline, on this machine; "cloud":
    #: Rekognition + Bedrock), the folder local file URLs may name (the local stack sets it; unset
    #: on AWS, where only http(s) URLs are fetched), the caps on what is fetched and analysed, the
    #: wall time one job step spends (fetch + analysis) before it checkpoints and queues the next
    #: part (the jobs Lambda has 60 s), how often a part may break before the task fails, and how
    #: long a task may stay running before the sweep fails it
    video_analyser: str = "local"
    media_root: str | None = None
    video_max_bytes: int = 256 * 1024 * 1024
    video_max_duration_s: int = 900
    video_fetch_timeout_s: float = 30.0
    video_step_budget_s: float = 40.0
    video_max_attempts: int = 3
    video_deadline_s: int = 3600
    #: the cloud analyser: Rekognition's label confidence floor and the Bedrock model (Converse API)
    rekognition_min_confidence: float = 70.0
    bedrock_model_id: str = "amazon.nova-lite-v1:0"
    #: the operator chat (SPEC §12): Slack's signing secret (and the bot token above) given
    #: directly (``FLEETBOX_SLACK_SIGNING_SECRET`` / ``FLEETBOX_SLACK_BOT_TOKEN``, the local stack
    #: and tests) or, on AWS, as the ARN of a Secrets Manager secret holding
    #: ``{"signing_secret","bot_token"}`` (``FLEETBOX_SLACK_SECRET_ARN``), read on first use by
    #: :func:`chat_secret`; how long a confirmation button stays valid
    slack_signing_secret: str | None = field(default=None, repr=False)
    slack_secret_arn: str | None = None
    chat_confirm_ttl_s: int = 300
    #: secrets sealed at rest (services/sealing.py): on AWS the KMS key (id, ARN or alias) that
    #: wraps each data key; locally a base64 AES-256 key (the local stack keeps one in its state
    #: dir). With neither, sealing refuses to run rather than store a secret in the clear.
    seal_kms_key_id: str | None = None
    seal_key: str | None = field(default=None, repr=False)
    #: cloud-API endpoint (SPEC §14): accepted clock skew of a signed request, and how many items
    #: an Offset/Limit list may walk through the route's pages
    cloudapi_window_s: int = 300
    cloudapi_max_walk: int = 10_000
    #: extra env seen at load time, for diagnostics only (never secrets)
    endpoint_url: str | None = field(default=None, repr=False)

    def table(self, logical: str) -> str:
        return f"{self.resource_prefix}{logical}"

    def queue(self, logical: str) -> str:
        return f"{self.resource_prefix}{logical}"

    def stream(self, logical: str) -> str:
        return f"{self.resource_prefix}{logical}"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        stage = env.get("FLEETBOX_STAGE", "local")
        prefix = env.get("FLEETBOX_RESOURCE_PREFIX") or f"fleetbox-{stage}-"
        return cls(
            stage=stage,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            resource_prefix=prefix,
            bucket=env.get("FLEETBOX_BUCKET") or f"{prefix}files",
            device_quota=_int(env.get("FLEETBOX_DEVICE_QUOTA"), 100_000),
            av_device_quota=_int(env.get("FLEETBOX_AV_DEVICE_QUOTA"), 10_000),
            audit_retention_days=_int(env.get("FLEETBOX_AUDIT_RETENTION_DAYS"), 365),
            log_level=env.get("FLEETBOX_LOG_LEVEL", "INFO"),
            allow_loopback_targets=_bool(env.get("FLEETBOX_ALLOW_LOOPBACK"), stage == "local"),
            iot_data_endpoint=env.get("FLEETBOX_IOT_DATA_ENDPOINT") or None,
            device_log_days=_int(env.get("FLEETBOX_DEVICE_LOG_DAYS"), 30),
            history_days=_int(env.get("FLEETBOX_HISTORY_DAYS"), 365),
            action_timeout_s=float(env.get("FLEETBOX_ACTION_TIMEOUT_S") or 5.0),
            aws_account_id=env.get("FLEETBOX_AWS_ACCOUNT_ID") or "123456789012",
            mqtt_policy_refresh_s=_int(env.get("FLEETBOX_MQTT_POLICY_REFRESH_S"), 300),
            mqtt_disconnect_after_s=_int(env.get("FLEETBOX_MQTT_DISCONNECT_AFTER_S"), 86400),
            registration_window_s=_int(env.get("FLEETBOX_REGISTRATION_WINDOW_S"), 300),
            batch_chunk_size=_int(env.get("FLEETBOX_BATCH_CHUNK_SIZE"), 500),
            # locally a chunk takes seconds and a killed stack loses its in-flight messages
            batch_stale_s=_int(env.get("FLEETBOX_BATCH_STALE_S"), 60 if stage == "local" else 900),
            batch_upload_max_bytes=_int(env.get("FLEETBOX_BATCH_UPLOAD_MAX_BYTES"), 1_048_576),
            ota_minute_s=float(env.get("FLEETBOX_OTA_MINUTE_S") or 60.0),
            ota_chunk=_int(env.get("FLEETBOX_OTA_CHUNK"), 500),
            firmware_max_bytes=_int(env.get("FLEETBOX_FIRMWARE_MAX_BYTES"), 1024 * 1024 * 1024),
            firmware_limit=_int(env.get("FLEETBOX_FIRMWARE_LIMIT"), 100),
            resource_account_bytes=_int(env.get("FLEETBOX_RESOURCE_ACCOUNT_BYTES"), 1024 * 1024 * 1024),
            download_ttl_s=_int(env.get("FLEETBOX_DOWNLOAD_TTL_S"), 3600),
            download_base_url=env.get("FLEETBOX_DOWNLOAD_BASE_URL") or None,
            download_key=env.get("FLEETBOX_DOWNLOAD_KEY") or None,
            tracing=not _bool(env.get("POWERTOOLS_TRACE_DISABLED"), True),
            metrics=not _bool(env.get("POWERTOOLS_METRICS_DISABLED"), False),
            webhook_connect_timeout_s=float(env.get("FLEETBOX_WEBHOOK_CONNECT_TIMEOUT_S") or 3.0),
            webhook_read_timeout_s=float(env.get("FLEETBOX_WEBHOOK_READ_TIMEOUT_S") or 10.0),
            delivery_log_days=_int(env.get("FLEETBOX_DELIVERY_LOG_DAYS"), 7),
            dead_letter_days=_int(env.get("FLEETBOX_DEAD_LETTER_DAYS"), 30),
            slack_bot_token=env.get("FLEETBOX_SLACK_BOT_TOKEN") or None,
            slack_api_url=env.get("FLEETBOX_SLACK_API_URL") or "https://slack.com/api/",
            chat_alert_window_s=_int(env.get("FLEETBOX_CHAT_ALERT_WINDOW_S"), 60),
            rules_cache_s=float(env.get("FLEETBOX_RULES_CACHE_S") or 5.0),
            video_analyser=_choice(
                "FLEETBOX_VIDEO_ANALYSER",
                env.get("FLEETBOX_VIDEO_ANALYSER") or ("local" if stage in ("local", "test") else "cloud"),
                VIDEO_ANALYSERS,
            ),
            # local file URLs exist only on the local stack and in tests, never on AWS
            media_root=(env.get("FLEETBOX_MEDIA_ROOT") or None) if stage in ("local", "test") else None,
            video_max_bytes=_int(env.get("FLEETBOX_VIDEO_MAX_BYTES"), 256 * 1024 * 1024),
            video_max_duration_s=_int(env.get("FLEETBOX_VIDEO_MAX_DURATION_S"), 900),
            video_fetch_timeout_s=float(env.get("FLEETBOX_VIDEO_FETCH_TIMEOUT_S") or 30.0),
            video_step_budget_s=float(env.get("FLEETBOX_VIDEO_STEP_BUDGET_S") or 40.0),
            video_max_attempts=_int(env.get("FLEETBOX_VIDEO_MAX_ATTEMPTS"), 3),
            video_deadline_s=_int(env.get("FLEETBOX_VIDEO_DEADLINE_S"), 3600),
            rekognition_min_confidence=float(env.get("FLEETBOX_REKOGNITION_MIN_CONFIDENCE") or 70.0),
            bedrock_model_id=env.get("FLEETBOX_BEDROCK_MODEL_ID") or "amazon.nova-lite-v1:0",
            slack_signing_secret=env.get("FLEETBOX_SLACK_SIGNING_SECRET") or None,
            slack_secret_arn=env.get("FLEETBOX_SLACK_SECRET_ARN") or None,
            chat_confirm_ttl_s=_int(env.get("FLEETBOX_CHAT_CONFIRM_TTL_S"), 300),
            seal_kms_key_id=env.get("FLEETBOX_SEAL_KMS_KEY_ID") or None,
            seal_key=env.get("FLEETBOX_SEAL_KEY") or None,
            cloudapi_window_s=_int(env.get("FLEETBOX_CLOUDAPI_WINDOW_S"), 300),
            cloudapi_max_walk=_int(env.get("FLEETBOX_CLOUDAPI_MAX_WALK"), 10_000),
            endpoint_url=env.get("AWS_ENDPOINT_URL"),
        )


@lru_cache(maxsize=1)
def settings() -> Settings:
    return Settings.from_env(os.environ)


def reload_settings() -> Settings:
    """Forget the cached settings (tests that change the environment call this)."""
    settings.cache_clear()
    _stored_chat_secrets.cache_clear()
    return settings()


#: the chat secrets :func:`chat_secret` knows, by the key they have in the Secrets Manager secret
CHAT_SECRETS = ("signing_secret", "bot_token")


def chat_secret(name: str) -> str | None:
    """The chat platform's ``signing_secret`` or ``bot_token``: from the environment when given
    there, else from the Secrets Manager secret ``FLEETBOX_SLACK_SECRET_ARN`` names (read once per
    process, on the first request that needs it); None when neither is configured."""
    if name not in CHAT_SECRETS:
        raise KeyError(name)
    s = settings()
    direct = s.slack_signing_secret if name == "signing_secret" else s.slack_bot_token
    if direct:
        return direct
    if not s.slack_secret_arn:
        return None
    value = _stored_chat_secrets(s.slack_secret_arn).get(name)
    return value if isinstance(value, str) and value else None


@lru_cache(maxsize=4)
def _stored_chat_secrets(arn: str) -> dict[str, object]:
    import boto3

    reply = boto3.client("secretsmanager", region_name=settings().region).get_secret_value(SecretId=arn)
    try:
        value = json.loads(reply.get("SecretString") or "{}")
    except ValueError:
        raise ConfigError(f"the secret {arn} must hold JSON {{signing_secret, bot_token}}") from None
    return value if isinstance(value, dict) else {}
