"""Queue and schedule entry points: the ``jobs`` queue worker and the once-a-minute ``ticks``.

Thin: each SQS record's body goes to ``services.jobs.run``; a record whose step raised is
reported in the partial batch response, so only it is re-delivered (the event source mapping
has ``ReportBatchItemFailures``, infra/aws/resources.yaml).
"""
from __future__ import annotations

from typing import Any

from chalice import Blueprint, Rate

from ..core.config import settings
from ..core.observability import logger
from ..services import jobs

bp = Blueprint(__name__)


@bp.on_sqs_message(queue=settings().queue("jobs"), batch_size=5, name="jobs")
def jobs_worker(event: Any) -> dict[str, Any]:
    failures = []
    for record in event:
        message_id = record.to_dict().get("messageId")
        try:
            jobs.run(record.body)
        except Exception:  # noqa: BLE001 - reported per message; the others complete
            logger.exception("job step failed; the message will be re-delivered",
                             extra={"message_id": message_id})
            failures.append({"itemIdentifier": message_id})
    return {"batchItemFailures": failures}


@bp.schedule(Rate(1, unit=Rate.MINUTES), name="ticks")
def ticks(event: Any) -> dict[str, str]:
    return jobs.tick()
