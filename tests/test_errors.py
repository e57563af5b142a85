"""The error tree and the one place mapping an error response to an exception class."""

from __future__ import annotations

from typing import Any

import pytest

from agentrun_ci import (
    AgentRunError,
    APIError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InsufficientStorageError,
    InvalidArgumentError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    RequestTimeout,
    ServerError,
    TransportError,
)
from agentrun_ci._errors import error_for_status


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (409, ConflictError),
        (413, PayloadTooLargeError),
        (429, RateLimitError),
        (500, ServerError),
        (503, ServerError),
        (507, InsufficientStorageError),
    ],
)
def test_status_maps_to_class(status: int, cls: type[APIError]) -> None:
    body = {"code": "ERR_X", "message": "went wrong", "requestId": "req-1"}
    error = error_for_status(status, body, {})
    assert type(error) is cls
    assert (error.status_code, error.code, error.message, error.request_id) == (
        status,
        "ERR_X",
        "went wrong",
        "req-1",
    )


def test_insufficient_storage_is_a_server_error() -> None:
    assert issubclass(InsufficientStorageError, ServerError)


def test_unknown_4xx_is_a_plain_api_error() -> None:
    assert type(error_for_status(418, {}, {})) is APIError


@pytest.mark.parametrize(
    "header", ["x-acs-request-id", "x-agentrun-request-id", "x-request-id", "x-fc-request-id"]
)
def test_request_id_from_each_documented_header(header: str) -> None:
    error = error_for_status(500, {"code": "ERR_INTERNAL_SERVER"}, {header.upper(): "hdr-id"})
    assert error.request_id == "hdr-id"


def test_body_request_id_wins_over_header() -> None:
    error = error_for_status(500, {"requestId": "body-id"}, {"x-acs-request-id": "hdr-id"})
    assert error.request_id == "body-id"


def test_older_error_envelope_is_read() -> None:
    body = {"error": {"code": "FILE_NOT_FOUND", "message": "no such file", "details": {}}}
    error = error_for_status(404, body, {"x-request-id": "r2"})
    assert isinstance(error, NotFoundError)
    assert (error.code, error.message, error.request_id) == ("FILE_NOT_FOUND", "no such file", "r2")


def test_control_plane_casing_is_read() -> None:
    body: dict[str, Any] = {"Code": "ERR_VALIDATION_FAILED", "Message": "bad", "RequestId": "R"}
    error = error_for_status(400, body, {})
    assert (error.code, error.message, error.request_id) == ("ERR_VALIDATION_FAILED", "bad", "R")


def test_text_body_becomes_the_message() -> None:
    error = error_for_status(502, "upstream went away", {}, reason="Bad Gateway")
    assert error.message == "upstream went away"


def test_empty_body_falls_back_to_reason() -> None:
    assert error_for_status(503, "", {}, reason="Service Unavailable").message == (
        "Service Unavailable"
    )


def test_rate_limit_carries_retry_after() -> None:
    error = error_for_status(429, {}, {}, retry_after=3.0)
    assert isinstance(error, RateLimitError)
    assert error.retry_after == 3.0


def test_message_says_what_to_do_next() -> None:
    text = str(error_for_status(413, {"message": "too big"}, {"x-acs-request-id": "R"}))
    assert "too big" in text
    assert "100 MB" in text
    assert "R" in text


def test_a_lost_context_is_not_called_a_service_failure_to_retry() -> None:
    """The code killed its kernel: the plane still raises (the facade returns it as
    `Execution.error`), but the advice is not "retry later"."""
    error = error_for_status(
        500, {"code": "ERR_CONTEXT_LOST", "message": "context c1 was lost"}, {}
    )
    assert isinstance(error, ServerError)
    assert "retry later" not in str(error)
    assert "process died" in str(error)
    assert "retry later" in str(error_for_status(500, {"code": "ERR_INTERNAL"}, {}))


def test_tree_shape() -> None:
    assert issubclass(RequestTimeout, TransportError)
    assert issubclass(TransportError, AgentRunError)
    assert not issubclass(TransportError, APIError)
    assert issubclass(InvalidArgumentError, ValueError)
    assert issubclass(APIError, AgentRunError)
