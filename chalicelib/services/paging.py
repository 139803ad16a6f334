"""Paging guard: a forged or stale `next` token is the caller's error, never a 5xx."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

from pynamodb.exceptions import QueryError, ScanError

from ..core import errors


@contextlib.contextmanager
def checked_start(start: dict[str, Any] | None) -> Iterator[None]:
    try:
        yield
    except (QueryError, ScanError) as exc:
        if start is not None and getattr(exc, "cause_response_code", None) == "ValidationException":
            raise errors.invalid("NextTokenInvalid", "next is not a token this listing issued", "next") from None
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
        raise errors.invalid("NextTokenInvalid", "next is not a token this listing issued", "next")
