"""Replay windows for signed inbound requests that carry a nonce (SPEC §15): a nonce is claimed by
a conditional put in the counters table, so two Lambdas racing on one nonce cannot both pass."""

from __future__ import annotations

from pynamodb.exceptions import PutError

from ..models.counters import CounterRecord


def claim(pk: str, sk: str, now_s: int, window_s: int, value: int = 0) -> bool:
    """Record the nonce ``pk``/``sk`` for twice the window; False when it was already used inside
    it (a replay).  An item past its expiry may linger (TTL deletes lazily; moto never does): it no
    longer counts."""
    rec = CounterRecord(pk=pk, sk=sk, count=value, expires_at=now_s + 2 * window_s)
    try:
        rec.save(condition=CounterRecord.sk.does_not_exist() | (CounterRecord.expires_at < now_s))
    except PutError as exc:
        if getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException":
            return False
        raise
    return True
