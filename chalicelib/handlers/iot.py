"""IoT entry points: the uplink stream (IoT Core topic rules → Kinesis) and lifecycle events.

``uplink`` receives Lambda Kinesis batches of the topic rule's records
(``protocol.events.UplinkMessage.record()`` JSON) and answers a partial batch response:
only the messages whose writes failed are named, so the event source mapping (with
``ReportBatchItemFailures``) redelivers from the first of them and one bad payload never
blocks its neighbours.  ``presence`` receives IoT Core lifecycle events.
"""

from __future__ import annotations

from typing import Any

from chalice import Blueprint

from ..core.config import settings
from ..core.observability import logger
from ..protocol.events import UplinkMessage
from ..services import lifecycle
from ..services import uplink as pipeline

bp = Blueprint(__name__)


@bp.on_kinesis_record(stream=settings().stream("uplink"), batch_size=500, starting_position="LATEST", name="uplink")
def uplink(event: Any) -> dict[str, Any]:
    messages: list[UplinkMessage] = []
    sequence: list[str] = []
    for record in event:
        try:
            messages.append(UplinkMessage.from_record(record.data))
            sequence.append(record.sequence_number)
        except Exception:  # noqa: BLE001 - an unreadable record is dropped, never retried forever
            logger.exception(
                "unreadable uplink record dropped", extra={"sequence_number": getattr(record, "sequence_number", None)}
            )
    result = pipeline.process_batch(messages)
    if result.failed:
        logger.warning("uplink messages to redeliver", extra={"failed": len(result.failed), "batch": len(messages)})
    return {"batchItemFailures": [{"itemIdentifier": sequence[i]} for i in result.failed]}


@bp.lambda_function(name="presence")
def presence(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return lifecycle.handle(event)
