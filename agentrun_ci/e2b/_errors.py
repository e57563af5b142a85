"""E2B's exception names, as agentrun-ci's own error classes.

Each name is the agentrun-ci class itself (or, for timeouts, a subclass of both
agentrun-ci timeouts), so `except NotFoundException` and
`except agentrun_ci.NotFoundError` catch the same errors:

| E2B name                   | is                                                    |
|----------------------------|-------------------------------------------------------|
| `SandboxException`         | `AgentRunError` (the base of everything we raise)     |
| `TimeoutException`         | subclass of `RequestTimeout` and `WaitTimeout`        |
| `InvalidArgumentException` | `InvalidArgumentError`                                |
| `NotFoundException`        | `NotFoundError`                                       |
| `FileNotFoundException`    | subclass of `NotFoundError`: a file call's 404         |
| `AuthenticationException`  | `AuthenticationError`                                 |
| `RateLimitException`       | `RateLimitError`                                      |

`SandboxKilledError` (ours, also a `RuntimeError`) is raised by calls on a
handle after its `kill()`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._errors import (
    AgentRunError,
    AuthenticationError,
    InvalidArgumentError,
    NotFoundError,
    RateLimitError,
    RequestTimeout,
    WaitTimeout,
)

if TYPE_CHECKING:
    from .._models import CommandResult

__all__ = [
    "AuthenticationException",
    "CommandExitException",
    "FileNotFoundException",
    "InvalidArgumentException",
    "NotFoundException",
    "RateLimitException",
    "SandboxException",
    "SandboxKilledError",
    "TimeoutException",
]

SandboxException = AgentRunError
InvalidArgumentException = InvalidArgumentError
NotFoundException = NotFoundError
AuthenticationException = AuthenticationError
RateLimitException = RateLimitError


class FileNotFoundException(NotFoundError):
    """A file or directory the call names is not in the sandbox."""

    hint = "check the path (relative paths start at /home/user)"


class TimeoutException(RequestTimeout, WaitTimeout):
    """An execution, a request, or the sandbox's lifetime ran out (E2B's one timeout name)."""


class CommandExitException(AgentRunError):
    """A command exited with a non-zero code (E2B's name); it carries the command's result."""

    def __init__(self, result: CommandResult) -> None:
        self.result = result
        self.stdout = result.stdout
        self.stderr = result.stderr
        self.exit_code = result.exit_code
        self.error = result.error
        super().__init__(f"Command exited with code {result.exit_code} and error:\n{result.stderr}")


class SandboxKilledError(AgentRunError, RuntimeError):
    """A call on a `Sandbox` after its `kill()` (or its timeout): make a new one."""


EXECUTION_TIMED_OUT = (
    "Execution timed out after {timeout:g} s: the 'timeout' option of run_code can raise it, "
    "up to AgentRun's cap of 30 s per execution; the context is still usable"
)
REQUEST_TIMED_OUT = (
    "Request timed out after {timeout:g} s: the 'request_timeout' option can be used to "
    "increase this timeout"
)
SANDBOX_KILLED = (
    "The sandbox was killed while the request was in progress (by kill(), or because its "
    "timeout passed: pass 'timeout' to create() or call set_timeout() to keep it longer)"
)
