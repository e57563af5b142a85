"""`sandbox.commands` for `AsyncSandbox`: E2B's commands on the data plane's process calls."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .._models import CommandResult
from .._wire import EXECUTE_TIMEOUT_CAP
from . import _setup
from ._common import HOME, maybe_await
from ._errors import InvalidArgumentException

if TYPE_CHECKING:
    from ._async_sandbox import AsyncSandbox

__all__ = ["AsyncCommands"]


class AsyncCommands:
    """`sandbox.commands.run(cmd)`: a shell command run to completion (≤30 s on AgentRun)."""

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._sbx = sandbox

    async def run(
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
        if background:
            raise InvalidArgumentException(
                "commands.run(background=True) is not available on AgentRun: start the job "
                "with 'nohup … > out.log 2>&1 &' and read out.log later"
            )
        if user not in (None, "user"):
            raise InvalidArgumentException(
                f"commands.run(user={user!r}): commands run as the sandbox's only user"
            )
        if stdin:
            raise InvalidArgumentException("commands.run(stdin=True): AgentRun has no stdin")
        timeout = EXECUTE_TIMEOUT_CAP if timeout is None else timeout
        if timeout == 0 or timeout > EXECUTE_TIMEOUT_CAP:
            raise InvalidArgumentException(
                f"commands.run(timeout={timeout:g}): AgentRun stops a command after "
                f"{EXECUTE_TIMEOUT_CAP:g} s; for longer jobs start them in the background with "
                "nohup and poll"
            )
        command = _setup.bash_prefix({**self._sbx._envs, **(envs or {})}) + cmd
        result: CommandResult = await self._sbx._call(
            lambda d, sid: d.run_command(sid, command, cwd=cwd or HOME, timeout=timeout),
            {"request_timeout": request_timeout},
            work=timeout,
        )
        if on_stdout is not None and result.stdout:
            await maybe_await(on_stdout(result.stdout))
        if on_stderr is not None and result.stderr:
            await maybe_await(on_stderr(result.stderr))
        return result
