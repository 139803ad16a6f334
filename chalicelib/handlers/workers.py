"""Queue and schedule entry points: the ``jobs`` queue worker and the once-a-minute ``ticks``.

Thin: each SQS record's body goes to ``services.jobs.run`` through Powertools'
``BatchProcessor``, which reports the records whose step raised in the partial batch response,
so only they are re-delivered (the event source mapping has ``ReportBatchItemFailures``,
infra/aws/resources.yaml).
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
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

    def step(record: Any) -> None:
        try:
            jobs.run(record.body)
        except Exception:
            logger.exception(
                "job step failed; the message will be re-delivered", extra={"message_id": record.message_id}
            )
            raise

    return process_partial_response(
        event=event.to_dict(), record_handler=step, processor=BatchProcessor(event_type=EventType.SQS)
    )  # type: ignore[no-any-return]


@bp.schedule(Rate(1, unit=Rate.MINUTES), name="ticks")
def ticks(event: Any) -> dict[str, str]:
    return jobs.tick()
