"""The IoT Core custom authorizer (SPEC §6.2): a plain Lambda that IoT Core invokes on MQTT CONNECT.

Registered in app.py with ``app.register_blueprint(authorizer.bp)``; ``chalice package``
names the function ``fleetbox-<stage>-mqtt_authorizer`` (logical id ``MqttAuthorizer``),
which infra/aws/resources.yaml wires to the AWS::IoT::Authorizer.
"""

from __future__ import annotations

from typing import Any

from chalice import Blueprint

from ..services import connectivity

bp = Blueprint(__name__)


@bp.lambda_function(name="mqtt_authorizer")
def mqtt_authorizer(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return connectivity.authorize(event)
