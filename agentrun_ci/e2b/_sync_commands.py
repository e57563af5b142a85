"""`sandbox.commands` for `Sandbox`: the sync twin of `AsyncCommands`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .._models import CommandResult
from ._async_sandbox import AsyncSandbox
from ._portal import call as _call

__all__ = ["Commands"]


class Commands:
    """`sandbox.commands.run(cmd)` (sync): a shell command run to completion (≤30 s)."""

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._commands = sandbox.commands

    def run(
        self,
        cmd: str,
        background: bool | None = None,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        cwd: str | None = None,
        on_stdout: Callable[[str], Any] | None = None,
        on_stderr: Callable[[str], Any] | None = None,
        stdin: bool | None = None,
        timeout: float | None = None,
        request_timeout: float | None = None,
    ) -> CommandResult:
        """Run `cmd` in a shell; a non-zero exit code is data (`exit_code`), not an exception."""
        result = _call(
            self._commands.run(
                cmd, background, envs, user, cwd, None, None, stdin, timeout, request_timeout
            )
        )
        if on_stdout is not None and result.stdout:
            on_stdout(result.stdout)
        if on_stderr is not None and result.stderr:
            on_stderr(result.stderr)
        return result
