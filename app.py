"""Fleetbox: the Chalice app.  Registration only — behaviour lives in chalicelib/."""

from chalice import Chalice

from chalicelib.handlers import (
    access,
    api,
    authorizer,
    batches,
    chat,
    chat_access,
    chat_alerts,
    cloud_keys,
    cloudapi,
    device_data,
    devices,
    forward,
    iot,
    location,
    meta,
    middleware,
    ota,
    products,
    registration,
    rules,
    stats,
    streams,
    video,
    workers,
)

app = Chalice(app_name="fleetbox")

app.register_middleware(middleware.http_envelope, "http")
app.register_blueprint(meta.bp)
app.register_blueprint(access.bp)
app.register_blueprint(products.bp)
app.register_blueprint(devices.bp)
app.register_blueprint(authorizer.bp)  # Lambda mqtt_authorizer (IoT Core custom authorizer)
app.register_blueprint(registration.bp)  # POST /device/register, POST /register/dev
app.register_blueprint(iot.bp)  # Kinesis `uplink` (batched telemetry), Lambda `presence`
app.register_blueprint(device_data.bp)  # /v1/products/{pid}/devices/{dn}/properties|control|actions|…
app.register_blueprint(stats.bp)  # /v1/stats/*
app.register_blueprint(workers.bp)  # SQS `jobs` worker, `ticks` schedule (services/jobs.py)
app.register_blueprint(batches.bp)  # /v1/batches, serial numbers, /v1/bindings, product QR (SPEC §7)
app.register_blueprint(ota.bp)  # /v1/firmware, /v1/ota-tasks, /v1/resources, /v1/resource-tasks
app.register_blueprint(rules.bp)  # /v1/rules, /v1/dead-letters, /v1/deliveries (SPEC §9.1-9.2)
app.register_blueprint(streams.bp)  # /v1/streams: message push data streams (SPEC §9.3)
app.register_blueprint(video.bp)  # /v1/video-tasks, /v1/products/{pid}/video-callback (SPEC §11)
app.register_blueprint(location.bp)  # /v1/spaces, fences, alarms, positions, trajectories (SPEC §10)
app.register_blueprint(chat_access.bp)  # /v1/chat/identities, /v1/chat/allowed-channels (SPEC §12)
app.register_blueprint(chat.bp)  # POST /chat/slack/commands, POST /chat/slack/interactions (signed by Slack)
app.register_blueprint(chat_alerts.bp)  # /v1/chat/subscriptions, /v1/chat/bots: alerts in chat (SPEC §12)
app.register_blueprint(forward.bp)  # SQS `forward` worker: rule actions and webhooks
app.register_blueprint(cloud_keys.bp)  # /v1/cloud-keys: SecretId/SecretKey pairs (SPEC §14)
app.register_blueprint(cloudapi.bp)  # POST /: the Tencent Cloud API v3 endpoint (SPEC §14)
api.install_fallbacks(app)  # 404/405 in the error envelope for anything unmatched (last)
