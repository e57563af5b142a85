"""The retry policy as pure functions: what is retried, how long to wait."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from agentrun_ci._retry import (
    MAX_DELAY,
    MAX_RETRY_AFTER,
    Failure,
    RetryPolicy,
    backoff,
    parse_retry_after,
    should_retry_connect,
    should_retry_status,
)


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_idempotent_requests_retry_on_transient_statuses(status: int) -> None:
    assert should_retry_status(status, idempotent=True, attempt=0, max_retries=3)


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_non_idempotent_requests_never_retry_on_status(status: int) -> None:
    assert not should_retry_status(status, idempotent=False, attempt=0, max_retries=3)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 500, 501, 507])
def test_other_statuses_are_final(status: int) -> None:
    assert not should_retry_status(status, idempotent=True, attempt=0, max_retries=3)


def test_budget_is_respected() -> None:
    assert should_retry_status(503, idempotent=True, attempt=2, max_retries=3)
    assert not should_retry_status(503, idempotent=True, attempt=3, max_retries=3)
    assert should_retry_connect(attempt=2, max_retries=3)
    assert not should_retry_connect(attempt=3, max_retries=3)


def test_zero_retries_turns_retrying_off() -> None:
    policy = RetryPolicy(max_retries=0)
    assert not policy.retry_connect(attempt=0)
    assert not policy.retry_status(503, idempotent=True, attempt=0)


def test_backoff_grows_and_is_capped() -> None:
    top = [backoff(n, jitter=lambda lo, hi: hi) for n in range(12)]
    assert top[:4] == [0.25, 0.5, 1.0, 2.0]
    assert max(top) == MAX_DELAY
    bottom = [backoff(n, jitter=lambda lo, hi: lo) for n in range(4)]
    assert bottom == [0.125, 0.25, 0.5, 1.0]


def test_backoff_honours_retry_after() -> None:
    assert backoff(0, 7.0, jitter=lambda lo, hi: hi) == 7.0


def test_retry_after_seconds() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after("100000") == MAX_RETRY_AFTER


def test_retry_after_http_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:05 GMT", now=now) == 5.0
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now=now) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "Mon, 99 Foo"])
def test_retry_after_absent_or_bad(value: str | None) -> None:
    assert parse_retry_after(value) is None


def test_policy_uses_injected_jitter() -> None:
    policy = RetryPolicy(max_retries=2, jitter=lambda lo, hi: 0.0)
    assert policy.delay(5) == 0.0
    assert policy.delay(5, retry_after=2.0) == 2.0


@pytest.mark.parametrize("attempt", [6, 64, 1100, 10**6])
def test_backoff_stays_capped_for_any_attempt(attempt: int) -> None:
    assert backoff(attempt, jitter=lambda lo, hi: hi) == MAX_DELAY
    assert MAX_DELAY / 2 <= backoff(attempt) <= MAX_DELAY  # backoff(1100) used to overflow


def test_one_decision_for_both_planes() -> None:
    policy = RetryPolicy(max_retries=2, jitter=lambda lo, hi: hi)
    assert policy.delay_after(Failure(status_code=503), attempt=0, idempotent=True) == 0.25
    assert policy.delay_after(Failure(status_code=503), attempt=0, idempotent=False) is None
    assert policy.delay_after(Failure(status_code=503), attempt=2, idempotent=True) is None
    throttled = Failure(status_code=429, retry_after=3.0)
    assert policy.delay_after(throttled, attempt=1, idempotent=True) == 3.0
    # a connection that never opened: safe even for an execute
    assert policy.delay_after(Failure(connect_failed=True), attempt=1, idempotent=False) == 0.5
    assert policy.delay_after(Failure(), attempt=0, idempotent=True) is None  # in transit: final
