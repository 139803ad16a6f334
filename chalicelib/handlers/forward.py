"""The ``forward`` queue worker: rule forwards and webhooks (services/delivery.py → forwarders/engine.py).

The jobs of one batch run concurrently, so a batch lasts about one attempt (≤ 15 s); each
failed attempt re-queues its job with a delay instead of failing the message, so a record is
reported in the partial batch response only when its follow-up could not be queued.
"""

from __future__ import annotations

from typing import Any

from chalice import Blueprint

from ..core.config import settings
from ..services import delivery, rules  # noqa: F401 - rules installs the engine's rule hooks

bp = Blueprint(__name__)


@bp.on_sqs_message(queue=settings().queue("forward"), batch_size=10, name="forward")
def forward_worker(event: Any) -> dict[str, Any]:
    records = [(r.to_dict().get("messageId"), r.body) for r in event]
    failed = delivery.run_batch(records)
    return {"batchItemFailures": [{"itemIdentifier": mid} for mid in failed]}
