"""The exception tree. Every error this library raises is an `AgentRunError`.

```
AgentRunError
├── APIError(status_code, code, message, request_id)    the service answered with an error
│   ├── BadRequestError          400
│   ├── AuthenticationError      401
│   ├── PermissionDeniedError    403
│   ├── NotFoundError            404
│   ├── ConflictError            409
│   ├── PayloadTooLargeError     413
│   ├── RateLimitError           429   (.retry_after)
│   └── ServerError              ≥500
│       └── InsufficientStorageError 507
├── TransportError                                       no answer (connect, read, protocol)
│   └── RequestTimeout
├── WaitTimeout                                          READY / health polling gave up
├── SessionLostError                                     a session or context died; state is gone
├── SessionPausedError                                   a call on a paused session (resume it)
├── ExecutionFailed                                      raise_for_error() on an Execution
├── ConfigError(ValueError)                              missing account id, half a key pair, …
└── InvalidArgumentError(ValueError)                     e.g. execute timeout above the 30 s cap
```

Errors in the *user's* code are not exceptions: they are data on
`Execution.error`, as in E2B. `Execution.raise_for_error()` turns them into one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._models import Execution

__all__ = [
    "APIError",
    "AgentRunError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigError",
    "ConflictError",
    "ExecutionFailed",
    "InsufficientStorageError",
    "InvalidArgumentError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTimeout",
    "ServerError",
    "SessionLostError",
    "SessionPausedError",
    "TransportError",
    "WaitTimeout",
    "error_for_status",
]

REQUEST_ID_HEADERS = (
    "x-acs-request-id",
    "x-agentrun-request-id",
    "x-request-id",
    "x-fc-request-id",
)


#: hints for service codes whose advice differs from their status class's
CODE_HINTS = {
    # the code being run killed its kernel: running it again would kill the next one too
    "ERR_CONTEXT_LOST": (
        "the code's process died while it ran (os._exit, a crash, or killed for memory), "
        "so its context is gone: change the code, or run it in a new context"
    ),
}


class AgentRunError(Exception):
    """Base class of every error raised by agentrun-ci."""


class APIError(AgentRunError):
    """The service answered with an error status."""

    #: what to do about it, appended to the message
    hint = "check the message and the request id; the AgentRun console logs carry the same id"

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        code: str | None = None,
        request_id: str | None = None,
        body: Any = None,
    ) -> None:
        self.message = message
        self.status_code = status_code
        self.code = code
        self.request_id = request_id
        self.body = body
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [f"{self.status_code}"]
        if self.code:
            parts.append(self.code)
        text = f"[{' '.join(parts)}] {self.message}"
        if self.request_id:
            text += f" (request id {self.request_id})"
        return f"{text}; {CODE_HINTS.get(self.code or '', self.hint)}"


class BadRequestError(APIError):
    hint = "the request was rejected as invalid: fix the argument the message names"


class AuthenticationError(APIError):
    hint = "check AGENTRUN_ACCESS_KEY_ID / AGENTRUN_ACCESS_KEY_SECRET (and the STS token if any)"


class PermissionDeniedError(APIError):
    hint = (
        "the credentials were refused: check the key pair, the account id in the data endpoint, "
        "the RAM policy (AliyunAgentRunFullAccess) and the machine clock"
    )


class NotFoundError(APIError):
    hint = "the resource does not exist (any more): it may have been stopped, deleted or expired"


class ConflictError(APIError):
    hint = (
        "the resource already exists or is in a state that forbids this; pick another name or wait"
    )


class PayloadTooLargeError(APIError):
    hint = (
        "the request body is over the service's limit (the message may name it; the cloud "
        "takes at most 100 MB a file): split or compress it, or upload the file instead of "
        "inlining it"
    )


class RateLimitError(APIError):
    hint = "too many requests: back off (agentrun-ci retries idempotent calls) or lower concurrency"

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kw)


class ServerError(APIError):
    hint = "the service failed; retry later, and quote the request id if it persists"


class InsufficientStorageError(ServerError):
    hint = "the sandbox disk is full: remove files (filesystem remove) or use a larger disk size"


class TransportError(AgentRunError):
    """No usable answer: the connection failed, was reset, or the protocol broke."""


class RequestTimeout(TransportError):
    """The request did not complete in time (connect, read or write)."""


class WaitTimeout(AgentRunError):
    """Polling for a state (template READY, sandbox healthy) gave up at its deadline."""


class SessionLostError(AgentRunError):
    """A session or context died; the variables and files in it are gone."""


class SessionPausedError(AgentRunError):
    """A call on a session paused by `pause_session()`: `resume_session()` first."""


class ExecutionFailed(AgentRunError):
    """The user's code raised or timed out (from `Execution.raise_for_error()`)."""

    def __init__(self, execution: Execution) -> None:
        self.execution = execution
        error = execution.error
        if error is not None:
            message = f"{error.name}: {error.value}"
        elif execution.status == "timeout":
            message = (
                "execution timed out (the service stops code at the execute timeout, at most "
                "30 s; split the work or run it with run_command in the background)"
            )
        else:
            message = f"execution ended with status {execution.status!r}"
        super().__init__(message)


class ConfigError(AgentRunError, ValueError):
    """The configuration is incomplete or inconsistent; the message names the variable."""


class InvalidArgumentError(AgentRunError, ValueError):
    """An argument is out of the range the service accepts; the message names the limit."""


_STATUS_CLASSES: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    429: RateLimitError,
    507: InsufficientStorageError,
}


def error_class(status_code: int) -> type[APIError]:
    """The one place that maps an HTTP status to an exception class."""
    if status_code in _STATUS_CLASSES:
        return _STATUS_CLASSES[status_code]
    return ServerError if status_code >= 500 else APIError


def request_id_from(headers: Mapping[str, str], body: Any = None) -> str | None:
    """The request id from the body (`requestId`/`RequestId`) or the documented headers."""
    bodies = [body]
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        bodies.append(body["error"])  # the older {"error": {...}} variant
    for candidate in bodies:
        if not isinstance(candidate, Mapping):
            continue
        for key in ("requestId", "RequestId", "request_id"):
            value = candidate.get(key)
            if isinstance(value, str) and value:
                return value
    lowered = {k.lower(): v for k, v in headers.items()}
    for name in REQUEST_ID_HEADERS:
        if lowered.get(name):
            return lowered[name]
    return None


def error_for_status(
    status_code: int,
    body: Any,
    headers: Mapping[str, str],
    *,
    reason: str = "",
    retry_after: float | None = None,
) -> APIError:
    """Build the typed error for an error response.

    Bodies seen: `{"code", "message", "requestId"}` (documented), the older
    `{"error": {"code", "message", "details"}}` (DOC-CI), the control plane's
    `Code/Message/RequestId` casing, and plain text.
    """
    code: str | None = None
    message: str | None = None
    payload: Any = body
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        payload = body["error"]
    if isinstance(payload, Mapping):
        raw_code = payload.get("code", payload.get("Code"))
        code = str(raw_code) if raw_code not in (None, "") else None
        raw_message = payload.get("message", payload.get("Message"))
        message = str(raw_message) if raw_message not in (None, "") else None
    elif isinstance(body, str) and body.strip():
        message = body.strip()[:500]
    cls = error_class(status_code)
    kw: dict[str, Any] = {
        "status_code": status_code,
        "code": code,
        "request_id": request_id_from(headers, body),
        "body": body,
    }
    text = message or reason or f"HTTP {status_code}"
    if cls is RateLimitError:
        return RateLimitError(text, retry_after=retry_after, **kw)
    return cls(text, **kw)
