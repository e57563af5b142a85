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
| `CommandExitException`     | ours: a command (a `sandbox.git` call's git) failed   |
| `GitAuthException`         | subclass of `AuthenticationException`: remote refused |
| `GitUpstreamException`     | `SandboxException` subclass: no upstream branch       |

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
    "GitAuthException",
    "GitUpstreamException",
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


class SandboxKilledError(AgentRunError, RuntimeError):
    """A call on a `Sandbox` after its `kill()` (or its timeout): make a new one."""


class CommandExitException(AgentRunError):
    """A command ended with a non-zero exit code; its output is on the exception.

    `commands.run()`, a handle's `wait()` and `sandbox.git`'s methods raise it, as
    E2B's do.
    """

    def __init__(
        self,
        message: str,
        *,
        exit_code: int | None,
        stdout: str = "",
        stderr: str = "",
        error: str | None = None,
    ) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr
        self.error = error

    @classmethod
    def from_result(cls, result: CommandResult) -> CommandExitException:
        """The exception for a finished command's result (E2B's message)."""
        return cls(
            f"Command exited with code {result.exit_code} and error:\n{result.stderr}",
            exit_code=result.exit_code,
            stdout=result.stdout,
            stderr=result.stderr,
            error=result.error,
        )


class GitAuthException(AuthenticationError):
    """A git remote refused the credentials, or asked for some and none were given."""

    def __init__(self, message: str) -> None:
        # the message names the fix itself; 401 is what the remote's answer amounts to
        super().__init__(message, status_code=401, code="GIT_AUTH")

    def __str__(self) -> str:
        return self.message


class GitUpstreamException(AgentRunError):
    """A git push or pull had no upstream branch to go to or come from."""


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
