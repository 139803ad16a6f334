"""Paging guard: a forged or stale `next` token is the caller's error, never a 5xx."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from pynamodb.exceptions import QueryError, ScanError

from ..core import clock, errors


@contextlib.contextmanager
def checked_start(start: dict[str, Any] | None) -> Iterator[None]:
    try:
        yield
    except (QueryError, ScanError) as exc:
        if start is not None and getattr(exc, "cause_response_code", None) == "ValidationException":
            raise errors.NEXT_TOKEN_INVALID("next is not a token this listing issued", "next") from None
        raise


def expect_key(start: dict[str, Any] | None, shape: dict[str, str], fixed: dict[str, str] | None = None) -> None:
    """Refuse a token that is not a key of this listing: exact attributes, types, fixed values."""
    if start is None:
        return
    bad = set(start) != set(shape) or any(next(iter(start[a])) != t for a, t in shape.items())
    if not bad and fixed:
        bad = any(next(iter(start[a].values())) != v for a, v in fixed.items())
    if not bad:
        for a, t in shape.items():
            if t == "N":
                try:
                    float(start[a]["N"])
                except (KeyError, ValueError):
                    bad = True
    if bad:
        raise errors.NEXT_TOKEN_INVALID("next is not a token this listing issued", "next")


T = TypeVar("T")


def fill_page(
    fetch: Callable[[dict[str, Any] | None], tuple[list[T], dict[str, Any] | None]],
    keep: Callable[[T], bool],
    key_of: Callable[[T], dict[str, Any]],
    limit: int,
    start: dict[str, Any] | None,
) -> tuple[list[T], dict[str, Any] | None]:
    """One page of ``limit`` items that ``keep`` accepts, read from as many queries as it takes.

    ``fetch(key)`` returns (records, LastEvaluatedKey) of one query from ``key``; ``key_of`` is
    the key a record resumes after.  Lists that decide per item (SPEC §2) use it, so a page is
    never short just because the caller may not see every stored item.
    """
    items: list[T] = []
    last = start
    while True:
        records, nxt = fetch(last)
        for rec in records:
            if not keep(rec):
                continue
            items.append(rec)
            if len(items) == limit:
                return items, key_of(rec)
        last = nxt
        if not last:
            return items, None


def newest_first(
    model: Any, key: str, lo: str, hi: str, condition: Any = None, skip: str | None = None
) -> Iterator[Any]:
    """Every live record of one time-keyed partition (``key``, ``ts`` = "{ms:013d}#…", TTL
    ``expires_at``) with ``lo <= ts <= hi``, newest first, across as many queries as it takes;
    ``skip`` is a sort key already shown (a page's resume point).  Expired records are filtered
    here: DynamoDB deletes them up to days late."""
    live = model.expires_at.does_not_exist() | (model.expires_at > clock.now_s())
    if condition is not None:
        live = live & condition
    last = None
    while True:
        res = model.query(
            key,
            model.ts.between(lo, hi),
            filter_condition=live,
            scan_index_forward=False,
            last_evaluated_key=last,
            limit=100,
        )
        for rec in res:
            if rec.ts != skip:
                yield rec
        last = res.last_evaluated_key
        if not last:
            return
