"""The retry policy, as pure functions.

What may be retried:

* a request whose connection never opened (connect error / connect timeout):
  its body cannot have reached the server, so even an execute is safe;
* an *idempotent* request answered 429, 502, 503 or 504.

What is never retried: an execute, a command, or any other non-idempotent
POST once its body may have reached the server (a read timeout, a reset
connection, a 5xx) — running the user's code twice is worse than an error.

Both planes run the same loop (`_async/retrying.py`, and its generated sync twin):
each describes a failed attempt as a `Failure`, and `RetryPolicy.delay_after`
decides from it alone.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import attrs

__all__ = [
    "RETRY_STATUSES",
    "Failure",
    "RetryPolicy",
    "backoff",
    "parse_retry_after",
    "should_retry_connect",
    "should_retry_status",
]

RETRY_STATUSES = frozenset({429, 502, 503, 504})
BASE_DELAY = 0.25
MAX_DELAY = 8.0
# 0.25 * 2**5 = 8: past this many doublings the ceiling is MAX_DELAY anyway, and
# 2**attempt for a large attempt would overflow a float (backoff(1100) used to raise)
_MAX_DOUBLINGS = 5
MAX_RETRY_AFTER = 60.0


def should_retry_status(
    status_code: int, *, idempotent: bool, attempt: int, max_retries: int
) -> bool:
    """Retry an answered request? Only idempotent ones, only on 429/502/503/504."""
    return idempotent and attempt < max_retries and status_code in RETRY_STATUSES


def should_retry_connect(*, attempt: int, max_retries: int) -> bool:
    """Retry a request whose connection never opened? Always, within the budget."""
    return attempt < max_retries


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or HTTP-date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def backoff(
    attempt: int,
    retry_after: float | None = None,
    *,
    jitter: Callable[[float, float], float] = random.uniform,
) -> float:
    """Seconds to sleep before retry number `attempt + 1` (attempt counts from 0).

    Honours the server's `Retry-After` when given; otherwise "full jitter"
    exponential backoff, capped at MAX_DELAY, so concurrent clients spread out.
    """
    if retry_after is not None:
        return retry_after
    ceiling = min(MAX_DELAY, BASE_DELAY * 2.0 ** min(max(attempt, 0), _MAX_DOUBLINGS))
    return jitter(ceiling / 2, ceiling)


@attrs.frozen
class Failure:
    """One failed attempt, as the retry policy sees it."""

    #: the HTTP status, when the service answered
    status_code: int | None = None
    #: the connection never opened (so the request cannot have reached the service)
    connect_failed: bool = False
    #: seconds the service asked us to wait (Retry-After), if it did
    retry_after: float | None = None


@attrs.frozen
class RetryPolicy:
    """The policy one plane applies: the budget plus an injectable jitter (tests pin it).

    `max_retries=0` turns retrying off. The decisions stay the pure functions above.
    """

    max_retries: int = 3
    jitter: Callable[[float, float], float] = random.uniform

    def retry_status(self, status_code: int, *, idempotent: bool, attempt: int) -> bool:
        return should_retry_status(
            status_code, idempotent=idempotent, attempt=attempt, max_retries=self.max_retries
        )

    def retry_connect(self, *, attempt: int) -> bool:
        return should_retry_connect(attempt=attempt, max_retries=self.max_retries)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        return backoff(attempt, retry_after, jitter=self.jitter)

    def delay_after(self, failure: Failure, *, attempt: int, idempotent: bool) -> float | None:
        """Seconds to wait before retrying after `failure`, or None: do not retry."""
        if failure.status_code is not None:
            retry = self.retry_status(failure.status_code, idempotent=idempotent, attempt=attempt)
        else:
            retry = failure.connect_failed and self.retry_connect(attempt=attempt)
        return self.delay(attempt, failure.retry_after) if retry else None
