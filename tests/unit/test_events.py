"""Domain events reach matching subscribers; a failing subscriber never breaks the producer."""
from chalicelib.services import events


def test_subscribers_get_matching_events_and_failures_are_contained() -> None:
    seen: list[str] = []

    def broken(event: events.DomainEvent) -> None:
        raise RuntimeError("channel down")

    def record(event: events.DomainEvent) -> None:
        seen.append(f"{event.kind}:{event.product_id}:{event.data['task_id']}")

    events.subscribe("ota.*", broken)
    events.subscribe("ota.task.done", record)
    try:
        events.emit("ota.task.done", "PROD000001", task_id=7)
        events.emit("batch.done", "PROD000001", task_id=8)
    finally:
        events.unsubscribe(broken)
        events.unsubscribe(record)
    assert seen == ["ota.task.done:PROD000001:7"]
