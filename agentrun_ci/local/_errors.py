"""The one exception the emulator's routes raise; rendered as {code, message, requestId}."""

from __future__ import annotations

__all__ = ["ApiError"]


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, *, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        #: seconds, sent as Retry-After (503: come back later)
        self.retry_after = retry_after


def not_found(what: str) -> ApiError:
    return ApiError(404, "ERR_NOT_FOUND", f"{what} does not exist")


def bad_request(message: str) -> ApiError:
    return ApiError(400, "ERR_BAD_REQUEST", message)
