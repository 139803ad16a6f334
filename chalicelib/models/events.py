"""Domain events (services/events.py): what happened, kept 30 days (TTL ``expires_at``).

pk ``product_id`` (``-`` for account-wide events), sk ``{ms:013d}#{event_id}`` — a product's
events in a time range are one key query, newest first.  ``pending`` is set while durable
subscribers have not all run; the sparse ``pending-index`` lets the re-dispatch tick find those.
"""

from __future__ import annotations

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from .base import JSONText, meta


class PendingEvents(GlobalSecondaryIndex["EventRecord"]):
    class Meta:
        index_name = "pending-index"
        projection = AllProjection()

    pending = UnicodeAttribute(hash_key=True)
    at_ms = NumberAttribute(range_key=True)


class EventRecord(Model):
    Meta = meta("events")

    product_id = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    event_id = UnicodeAttribute()
    kind = UnicodeAttribute()
    at_ms = NumberAttribute()
    data = JSONText(default=dict)
    #: durable subscribers that still have to see the event ("1" while any does; removed after)
    pending = UnicodeAttribute(null=True)
    subscribers = JSONText(default=list)
    #: how many times the tick queued it again; why it stopped being dispatched
    dispatches = NumberAttribute(default=0)
    gave_up = UnicodeAttribute(null=True)
    expires_at = NumberAttribute()

    by_pending = PendingEvents()
